"""Tables: reading real-world CSV mess, inferring the schema contract, and quarantining rows with reasons."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.data.config import DataConfig
from tasks.data.snapshot import DataValidationError
from tasks.data.table_schema import TabularInput
from tasks.data.tables import TableError, parse_cells, read_table
from tasks.data.tabular import ingest_table, source_kind


def table(rows: int = 120, seed: int = 0) -> pd.DataFrame:
    """A small clean table: a numeric, a categorical and a boolean feature, the label following the numeric one."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, rows)
    return pd.DataFrame(
        {
            "age": np.round(40 + 10 * x, 3),
            "colour": rng.choice(["red", "green", "blue"], rows),
            "member": rng.choice(["yes", "no"], rows),
            "label": np.where(x > 0, "high", "low"),
        }
    )


def write(path: Path, frame: pd.DataFrame, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, **options)
    return path


def ingest(source: Path, tmp_path: Path, **config: object):  # noqa: ANN201 - DatasetSnapshot
    return ingest_table(source, DataConfig(source=str(source), **config), tmp_path / "snapshots")


def reasons(snapshot) -> dict[str, str]:  # noqa: ANN001
    return {q.path: q.reason for q in snapshot.quarantined}


def test_the_schema_is_inferred_and_travels_as_json(tmp_path: Path) -> None:
    snapshot = ingest(write(tmp_path / "t.csv", table()), tmp_path)
    contract = snapshot.input
    types = {c.name: c.type for c in contract.columns}
    assert types == {"age": "numeric", "colour": "categorical", "member": "boolean"}
    colour = next(c for c in contract.columns if c.name == "colour")
    assert colour.categories == ["blue", "green", "red"] and sum(colour.value_counts) == snapshot.counts["train"]["high"] + snapshot.counts["train"]["low"]
    age = next(c for c in contract.columns if c.name == "age")
    frame = table()
    assert age.minimum == frame["age"].min() and age.maximum == frame["age"].max() and age.missing_share == 0
    assert contract.shape == (1 + 3 + 1,) and snapshot.classes == ["high", "low"]
    assert TabularInput.model_validate_json(contract.model_dump_json()) == contract
    # The model's input: standardised with the train split's statistics, one-hot categories.
    inputs, _ = snapshot.model_inputs("train")
    assert abs(inputs[:, 0].mean()) < 1e-6 and abs(inputs[:, 0].std() - 1) < 1e-5
    assert set(np.unique(inputs[:, 1:4].sum(axis=1))) == {1.0}


@pytest.mark.parametrize(
    ("options", "note"),
    [({"sep": ";"}, "separated by ';'"), ({"sep": "\t"}, "separated by '\\t'"), ({"sep": "|"}, "separated by '|'")],
)
def test_other_delimiters_are_detected(tmp_path: Path, options: dict, note: str) -> None:
    snapshot = ingest(write(tmp_path / "t.csv", table(), **options), tmp_path)
    assert snapshot.num_examples == 120 and [c.name for c in snapshot.input.columns] == ["age", "colour", "member"]
    assert any(note in w for w in snapshot.warnings)


def test_a_utf8_byte_order_mark_and_latin1_text_are_read(tmp_path: Path) -> None:
    frame = table()
    frame["colour"] = frame["colour"].replace({"red": "rouge é"})
    bom = ingest(write(tmp_path / "bom" / "t.csv", frame, encoding="utf-8-sig"), tmp_path / "a")
    assert bom.input.columns[0].name == "age"  # no BOM glued to the first header
    latin = ingest(write(tmp_path / "latin" / "t.csv", frame, encoding="latin-1"), tmp_path / "b")
    assert "rouge é" in next(c for c in latin.input.columns if c.name == "colour").categories
    assert any("not valid UTF-8" in w and "latin-1" in w for w in latin.warnings)


@pytest.mark.parametrize(
    ("header", "message"),
    [("age,age,label", r"header names \['age'\] appear more than once"), ("age,,label", r"header column\(s\) \[2\] have no name")],
)
def test_a_header_with_repeated_or_blank_names_is_refused(tmp_path: Path, header: str, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(header + "\n1,2,a\n3,4,b\n")
    with pytest.raises(DataValidationError, match=message):
        ingest(path, tmp_path)


def test_a_missing_label_column_names_the_columns_there_are(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match=r"has no column 'target' \(data.label_column\); its columns are \['age', 'colour', 'member', 'label'\]"):
        ingest(write(tmp_path / "t.csv", table()), tmp_path, label_column="target")


def test_one_class_is_refused(tmp_path: Path) -> None:
    frame = table().assign(label="only")
    with pytest.raises(DataValidationError, match="need at least 2 classes"):
        ingest(write(tmp_path / "t.csv", frame), tmp_path)


def test_numeric_labels_are_class_names_written_one_way(tmp_path: Path) -> None:
    frame = table()
    frame["label"] = np.where(frame["label"] == "high", "1.0", "0")
    snapshot = ingest(write(tmp_path / "t.csv", frame), tmp_path)
    assert snapshot.classes == ["0", "1"]


@pytest.mark.parametrize(
    ("cells", "numbers", "missing"),
    [
        (["1,234.5", "12", "-3.5e2", " 7 "], [1234.5, 12, -350, 7], [False] * 4),
        (["", "NA", "n/a", "NaN", "null", "None", "?", "#N/A"], [np.nan] * 8, [True] * 8),
    ],
)
def test_cells_parse_numbers_with_separators_and_every_na_spelling(cells: list, numbers: list, missing: list) -> None:
    parsed = parse_cells(pd.Series(cells, dtype=object))
    np.testing.assert_array_equal(parsed.numbers, numbers)
    assert parsed.missing.tolist() == missing


def test_infinity_text_in_a_number_column_and_ragged_lines_are_quarantined_by_line(tmp_path: Path) -> None:
    frame = table().astype(object)
    frame.loc[3, "age"] = "inf"
    frame.loc[5, "age"] = "forty"
    path = write(tmp_path / "t.csv", frame)
    lines = path.read_text().splitlines()
    lines[10] += ",extra"
    path.write_text("\n".join(lines) + "\n")
    snapshot = ingest(path, tmp_path)
    quarantined = reasons(snapshot)
    assert quarantined["t.csv:5"] == "column 'age': infinite value 'inf'"
    assert quarantined["t.csv:7"] == "column 'age': 'forty' is not a number"
    assert quarantined["t.csv:11"] == "5 fields where the header has 4"
    assert snapshot.num_examples == 117 and snapshot.input.columns[0].type == "numeric"


def test_empty_cells_are_missing_values_the_model_is_told_about(tmp_path: Path) -> None:
    frame = table().assign(income=np.arange(120) * 10.5).astype(object)  # income keeps every row unique
    frame.loc[::4, "age"] = ""
    frame.loc[1::6, "colour"] = "NA"
    snapshot = ingest(write(tmp_path / "t.csv", frame), tmp_path)
    age, colour = snapshot.input.columns[0], snapshot.input.columns[1]
    raw, _ = snapshot.arrays("train")
    # The shares of the train split, where the model learns what a missing value means.
    assert age.missing_share == pytest.approx(np.isnan(raw[:, 0]).mean()) and 0.15 < age.missing_share < 0.35
    assert colour.missing_share == pytest.approx(np.isnan(raw[:, 1]).mean()) and 0.05 < colour.missing_share < 0.3
    assert snapshot.input.shape == (1 + 1 + 3 + 1 + 1 + 1,)  # a missing indicator each of age and colour
    inputs = snapshot.input.to_model_input(raw)
    assert np.array_equal(inputs[:, 1] == 1, np.isnan(raw[:, 0]))  # age's indicator follows the raw NaN
    assert not snapshot.quarantined


def test_a_mostly_text_column_is_categorical_and_a_mostly_number_one_quarantines_its_text(tmp_path: Path) -> None:
    frame = table().astype(object)
    frame["code"] = [str(i % 7) if i % 3 else f"c{i % 5}" for i in range(120)]  # a third text: categorical
    snapshot = ingest(write(tmp_path / "t.csv", frame), tmp_path)
    code = next(c for c in snapshot.input.columns if c.name == "code")
    assert code.type == "categorical" and "c0" in code.categories and "3" in code.categories
    assert not snapshot.quarantined


def test_conflicting_duplicates_are_quarantined_and_agreeing_ones_kept(tmp_path: Path) -> None:
    frame = table()
    twin = frame.iloc[[0]].assign(label="low" if frame.loc[0, "label"] == "high" else "high")
    same = frame.iloc[[1]]
    snapshot = ingest(write(tmp_path / "t.csv", pd.concat([frame, twin, same], ignore_index=True)), tmp_path)
    quarantined = reasons(snapshot)
    assert set(quarantined) == {"t.csv:2", "t.csv:122"}
    assert "same values as t.csv:122" in quarantined["t.csv:2"] and "labelled" in quarantined["t.csv:2"]
    assert snapshot.num_examples == 120  # 122 rows, the two conflicting ones out, the agreeing copy kept
    files = {f.path: f.split for f in snapshot.manifest().files}
    assert files["t.csv:3"] == files["t.csv:123"]  # identical rows share a split


def test_rows_are_split_by_their_values_or_by_their_id(tmp_path: Path) -> None:
    frame = table()
    first = ingest(write(tmp_path / "a" / "t.csv", frame), tmp_path / "a").manifest().files
    shuffled = frame.iloc[::-1].reset_index(drop=True)
    again = ingest(write(tmp_path / "b" / "t.csv", shuffled), tmp_path / "b").manifest().files
    # The same rows in another order: each row in the same split (lines are reversed).
    assert {f.sha256: f.split for f in again} == {f.sha256: f.split for f in first}
    assert len(first) == 120
    with_id = frame.assign(customer=[f"c{i}" for i in range(120)])
    with_id.loc[7, "customer"] = "c3"
    snapshot = ingest(write(tmp_path / "c" / "t.csv", with_id), tmp_path / "c", id_column="customer")
    assert reasons(snapshot) == {"t.csv:9": "id 'c3' repeats t.csv:5"}
    assert "customer" not in [c.name for c in snapshot.input.columns]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a text table: it holds NUL bytes"),
        (b'{"age": 3, "label": "a"}\n', "is not a table: it holds JSON"),
        (b"just one column\nof text\n", "is not a table: its header 'just one column' has one column"),
        (b"", "is empty"),
    ],
)
def test_a_file_that_is_not_a_table_fails_with_its_name(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(content)
    with pytest.raises(DataValidationError, match=message) as info:
        ingest(path, tmp_path)
    assert "t.csv" in str(info.value)


def test_a_folder_of_tables_is_one_dataset_and_a_bad_file_is_quarantined(tmp_path: Path) -> None:
    frame = table(160)
    write(tmp_path / "src" / "a.csv", frame.iloc[:80])
    frame.iloc[80:].to_parquet(tmp_path / "src" / "b.parquet", index=False)
    write(tmp_path / "src" / "c.csv", frame.iloc[:5].drop(columns=["member"]))
    (tmp_path / "src" / "notes.md").write_text("not data")
    (tmp_path / "src" / "d.csv").write_bytes(b"\x00\x01binary")
    assert source_kind(tmp_path / "src") == "image"  # a non-table file: auto says image; kind says table
    snapshot = ingest(tmp_path / "src", tmp_path, kind="tabular")
    quarantined = reasons(snapshot)
    assert snapshot.num_examples == 160
    assert "lacks ['member']" in quarantined["c.csv"] and "NUL bytes" in quarantined["d.csv"]
    assert quarantined["notes.md"].startswith("not a table file")
    assert source_kind(tmp_path / "src" / "a.csv") == "tabular"


def test_unknown_or_role_columns_in_the_column_types_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", table())
    with pytest.raises(DataValidationError, match=r"data.columns names \['height'\]"):
        ingest(path, tmp_path, columns={"height": "numeric"})
    with pytest.raises(ValueError, match="'label' is the label or id column"):
        DataConfig(source=str(path), columns={"label": "categorical"})
    forced = ingest(path, tmp_path, columns={"age": "categorical", "member": "ignore"})
    assert [(c.name, c.type) for c in forced.input.columns] == [("age", "categorical"), ("colour", "categorical")]


def test_an_identifier_like_text_column_is_left_out_saying_why(tmp_path: Path) -> None:
    frame = table().assign(name=[f"person {i}" for i in range(120)])
    snapshot = ingest(write(tmp_path / "t.csv", frame), tmp_path, max_categories=10)
    assert "name" not in [c.name for c in snapshot.input.columns]
    assert any("column 'name' has 120 distinct values" in w and "data.id_column" in w for w in snapshot.warnings)


def test_every_quarantined_row_is_in_the_validation_report(tmp_path: Path) -> None:
    frame = table().astype(object)
    frame.loc[2, "label"] = ""
    snapshot = ingest(write(tmp_path / "t.csv", frame), tmp_path)
    report = json.loads(snapshot.report_path.read_text())
    assert {"path": "t.csv:4", "reason": "label 'label' is missing"} in report["quarantined"]


def test_read_table_reports_lines_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,x\n\n2,y\n")
    raw = read_table(path)
    assert raw.lines.tolist() == [2, 4] and raw.frame["b"].tolist() == ["x", "y"]
    with pytest.raises(TableError, match="named as Parquet"):
        read_table(write(tmp_path / "t.parquet", table()))


def test_parquet_keeps_an_index_column_and_reads_nullable_integers_as_numbers(tmp_path: Path) -> None:
    frame = table().assign(visits=pd.array([None if i % 10 == 0 else i for i in range(120)], dtype="Int64"))
    frame.assign(customer=[f"c{i}" for i in range(120)]).set_index("customer").to_parquet(tmp_path / "t.parquet")
    snapshot = ingest(tmp_path / "t.parquet", tmp_path, id_column="customer")
    visits = next(c for c in snapshot.input.columns if c.name == "visits")
    assert visits.type == "numeric" and visits.nullable and not snapshot.quarantined


def test_chunks_of_any_size_give_the_same_snapshot(tmp_path: Path) -> None:
    frame = table(300).assign(extra=np.arange(300) * 1.5).astype(object)
    frame.loc[::9, "age"] = ""
    frame.loc[5, "age"] = "forty"
    frame.loc[7, "label"] = ""
    frame.loc[40, "member"] = "maybe"
    frame = pd.concat([frame, frame.iloc[[10]].assign(label="low" if frame.loc[10, "label"] == "high" else "high"), frame.iloc[[11]]])
    path = write(tmp_path / "t.csv", frame.reset_index(drop=True))
    config = DataConfig(source=str(path))
    whole = ingest_table(path, config, tmp_path / "whole")
    chunked = ingest_table(path, config, tmp_path / "chunked", chunk_rows=7)  # chunks end inside repeats and conflicts
    assert chunked.version == whole.version and chunked.input == whole.input and chunked.counts == whole.counts
    assert chunked.quarantined == whole.quarantined and len(whole.quarantined) == 4  # "maybe" makes member a category
    for name in ("images.npy", "labels.npy", "splits.npy"):
        np.testing.assert_array_equal(np.load(chunked.directory / name), np.load(whole.directory / name))
    assert chunked.manifest() == whole.manifest() and len(whole.manifest().files) == whole.num_examples == 302 - 4


def test_a_file_failing_part_way_is_quarantined_in_a_folder_and_fails_alone(tmp_path: Path) -> None:
    write(tmp_path / "src" / "a.csv", table(100))
    # A quote opened and never closed, far into the file: the reader fails there, not at the start.
    broken = table(3000, seed=1).to_csv(index=False) + '1.5,"red' + "x" * 200_000 + "\n"
    (tmp_path / "src" / "b.csv").write_text(broken)
    snapshot = ingest(tmp_path / "src", tmp_path)
    assert snapshot.num_examples == 100 and "field larger than field limit" in reasons(snapshot)["b.csv"]
    with pytest.raises(DataValidationError, match="b.csv is not a readable CSV file: line .*field larger than field limit"):
        ingest(tmp_path / "src" / "b.csv", tmp_path / "alone")


def test_large_numbers_keep_their_spread_and_row_keys_their_length(tmp_path: Path) -> None:
    frame = table(3000).assign(seconds=1.7e9 + np.arange(3000) % 60)  # epoch seconds: float32 would flatten them
    snapshot = ingest(write(tmp_path / "t.csv", frame), tmp_path)
    seconds = next(c for c in snapshot.input.columns if c.name == "seconds")
    raw, _ = snapshot.arrays("train")
    assert seconds.std == pytest.approx(raw[:, -1].std()) and 16 < seconds.std < 19
    assert {len(f.sha256) for f in snapshot.manifest().files} == {32}  # no key loses a trailing zero byte


def test_parquet_booleans_read_alike_whatever_the_chunk(tmp_path: Path) -> None:
    frame = table(400).assign(label=pd.array([i % 3 == 0 if i != 5 else None for i in range(400)], dtype="boolean"))
    frame.to_parquet(tmp_path / "t.parquet", row_group_size=100)
    config = DataConfig(source=str(tmp_path / "t.parquet"))
    whole = ingest_table(tmp_path / "t.parquet", config, tmp_path / "a")
    chunked = ingest_table(tmp_path / "t.parquet", config, tmp_path / "b", chunk_rows=100)
    assert whole.classes == chunked.classes == ["false", "true"] and whole.version == chunked.version


def test_a_row_known_by_id_whose_values_changed_is_another_dataset(tmp_path: Path) -> None:
    frame = table().assign(customer=[f"c{i}" for i in range(120)])
    first = ingest(write(tmp_path / "t.csv", frame), tmp_path, id_column="customer")
    frame.loc[3, "age"] = 99.5
    second = ingest(write(tmp_path / "t.csv", frame), tmp_path, id_column="customer")
    assert first.version != second.version
