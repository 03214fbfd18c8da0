"""The tabular modality's cells: read a CSV/TSV/Parquet file as a table, parse its cells, infer its columns' types.

Every table — at ingestion, scoring and serving — goes through ``read_table`` and ``parse_cells``,
so the same cell means the same value everywhere. Real files are messy; what is handled here:

- encodings: UTF-8 with or without a byte-order mark; anything else that is not valid UTF-8 is
  read as latin-1 and the note says so;
- delimiters: ``,`` ``;`` tab ``|``, detected from the header line;
- a header with blank or repeated names, a file that is not text or not a table: one clear
  :class:`TableError` naming the file;
- a line with more or fewer fields than the header: left out with its line number;
- NA spellings (empty, ``NA``, ``N/A``, ``NaN``, ``null``, ``None``, ``#N/A``, ``?``) are missing
  values; numbers may carry thousands separators (``1,234.5``); ``inf`` is no number a model can take.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import pandas as pd

from tasks.errors import LeptonError
from tasks.hashing import sha256_bytes

ColumnType = Literal["numeric", "categorical", "boolean"]
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
NA_SPELLINGS = frozenset({"", "na", "n/a", "nan", "null", "none", "#n/a", "?"})
INFINITY_SPELLINGS = frozenset({"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})
TRUE_WORDS = frozenset({"true", "t", "yes", "y"})
FALSE_WORDS = frozenset({"false", "f", "no", "n"})
DELIMITERS = ",;\t|"
# A column is numeric when at least this share of its present cells are numbers: the rest are
# typing errors, quarantined row by row. Below it, the column's values are categories.
NUMERIC_SHARE = 0.9
_GROUPED = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?$")


class TableError(LeptonError, ValueError):
    """A file that cannot be read as a table at all; the message names the file and why."""


@dataclass
class RawTable:
    """A table's cells as text (Parquet: as stored), with the file line of each row."""

    frame: pd.DataFrame
    lines: np.ndarray  # the file line of each row (1 = the header); Parquet: row number + 1
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (line, reason) of lines left out
    notes: list[str] = field(default_factory=list)  # how the file was read, when it is worth knowing


@dataclass(frozen=True)
class ParsedCells:
    """One column's cells, parsed."""

    numbers: np.ndarray  # float64; NaN where missing or not a number
    missing: np.ndarray  # bool: an NA spelling or empty
    number: np.ndarray  # bool: a finite number
    infinite: np.ndarray  # bool: an infinity
    boolean: np.ndarray  # float64 1/0 for a boolean word or 0/1; NaN otherwise
    text: pd.Series  # stripped text of each cell ('' where missing)


def read_table(source: Path | bytes, name: str = "") -> RawTable:
    """Read one CSV/TSV/Parquet file (or its bytes) as a table, whole (see :func:`iter_table` for chunks).

    Raises:
        TableError: not a table: binary, no header, one column only, or a header with blank or repeated names.
    """
    chunks = list(iter_table(source, name))
    if len(chunks) == 1:
        return chunks[0]
    return RawTable(
        frame=pd.concat([c.frame for c in chunks], ignore_index=True),
        lines=np.concatenate([c.lines for c in chunks]),
        bad_lines=[bad for c in chunks for bad in c.bad_lines],
        notes=[note for c in chunks for note in c.notes],
    )


def iter_table(source: Path | bytes, name: str = "", chunk_rows: int | None = None) -> Iterator[RawTable]:
    """A table file (or its bytes) in chunks of at most ``chunk_rows`` rows (None: one chunk), read as it streams.

    Every chunk has the header's columns; the first carries the notes; lines count on across
    chunks. Nothing but the current chunk is held, whatever the file's size.

    Raises:
        TableError: not a table (raised before the first chunk).
    """
    name = name or (str(source) if isinstance(source, Path) else "the table")

    def opened() -> BinaryIO:
        return source.open("rb") if isinstance(source, Path) else io.BytesIO(source)

    with opened() as stream:
        head = stream.read(65_536)
    if head[:4] == b"PAR1":
        yield from _iter_parquet(opened, name, chunk_rows)
        return
    if isinstance(source, Path) and source.suffix.lower() in (".parquet", ".pq"):
        raise TableError(f"{name} is named as Parquet but is not a Parquet file")
    yield from _iter_text(opened, head, name, chunk_rows)


def _iter_parquet(opened: Callable[[], BinaryIO], name: str, chunk_rows: int | None) -> Iterator[RawTable]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with opened() as stream:
            parquet = pq.ParquetFile(stream)
            names = [str(c) for c in parquet.schema_arrow.names]
            _check_header(names, name)
            line = 2
            batches = parquet.iter_batches(batch_size=chunk_rows or 1 << 62)
            first = True
            for batch in batches:
                # Without pandas' metadata: a column stored as the index (``set_index("customer_id")``) stays a
                # column, and nullable integers come back as floats with NaN, as every other path sees them.
                # Booleans as pandas' nullable boolean: the same dtype whether or not a batch has a null.
                frame = pa.Table.from_batches([batch]).to_pandas(
                    ignore_metadata=True, types_mapper={pa.bool_(): pd.BooleanDtype()}.get
                )
                frame.columns = [c.strip() for c in names]
                yield RawTable(frame=frame, lines=np.arange(line, line + len(frame)))
                line += len(frame)
                first = False
            if first:
                yield RawTable(frame=pd.DataFrame(columns=[c.strip() for c in names]), lines=np.zeros(0, np.int64))
    except TableError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for a broken file; the message says which file
        raise TableError(f"{name} is not a readable Parquet file: {exc}") from None


def _encoding(opened: Callable[[], BinaryIO], name: str) -> tuple[str, list[str]]:
    """UTF-8 (a byte-order mark skipped) when every byte decodes as such, else latin-1, said in a note."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    offset = 0
    with opened() as stream:
        while block := stream.read(1 << 20):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                return "latin-1", [f"{name} is not valid UTF-8 (byte {offset + exc.start}); read as latin-1"]
            offset += len(block)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "latin-1", [f"{name} is not valid UTF-8 (it ends inside a character); read as latin-1"]
    return "utf-8-sig", []


def _iter_text(opened: Callable[[], BinaryIO], head: bytes, name: str, chunk_rows: int | None) -> Iterator[RawTable]:
    if b"\x00" in head:
        raise TableError(
            f"{name} is not a text table: it holds NUL bytes (a binary file, or UTF-16 text; save it as UTF-8 CSV)"
        )
    encoding, notes = _encoding(opened, name)
    start_text = head.decode(encoding, errors="replace").lstrip("\ufeff")
    if not start_text.strip():
        raise TableError(f"{name} is empty: expected a header line and rows")
    start = start_text.lstrip()[:1]
    if start in ("{", "[", "<"):
        what = "JSON" if start in "{[" else "HTML or XML"
        raise TableError(f"{name} is not a table: it holds {what} (expected a CSV, TSV or Parquet file with a header line)")
    header_line = (start_text.lstrip("\r\n").splitlines() or [""])[0]
    delimiter = max(DELIMITERS, key=lambda d: len(next(csv.reader([header_line], delimiter=d))))
    if delimiter != ",":
        notes.append(f"{name}: fields are separated by {delimiter!r}")
    with opened() as raw, io.TextIOWrapper(raw, encoding=encoding, newline="") as text:
        reader = csv.reader(text, delimiter=delimiter)
        header: list[str] | None = None
        columns: list[str] = []
        rows: list[list[str]] = []
        lines: list[int] = []
        bad: list[tuple[int, str]] = []
        yielded = False

        def chunk() -> RawTable:
            frame = pd.DataFrame(rows, columns=columns, dtype=object) if rows else pd.DataFrame(columns=columns, dtype=object)
            return RawTable(frame=frame, lines=np.asarray(lines, dtype=np.int64), bad_lines=list(bad), notes=[] if yielded else notes)

        try:
            for record in reader:
                line = reader.line_num
                if not record or not "".join(record).strip():
                    if header is not None and record:
                        bad.append((line, "empty row"))
                    continue
                if header is None:
                    header = record
                    if len(header) < 2:
                        raise TableError(
                            f"{name} is not a table: its header {header_line[:80]!r} has one column with any of the "
                            f"delimiters {', '.join(repr(d) for d in DELIMITERS)} (a label column and at least one "
                            "feature are needed)"
                        )
                    _check_header(header, name)
                    columns = [h.strip() for h in header]
                    continue
                if len(record) != len(header):
                    bad.append((line, f"{len(record)} fields where the header has {len(header)}"))
                    continue
                rows.append(record)
                lines.append(line)
                if chunk_rows and len(rows) == chunk_rows:
                    yield chunk()
                    yielded, rows, lines, bad = True, [], [], []
        except csv.Error as exc:
            raise TableError(f"{name} is not a readable CSV file: line {reader.line_num}: {exc}") from None
        if header is None:
            raise TableError(f"{name} is empty: expected a header line and rows")
        if rows or bad or not yielded:
            yield chunk()


def _check_header(header: list[str], name: str) -> None:
    names = [h.strip() for h in header]
    blank = [i + 1 for i, h in enumerate(names) if not h]
    if blank:
        raise TableError(f"{name}: header column(s) {blank} have no name; every column needs one")
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise TableError(f"{name}: header names {repeated} appear more than once; column names must be unique")


def canonical_numbers(values: np.ndarray) -> np.ndarray:
    """Finite numbers as category text, one way whatever their source: whole ones without a decimal part ('1.0' -> '1')."""
    out = np.empty(len(values), dtype=object)
    whole = (np.floor(values) == values) & (np.abs(values) < 2**63)
    out[whole] = values[whole].astype(np.int64).astype(str)
    out[~whole] = values[~whole].astype(str)  # numpy writes the shortest repr, as Python does
    return out


def parse_cells(cells: pd.Series, categories: bool = True) -> ParsedCells:
    """Parse one column's cells: numbers (thousands separators allowed), missing values, infinities, booleans.

    ``text`` is each cell as a category: stripped text, but a number written one way (``1``, ``1.0``,
    ``01`` and a float column's 1.0 are all ``'1'``) and a yes/no value as ``true``/``false`` when
    the cell is a boolean, so a CSV, a Parquet column and a JSON value name the same category alike.
    Without ``categories`` the text is the stripped cell as read (cheaper: a column known to hold
    numbers or yes/no values needs it only to name a cell that is neither).
    """
    if pd.api.types.is_bool_dtype(cells.dtype):
        values = cells.astype("float64")
        missing = values.isna().to_numpy()
        text = cells.map(lambda v: "" if pd.isna(v) else ("true" if v else "false")).astype(object)
        return ParsedCells(
            numbers=values.to_numpy(), missing=missing, number=~missing, infinite=np.zeros(len(cells), bool),
            boolean=values.to_numpy(), text=text,
        )
    if pd.api.types.is_numeric_dtype(cells.dtype):
        values = cells.astype("float64").to_numpy()
        missing = np.isnan(values)
        infinite = np.isinf(values)
        number = ~missing & ~infinite
        text = pd.Series("", index=cells.index, dtype=object)
        text[number] = canonical_numbers(values[number])
        text[infinite] = values[infinite].astype(str)
        return ParsedCells(
            numbers=np.where(infinite, np.nan, values), missing=missing, number=number, infinite=infinite,
            boolean=np.where(np.isin(values, (0.0, 1.0)), values, np.nan), text=text,
        )
    text = _stripped_text(cells)
    lowered = text.str.lower()
    missing = lowered.isin(NA_SPELLINGS).to_numpy(dtype=bool)
    infinite = lowered.isin(INFINITY_SPELLINGS).to_numpy(dtype=bool)
    # pandas' C parser reads plain numbers ("12", "-3.5e2", ".5"); NA and infinity spellings it also
    # reads are masked out by the two checks above, which come first.
    numbers = pd.to_numeric(text.to_numpy(dtype=object), errors="coerce").astype(np.float64)
    number = np.isfinite(numbers) & ~missing & ~infinite
    rest = ~number & ~missing & ~infinite
    if rest.any():  # thousands separators ("1,234.5"): the few cells the C parser left, by the strict pattern
        candidates = text[rest]
        grouped = candidates.str.match(_GROUPED).to_numpy(dtype=bool)
        if grouped.any():
            where = np.flatnonzero(rest)[grouped]
            numbers[where] = candidates[grouped].str.replace(",", "", regex=False).astype("float64").to_numpy()
            number[where] = np.isfinite(numbers[where])
    infinite |= np.isinf(numbers) & ~missing
    numbers[~number] = np.nan
    boolean = np.full(len(text), np.nan)
    boolean[lowered.isin(TRUE_WORDS).to_numpy(dtype=bool)] = 1.0
    boolean[lowered.isin(FALSE_WORDS).to_numpy(dtype=bool)] = 0.0
    zero_one = number & np.isin(numbers, (0.0, 1.0))
    boolean[zero_one] = numbers[zero_one]
    if not categories:  # a numeric or yes/no column's text only names a bad cell: left as read
        return ParsedCells(numbers=numbers, missing=missing, number=number, infinite=infinite, boolean=boolean, text=text)
    text = text.where(~missing, "").astype(object)
    if number.any():
        text[number] = canonical_numbers(numbers[number])
    return ParsedCells(numbers=numbers, missing=missing, number=number, infinite=infinite, boolean=boolean, text=text)


def _stripped_text(cells: pd.Series) -> pd.Series:
    """Each cell as stripped text ('' for None/NaN), with Arrow's string kernels when every cell is text."""
    if pd.api.types.infer_dtype(cells, skipna=True) in ("string", "empty"):
        return cells.astype("string[pyarrow]").fillna("").str.strip()
    def one(value: object) -> str:
        if isinstance(value, bool | np.bool_):
            return "true" if value else "false"
        return "" if value is None or (np.ndim(value) == 0 and pd.isna(value)) else str(value).strip()

    return cells.map(one).astype("string[pyarrow]")


def canonical_label(labels: pd.Series) -> pd.Series:
    """Label cells as class names, written as categories are ('1.0' -> '1', a boolean -> 'true'; '' when missing)."""
    return parse_cells(labels).text


def row_keys(frame: pd.DataFrame, feature_columns: list[str], parsed: dict[str, ParsedCells] | None = None) -> list[str]:
    """sha256 of each row's values in ``feature_columns``: numbers as numbers ('1.0' = '1'), text stripped,
    missing (or a column the frame lacks) as empty. The identity of a row, as a file's hash is an image's."""
    if not len(frame):
        return []
    parts = []
    for name in feature_columns:
        if name not in frame.columns:
            parts.append(pd.Series([""] * len(frame)))
            continue
        cells = parsed[name] if parsed and name in parsed else parse_cells(frame[name])
        parts.append(pd.Series(cells.text.to_numpy(dtype=object)))  # numbers already written one way
    joined = parts[0].str.cat(parts[1:], sep="\x1f") if len(parts) > 1 else parts[0]
    return [sha256_bytes(text.encode()) for text in joined]
