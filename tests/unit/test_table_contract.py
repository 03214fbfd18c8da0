"""The tabular contract's one preprocessing, its inverse, re-encoding between builds, and request rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serve.protocol import InferRequest, ProtocolError
from serve.table_rows import RowsRefused, encode_request, frame_from_inputs, frame_from_instances
from tasks.data.contract import ImageInput
from tasks.data.table_schema import MISSING, NEW_CATEGORY, TabularColumn, TabularInput, infer_schema
from tasks.explain.lime_tables import from_lime_rows, to_lime_rows, training_statistics

CONTRACT = TabularInput(
    columns=[
        TabularColumn(name="age", type="numeric", missing_share=0.1, mean=40.0, std=10.0, minimum=18, maximum=90),
        TabularColumn(name="colour", type="categorical", missing_share=0.2, categories=["blue", "green", "red"], value_counts=[5, 3, 2]),
        TabularColumn(name="member", type="boolean", mean=0.5, std=0.5, value_counts=[4, 6]),
    ],
    label_column="label",
)
CELLS = pd.DataFrame(
    {"age": ["30", "", "1,000", "55"], "colour": ["red", "NA", "purple", "blue"], "member": ["yes", "no", "1", "false"]},
    dtype=object,
)


def test_rows_are_encoded_with_their_problems_and_prepared_as_documented() -> None:
    encoded = CONTRACT.encode(CELLS)
    np.testing.assert_array_equal(encoded.raw[:, 0], [30, np.nan, 1000, 55])
    np.testing.assert_array_equal(encoded.raw[:, 1], [2, np.nan, -1, 0])
    np.testing.assert_array_equal(encoded.raw[:, 2], [1, 0, 1, 0])
    assert encoded.problems == [(2, "column 'colour': new category 'purple'")] and not encoded.invalid.any()
    inputs = CONTRACT.to_model_input(encoded.raw)
    assert CONTRACT.shape == (7,) and CONTRACT.feature_names() == [
        "age", "age is missing", "colour=blue", "colour=green", "colour=red", "colour is missing", "member",
    ]
    np.testing.assert_allclose(inputs[0], [-1.0, 0, 0, 0, 1, 0, 1.0])
    np.testing.assert_allclose(inputs[1], [0.0, 1, 0, 0, 0, 1, -1.0])  # missing age: 0 and its indicator
    np.testing.assert_allclose(inputs[2, 2:6], [0, 0, 0, 0])  # a new category is none of the known ones


def test_a_prepared_tensor_maps_back_to_its_raw_rows() -> None:
    raw = CONTRACT.encode(CELLS).raw
    np.testing.assert_allclose(CONTRACT.from_model_input(CONTRACT.to_model_input(raw)), raw, rtol=1e-6)


def test_statistics_name_missing_and_new_categories_and_count_missing_fields() -> None:
    stats = CONTRACT.statistics(CONTRACT.encode(CELLS).raw, None)
    assert stats["input.colour"].tolist() == ["red", MISSING, NEW_CATEGORY, "blue"]
    assert stats["input.member"].tolist() == ["true", "false", "true", "false"]
    assert stats["missing_fields"].tolist() == [0, 2, 0, 0]
    unseen, note = CONTRACT.unfamiliar(stats, stats)
    assert unseen == 1 and "colour (1)" in note and "age (1)" in note  # the same row: purple, and 1000 > 90


def test_cells_that_are_no_value_of_their_type_are_invalid() -> None:
    cells = CELLS.copy()
    cells.loc[0, "age"] = "thirty"
    cells.loc[3, "member"] = "maybe"
    cells.loc[1, "age"] = "-inf"
    encoded = CONTRACT.encode(cells)
    assert encoded.invalid.tolist() == [True, True, False, True]
    assert (0, "column 'age': 'thirty' is not a number") in encoded.problems
    assert (1, "column 'age': infinite value '-inf'") in encoded.problems
    assert (3, "column 'member': 'maybe' is not yes/no, true/false or 1/0") in encoded.problems


def test_production_takes_a_candidates_rows_through_their_values() -> None:
    # Two builds of one table fit other categories and statistics: their raw codes differ, their values do not.
    frame = pd.DataFrame({"age": [20.0, 35.0, 61.0, 47.0], "colour": ["green", "red", "teal", "red"], "member": [1, 0, 1, 1]})
    candidate, _ = infer_schema(frame.assign(label=list("abab")), label_column="label", id_column=None, types={}, fit_rows=np.ones(4, bool), max_categories=10)
    assert CONTRACT.incomparable(candidate) is None
    adopted = CONTRACT.adopt(candidate, candidate.encode(frame).raw)
    np.testing.assert_array_equal(adopted, CONTRACT.encode(frame).raw)
    narrower = TabularInput(columns=candidate.columns[:2], label_column="label")
    assert CONTRACT.incomparable(narrower) == "it needs columns ['member'], which the other table lacks"
    assert "table rows" in CONTRACT.incomparable(ImageInput(channels=1, image_size=8))


def test_lime_codes_round_trip_missing_and_new_categories() -> None:
    raw = CONTRACT.encode(CELLS).raw
    lime = to_lime_rows(raw, CONTRACT)
    assert lime[:, 1].tolist() == [2, 3, 4, 0]  # red, missing (3 known + 0), new (3 known + 1), blue
    np.testing.assert_array_equal(from_lime_rows(lime, CONTRACT), raw)
    stats = training_statistics(CONTRACT)
    assert stats["feature_values"][1] == [0.0, 1.0, 2.0, 3.0, 4.0] and stats["feature_frequencies"][1][-1] == 0.0
    assert stats["feature_frequencies"][2] == [4.0, 6.0, 0.0, 0.0]


def request(inputs: list[dict]) -> InferRequest:
    return InferRequest.model_validate({"inputs": inputs})


def test_v2_column_inputs_become_cells_and_bad_requests_say_what_is_allowed() -> None:
    frame = frame_from_inputs(
        request([
            {"name": "age", "datatype": "FP64", "shape": [2], "data": [30, None]},
            {"name": "colour", "datatype": "BYTES", "shape": [2, 1], "data": [["red"], ["blue"]]},
            {"name": "member", "datatype": "BOOL", "shape": [2], "data": [True, False]},
        ]),
        CONTRACT, max_rows=10,
    )
    encoded = encode_request(frame, CONTRACT)
    np.testing.assert_array_equal(encoded.raw, [[30, 2, 1], [np.nan, 0, 0]])
    assert encoded.problems == ["", ""]
    cases = [
        ([{"name": "height", "datatype": "FP32", "shape": [1], "data": [1]}], r"inputs \['height'\] are not columns"),
        ([{"name": "age", "datatype": "FP32", "shape": [1], "data": [1]}], r"columns \['member'\] are required"),
        ([{"name": "member", "datatype": "FP32", "shape": [2], "data": [1, 0]}, {"name": "age", "datatype": "FP32", "shape": [1], "data": [3]}], "has 1 rows, other inputs 2"),
        ([{"name": "member", "datatype": "BOOL", "shape": [1], "data": [1]}, {"name": "age", "datatype": "BOOL", "shape": [1], "data": [True]}], "the numeric column takes"),
        ([{"name": "member", "datatype": "BOOL", "shape": [2, 2], "data": [[1, 0], [1, 1]]}], r"a column is \[N\]"),
    ]
    for inputs, message in cases:
        with pytest.raises(ProtocolError, match=message):
            frame_from_inputs(request(inputs), CONTRACT, max_rows=10)
    with pytest.raises(ProtocolError, match="between 1 and 1 are allowed"):
        frame_from_inputs(request([{"name": "member", "datatype": "BOOL", "shape": [2], "data": [1, 0]}]), CONTRACT, max_rows=1)


def test_v1_instances_become_cells_and_cells_of_the_wrong_type_are_refused_by_row() -> None:
    frame = frame_from_instances({"instances": [{"member": "yes", "colour": "pink"}, {"member": 0, "age": 44}]}, CONTRACT, 10)
    encoded = encode_request(frame, CONTRACT)
    assert encoded.problems == ["column 'colour': new category 'pink'", ""]
    with pytest.raises(ProtocolError, match=r"the body must be \{\"instances\""):
        frame_from_instances({"rows": []}, CONTRACT, 10)
    with pytest.raises(ProtocolError, match=r"columns \['zip'\] are not in the model's schema"):
        frame_from_instances({"instances": [{"member": 1, "zip": 9}]}, CONTRACT, 10)
    refused = frame_from_instances({"instances": [{"member": 1, "age": "old"}, {"member": 1}]}, CONTRACT, 10)
    with pytest.raises(RowsRefused, match="1 of 2 rows do not fit the schema: row 0: column 'age': 'old' is not a number"):
        encode_request(refused, CONTRACT)


def test_a_category_is_named_one_way_whatever_the_file_or_request_sent() -> None:
    zip_codes = TabularInput(
        columns=[TabularColumn(name="zip", type="categorical", categories=["1", "2", "true", "x"])], label_column="label"
    )
    sources = [
        pd.DataFrame({"zip": ["1", "2.0", " 02 ", "x"]}, dtype=object),  # CSV text
        pd.DataFrame({"zip": [1.0, 2.0, 2.0, np.nan]}),  # a Parquet float column (an int column with a null)
        pd.DataFrame({"zip": [1, "2", 2.0, True]}, dtype=object),  # JSON values
    ]
    codes = [zip_codes.encode(frame).raw[:, 0].tolist() for frame in sources]
    assert codes[0] == [0, 1, 1, 3] and codes[1][:3] == [0, 1, 1] and codes[2] == [0, 1, 1, 2]


def test_a_boolean_sent_as_a_tensor_comes_back_as_its_value() -> None:
    flag = TabularInput(columns=[TabularColumn(name="flag", type="boolean", mean=2 / 3, std=0.4714)], label_column="label")
    raw = np.array([[1.0], [0.0], [1.0]])
    tensor = flag.to_model_input(raw).astype(np.float32)  # what a client sends, in float32
    np.testing.assert_array_equal(flag.from_model_input(tensor), raw)
    assert flag.statistics(flag.from_model_input(tensor), None)["input.flag"].tolist() == ["true", "false", "true"]


def test_a_column_that_changed_between_categories_and_values_is_incomparable() -> None:
    production = TabularInput(columns=[TabularColumn(name="flag", type="categorical", categories=["0", "1", "maybe"])], label_column="l")
    candidate = TabularInput(columns=[TabularColumn(name="flag", type="boolean")], label_column="l")
    assert "flag (categorical here, boolean there)" in production.incomparable(candidate)


def test_what_the_model_learns_from_is_fitted_on_train_rows_only() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, np.nan, 5.0, 6.0], "c": ["a", "b", "a", "b", "zz", "a"], "label": list("ababab")})
    train = np.array([True, True, True, False, False, True])
    usable = np.array([True, True, True, True, True, False])
    schema, _ = infer_schema(frame, label_column="label", id_column=None, types={}, fit_rows=train, max_categories=10, rows=usable)
    x, c = schema.columns
    # The missing x and the category zz are outside training: no input for them; 6.0 is not usable.
    assert x.missing_share == 0 and x.mean == 2.0 and (x.minimum, x.maximum) == (1.0, 5.0)
    assert c.categories == ["a", "b"] and c.value_counts == [2, 1]


def test_lime_explains_a_missing_number_as_missing() -> None:
    from tasks.data.table_schema import value_bins
    from tasks.explain.config import LimeConfig
    from tasks.explain.lime_tables import TabularLimeExplainer

    rng = np.random.default_rng(0)
    contract = TabularInput(
        columns=[
            TabularColumn(name="x", type="numeric", missing_share=0.2, bins=value_bins(rng.normal(0, 1, 400))),
            TabularColumn(name="y", type="numeric", bins=value_bins(rng.normal(0, 1, 400))),
        ],
        label_column="l",
    )

    def logits(inputs: np.ndarray) -> np.ndarray:  # a model that reads only x's missing indicator: [x, x missing, y]
        return np.stack([4 * inputs[:, 1], -4 * inputs[:, 1]], axis=1)

    explainer = TabularLimeExplainer(logits, contract, LimeConfig(num_samples=400))
    missing = explainer.explain(np.array([np.nan, 0.3]))
    assert missing.features[0] == "x is missing"
    assert abs(missing.weights[0][0]) > 0.3 > 20 * abs(missing.weights[0][1])  # perturbed as present vs missing
    present = explainer.explain(np.array([0.5, 0.3]))
    assert "<" in present.features[0] and "missing" not in present.features[0]
