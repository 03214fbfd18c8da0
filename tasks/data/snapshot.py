"""Ingest an ImageFolder into an immutable, versioned dataset snapshot.

A snapshot is a folder holding the decoded, normalised images as NumPy
arrays (memory-mappable), their labels and splits, a manifest of every
accepted file (path, sha256, label, split) and a validation report listing
every quarantined file with the reason. The dataset version is the hash of
the manifest's file hashes and labels.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
from pydantic import BaseModel

from tasks.data.config import DataConfig
from tasks.data.images import BadImage, decode_image
from tasks.data.split import SPLITS, assign_split
from tasks.hashing import sha256_bytes, sha256_file

SPLIT_CODES = {name: code for code, name in enumerate(SPLITS)}


class DataValidationError(ValueError):
    """The dataset cannot be trained on; the message says why and what to change."""


class QuarantineEntry(BaseModel):
    """A file left out of the dataset, with the reason."""

    path: str
    reason: str


class DatasetSnapshot(BaseModel):
    """A validated, normalised, split dataset on disk."""

    version: str
    directory: Path
    source: str
    classes: list[str]
    image_size: int
    channels: int
    num_images: int
    counts: dict[str, dict[str, int]]
    quarantined: list[QuarantineEntry]
    warnings: list[str] = []
    report_path: Path

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Images (uint8, N x C x H x W) and labels of one split."""
        images = np.load(self.directory / "images.npy", mmap_mode="r")
        labels = np.load(self.directory / "labels.npy")
        splits = np.load(self.directory / "splits.npy")
        mask = splits == SPLIT_CODES[split]
        return np.asarray(images[mask]), labels[mask]

    def original_sizes(self, split: str) -> np.ndarray:
        """(width, height) of each image of one split as it was on disk, before resizing."""
        splits = np.load(self.directory / "splits.npy")
        return np.load(self.directory / "sizes.npy")[splits == SPLIT_CODES[split]]

    def file_hashes(self, split: str) -> list[str]:
        """sha256 of each image file of one split, in array order."""
        files = json.loads((self.directory / "manifest.json").read_text())["files"]
        return [f["sha256"] for f in files if f["split"] == split]


def _class_files(root: Path) -> tuple[dict[str, list[Path]], list[QuarantineEntry]]:
    """Files per class folder (recursively), and the stray files outside any class folder."""
    per_class: dict[str, list[Path]] = {}
    stray: list[QuarantineEntry] = []
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and entry.name.startswith("."):
            # Tool folders (.git, .ipynb_checkpoints) are not classes; say so instead of training on them.
            stray.append(QuarantineEntry(path=entry.name, reason="hidden folder, not a class: ignored"))
        elif entry.is_dir():
            # A directory named like an image file is listed so it is reported, not silently skipped.
            per_class[entry.name] = sorted(p for p in entry.rglob("*") if not p.is_dir() or p.suffix)
        else:
            stray.append(QuarantineEntry(path=str(entry.relative_to(root)), reason="not inside a class folder"))
    return per_class, stray


def ingest_imagefolder(
    root: Path,
    config: DataConfig,
    snapshots_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetSnapshot:
    """Validate every file under ``root`` and write a snapshot under ``snapshots_dir``.

    Args:
        root: ImageFolder directory, one subfolder per class.
        config: size, channels, split fractions and validation limits.
        snapshots_dir: where snapshot folders are written, one per version.
        progress: called with (files done, files total) while decoding.

    Returns:
        The snapshot; writing is skipped when that version already exists.

    Raises:
        DataValidationError: missing or empty folder, fewer than two classes,
            a class below ``min_images_per_class``, or too many quarantined files.
            The validation report is written before raising.
    """
    if not root.exists():
        raise DataValidationError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataValidationError(f"data source {root} is not a folder (expected one subfolder per class)")
    per_class, stray = _class_files(root)
    quarantined = list(stray)
    total = sum(len(files) for files in per_class.values())
    if total == 0:
        raise DataValidationError(
            f"data folder {root} holds no image files (expected one subfolder per class with images inside)"
        )

    accepted: list[tuple[str, str, str, np.ndarray]] = []  # relpath, sha256, class, pixels
    original_sizes: dict[str, tuple[int, int]] = {}  # relpath -> (width, height) before resizing
    seen: dict[str, tuple[str, str]] = {}  # sha256 -> (relpath, class)
    conflicting: set[str] = set()
    done = 0
    for class_name, files in per_class.items():
        for path in files:
            rel = str(path.relative_to(root))
            done += 1
            if progress and (done % 200 == 0 or done == total):
                progress(done, total)
            try:
                pixels, original_sizes[rel] = decode_image(path, config.image_size, config.channels)
                digest = sha256_file(path)
            except BadImage as bad:
                quarantined.append(QuarantineEntry(path=rel, reason=bad.reason))
                continue
            except OSError as exc:  # decoded, then vanished or became unreadable before hashing
                quarantined.append(QuarantineEntry(path=rel, reason=f"unreadable: {exc.strerror or exc}"))
                continue
            if digest in seen:
                first_rel, first_class = seen[digest]
                if first_class != class_name:
                    conflicting.add(digest)
                    quarantined.append(
                        QuarantineEntry(path=rel, reason=f"same content as {first_rel} but labelled {first_class!r}")
                    )
                else:
                    quarantined.append(QuarantineEntry(path=rel, reason=f"duplicate of {first_rel}"))
                continue
            seen[digest] = (rel, class_name)
            accepted.append((rel, digest, class_name, pixels))
    # Content labelled two ways cannot be trusted under either label.
    for rel, digest, class_name, _ in [a for a in accepted if a[1] in conflicting]:
        quarantined.append(QuarantineEntry(path=rel, reason="same content appears under another class"))
    accepted = [a for a in accepted if a[1] not in conflicting]

    class_counts = Counter(class_name for _, _, class_name, _ in accepted)
    classes = sorted(per_class)
    report = {
        "source": str(root),
        "files_seen": total + len(stray),
        "accepted": len(accepted),
        "quarantined": [q.model_dump() for q in quarantined],
        "images_per_class": {c: class_counts.get(c, 0) for c in classes},
    }
    problems = []
    usable = [c for c in classes if class_counts.get(c, 0) > 0]
    if len(usable) < 2:
        problems.append(f"need at least 2 classes with valid images, found {len(usable)}: {usable}")
    small = {c: class_counts.get(c, 0) for c in classes if class_counts.get(c, 0) < config.min_images_per_class}
    if small:
        problems.append(
            f"classes below min_images_per_class={config.min_images_per_class}: "
            + ", ".join(f"{c} ({n})" for c, n in small.items())
        )
    share = len(quarantined) / max(report["files_seen"], 1)
    if share > config.max_quarantine_fraction:
        problems.append(
            f"{len(quarantined)} of {report['files_seen']} files quarantined ({share:.0%}), "
            f"above max_quarantine_fraction={config.max_quarantine_fraction:.0%}"
        )

    manifest_rows = sorted((digest, class_name, rel) for rel, digest, class_name, _ in accepted)
    version = sha256_bytes(
        json.dumps([[d, c] for d, c, _ in manifest_rows], separators=(",", ":")).encode()
    )[:16]
    directory = snapshots_dir / version / f"{config.channels}x{config.image_size}x{config.image_size}"
    report_dir = directory if not problems else snapshots_dir / "rejected" / version
    report_dir.mkdir(parents=True, exist_ok=True)
    report_path = report_dir / "validation_report.json"
    report["problems"] = problems
    report["dataset_version"] = version

    class_index = {c: i for i, c in enumerate(classes)}
    splits = [
        assign_split(digest, config.val_fraction, config.test_fraction, config.split_salt)
        for _, digest, _, _ in accepted
    ]
    counts: dict[str, dict[str, int]] = {s: defaultdict(int) for s in SPLITS}  # type: ignore[misc]
    for (_, _, class_name, _), split in zip(accepted, splits):
        counts[split][class_name] += 1
    counts = {s: {c: counts[s].get(c, 0) for c in classes} for s in SPLITS}
    report["counts"] = counts
    # Hash splitting keeps files in place as data grows, at the price of exact per-class shares:
    # a small class can end up absent from a split, which the report says rather than hides.
    notes = [
        f"class {c!r} has no {s} images ({class_counts.get(c, 0)} in total); add images or change split_salt"
        for c in usable
        for s in SPLITS
        if counts[s][c] == 0
    ]
    report["warnings"] = notes
    _write_json(report_path, report)
    if problems:
        raise DataValidationError(
            f"dataset {root} rejected: " + "; ".join(problems) + f". Validation report: {report_path}"
        )

    if not (directory / "sizes.npy").exists():  # also fills in snapshots written before sizes were kept
        np.save(directory / "sizes.npy", np.array([original_sizes[a[0]] for a in accepted], dtype=np.int64))
    if not (directory / "manifest.json").exists():
        # Arrays first, manifest last: a folder without manifest.json is an interrupted write.
        np.save(directory / "images.npy", np.stack([a[3] for a in accepted]))
        np.save(directory / "labels.npy", np.array([class_index[a[2]] for a in accepted], dtype=np.int64))
        np.save(directory / "splits.npy", np.array([SPLIT_CODES[s] for s in splits], dtype=np.uint8))
        _write_json(
            directory / "manifest.json",
            {
                "dataset_version": version,
                "classes": classes,
                "files": [
                    {"path": rel, "sha256": digest, "label": class_name, "split": split}
                    for (rel, digest, class_name, _), split in zip(accepted, splits)
                ],
            },
        )
    return DatasetSnapshot(
        version=version,
        directory=directory,
        source=str(root),
        classes=classes,
        image_size=config.image_size,
        channels=config.channels,
        num_images=len(accepted),
        counts=counts,
        quarantined=quarantined,
        warnings=notes,
        report_path=report_path,
    )


def _write_json(path: Path, payload: object) -> None:
    """Write JSON through a temporary file so a crash never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)
