"""An immutable, versioned dataset snapshot, built from the examples a source reader yields.

A snapshot is a folder holding the decoded, normalised inputs as NumPy arrays, their labels and splits, per-example metadata, a manifest of
every accepted file (path, sha256, label, split) and a validation report listing
every quarantined file with the reason. The dataset version is the hash of the
manifest's file hashes and labels. What happens here is the same for every
modality: duplicates, validation limits, versioning, splitting, writing.

Inputs are stored split by split (train, then val, then test), so each split is one
contiguous range of ``images.npy``, read a batch at a time (``StoredRows``) by whoever
consumes it: no step holds a whole split in memory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
from pydantic import BaseModel

from tasks.data.config import DataConfig
from tasks.data.contract import InputContract
from tasks.data.split import SPLITS, assign_split
from tasks.data.stored import StoredRows
from tasks.errors import LeptonError

SPLIT_CODES = {name: code for code, name in enumerate(SPLITS)}


class DataValidationError(LeptonError, ValueError):
    """The dataset cannot be trained on; the message says why, what to change, and where the report is."""


class QuarantineEntry(BaseModel):
    """A file left out of the dataset, with the reason."""

    path: str
    reason: str


class TextColumn(Sequence[str]):
    """Strings kept as one UTF-8 buffer and their end offsets: 8 bytes and their text each, not a Python object each.

    A million file paths are tens of MiB as a list of ``str``, a quarter of that here.
    """

    def __init__(self, texts: Iterable[str]) -> None:
        data, ends = bytearray(), array("q")
        for text in texts:
            data += text.encode()
            ends.append(len(data))
        self._data = bytes(data)
        self._ends = np.frombuffer(ends, dtype=np.int64).copy() if len(ends) else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self._ends)

    def _text(self, i: int) -> str:
        return self._data[int(self._ends[i - 1]) if i else 0 : int(self._ends[i])].decode()

    def __getitem__(self, index: int | slice) -> str | list[str]:  # type: ignore[override]
        if isinstance(index, slice):
            return [self._text(i) for i in range(*index.indices(len(self)))]
        position = index if index >= 0 else index + len(self)
        if not 0 <= position < len(self):
            raise IndexError(f"text {index} of {len(self)}")
        return self._text(position)


@dataclass
class DecodedFiles:
    """A source's files once decoded, a few bytes each: what a snapshot is built from besides the inputs.

    File ``i``'s decoded input is row ``i`` of the inputs (see ``build_snapshot``); nothing here grows
    with the size of an input, so a million files fit in tens of MiB.
    """

    paths: Sequence[str]  # relative to the source, in source order
    labels: np.ndarray  # class index per file
    digests: np.ndarray  # N x 32 uint8: sha256 of each file's bytes (unused where ``reasons`` holds the file)
    meta: dict[str, np.ndarray]  # per-file columns statistics need besides the input (images: size on disk)
    reasons: dict[int, str]  # file -> why it is quarantined


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

    def _rows(self, split: str) -> slice | np.ndarray:
        """The split's rows: a slice (snapshots store splits one after another), or their indices in older snapshots."""
        rows = np.flatnonzero(np.load(self.directory / "splits.npy") == SPLIT_CODES[split])
        if not len(rows) or rows[-1] - rows[0] + 1 == len(rows):
            return slice(int(rows[0]), int(rows[-1]) + 1) if len(rows) else slice(0, 0)
        return rows

    def count(self, split: str) -> int:
        """How many examples one split holds."""
        return sum(self.counts[split].values())

    def arrays(self, split: str) -> tuple[StoredRows, np.ndarray]:
        """Raw inputs (as decoded: uint8 N x C x H x W for images) and labels of one split.

        The inputs stay on disk: index them a batch at a time (``raw[i:j]``, ``raw[index_array]``);
        ``np.asarray(raw)`` reads the whole split into memory.
        """
        rows = self._rows(split)
        return StoredRows.from_npy(self.directory / "images.npy").select(rows), np.load(self.directory / "labels.npy")[rows]

    def model_inputs(self, split: str) -> tuple[SplitInputs, np.ndarray]:
        """One split as the model takes it (the contract's scaling applied, a batch at a time) and its labels."""
        raw, labels = self.arrays(split)
        return SplitInputs(raw, self.input), labels

    def metadata(self, split: str) -> pd.DataFrame:
        """Per-example metadata of one split (images: width and height on disk, before resizing)."""
        return pd.read_parquet(self.directory / "metadata.parquet").iloc[self._rows(split)].reset_index(drop=True)

    def manifest(self) -> DatasetManifest:
        """Every accepted file with its hash, label and split."""
        return DatasetManifest.model_validate_json((self.directory / "manifest.json").read_text())

    def file_hashes(self, split: str) -> list[str]:
        """sha256 of each file of one split, in array order."""
        # Plain dicts rather than DatasetManifest: a model object per file is a kilobyte, a million files a gigabyte.
        files = orjson.loads((self.directory / "manifest.json").read_bytes())["files"]
        return [f["sha256"] for f in files if f["split"] == split]


class SplitInputs:
    """One split's inputs as the model takes them, prepared from the snapshot on disk a slice at a time.

    It stands in for the float32 array wherever inputs are read in batches: ``len``, ``shape`` and
    ``inputs[i:j]`` (or an index array) give the prepared batch; nothing is held but the mapping.
    """

    def __init__(self, raw: StoredRows | np.ndarray, contract: InputContract) -> None:
        self.raw = raw
        self.contract = contract

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.raw), *self.raw.shape[1:])

    def __getitem__(self, index: slice | np.ndarray | list[int] | tuple) -> np.ndarray:
        if isinstance(index, tuple):  # rows first, then within the prepared batch: inputs[:, 0]
            return self[index[0]][(slice(None), *index[1:])]
        if isinstance(index, (int, np.integer)):
            raise TypeError("index SplitInputs with a slice or an index array: it returns a batch")
        return self.contract.to_model_input(np.asarray(self.raw[index]))

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        """The whole split prepared at once (small splits, tests): what the batches avoid."""
        return self[:] if dtype is None else self[:].astype(dtype)

    def batches(self, size: int) -> Iterator[np.ndarray]:
        """The prepared inputs in order, ``size`` at a time."""
        for start in range(0, len(self), size):
            yield self[start : start + size]


def build_snapshot(
    files: DecodedFiles,
    *,
    inputs: StoredRows,
    stray: list[QuarantineEntry],
    source: str,
    classes: list[str],
    contract: InputContract,
    config: DataConfig,
    snapshots_dir: Path,
) -> DatasetSnapshot:
    """Accept a source's decoded files into a snapshot under ``snapshots_dir``, one folder per version.

    Args:
        files: every file the source lists, decoded or with the reason it could not be.
        inputs: the decoded inputs, row ``i`` for file ``i`` (a scratch file on disk: accepted rows
            are copied from it to the snapshot in chunks).
        stray: entries the source quarantined before decoding (files outside any class folder).
        source: where they came from, for the report.
        classes: every class the source names (also those left without a valid example).
        contract: how the files were decoded; kept with the snapshot.
        config: split fractions, salt and validation limits.

    Returns:
        The snapshot; writing is skipped when that version already exists.

    Raises:
        DataValidationError: fewer than two classes, a class below ``min_images_per_class``,
            too many quarantined files, or an empty split. The validation report is written before raising.
    """
    accepted, quarantined = _drop_duplicates(files, classes)
    quarantined = stray + quarantined
    labels = files.labels[accepted]
    splits = np.array(
        [SPLIT_CODES[assign_split(files.digests[i].tobytes().hex(), config.val_fraction, config.test_fraction, config.split_salt)]
         for i in accepted],
        dtype=np.uint8,
    )
    class_counts = Counter({classes[c]: int(n) for c, n in enumerate(np.bincount(labels, minlength=len(classes))) if n})
    counts = {s: {c: int(((labels == k) & (splits == SPLIT_CODES[s])).sum()) for k, c in enumerate(classes)} for s in SPLITS}
    version = _content_version(files.digests, accepted, files.labels, classes)
    directory, report_path, notes = _validated(
        source=source, files_seen=len(files.paths) + len(stray), accepted=len(accepted), quarantined=quarantined,
        class_counts=class_counts, counts=counts, classes=classes, version=version, contract=contract, config=config,
        snapshots_dir=snapshots_dir,
    )
    if not (directory / "manifest.json").exists():
        _write_arrays(directory, inputs, files, accepted, splits, classes, version)
    elif not (directory / "metadata.parquet").exists():
        # Written before metadata was kept, in source order (before splits were stored one after another).
        pd.DataFrame({name: values[accepted] for name, values in files.meta.items()}).to_parquet(
            directory / "metadata.parquet", index=False
        )
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


def _content_version(digests: np.ndarray, rows: np.ndarray, labels: np.ndarray, classes: list[str]) -> str:
    """The dataset version: a hash of the (sha256, label) of every file in ``rows``, sorted, as a compact JSON list.

    Hashed as it is written, file by file: the same value as hashing the whole JSON text, without holding it.
    """
    names = [json.dumps(c).encode() for c in classes]
    digest = hashlib.sha256(b"[")
    for n, i in enumerate(_by_digest(digests, rows)):
        digest.update(b'%s["%s",%s]' % (b"," if n else b"", digests[i].tobytes().hex().encode(), names[labels[i]]))
    digest.update(b"]")
    return digest.hexdigest()[:16]


def _by_digest(digests: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``rows`` in the order of their sha256 bytes (stable), sorted by an 8-byte prefix: no copy of the digests.

    Rows whose prefixes tie (equal digests, or a 1 in 2**64 chance) are ordered by their whole digest.
    """
    prefix = np.ascontiguousarray(digests[rows, :8]).view(">u8").ravel()
    order = np.argsort(prefix, kind="stable")
    ordered, prefix = rows[order], prefix[order]
    ties = np.flatnonzero(prefix[1:] == prefix[:-1])
    if len(ties):
        starts = ties[np.r_[True, np.diff(ties) != 1]]
        ends = ties[np.r_[np.diff(ties) != 1, True]] + 2
        for start, end in zip(starts, ends):
            ordered[start:end] = sorted(ordered[start:end], key=lambda r: digests[r].tobytes())
    return ordered


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


def _drop_duplicates(files: DecodedFiles, classes: list[str]) -> tuple[np.ndarray, list[QuarantineEntry]]:
    """The files accepted (indices, in source order), and the quarantine: unreadable files, duplicates, conflicts.

    A file with the same bytes as an earlier one is a duplicate of it; content under two labels
    cannot be trusted under either, so the first file goes too.
    """
    usable = np.ones(len(files.paths), bool)
    usable[list(files.reasons)] = False
    order = _by_digest(files.digests, np.flatnonzero(usable))
    repeat = np.zeros(len(order), bool)
    same_prefix = np.flatnonzero((files.digests[order[1:], :8] == files.digests[order[:-1], :8]).all(axis=1))
    repeat[same_prefix + 1] = (files.digests[order[same_prefix + 1]] == files.digests[order[same_prefix]]).all(axis=1)
    first_at = np.maximum.accumulate(np.where(repeat, 0, np.arange(len(order))))
    reasons = dict(files.reasons)
    conflicting: set[int] = set()
    for at in np.flatnonzero(repeat):
        item, first = int(order[at]), int(order[first_at[at]])
        usable[item] = False
        if files.labels[item] != files.labels[first]:
            conflicting.add(first)
            label = classes[files.labels[first]]
            reasons[item] = f"same content as {files.paths[first]} but labelled {label!r}"
        else:
            reasons[item] = f"duplicate of {files.paths[first]}"
    usable[list(conflicting)] = False
    quarantined = [QuarantineEntry(path=files.paths[i], reason=reasons[i]) for i in sorted(reasons)]
    quarantined += [
        QuarantineEntry(path=files.paths[i], reason="same content appears under another class") for i in sorted(conflicting)
    ]
    return np.flatnonzero(usable), quarantined


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


# Bytes copied at a time from a scratch file into the snapshot.
COPY_BYTES = 4 << 20


def _write_arrays(
    directory: Path,
    inputs: StoredRows,
    files: DecodedFiles,
    accepted: np.ndarray,
    splits: np.ndarray,
    classes: list[str],
    version: str,
) -> None:
    """Arrays first, manifest last: a folder without ``manifest.json`` is an interrupted write.

    Files are stored split by split (in source order within each), so every split is one range of rows.
    """
    order = np.argsort(splits, kind="stable")
    rows, splits = accepted[order], splits[order]
    _copy_rows(inputs, rows, directory / "images.npy")
    pd.DataFrame({name: values[rows] for name, values in files.meta.items()}).to_parquet(directory / "metadata.parquet", index=False)
    np.save(directory / "labels.npy", files.labels[rows].astype(np.int64))
    np.save(directory / "splits.npy", splits)
    _write_manifest(
        directory, classes, version, len(rows),
        lambda start, stop: [
            {"label": classes[files.labels[i]], "path": files.paths[i], "sha256": files.digests[i].tobytes().hex(),
             "split": SPLITS[splits[n]]}
            for n, i in enumerate(rows[start:stop], start)
        ],
    )


# Manifest entries written per part: a part's dicts are a few MiB.
MANIFEST_PART = 2_000


def _write_manifest(
    directory: Path, classes: list[str], version: str, count: int, entries: Callable[[int, int], list[dict[str, str]]]
) -> None:
    """``manifest.json`` in DatasetManifest's layout (keys in order), written part by part, atomically.

    ``entries(start, stop)`` gives the files ``start`` to ``stop`` in snapshot order: a million files are a
    million entries, never all built at once.
    """
    tmp = directory / "manifest.json.tmp"
    with tmp.open("wb") as out:
        out.write(b'{\n  "classes": ' + orjson.dumps(classes) + b',\n  "dataset_version": ' + orjson.dumps(version))
        out.write(b',\n  "files": [')
        for start in range(0, count, MANIFEST_PART):
            # One dump per part: orjson's output buffers are kilobytes each, a million small dumps are gigabytes.
            out.write((b"," if start else b"") + orjson.dumps(entries(start, min(start + MANIFEST_PART, count)))[1:-1])
        out.write(b"]\n}")
    os.replace(tmp, directory / "manifest.json")


def _copy_rows(source: StoredRows, rows: np.ndarray, path: Path) -> None:
    """Write ``source[rows]`` as the ``.npy`` file ``path``, ``COPY_BYTES`` at a time (never all in memory)."""
    tmp = path.with_suffix(".npy.tmp")
    step = max(1, COPY_BYTES // max(1, int(np.prod(source.shape[1:], dtype=np.int64)) * source.dtype.itemsize))
    with tmp.open("wb") as out:
        header = {"descr": np.lib.format.dtype_to_descr(source.dtype), "fortran_order": False, "shape": (len(rows), *source.shape[1:])}
        np.lib.format.write_array_header_2_0(out, header)
        data_start = out.tell()
        try:
            source.copy_rows(rows, out)
        except OSError:  # no copy_file_range here (an old kernel, a sandbox, across file systems): through memory
            out.seek(data_start)
            out.truncate()
            for start in range(0, len(rows), step):
                out.write(memoryview(np.ascontiguousarray(source[rows[start : start + step]])).cast("B"))
    os.replace(tmp, path)


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


@contextmanager
def scratch_folder(snapshots_dir: Path, prefix: str) -> Iterator[Path]:
    """A scratch folder under ``snapshots_dir`` (the snapshots' file system), removed after use.

    It holds a lock while in use; folders whose lock nobody holds (their ingestion was killed, even
    with SIGKILL) are removed when the next scratch folder is made, so a kill leaves no gigabytes behind.
    """
    snapshots_dir.mkdir(parents=True, exist_ok=True)
    for stale in snapshots_dir.glob(".*-scratch-*"):
        _remove_if_abandoned(stale)
    folder = Path(tempfile.mkdtemp(prefix=f".{prefix}-scratch-", dir=snapshots_dir))
    lock = open(folder / ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        lock.close()


def _remove_if_abandoned(folder: Path) -> None:
    try:
        with open(folder / ".lock") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: an ingestion is using it
            shutil.rmtree(folder, ignore_errors=True)
    except (BlockingIOError, FileNotFoundError, NotADirectoryError):
        pass


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
    with scratch_folder(snapshots_dir, "table") as scratch:
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
    return DatasetSnapshot(
        version=version, directory=directory, source=source, classes=classes, input=rows.contract,
        num_examples=len(accepted), counts=counts, quarantined=quarantined, warnings=notes, report_path=report_path,
    )


def _write_table_arrays(directory: Path, raw: Path, rows: TableRows, accepted: np.ndarray, classes: list[str], version: str) -> None:
    """The snapshot's arrays and manifest, from the accepted rows' encoding on disk; the manifest last.

    Rows are stored split by split (in table order within each), so every split is one range of rows.
    """
    width = len(rows.contract.columns)
    order = np.argsort(rows.splits[accepted], kind="stable")
    _copy_rows(StoredRows(raw, np.dtype("<f8"), (width,), len(accepted)), order, directory / "images.npy")
    accepted = accepted[order]
    np.save(directory / "labels.npy", rows.labels[accepted].astype(np.int64))
    np.save(directory / "splits.npy", rows.splits[accepted].astype(np.uint8))
    pd.DataFrame({"line": rows.lines[accepted]}).to_parquet(directory / "metadata.parquet", index=False)
    _write_manifest(
        directory, classes, version, len(accepted),
        lambda start, stop: [
            {"label": classes[int(rows.labels[i])], "path": rows.where(int(i)), "sha256": rows.identity[i].hex(),
             "split": SPLITS[int(rows.splits[i])]}
            for i in accepted[start:stop]
        ],
    )
