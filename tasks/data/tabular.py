"""The tabular modality's source: a CSV/TSV/Parquet file or a folder of them, read into a snapshot.

Every row becomes an example, or a quarantine entry naming its file and line and why: a line
that is no row, a missing label, a cell that is not a value of its column's type, the same
values labelled two ways. A file that is not a table fails the run when it is the source, and
is quarantined when it is one file of a folder. Rows are split by a stable hash of their values
(or of their id, with ``data.id_column``), so identical rows always share a split.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.data.config import DataConfig
from tasks.data.snapshot import DatasetSnapshot, DataValidationError, Example, QuarantineEntry, build_snapshot
from tasks.data.split import assign_split
from tasks.data.table_schema import infer_schema
from tasks.data.tables import TABLE_SUFFIXES, RawTable, TableError, canonical_label, parse_cells, read_table, row_keys
from tasks.hashing import sha256_bytes


def list_table_files(source: Path) -> tuple[list[Path], list[QuarantineEntry]]:
    """The table files of a source (itself, or every table file under a folder) and the other files, quarantined.

    Raises:
        DataValidationError: the source does not exist, or a folder holds no table file.
    """
    if not source.exists():
        raise DataValidationError(f"data source {source} does not exist")
    if source.is_file():
        return [source], []
    files, others = [], []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = str(path.relative_to(source))
        if any(part.startswith(".") for part in path.relative_to(source).parts):
            continue  # tool files (.git, .ipynb_checkpoints): not data
        if path.suffix.lower() in TABLE_SUFFIXES:
            files.append(path)
        else:
            others.append(QuarantineEntry(path=rel, reason=f"not a table file ({', '.join(TABLE_SUFFIXES)})"))
    if not files:
        raise DataValidationError(f"data folder {source} holds no table file ({', '.join(TABLE_SUFFIXES)})")
    return files, others


def read_tables(source: Path, files: list[Path]) -> tuple[pd.DataFrame, list[str], list[QuarantineEntry], list[str]]:
    """Every file's rows in one frame, each row's ``file:line``, the quarantined lines and files, and notes.

    Raises:
        DataValidationError: the source is one file that is not a table, or no file of a folder is.
    """
    frames, where, quarantined, notes = [], [], [], []
    columns: list[str] | None = None
    first = ""
    for path in files:
        name = str(path.relative_to(source)) if path != source else path.name
        try:
            table: RawTable = read_table(path, name=name)
        except TableError as bad:
            if len(files) == 1:
                raise DataValidationError(str(bad)) from None
            quarantined.append(QuarantineEntry(path=name, reason=str(bad)))
            continue
        if columns is None:
            columns, first = list(table.frame.columns), name
        elif set(table.frame.columns) != set(columns):
            lacking = sorted(set(columns) - set(table.frame.columns))
            extra = sorted(set(table.frame.columns) - set(columns))
            quarantined.append(
                QuarantineEntry(path=name, reason=f"columns differ from {first}: lacks {lacking}, adds {extra}")
            )
            continue
        notes += table.notes
        quarantined += [QuarantineEntry(path=f"{name}:{line}", reason=reason) for line, reason in table.bad_lines]
        frames.append(table.frame[columns])
        where += [f"{name}:{line}" for line in table.lines]
    if not frames:
        raise DataValidationError(f"no file under {source} is a readable table: " + "; ".join(q.reason for q in quarantined))
    return pd.concat(frames, ignore_index=True), where, quarantined, notes


def ingest_table(
    source: Path,
    config: DataConfig,
    snapshots_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetSnapshot:
    """Validate every row of a table source, infer its schema contract, and write a snapshot under ``snapshots_dir``.

    Raises:
        DataValidationError: the source is no table; the label (or id) column is missing; no feature
            column is left; or the dataset fails the snapshot's checks (classes, quarantine share, splits).
    """
    files, quarantined = list_table_files(source)
    frame, where, bad, notes = read_tables(source, files)
    quarantined += bad
    columns = list(frame.columns)
    for role, name in (("label_column", config.label_column), ("id_column", config.id_column)):
        if name is not None and name not in columns:
            raise DataValidationError(f"{source} has no column {name!r} (data.{role}); its columns are {columns}")
    unknown = sorted(set(config.columns) - set(columns))
    if unknown:
        raise DataValidationError(f"data.columns names {unknown}, which {source} lacks; its columns are {columns}")
    features = [c for c in columns if c not in (config.label_column, config.id_column)]
    if not features:
        raise DataValidationError(f"{source} has no feature column besides the label {config.label_column!r}")
    if progress:
        progress(0, len(frame))

    # Each column parsed once: the row keys, the schema and the encoding all read the same cells.
    parsed = {name: parse_cells(frame[name]) for name in features}
    labels = canonical_label(frame[config.label_column]).to_numpy(dtype=object)
    keep = labels != ""
    reasons: dict[int, str] = {int(i): f"label {config.label_column!r} is missing" for i in np.flatnonzero(~keep)}
    content = row_keys(frame, features, parsed)
    split_keys = content
    if config.id_column:
        ids = parse_cells(frame[config.id_column]).text
        split_keys = [sha256_bytes(f"id:{value}".encode()) for value in ids]
        first_line: dict[str, int] = {}
        for i, value in enumerate(ids):
            if not value:
                reasons.setdefault(i, f"id {config.id_column!r} is missing")
            elif value in first_line:
                reasons.setdefault(i, f"id {value!r} repeats {where[first_line[value]]}")
            else:
                first_line[value] = i
    _conflicting_labels(content, labels, where, reasons)
    splits = np.array([assign_split(k, config.val_fraction, config.test_fraction, config.split_salt) for k in split_keys])
    usable = np.ones(len(frame), bool)
    usable[list(reasons)] = False
    contract, schema_notes = _schema(frame, config, usable, splits == "train", source, parsed)
    notes += schema_notes
    encoded = contract.encode(frame, parsed)
    for i, reason in encoded.problems:
        if encoded.invalid[i] and usable[i]:
            reasons[i] = reason if i not in reasons else f"{reasons[i]}; {reason}"
    occurrences: dict[str, int] = {}
    examples: list[Example | QuarantineEntry] = list(quarantined)
    for i in range(len(frame)):
        if i in reasons:
            examples.append(QuarantineEntry(path=where[i], reason=reasons[i]))
            continue
        seen = occurrences.get(content[i], 0)
        occurrences[content[i]] = seen + 1
        # Identical rows with one label are repeated observations, kept; each needs its own identity.
        identity = content[i] if not seen and not config.id_column else sha256_bytes(f"{split_keys[i]}#{seen}".encode())
        examples.append(
            Example(
                path=where[i], sha256=identity, label=labels[i], raw=encoded.raw[i],
                meta={"line": int(where[i].rsplit(":", 1)[1])}, split_key=split_keys[i],
            )
        )
    if progress:
        progress(len(frame), len(frame))
    snapshot = build_snapshot(
        examples,
        source=str(source),
        classes=sorted(set(labels[keep])),
        files_seen=len(frame) + len(quarantined),
        contract=contract,
        config=config,
        snapshots_dir=snapshots_dir,
    )
    return snapshot.model_copy(update={"warnings": notes + snapshot.warnings})


def _schema(frame: pd.DataFrame, config: DataConfig, rows: np.ndarray, train: np.ndarray, source: Path, parsed: dict):  # noqa: ANN202
    try:
        return infer_schema(
            frame,
            label_column=config.label_column,
            id_column=config.id_column,
            types=dict(config.columns),
            fit_rows=train & rows,
            max_categories=config.max_categories,
            parsed=parsed,
            rows=rows,
        )
    except TableError as bad:
        raise DataValidationError(f"{source}: {bad}") from None


def _conflicting_labels(content: list[str], labels: np.ndarray, where: list[str], reasons: dict[int, str]) -> None:
    """Quarantine every row whose exact values appear elsewhere under another label: neither label can be trusted."""
    first_label: dict[str, str] = {}
    conflicted: set[str] = set()
    for key, label in zip(content, labels):
        if label and first_label.setdefault(key, label) != label:
            conflicted.add(key)
    if not conflicted:
        return
    rows_of: dict[str, list[int]] = {}
    for i, key in enumerate(content):
        if key in conflicted and labels[i]:
            rows_of.setdefault(key, []).append(i)
    for rows in rows_of.values():
        names = sorted({labels[i] for i in rows})
        for i in rows:
            others = [where[k] for k in rows if k != i][:3]
            reasons.setdefault(
                i, f"same values as {', '.join(others)} but labelled {labels[i]!r} here ({' vs '.join(map(repr, names))})"
            )


def source_kind(source: Path, kind: str = "auto") -> str:
    """``image`` or ``tabular``: ``kind`` when set, else tabular for a table file or a folder of table files only."""
    if kind != "auto":
        return kind
    if source.is_file():
        return "tabular" if source.suffix.lower() in TABLE_SUFFIXES else "image"
    if source.is_dir():
        entries = [p for p in source.iterdir() if not p.name.startswith(".")]
        if entries and all(p.is_file() and p.suffix.lower() in TABLE_SUFFIXES for p in entries):
            return "tabular"
    return "image"
