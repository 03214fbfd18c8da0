"""Split assignment: deterministic, stable under additions, proportional per class."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tasks.data.config import DataConfig
from tasks.data.imagefolder import ingest_imagefolder
from tasks.data.split import assign_split
from tasks.hashing import sha256_bytes
from tests.conftest import write_class_images


def _splits(snapshot) -> dict[str, str]:
    return {f.sha256: f.split for f in snapshot.manifest().files}


def test_adding_files_never_moves_existing_files(tmp_path: Path) -> None:
    config = DataConfig(image_size=8, min_images_per_class=5)
    root = write_class_images(tmp_path / "imgs", {"a": 20, "b": 20}, seed=1)
    before = _splits(ingest_imagefolder(root, config, tmp_path / "s1"))
    write_class_images(tmp_path / "more", {"a": 15, "b": 15, "c": 15}, seed=2)
    for path in (tmp_path / "more").rglob("*.png"):
        (root / path.parent.name).mkdir(exist_ok=True)
        path.rename(root / path.parent.name / f"new_{path.name}")
    after = _splits(ingest_imagefolder(root, config, tmp_path / "s2"))
    assert len(after) == len(before) + 45
    assert all(after[digest] == split for digest, split in before.items())


def test_assignment_is_deterministic_and_salted() -> None:
    digests = [sha256_bytes(str(i).encode()) for i in range(2000)]
    first = [assign_split(d, 0.15, 0.15, "lepton") for d in digests]
    assert first == [assign_split(d, 0.15, 0.15, "lepton") for d in digests]
    assert first != [assign_split(d, 0.15, 0.15, "other") for d in digests]


def test_fractions_hold_within_each_class(digits_snapshot) -> None:
    for class_name in digits_snapshot.classes:
        counts = {s: digits_snapshot.counts[s][class_name] for s in ("train", "val", "test")}
        total = sum(counts.values())
        # ~180 images per digit: binomial spread of a 15% share stays well inside 5-28%.
        assert 0.05 < counts["test"] / total < 0.28, (class_name, counts)
        assert 0.05 < counts["val"] / total < 0.28, (class_name, counts)
        assert counts["train"] / total > 0.5, (class_name, counts)


def test_overall_shares_follow_the_configured_fractions() -> None:
    digests = [sha256_bytes(f"file-{i}".encode()) for i in range(20000)]
    shares = Counter(assign_split(d, 0.2, 0.1, "s") for d in digests)
    assert abs(shares["val"] / 20000 - 0.2) < 0.015
    assert abs(shares["test"] / 20000 - 0.1) < 0.015


def test_a_class_missing_from_a_split_is_reported(tmp_path: Path) -> None:
    # Three images per class: with 15% val/test shares, some class misses a split.
    root = write_class_images(tmp_path / "imgs", {"a": 3, "b": 3, "c": 3, "d": 3}, seed=4)
    snapshot = ingest_imagefolder(root, DataConfig(image_size=8, min_images_per_class=3), tmp_path / "snaps")
    missing = [(c, s) for s in ("val", "test") for c in snapshot.classes if snapshot.counts[s][c] == 0]
    assert missing
    for class_name, split in missing:
        assert any(f"class {class_name!r} has no {split} examples" in w for w in snapshot.warnings)
    assert json.loads(snapshot.report_path.read_text())["warnings"] == snapshot.warnings
