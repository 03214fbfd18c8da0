"""Ingestion: quarantine, snapshot contents, versions and the failures a user must see."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.data.config import DataConfig
from tasks.data.imagefolder import ingest_imagefolder
from tasks.data.snapshot import DataValidationError
from tests.conftest import write_class_images

CONFIG = DataConfig(image_size=8, min_images_per_class=5)


def test_bad_files_are_quarantined_and_listed_not_dropped(image_folder: Path, tmp_path: Path) -> None:
    (image_folder / "a" / "empty.png").write_bytes(b"")
    (image_folder / "b" / "notes.txt").write_text("not an image")
    good = (image_folder / "c" / "c_000.png").read_bytes()
    (image_folder / "c" / "cut.png").write_bytes(good[: len(good) // 2])
    (image_folder / "stray.png").write_bytes(good)
    (image_folder / ".ipynb_checkpoints").mkdir()
    (image_folder / ".ipynb_checkpoints" / "a-checkpoint.png").write_bytes(good)

    snapshot = ingest_imagefolder(image_folder, CONFIG, tmp_path / "snaps")

    reasons = {q.path: q.reason for q in snapshot.quarantined}
    assert set(reasons) == {"a/empty.png", "b/notes.txt", "c/cut.png", "stray.png", ".ipynb_checkpoints"}
    assert "hidden folder" in reasons[".ipynb_checkpoints"] and snapshot.classes == ["a", "b", "c"]
    assert "zero-byte" in reasons["a/empty.png"]
    assert "not an image" in reasons["b/notes.txt"]
    assert "truncated" in reasons["c/cut.png"] or "corrupt" in reasons["c/cut.png"]
    assert "class folder" in reasons["stray.png"]
    report = json.loads(snapshot.report_path.read_text())
    assert {q["path"] for q in report["quarantined"]} == set(reasons)
    assert snapshot.num_examples == 36
    assert sum(sum(c.values()) for c in snapshot.counts.values()) == 36


def test_snapshot_arrays_match_counts_and_config(image_folder: Path, tmp_path: Path) -> None:
    snapshot = ingest_imagefolder(image_folder, CONFIG, tmp_path / "snaps")
    assert snapshot.classes == ["a", "b", "c"]
    total = 0
    for split in ("train", "val", "test"):
        images, labels = snapshot.arrays(split)
        assert images.shape[1:] == (1, 8, 8) and images.dtype == np.uint8
        assert len(images) == len(labels) == sum(snapshot.counts[split].values())
        total += len(images)
    assert total == 36
    manifest = snapshot.manifest()
    assert len(manifest.files) == 36 and manifest.dataset_version == snapshot.version
    assert [f.sha256 for f in manifest.split_files("test")] == snapshot.file_hashes("test")
    assert snapshot.metadata("test").shape == (sum(snapshot.counts["test"].values()), 2)


def test_version_depends_on_content_and_labels_only(image_folder: Path, tmp_path: Path) -> None:
    first = ingest_imagefolder(image_folder, CONFIG, tmp_path / "s1")
    moved = tmp_path / "moved"
    shutil.copytree(image_folder, moved)
    (moved / "a" / "a_000.png").rename(moved / "a" / "renamed.png")
    assert ingest_imagefolder(moved, CONFIG, tmp_path / "s2").version == first.version
    shutil.move(str(moved / "a" / "a_001.png"), moved / "b" / "relabelled.png")
    assert ingest_imagefolder(moved, CONFIG, tmp_path / "s3").version != first.version


def test_conflicting_duplicates_are_quarantined(image_folder: Path, tmp_path: Path) -> None:
    shutil.copyfile(image_folder / "a" / "a_000.png", image_folder / "b" / "copy_of_a.png")
    shutil.copyfile(image_folder / "c" / "c_000.png", image_folder / "c" / "zz_again.png")
    snapshot = ingest_imagefolder(image_folder, CONFIG, tmp_path / "snaps")
    reasons = {q.path: q.reason for q in snapshot.quarantined}
    assert "labelled 'a'" in reasons["b/copy_of_a.png"]
    assert "another class" in reasons["a/a_000.png"]
    assert "duplicate of" in reasons["c/zz_again.png"]
    assert snapshot.num_examples == 36 - 1  # a_000 is out, the same-class copy counted once


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="does not exist"):
        ingest_imagefolder(tmp_path / "nope", CONFIG, tmp_path / "snaps")


def test_empty_folder_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataValidationError, match="no image files"):
        ingest_imagefolder(tmp_path / "empty", CONFIG, tmp_path / "snaps")


def test_single_class_is_rejected(tmp_path: Path) -> None:
    root = write_class_images(tmp_path / "one", {"only": 10})
    with pytest.raises(DataValidationError, match="at least 2 classes"):
        ingest_imagefolder(root, CONFIG, tmp_path / "snaps")


def test_small_class_is_named_and_report_survives(tmp_path: Path) -> None:
    root = write_class_images(tmp_path / "imgs", {"big": 10, "tiny": 3})
    with pytest.raises(DataValidationError, match=r"tiny \(3\)") as info:
        ingest_imagefolder(root, CONFIG, tmp_path / "snaps")
    report_path = Path(str(info.value).rsplit("Validation report: ", 1)[1])
    assert json.loads(report_path.read_text())["images_per_class"] == {"big": 10, "tiny": 3}


def test_mostly_broken_folder_is_rejected(tmp_path: Path) -> None:
    root = write_class_images(tmp_path / "imgs", {"a": 5, "b": 5})
    for i in range(12):
        (root / "a" / f"junk{i}.png").write_bytes(b"junk")
    with pytest.raises(DataValidationError, match="max_quarantine_fraction"):
        ingest_imagefolder(root, CONFIG.model_copy(update={"max_quarantine_fraction": 0.5}), tmp_path / "snaps")


def test_rgb_images_are_ingested_as_grayscale_when_configured(tmp_path: Path) -> None:
    # Enough images that no split comes out empty (13 left the val split empty, which is now refused).
    root = write_class_images(tmp_path / "imgs", {"a": 12, "b": 12})
    Image.fromarray(np.full((12, 12, 3), 90, np.uint8), mode="RGB").save(root / "a" / "rgb.png")
    snapshot = ingest_imagefolder(root, CONFIG, tmp_path / "snaps")
    assert snapshot.num_examples == 25 and not snapshot.quarantined


def test_an_empty_split_is_rejected_with_the_fractions(tmp_path: Path) -> None:
    root = write_class_images(tmp_path / "imgs", {"a": 6, "b": 6})
    config = CONFIG.model_copy(update={"test_fraction": 0.0001, "val_fraction": 0.3})
    with pytest.raises(DataValidationError, match=r"the test split is empty with 12 examples \(val_fraction=0.3, test_fraction=0.0001\)") as info:
        ingest_imagefolder(root, config, tmp_path / "snaps")
    report = json.loads(Path(str(info.value).rsplit("Validation report: ", 1)[1]).read_text())
    assert sum(report["counts"]["test"].values()) == 0 and report["problems"]
