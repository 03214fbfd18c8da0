"""The tabular modality's source: a CSV/TSV/Parquet file or a folder of them, read into a snapshot.

Every row becomes an example, or a quarantine entry naming its file and line and why: a line
that is no row, a missing label, a cell that is not a value of its column's type, a missing or
repeated id, the same values labelled two ways. A file that is not a table fails the run when
it is the source, and is quarantined when it is one file of a folder. Rows are split by a stable
hash of their values (or of their id, with ``data.id_column``), so identical rows share a split.

Memory stays bounded whatever the table's size: the files are read twice, ``chunk_rows`` rows
at a time. The first pass gathers each column's evidence (type, range, categories, the train
split's statistics; :class:`tasks.data.table_schema.ColumnEvidence`) and a few bytes per row
(the hash of its values, its label, split, file and line); the second encodes each chunk with
the schema inferred from that evidence, straight to the snapshot's array on disk.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tasks.data.config import DataConfig
from tasks.data.snapshot import DatasetSnapshot, DataValidationError, EncodedChunk, QuarantineEntry, TableRows, write_table_snapshot
from tasks.data.split import SPLITS, assign_split
from tasks.data.table_schema import ColumnEvidence, TabularInput, schema_from_evidence
from tasks.data.tables import TABLE_SUFFIXES, RawTable, TableError, canonical_label, iter_table, parse_cells, row_keys
from tasks.hashing import sha256_bytes

CHUNK_ROWS = 50_000
SPLIT_CODES = {name: code for code, name in enumerate(SPLITS)}


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


class TableSource:
    """The readable table files of a source with one set of columns, read chunk by chunk as often as needed.

    A file that is not a table, or has other columns than the first, is quarantined (the source
    being that one file: an error).

    Raises:
        DataValidationError: the source is one file that is not a table, or no file of a folder is.
    """

    def __init__(self, source: Path, files: list[Path], chunk_rows: int) -> None:
        self.chunk_rows = chunk_rows
        self.files: list[tuple[Path, str]] = []
        self.quarantined: list[QuarantineEntry] = []
        self.columns: list[str] = []
        first = ""
        for path in files:
            name = str(path.relative_to(source)) if path != source else path.name
            try:
                columns = list(next(iter_table(path, name=name, chunk_rows=1)).frame.columns)
            except TableError as bad:
                if len(files) == 1:
                    raise DataValidationError(str(bad)) from None
                self.quarantined.append(QuarantineEntry(path=name, reason=str(bad)))
                continue
            if not self.files:
                self.columns, first = columns, name
            elif set(columns) != set(self.columns):
                lacking, extra = sorted(set(self.columns) - set(columns)), sorted(set(columns) - set(self.columns))
                self.quarantined.append(QuarantineEntry(path=name, reason=f"columns differ from {first}: lacks {lacking}, adds {extra}"))
                continue
            self.files.append((path, name))
        if not self.files:
            raise DataValidationError(f"no file under {source} is a readable table: " + "; ".join(q.reason for q in self.quarantined))

    def chunks(self) -> Iterator[tuple[int, RawTable]]:
        """(file index, chunk) in file order, the chunk's columns in the first file's order.

        Raises:
            UnreadableFile: a file fails past its first row (a broken quote, a damaged Parquet page).
        """
        for index, (path, name) in enumerate(self.files):
            try:
                for chunk in iter_table(path, name=name, chunk_rows=self.chunk_rows):
                    yield index, RawTable(frame=chunk.frame[self.columns], lines=chunk.lines, bad_lines=chunk.bad_lines, notes=chunk.notes)
            except (TableError, csv.Error, UnicodeError) as exc:
                raise UnreadableFile(index, str(exc) if isinstance(exc, TableError) else f"{name} is not a readable table: {exc}") from None

    def drop(self, index: int, reason: str) -> None:
        """Leave a file out, quarantined with ``reason``."""
        self.quarantined.append(QuarantineEntry(path=self.files[index][1], reason=reason))
        del self.files[index]

    def where(self, file: int, line: int) -> str:
        """A row's name: ``file:line``."""
        return f"{self.files[file][1]}:{line}"


class UnreadableFile(Exception):
    """A file of the source that failed part way through; ``index`` is its place in the readable files."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index, self.reason = index, reason


@dataclass
class RowFacts:
    """A few bytes per row of the whole table, from the first pass; and the label names, in first-seen order."""

    file: list[np.ndarray] = field(default_factory=list)
    line: list[np.ndarray] = field(default_factory=list)
    label: list[np.ndarray] = field(default_factory=list)  # index into ``names``; -1: missing
    split: list[np.ndarray] = field(default_factory=list)  # SPLIT_CODES
    content: list[np.ndarray] = field(default_factory=list)  # S16: the hash of the row's values
    id_key: list[np.ndarray] = field(default_factory=list)  # S16: the hash of its id (zeros: no id column)
    id_missing: list[np.ndarray] = field(default_factory=list)
    names: dict[str, int] = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        """Each fact as one array over every row."""
        fields = ("file", "line", "label", "split", "content", "id_key", "id_missing")
        return {name: np.concatenate(getattr(self, name)) for name in fields}


def _key(hex_digest: str) -> bytes:
    """A 16-byte row key: 120 bits of a hex digest and a closing 0x01.

    NumPy's fixed-size byte strings drop trailing zero bytes when an element is read, so a key
    ending in one would read back shorter (one row in 256): the closing byte is never zero.
    """
    return bytes.fromhex(hex_digest[:30]) + b"\x01"


def _digests(hex_keys: list[str]) -> np.ndarray:
    """Row keys (:func:`_key`) of hex digests, as a 16-byte array."""
    return np.array([_key(key) for key in hex_keys], dtype="S16")


def ingest_table(
    source: Path,
    config: DataConfig,
    snapshots_dir: Path,
    progress: Callable[[int, int], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> DatasetSnapshot:
    """Validate every row of a table source, infer its schema contract, and write a snapshot under ``snapshots_dir``.

    ``progress`` is called with (rows done, rows in all): 0 for the total while the first pass reads.

    Raises:
        DataValidationError: the source is no table; the label (or id) column is missing; no feature
            column is left; or the dataset fails the snapshot's checks (classes, quarantine share, splits).
    """
    files, quarantined = list_table_files(source)
    table = TableSource(source, files, chunk_rows)
    _check_columns(table.columns, config, source)
    features = [c for c in table.columns if c not in (config.label_column, config.id_column)]
    while True:  # a file failing part way through is quarantined, and the first pass starts again without it
        try:
            evidence, facts, notes, lines, total = _gather(table, features, config, progress)
            break
        except UnreadableFile as bad:
            if len(files) == 1:  # the source is this one file
                raise DataValidationError(bad.reason) from None
            table.drop(bad.index, bad.reason)
            if not table.files:
                raise DataValidationError(f"no file under {source} is a readable table: " + "; ".join(q.reason for q in table.quarantined)) from None
    quarantined += lines
    try:
        contract, schema_notes = schema_from_evidence(
            evidence, label_column=config.label_column, id_column=config.id_column, types=dict(config.columns),
            max_categories=config.max_categories,
        )
    except TableError as bad:
        raise DataValidationError(f"{source}: {bad}") from None
    rows = facts.arrays()
    names = {code: name for name, code in facts.names.items()}
    classes = sorted(facts.names)
    del facts  # the chunks' arrays, now joined in ``rows``
    reasons, repeated_ids = _row_reasons(rows, names, table, config)
    to_class = np.array([classes.index(names[code]) for code in range(len(names))], dtype=np.int64)
    usable = np.ones(total, bool)
    usable[list(reasons)] = False

    def written_where(i: int) -> str:
        return table.where(int(rows["file"][i]), int(rows["line"][i]))

    written = TableRows(
        contract=contract,
        labels=np.where(rows["label"] >= 0, to_class[np.maximum(rows["label"], 0)] if len(names) else 0, -1),
        splits=rows["split"],
        identity=_identities(rows, usable, bool(config.id_column)),
        content=rows["content"],
        lines=rows["line"],
        where=written_where,
        chunks=lambda: _second_pass(table, contract, config, repeated_ids, written_where, rows, progress),
    )
    snapshot = write_table_snapshot(
        written, reasons=reasons, quarantined=quarantined + table.quarantined, source=str(source), classes=classes,
        config=config, snapshots_dir=snapshots_dir,
    )
    return snapshot.model_copy(update={"warnings": notes + schema_notes + snapshot.warnings})


def _gather(
    table: TableSource, features: list[str], config: DataConfig, progress: Callable[[int, int], None] | None
) -> tuple[dict[str, ColumnEvidence], RowFacts, list[str], list[QuarantineEntry], int]:
    """The first pass: each column's evidence, the row facts, the files' notes, the lines that are no rows, the row count."""
    evidence = {name: ColumnEvidence() for name in features if config.columns.get(name) != "ignore"}
    facts, notes, lines, total = RowFacts(), [], [], 0
    for file, chunk in table.chunks():
        notes += chunk.notes
        lines += [QuarantineEntry(path=table.where(file, line), reason=reason) for line, reason in chunk.bad_lines]
        _first_pass(chunk, file, features, evidence, facts, config)
        total += len(chunk.frame)
        if progress:
            progress(total, 0)
    return evidence, facts, notes, lines, total


def _check_columns(columns: list[str], config: DataConfig, source: Path) -> None:
    for role, name in (("label_column", config.label_column), ("id_column", config.id_column)):
        if name is not None and name not in columns:
            raise DataValidationError(f"{source} has no column {name!r} (data.{role}); its columns are {columns}")
    unknown = sorted(set(config.columns) - set(columns))
    if unknown:
        raise DataValidationError(f"data.columns names {unknown}, which {source} lacks; its columns are {columns}")
    if not [c for c in columns if c not in (config.label_column, config.id_column)]:
        raise DataValidationError(f"{source} has no feature column besides the label {config.label_column!r}")


def _first_pass(
    chunk: RawTable, file: int, features: list[str], evidence: dict[str, ColumnEvidence], facts: RowFacts, config: DataConfig
) -> None:
    """One chunk's evidence (over its labelled rows) and row facts."""
    frame, n = chunk.frame, len(chunk.frame)
    parsed = {name: parse_cells(frame[name]) for name in features}
    labels = canonical_label(frame[config.label_column]).to_numpy(dtype=object)
    codes = np.array([facts.names.setdefault(label, len(facts.names)) if label else -1 for label in labels], dtype=np.int32)
    content = _digests(row_keys(frame, features, parsed))
    if config.id_column:
        ids = parse_cells(frame[config.id_column]).text.to_numpy(dtype=object)
        id_key = _digests([sha256_bytes(f"id:{value}".encode()) for value in ids])
        id_missing = ids == ""
    else:
        id_key, id_missing = np.zeros(n, dtype="S16"), np.zeros(n, bool)
    split = np.array(
        [SPLIT_CODES[assign_split(key.hex(), config.val_fraction, config.test_fraction, config.split_salt)]
         for key in (id_key if config.id_column else content)],
        dtype=np.uint8,
    )
    labelled = codes >= 0
    for name, seen in evidence.items():
        seen.add(parsed[name], labelled, labelled & (split == SPLIT_CODES["train"]))
    facts.file.append(np.full(n, file, np.int32))
    facts.line.append(np.asarray(chunk.lines, dtype=np.int64))
    facts.label.append(codes)
    facts.split.append(split)
    facts.content.append(content)
    facts.id_key.append(id_key)
    facts.id_missing.append(id_missing)


def _groups(keys: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``rows`` ordered by key (ties in row order), the start of each run of equal keys, and each row's run start."""
    order = rows[np.argsort(keys[rows], kind="stable")]
    sorted_keys = keys[order]
    new = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]] if len(order) else np.zeros(0, bool)
    starts = np.flatnonzero(new)
    run_start = np.maximum.accumulate(np.where(new, np.arange(len(order)), 0)) if len(order) else np.zeros(0, np.int64)
    return order, starts, run_start


def _row_reasons(
    rows: dict[str, np.ndarray], names: dict[int, str], table: TableSource, config: DataConfig
) -> tuple[dict[int, str], dict[int, int]]:
    """Why each row found bad by the first pass is (a missing label or id, the same values labelled two ways),
    and each row repeating an earlier row's id, with that row (its reason is written in the second pass)."""
    label = rows["label"]

    def where(i: int) -> str:
        return table.where(int(rows["file"][i]), int(rows["line"][i]))

    reasons = {int(i): f"label {config.label_column!r} is missing" for i in np.flatnonzero(label < 0)}
    repeated: dict[int, int] = {}
    if config.id_column:
        for i in np.flatnonzero(rows["id_missing"]):
            reasons.setdefault(int(i), f"id {config.id_column!r} is missing")
        order, _, run_start = _groups(rows["id_key"], np.flatnonzero(~rows["id_missing"]))
        for k in np.flatnonzero(run_start != np.arange(len(order))):
            repeated[int(order[k])] = int(order[run_start[k]])
            reasons.setdefault(int(order[k]), f"id repeats {where(int(order[run_start[k]]))}")
    order, starts, _ = _groups(rows["content"], np.flatnonzero(label >= 0))
    if len(order):
        codes = label[order]
        ends = np.r_[starts[1:], len(order)]
        clash = np.minimum.reduceat(codes, starts) != np.maximum.reduceat(codes, starts)
        for s, e in zip(starts[clash], ends[clash]):
            group = [int(i) for i in order[s:e]]
            labelled = " vs ".join(repr(n) for n in sorted({names[int(label[i])] for i in group}))
            for i in group:
                others = ", ".join([where(k) for k in group if k != i][:3])
                reasons.setdefault(i, f"same values as {others} but labelled {names[int(label[i])]!r} here ({labelled})")
    return reasons, repeated


def _identities(rows: dict[str, np.ndarray], usable: np.ndarray, by_id: bool) -> np.ndarray:
    """Each row's identity in the snapshot (S16): its id's hash, else its values' hash, made unique for repeats.

    Identical rows with one label are repeated observations, kept: the k-th repeat's identity is
    the hash of the values' hash and k.
    """
    if by_id:
        return rows["id_key"].copy()
    identity = rows["content"].copy()
    order, _, run_start = _groups(rows["content"], np.flatnonzero(usable))
    for k in np.flatnonzero(run_start != np.arange(len(order))):
        i = int(order[k])
        identity[i] = _key(sha256_bytes(f"{identity[i].hex()}#{k - run_start[k]}".encode()))
    return identity


def _second_pass(
    table: TableSource, contract: TabularInput, config: DataConfig, repeated_ids: dict[int, int],
    where: Callable[[int], str], rows: dict[str, np.ndarray], progress: Callable[[int, int], None] | None,
) -> Iterator[EncodedChunk]:
    """Each chunk's rows encoded by the contract, the reasons of rows whose cells do not fit it, and the
    reasons of rows repeating an id, now that the id can be named.

    Raises:
        DataValidationError: a file changed since the first pass read it.
    """
    start, total = 0, len(rows["line"])
    try:
        for file, chunk in table.chunks():
            n = len(chunk.frame)
            if start + n > total or not (
                np.array_equal(chunk.lines, rows["line"][start : start + n]) and (rows["file"][start : start + n] == file).all()
            ):
                raise UnreadableFile(file, f"{table.files[file][1]} changed while it was read")
            yield _encoded(chunk, start, contract, config, repeated_ids, where)
            start += n
            if progress:
                progress(start, total)
    except UnreadableFile as bad:
        raise DataValidationError(f"{bad.reason}: run the build again on a source that is not being written") from None
    if start != total:
        raise DataValidationError("the source changed while it was read (rows are gone): run the build again")


def _encoded(
    chunk: RawTable, start: int, contract: TabularInput, config: DataConfig, repeated_ids: dict[int, int],
    where: Callable[[int], str],
) -> EncodedChunk:
    """One chunk's rows encoded, with the reasons of its rows that cannot be used."""
    frame, n = chunk.frame, len(chunk.frame)
    encoded = contract.encode(frame)
    invalid: dict[int, str] = {}
    for row, reason in encoded.problems:
        if encoded.invalid[row]:
            invalid[start + row] = f"{invalid[start + row]}; {reason}" if start + row in invalid else reason
    named: dict[int, str] = {}
    repeats = [i for i in range(start, start + n) if i in repeated_ids] if repeated_ids else []
    if repeats:
        ids = parse_cells(frame[config.id_column]).text
        named = {i: f"id {ids.iat[i - start]!r} repeats {where(repeated_ids[i])}" for i in repeats}
    return EncodedChunk(start=start, raw=encoded.raw, invalid=invalid, named=named)


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
