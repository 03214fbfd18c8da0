"""An immutable, versioned dataset snapshot, built from the examples a source reader yields.

A snapshot is a folder holding the decoded, normalised inputs as NumPy arrays
(memory-mappable), their labels and splits, per-example metadata, a manifest of
every accepted file (path, sha256, label, split) and a validation report listing
every quarantined file with the reason. The dataset version is the hash of the
manifest's file hashes and labels. What happens here is the same for every
modality: duplicates, validation limits, versioning, splitting, writing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
from pydantic import BaseModel

from tasks.data.config import DataConfig
from tasks.data.contract import InputContract
from tasks.data.split import SPLITS, assign_split
from tasks.errors import LeptonError
from tasks.hashing import sha256_bytes

SPLIT_CODES = {name: code for code, name in enumerate(SPLITS)}


class DataValidationError(LeptonError, ValueError):
    """The dataset cannot be trained on; the message says why, what to change, and where the report is."""


class QuarantineEntry(BaseModel):
    """A file left out of the dataset, with the reason."""

    path: str
    reason: str


@dataclass
class Example:
    """One decoded, labelled input from a source, before it is accepted into a snapshot."""

    path: str  # relative to the source
    sha256: str  # of the file's bytes
    label: str
    raw: np.ndarray  # as the input contract decodes it
    meta: dict[str, float | int] = field(default_factory=dict)  # what statistics need besides ``raw``
    # What the split is drawn from, when not the content hash: identical table rows (or rows of one id) share it.
    split_key: str | None = None


class DatasetFile(BaseModel):
    """One accepted file of a snapshot."""

    path: str
    sha256: str
    label: str
    split: str


class DatasetManifest(BaseModel):
    """``manifest.json`` of a snapshot (released as ``dataset/manifest.json``): every accepted file."""

    dataset_version: str
    classes: list[str]
    files: list[DatasetFile]

    def split_files(self, split: str) -> list[DatasetFile]:
        """The files of one split, in snapshot order."""
        return [f for f in self.files if f.split == split]


class DatasetSnapshot(BaseModel):
    """A validated, normalised, split dataset on disk."""

    version: str
    directory: Path
    source: str
    classes: list[str]
    input: InputContract
    num_examples: int
    counts: dict[str, dict[str, int]]
    quarantined: list[QuarantineEntry]
    warnings: list[str] = []
    report_path: Path

    def _mask(self, split: str) -> np.ndarray:
        return np.load(self.directory / "splits.npy") == SPLIT_CODES[split]

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Raw inputs (as decoded: uint8 N x C x H x W for images) and labels of one split."""
        inputs = np.load(self.directory / "images.npy", mmap_mode="r")
        labels = np.load(self.directory / "labels.npy")
        mask = self._mask(split)
        return np.asarray(inputs[mask]), labels[mask]

    def model_inputs(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """One split as the model takes it (the contract's scaling applied) and its labels."""
        raw, labels = self.arrays(split)
        return self.input.to_model_input(raw), labels

    def metadata(self, split: str) -> pd.DataFrame:
        """Per-example metadata of one split (images: width and height on disk, before resizing)."""
        return pd.read_parquet(self.directory / "metadata.parquet")[self._mask(split)].reset_index(drop=True)

    def manifest(self) -> DatasetManifest:
        """Every accepted file with its hash, label and split."""
        return DatasetManifest.model_validate_json((self.directory / "manifest.json").read_text())

    def file_hashes(self, split: str) -> list[str]:
        """sha256 of each file of one split, in array order."""
        return [f.sha256 for f in self.manifest().split_files(split)]


def build_snapshot(
    items: Iterable[Example | QuarantineEntry],
    *,
    source: str,
    classes: list[str],
    files_seen: int,
    contract: InputContract,
    config: DataConfig,
    snapshots_dir: Path,
) -> DatasetSnapshot:
    """Accept a source's examples into a snapshot under ``snapshots_dir``, one folder per version.

    Args:
        items: examples and quarantine entries in the source's order, as its reader yields them.
        source: where they came from, for the report.
        classes: every class the source names (also those left without a valid example).
        files_seen: how many files the source holds, for the quarantine share.
        contract: how the examples were decoded; kept with the snapshot.
        config: split fractions, salt and validation limits.

    Returns:
        The snapshot; writing is skipped when that version already exists.

    Raises:
        DataValidationError: fewer than two classes, a class below ``min_images_per_class``,
            too many quarantined files, or an empty split. The validation report is written before raising.
    """
    accepted, quarantined = _drop_duplicates(items)
    class_counts = Counter(example.label for example in accepted)
    splits = [assign_split(e.split_key or e.sha256, config.val_fraction, config.test_fraction, config.split_salt) for e in accepted]
    tally: dict[str, dict[str, int]] = {s: defaultdict(int) for s in SPLITS}
    for example, split in zip(accepted, splits):
        tally[split][example.label] += 1
    counts = {s: {c: tally[s].get(c, 0) for c in classes} for s in SPLITS}
    manifest_rows = sorted((e.sha256, e.label) for e in accepted)
    version = sha256_bytes(json.dumps([list(row) for row in manifest_rows], separators=(",", ":")).encode())[:16]
    directory, report_path, notes = _validated(
        source=source, files_seen=files_seen, accepted=len(accepted), quarantined=quarantined, class_counts=class_counts,
        counts=counts, classes=classes, version=version, contract=contract, config=config, snapshots_dir=snapshots_dir,
    )

    _write_arrays(directory, accepted, splits, classes, version)
    return DatasetSnapshot(
        version=version,
        directory=directory,
        source=source,
        classes=classes,
        input=contract,
        num_examples=len(accepted),
        counts=counts,
        quarantined=quarantined,
        warnings=notes,
        report_path=report_path,
    )


def _validated(
    *,
    source: str,
    files_seen: int,
    accepted: int,
    quarantined: list[QuarantineEntry],
    class_counts: Counter[str],
    counts: dict[str, dict[str, int]],
    classes: list[str],
    version: str,
    contract: InputContract,
    config: DataConfig,
    snapshots_dir: Path,
) -> tuple[Path, Path, list[str]]:
    """The snapshot's folder, its validation report (written) and the notes on the split.

    Raises:
        DataValidationError: the dataset cannot be trained on; the report is written first.
    """
    problems = _problems(classes, class_counts, counts, len(quarantined), files_seen, config)
    directory = snapshots_dir / version / contract.folder_name
    report_dir = directory if not problems else snapshots_dir / "rejected" / version
    report_dir.mkdir(parents=True, exist_ok=True)
    report_path = report_dir / "validation_report.json"
    # Hash splitting keeps files in place as data grows, at the price of exact per-class shares:
    # a small class can end up absent from a split, which the report says rather than hides.
    notes = [
        f"class {c!r} has no {s} examples ({class_counts.get(c, 0)} in total); add examples or change split_salt"
        for c in classes
        if class_counts.get(c, 0) > 0
        for s in SPLITS
        if counts[s][c] == 0
    ]
    report: dict[str, object] = {
        "source": source,
        "files_seen": files_seen,
        "accepted": accepted,
        "quarantined": [q.model_dump() for q in quarantined],
        "images_per_class": {c: class_counts.get(c, 0) for c in classes},
        "problems": problems,
        "dataset_version": version,
        "counts": counts,
        "warnings": notes,
    }
    _write_json(report_path, report)
    if problems:
        raise DataValidationError(f"dataset {source} rejected: " + "; ".join(problems) + f". Validation report: {report_path}")
    return directory, report_path, notes


def _drop_duplicates(items: Iterable[Example | QuarantineEntry]) -> tuple[list[Example], list[QuarantineEntry]]:
    """Examples with unique content, and the quarantine (the source's entries, duplicates, conflicts) in order."""
    accepted: list[Example] = []
    quarantined: list[QuarantineEntry] = []
    seen: dict[str, Example] = {}
    conflicting: set[str] = set()
    for item in items:
        if isinstance(item, QuarantineEntry):
            quarantined.append(item)
            continue
        first = seen.get(item.sha256)
        if first is None:
            seen[item.sha256] = item
            accepted.append(item)
        elif first.label != item.label:
            conflicting.add(item.sha256)
            quarantined.append(
                QuarantineEntry(path=item.path, reason=f"same content as {first.path} but labelled {first.label!r}")
            )
        else:
            quarantined.append(QuarantineEntry(path=item.path, reason=f"duplicate of {first.path}"))
    # Content labelled two ways cannot be trusted under either label.
    quarantined += [
        QuarantineEntry(path=e.path, reason="same content appears under another class")
        for e in accepted
        if e.sha256 in conflicting
    ]
    return [e for e in accepted if e.sha256 not in conflicting], quarantined


def _problems(
    classes: list[str],
    class_counts: Counter[str],
    counts: dict[str, dict[str, int]],
    quarantined: int,
    files_seen: int,
    config: DataConfig,
) -> list[str]:
    """Why the dataset cannot be trained on; empty when it can."""
    problems = []
    usable = [c for c in classes if class_counts.get(c, 0) > 0]
    if len(usable) < 2:
        problems.append(f"need at least 2 classes with valid examples, found {len(usable)}: {usable}")
    small = {c: class_counts.get(c, 0) for c in classes if class_counts.get(c, 0) < config.min_images_per_class}
    if small:
        problems.append(
            f"classes below min_images_per_class={config.min_images_per_class}: "
            + ", ".join(f"{c} ({n})" for c, n in small.items())
        )
    share = quarantined / max(files_seen, 1)
    if share > config.max_quarantine_fraction:
        problems.append(
            f"{quarantined} of {files_seen} files quarantined ({share:.0%}), "
            f"above max_quarantine_fraction={config.max_quarantine_fraction:.0%}"
        )
    total = sum(class_counts.values())
    empty = [split for split in SPLITS if total and not sum(counts[split].values())]
    if empty:
        # Training needs train and val images, the gate and every variant's numbers need test examples.
        problems.append(
            f"the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty with {total} examples "
            f"(val_fraction={config.val_fraction}, test_fraction={config.test_fraction}); add examples, "
            "or change the fractions or split_salt"
        )
    return problems


def _write_arrays(directory: Path, accepted: list[Example], splits: list[str], classes: list[str], version: str) -> None:
    """Arrays first, manifest last: a folder without ``manifest.json`` is an interrupted write."""
    if not (directory / "metadata.parquet").exists():  # also fills in snapshots written before metadata was kept
        pd.DataFrame([e.meta for e in accepted]).to_parquet(directory / "metadata.parquet", index=False)
    if (directory / "manifest.json").exists():
        return
    class_index = {c: i for i, c in enumerate(classes)}
    np.save(directory / "images.npy", np.stack([e.raw for e in accepted]))
    np.save(directory / "labels.npy", np.array([class_index[e.label] for e in accepted], dtype=np.int64))
    np.save(directory / "splits.npy", np.array([SPLIT_CODES[s] for s in splits], dtype=np.uint8))
    # DatasetManifest's layout, written as plain dicts: a million rows of a table are a million entries.
    manifest = {
        "dataset_version": version,
        "classes": classes,
        "files": [{"path": e.path, "sha256": e.sha256, "label": e.label, "split": s} for e, s in zip(accepted, splits)],
    }
    _write_json(directory / "manifest.json", manifest)


def _write_json(path: Path, payload: object) -> None:
    """Write JSON through a temporary file so a crash never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY))
    os.replace(tmp, path)


@dataclass(frozen=True)
class EncodedChunk:
    """A chunk of a table's rows in the contract's raw encoding, and why some of its rows cannot be used."""

    start: int  # the first row's index in the whole table
    raw: np.ndarray  # rows x columns
    invalid: dict[int, str]  # row -> why its cells do not fit the contract (unless it has a reason already)
    named: dict[int, str]  # row -> its reason, written now that the chunk's cells can name it (replaces the first)


@dataclass
class TableRows:
    """A table's rows for a snapshot, as arrays of a few bytes per row and chunks encoded on demand."""

    contract: InputContract
    labels: np.ndarray  # class index per row (-1: no label)
    splits: np.ndarray  # SPLIT_CODES per row
    identity: np.ndarray  # S16 per row: unique among usable rows
    content: np.ndarray  # S16 per row: the hash of its values (part of the version, also when rows are known by id)
    lines: np.ndarray  # the file line of each row
    where: Callable[[int], str]  # a row's name, ``file:line``
    chunks: Callable[[], Iterator[EncodedChunk]]  # every row, encoded, in order


def write_table_snapshot(
    rows: TableRows,
    *,
    reasons: dict[int, str],
    quarantined: list[QuarantineEntry],
    source: str,
    classes: list[str],
    config: DataConfig,
    snapshots_dir: Path,
) -> DatasetSnapshot:
    """Accept a table's usable rows into a snapshot, streaming them to disk chunk by chunk.

    ``reasons`` are the rows already known unusable; rows whose cells the contract refuses join
    them as their chunks are encoded. Checked and reported as :func:`build_snapshot` does.

    Raises:
        DataValidationError: as :func:`build_snapshot`.
    """
    snapshots_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".writing-", dir=snapshots_dir))
    try:
        accepted_parts = []
        with (scratch / "raw.bin").open("wb") as out:
            for chunk in rows.chunks():
                for i, reason in chunk.invalid.items():
                    reasons.setdefault(i, reason)
                # A repeated id's reason is written once its id can be named; another reason found first stays.
                reasons.update({i: r for i, r in chunk.named.items() if reasons.get(i, "").startswith("id repeats")})
                index = np.arange(chunk.start, chunk.start + len(chunk.raw))
                keep = np.array([i not in reasons for i in index], dtype=bool)
                out.write(np.ascontiguousarray(chunk.raw[keep], dtype=np.float64).tobytes())
                accepted_parts.append(index[keep])
        accepted = np.concatenate(accepted_parts) if accepted_parts else np.zeros(0, np.int64)
        labels, splits, identity = rows.labels[accepted], rows.splits[accepted], rows.identity[accepted]
        class_counts = Counter({classes[c]: int(n) for c, n in enumerate(np.bincount(labels, minlength=len(classes))) if n})
        counts = {
            s: {c: int(((labels == k) & (splits == SPLIT_CODES[s])).sum()) for k, c in enumerate(classes)} for s in SPLITS
        }
        quarantined = quarantined + [QuarantineEntry(path=rows.where(i), reason=reasons[i]) for i in sorted(reasons)]
        order = np.argsort(identity, kind="stable")
        digest = hashlib.sha256(identity[order].tobytes())
        digest.update("\n".join(classes).encode() + labels[order].astype("<i8").tobytes())
        # The rows' values too: a row known by its id whose values changed is another dataset.
        digest.update(rows.content[accepted][order].tobytes())
        version = digest.hexdigest()[:16]
        files_seen = len(rows.labels) + len(quarantined) - len(reasons)
        directory, report_path, notes = _validated(
            source=source, files_seen=files_seen, accepted=len(accepted), quarantined=quarantined, class_counts=class_counts,
            counts=counts, classes=classes, version=version, contract=rows.contract, config=config, snapshots_dir=snapshots_dir,
        )
        if not (directory / "manifest.json").exists():
            _write_table_arrays(directory, scratch / "raw.bin", rows, accepted, classes, version)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return DatasetSnapshot(
        version=version, directory=directory, source=source, classes=classes, input=rows.contract,
        num_examples=len(accepted), counts=counts, quarantined=quarantined, warnings=notes, report_path=report_path,
    )


def _write_table_arrays(directory: Path, raw: Path, rows: TableRows, accepted: np.ndarray, classes: list[str], version: str) -> None:
    """The snapshot's arrays and manifest, from the accepted rows' encoding on disk; the manifest last."""
    width = len(rows.contract.columns)
    with (directory / "images.npy").open("wb") as out, raw.open("rb") as data:
        np.lib.format.write_array_header_2_0(out, {"descr": "<f8", "fortran_order": False, "shape": (len(accepted), width)})
        shutil.copyfileobj(data, out, 1 << 24)
    np.save(directory / "labels.npy", rows.labels[accepted].astype(np.int64))
    np.save(directory / "splits.npy", rows.splits[accepted].astype(np.uint8))
    pd.DataFrame({"line": rows.lines[accepted]}).to_parquet(directory / "metadata.parquet", index=False)
    # DatasetManifest's layout (keys in order), written entry by entry: a million rows are a million entries.
    tmp = directory / "manifest.json.tmp"
    with tmp.open("wb") as out:
        out.write(b'{\n  "classes": ' + orjson.dumps(classes) + b',\n  "dataset_version": ' + orjson.dumps(version))
        out.write(b',\n  "files": [')
        for start in range(0, len(accepted), 50_000):
            part = accepted[start : start + 50_000]
            entries = [
                {"label": classes[int(rows.labels[i])], "path": rows.where(int(i)), "sha256": rows.identity[i].hex(),
                 "split": SPLITS[int(rows.splits[i])]}
                for i in part
            ]
            # One dump per part: orjson's output buffers are kilobytes each, a million small dumps are gigabytes.
            out.write((b"," if start else b"") + orjson.dumps(entries)[1:-1])
        out.write(b"]\n}")
    os.replace(tmp, directory / "manifest.json")
