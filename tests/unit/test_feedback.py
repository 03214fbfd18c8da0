"""Label feedback numerics: reading label tables, refusing bad labels with reasons, joining, the degradation test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.monitor.config import LabelRow
from tasks.monitor.feedback import (
    LabelFileError,
    clean_labels,
    join_labels,
    label_rows,
    read_label_tables,
    realized_performance,
)

CLASSES = ["cat", "dog"]
SHA = {name: (f"{i:x}" * 64)[:64] for i, name in enumerate(["a.png", "b.png", "c.png", "d.png"], start=10)}


def predictions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "file": list(SHA),
            "image_sha256": list(SHA.values()),
            "predicted_class": ["cat", "dog", "dog", "cat"],
            "release_version": "v1",
        }
    )


def test_label_tables_are_read_by_either_id_and_bad_tables_are_named(tmp_path: Path) -> None:
    (tmp_path / "by-hash.csv").write_text(f"image_sha256,label\n{SHA['a.png']},cat\n{SHA['b.png'].upper()},dog\n")
    pd.DataFrame({"file": ["c.png"], "label": ["cat"]}).to_parquet(tmp_path / "by-name.parquet")
    frame = read_label_tables([tmp_path / "by-hash.csv", tmp_path / "by-name.parquet"])
    assert frame["label"].tolist() == ["cat", "dog", "cat"]
    assert frame["origin"].tolist() == ["by-hash.csv:row 1", "by-hash.csv:row 2", "by-name.parquet:row 1"]
    # Integer class names in Parquet, with a missing one: whole numbers stay whole, the gap is an empty label.
    pd.DataFrame({"file": ["a.png", "b.png"], "label": pd.array([3, None], dtype="Int64")}).to_parquet(tmp_path / "ints.parquet")
    ints = read_label_tables([tmp_path / "ints.parquet"])
    assert ints["label"].tolist() == ["3", ""]
    kept, problems = clean_labels(ints, ["0", "3"])
    assert kept["label"].tolist() == ["3"] and [(p.id, p.reason) for p in problems] == [("b.png", "empty id or label")]
    (tmp_path / "wrong.csv").write_text("name,class\nx,cat\n")
    with pytest.raises(LabelFileError, match=r"wrong.csv: has columns \['name', 'class'\]; a label table needs 'label'"):
        read_label_tables([tmp_path / "wrong.csv"])
    (tmp_path / "labels.txt").write_text("x")
    with pytest.raises(LabelFileError, match="labels.txt: labels must be .csv or .parquet"):
        read_label_tables([tmp_path / "labels.txt"])
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(LabelFileError, match="broken.parquet: cannot be read"):
        read_label_tables([tmp_path / "broken.parquet"])


def test_bad_labels_become_problems_with_reasons_and_repeats_count_once() -> None:
    labels = label_rows(
        [
            LabelRow(id=SHA["a.png"], label="cat"),
            LabelRow(id=SHA["a.png"], label="cat"),  # the same label twice: one label
            LabelRow(id=SHA["b.png"], label="dog"),
            LabelRow(id=SHA["b.png"], label="cat"),  # two different labels: neither is trusted
            LabelRow(id="c.png", label="bird"),  # not a class of the release
            LabelRow(id="never-scored.png", label="dog"),
        ]
    )
    kept, problems = clean_labels(labels, CLASSES)
    assert kept["id"].tolist() == [SHA["a.png"], "never-scored.png"]
    reasons = {(p.id, p.reason.split(":")[0].split(" '")[0]) for p in problems}
    assert reasons == {(SHA["b.png"], "conflicting labels for one input"), ("c.png", "label")}
    assert any("'bird' is not one of the release's classes ['cat', 'dog']" in p.reason for p in problems)
    joined, never = join_labels(kept, predictions())
    assert joined[["file", "label", "predicted_class"]].values.tolist() == [["a.png", "cat", "cat"]]
    assert [(p.id, p.reason) for p in never] == [("never-scored.png", "never scored: no logged prediction has this id")]


def test_labels_join_by_hash_in_any_case_and_by_file_name() -> None:
    labels = label_rows([LabelRow(id=SHA["b.png"].upper(), label="dog"), LabelRow(id="d.png", label="dog")])
    kept, problems = clean_labels(labels, CLASSES)
    joined, never = join_labels(kept, predictions())
    assert not problems and not never
    assert sorted(zip(joined["file"], joined["label"] == joined["predicted_class"])) == [("b.png", True), ("d.png", False)]


def test_degradation_needs_significance_and_a_minimum_drop() -> None:
    rng = np.random.default_rng(0)
    worse = realized_performance(rng.random(300) < 0.85, "v1", test_accuracy=0.97, test_images=400)
    assert worse.degraded and worse.p_value < 1e-6 and worse.low < worse.accuracy < worse.high and worse.drop_pp > 5
    same = realized_performance(rng.random(300) < 0.97, "v1", test_accuracy=0.97, test_images=400)
    assert same.status == "not degraded" and same.p_value > 0.05
    # Significant on a million rows, but half a point: not worth a retrain at min_drop_pp=1.
    tiny = realized_performance(np.arange(1_000_000) % 1000 >= 35, "v1", test_accuracy=0.97, test_images=100_000)
    assert tiny.p_value < 0.05 and tiny.status == "not degraded"
    few = realized_performance(np.ones(10, bool), "v1", test_accuracy=0.97, test_images=400)
    assert few.status == "not enough labels" and "at least 30" in few.detail


def test_ambiguous_names_and_hash_name_conflicts_are_problems_not_guesses() -> None:
    logged = pd.concat(
        [predictions(), pd.DataFrame({"file": ["a.png"], "image_sha256": ["f" * 64], "predicted_class": ["dog"], "release_version": "v1"})],
        ignore_index=True,
    )
    labels = label_rows(
        [
            LabelRow(id="a.png", label="cat"),  # a.png was logged for two contents
            LabelRow(id=SHA["b.png"], label="dog"),
            LabelRow(id="b.png", label="cat"),  # the same input by name, another label
            LabelRow(id=SHA["c.png"], label="dog"),
            LabelRow(id="c.png", label="dog"),  # the same input and label both ways: one labelled prediction
        ]
    )
    kept, problems = clean_labels(labels, CLASSES)
    assert not problems
    joined, problems = join_labels(kept, logged)
    assert joined[["file", "label"]].values.tolist() == [["c.png", "dog"]]
    reasons = sorted((p.id, p.reason.split(":")[0]) for p in problems)
    assert reasons == [
        ("a.png", "ambiguous"),
        ("b.png", "conflicting labels for one input (by hash and by name)"),
        (SHA["b.png"], "conflicting labels for one input (by hash and by name)"),
    ]


def test_two_table_rows_of_equal_values_are_two_inputs_with_their_own_labels() -> None:
    same = "ab" * 32
    rows = pd.DataFrame(
        {"file": ["t.csv:2", "t.csv:3"], "image_sha256": [same, same], "predicted_class": ["cat", "cat"], "release_version": "v1"}
    )
    labels, _ = clean_labels(label_rows([LabelRow(id="t.csv:2", label="cat"), LabelRow(id="t.csv:3", label="dog")]), CLASSES)
    joined, problems = join_labels(labels, rows, identity=("image_sha256", "file"))
    assert not problems and sorted(joined["label"]) == ["cat", "dog"]
    # As images (one content, one input) the same labels conflict: neither is used.
    joined, problems = join_labels(labels, rows)
    assert joined.empty and {p.id for p in problems} == {"t.csv:2", "t.csv:3"}


def test_a_table_models_labels_join_by_its_own_id_column(tmp_path: Path) -> None:
    rows = pd.DataFrame(
        {"file": ["t.csv:2", "t.csv:3", "u.csv:2"], "image_sha256": ["ab" * 32, "cd" * 32, "ef" * 32],
         "id": ["c1", "c2", "c1"], "predicted_class": ["cat", "dog", "dog"], "release_version": "v1"}
    )
    pd.DataFrame({"customer": ["c1", "c2", "c9"], "label": ["cat", "cat", "dog"]}).to_csv(tmp_path / "labels.csv", index=False)
    labels = read_label_tables([tmp_path / "labels.csv"], row_id_column="customer")
    kept, problems = clean_labels(labels, CLASSES)
    joined, never = join_labels(kept, rows, identity=("image_sha256", "file"))
    # c1 was scored twice (two logged predictions), c2 once; c9 never.
    assert sorted(zip(joined["file"], joined["label"])) == [("t.csv:2", "cat"), ("t.csv:3", "cat"), ("u.csv:2", "cat")]
    assert [p.id for p in never] == ["c9"] and not problems
    # Labels by hash or file name still join when the logged rows carry ids.
    kept, _ = clean_labels(label_rows([LabelRow(id="t.csv:3", label="dog")]), CLASSES)
    joined, never = join_labels(kept, rows, identity=("image_sha256", "file"))
    assert joined["label"].tolist() == ["dog"] and not never
    with pytest.raises(LabelFileError, match=r"one id column of \['image_sha256', 'sha256', 'file', 'customer'\]"):
        pd.DataFrame({"who": ["c1"], "label": ["cat"]}).to_csv(tmp_path / "bad.csv", index=False)
        read_label_tables([tmp_path / "bad.csv"], row_id_column="customer")
