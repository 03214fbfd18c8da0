"""The tabular modality's contract: a table's schema, inferred at ingestion and stored in every release.

Per feature column: its type (numeric, categorical, boolean), the share of training rows that
miss it, its numeric range, its categories, and the train split's mean and standard deviation.
One function turns rows into the model's input (``TabularInput.to_model_input``) and it is the
only one: training, export parity, INT8 calibration, the monitoring reference, scoring, serving
and explanations all call it on the same raw encoding, so there is no train/serve skew. An
independent client can rebuild it from the manifest alone (the class docstring is the recipe).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tasks.data.decoded import DecodedInputs
from tasks.data.tables import NUMERIC_SHARE, ColumnType, ParsedCells, TableError, parse_cells, read_table, row_keys

if TYPE_CHECKING:
    import pandas as pd

MISSING = "(missing)"
NEW_CATEGORY = "(new)"
STATISTIC_PREFIX = "input."
MISSING_FIELDS = "missing_fields"


class ValueBins(BaseModel):
    """A numeric column's train values in quartile bins: the training statistics LIME samples perturbed rows from.

    Bin ``k`` holds the values ``v`` with ``searchsorted(edges, v) == k`` (lime's own rule), so
    ``len(edges) + 1`` bins; ``mins``/``maxs`` are the bins' bounds (the outer ones: the train extremes).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    edges: list[float]
    counts: list[int]
    means: list[float]
    stds: list[float]
    mins: list[float]
    maxs: list[float]


def value_bins(values: np.ndarray) -> ValueBins | None:
    """Quartile bins of finite ``values``; None without any."""
    if not len(values):
        return None
    edges = np.unique(np.percentile(values, [25, 50, 75]))
    codes = np.searchsorted(edges, values)
    members = [values[codes == k] for k in range(len(edges) + 1)]
    return ValueBins(
        edges=edges.tolist(),
        counts=[len(m) for m in members],
        means=[float(m.mean()) if len(m) else float(edges[min(k, len(edges) - 1)]) for k, m in enumerate(members)],
        # lime adds this to every spread, so a one-valued bin still samples (its truncated normal needs std > 0)
        stds=[float(m.std()) + 1e-11 if len(m) else 1e-11 for m in members],
        mins=[float(values.min()), *edges.tolist()],
        maxs=[*edges.tolist(), float(values.max())],
    )


class TabularColumn(BaseModel):
    """One feature column of the schema contract."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: ColumnType
    missing_share: float = Field(0.0, ge=0.0, le=1.0, description="Share of the train split's rows that miss a value here")
    mean: float = Field(0.0, description="Numeric/boolean: mean of the train split's present values")
    std: float = Field(1.0, gt=0.0, description="Numeric/boolean: their standard deviation (1 when constant)")
    minimum: float | None = Field(None, description="Numeric: the smallest accepted value")
    maximum: float | None = Field(None, description="Numeric: the largest accepted value")
    categories: list[str] = Field([], description="Categorical: the categories of the train split, one input each")
    bins: ValueBins | None = Field(None, description="Numeric: the train split's values in quartile bins (for LIME)")
    value_counts: list[int] = Field(
        [], description="Categorical: train rows per category; boolean: per false, true (for LIME)"
    )

    @property
    def nullable(self) -> bool:
        """Missing values were seen in training: the model has a missing indicator for this column."""
        return self.missing_share > 0

    @property
    def width(self) -> int:
        """How many model inputs this column becomes."""
        return (len(self.categories) if self.type == "categorical" else 1) + int(self.nullable)

    def feature_names(self) -> list[str]:
        """A name per model input of this column."""
        names = [f"{self.name}={c}" for c in self.categories] if self.type == "categorical" else [self.name]
        return names + ([f"{self.name} is missing"] if self.nullable else [])


@dataclass(frozen=True)
class EncodedRows:
    """Rows in the contract's raw encoding, and what did not fit the contract."""

    raw: np.ndarray  # float64 rows x columns: numbers, 0/1, category index (-1: a new category); NaN: missing
    problems: list[tuple[int, str]]  # (row position, what does not fit), in row order
    invalid: np.ndarray  # bool per row: a cell that is not a value of its column's type (text for a number, inf)
    notes: list[str]  # about the whole table: missing or extra columns


class TabularInput(BaseModel):
    """How a table row becomes the model's input vector (preprocessing ``tabular-v1``).

    Columns in ``columns`` order; per column:
    numeric and boolean (yes/true/1 -> 1, no/false/0 -> 0): ``(value - mean) / std``, 0 when missing;
    categorical: one input per category, 1 for the row's category (all 0 for a missing or new one);
    then, for every column with ``missing_share > 0``, one input that is 1 when the value is missing.
    Cells are parsed as in :mod:`tasks.data.tables` (NA spellings, thousands separators).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["tabular"] = "tabular"
    columns: list[TabularColumn] = Field(min_length=1)
    label_column: str
    id_column: str | None = None
    preprocessing: Literal["tabular-v1"] = "tabular-v1"
    layout: Literal["N x features"] = "N x features"
    dtype: Literal["float32"] = "float32"

    @property
    def shape(self) -> tuple[int]:
        """One input's shape: the number of model inputs."""
        return (sum(c.width for c in self.columns),)

    @property
    def folder_name(self) -> str:
        """The snapshot folder of one dataset version under this schema (another schema: another folder)."""
        from tasks.hashing import sha256_bytes

        return f"table-{self.shape[0]}-{sha256_bytes(self.model_dump_json().encode())[:8]}"

    def feature_names(self) -> list[str]:
        """A name per model input."""
        return [name for column in self.columns for name in column.feature_names()]

    def _statistic(self, column: TabularColumn) -> str:
        return STATISTIC_PREFIX + column.name

    @property
    def statistic_columns(self) -> list[str]:
        """Numerical monitoring columns: each numeric column's value, and how many fields a row misses."""
        return [self._statistic(c) for c in self.columns if c.type == "numeric"] + [MISSING_FIELDS]

    @property
    def categorical_statistics(self) -> list[str]:
        """Categorical monitoring columns: each categorical and boolean column's value, missing and new ones named."""
        return [self._statistic(c) for c in self.columns if c.type != "numeric"]

    @property
    def optional_statistics(self) -> list[str]:
        """Numeric columns are NaN in a row that misses them; the row is still monitored."""
        return [self._statistic(c) for c in self.columns if c.type == "numeric"]

    def describe(self) -> str:
        """One line for people: the model card and logs."""
        kinds = {t: sum(c.type == t for c in self.columns) for t in ("numeric", "categorical", "boolean")}
        counted = ", ".join(f"{n} {t}" for t, n in kinds.items() if n)
        return (
            f"table rows of {len(self.columns)} columns ({counted}), label {self.label_column!r}"
            + (f", id {self.id_column!r}" if self.id_column else "")
            + f"; {self.shape[0]} model inputs ({self.preprocessing}: standardised numbers, one-hot categories, "
            "missing indicators), float32"
        )

    def encode(self, frame: pd.DataFrame, parsed: dict[str, ParsedCells] | None = None) -> EncodedRows:
        """A table's rows in the raw encoding; a cell that does not fit is missing, and a problem of its row.

        Columns the schema lacks are not features: ignored (a scored file may carry its label, ids,
        anything). A schema column the table lacks is missing in every row, and said in ``notes``.
        ``parsed`` are cells already parsed (by column), to parse each once.
        """
        n = len(frame)
        raw = np.full((n, len(self.columns)), np.nan)
        invalid = np.zeros(n, bool)
        found: list[tuple[int, int, str]] = []  # (row, column index, reason): sorted into row order below
        absent = [c.name for c in self.columns if c.name not in frame.columns]
        notes = [f"columns {absent} are missing: their values are missing in every row"] if absent else []
        for j, column in enumerate(self.columns):
            if column.name not in frame.columns:
                continue
            cells = (
                parsed[column.name] if parsed and column.name in parsed
                else parse_cells(frame[column.name], categories=column.type == "categorical")
            )
            present = ~cells.missing
            if column.type == "numeric":
                raw[:, j] = cells.numbers
                for i in np.flatnonzero(cells.infinite):
                    found.append((i, j, f"column {column.name!r}: infinite value {cells.text.iat[i]!r}"))
                bad = present & ~cells.number & ~cells.infinite
                for i in np.flatnonzero(bad):
                    found.append((i, j, f"column {column.name!r}: {cells.text.iat[i]!r} is not a number"))
                invalid |= bad | cells.infinite
            elif column.type == "boolean":
                raw[:, j] = cells.boolean
                bad = present & np.isnan(cells.boolean)
                for i in np.flatnonzero(bad):
                    found.append((i, j, f"column {column.name!r}: {cells.text.iat[i]!r} is not yes/no, true/false or 1/0"))
                invalid |= bad
            else:
                index = {category: k for k, category in enumerate(column.categories)}
                codes = cells.text.map(index)
                raw[:, j] = np.where(present, codes.fillna(-1).to_numpy(dtype=np.float64), np.nan)
                for i in np.flatnonzero(present & codes.isna().to_numpy()):
                    found.append((i, j, f"column {column.name!r}: new category {cells.text.iat[i]!r}"))
            if not column.nullable:
                for i in np.flatnonzero(cells.missing):
                    found.append((i, j, f"column {column.name!r}: missing (never missing in training)"))
        found.sort()
        return EncodedRows(raw=raw, problems=[(i, reason) for i, _, reason in found], invalid=invalid, notes=notes)

    def read(self, sources: Sequence[Path | bytes], max_pixels: int | None = None) -> DecodedInputs:
        """Read every table file (or file's bytes): one item per row.

        A file that is no table, or a line that is no row, is a failure with its reason. A row
        whose cells do not fit the schema is still scored (those cells count as missing); its
        problems are in ``meta["problems"]`` for the monitoring rows. ``max_pixels`` is unused.
        """
        import pandas as pd

        raws, metas, source, failures, names, keys = [], [], [], [], [], []
        for index, item in enumerate(sources):
            try:
                table = read_table(item, name=item.name if isinstance(item, Path) else "")
            except TableError as bad:
                failures.append((index, str(bad)))
                continue
            failures += [(index, f"line {line}: {reason}") for line, reason in table.bad_lines]
            encoded = self.encode(table.frame)
            problems = [[] for _ in range(len(table.frame))]
            for row, reason in encoded.problems:
                problems[row].append(reason)
            meta = pd.DataFrame({"line": table.lines, "problems": ["; ".join(p) for p in problems]})
            if encoded.notes:
                meta["problems"] = [("; ".join([*encoded.notes, p]) if p else "; ".join(encoded.notes)) for p in meta["problems"]]
            if self.id_column is not None and self.id_column in table.frame.columns:
                meta["id"] = parse_cells(table.frame[self.id_column]).text.to_numpy()
            raws.append(encoded.raw)
            metas.append(meta)
            source += [index] * len(table.frame)
            file_name = item.name if isinstance(item, Path) else f"table {index}"
            names += [f"{file_name}:{line}" for line in table.lines]
            keys += row_keys(table.frame, [c.name for c in self.columns])
        raw = np.concatenate(raws) if raws else np.zeros((0, len(self.columns)))
        meta = pd.concat(metas, ignore_index=True) if metas else pd.DataFrame({"line": [], "problems": []})
        return DecodedInputs(raw=raw, meta=meta, source=source, failures=failures, names=names, keys=keys)

    def decode_rows(self, raw: np.ndarray) -> pd.DataFrame:
        """Raw rows back to a table of values: numbers, 0/1, category names (None: missing; a new one: ``(new)``)."""
        import pandas as pd

        raw = np.asarray(raw, dtype=np.float64)
        frame = {}
        for j, column in enumerate(self.columns):
            values = raw[:, j]
            if column.type != "categorical":
                frame[column.name] = values
                continue
            names = np.array([*column.categories, NEW_CATEGORY], dtype=object)
            text = names[np.where(np.isnan(values), 0, values).astype(np.int64)]
            text[np.isnan(values)] = None
            frame[column.name] = text
        return pd.DataFrame(frame)

    def incomparable(self, other: TabularInput | object) -> str | None:
        """Why a model of this contract cannot be measured on rows of ``other`` (None: it can, see :meth:`adopt`)."""
        if not isinstance(other, TabularInput):
            return f"it takes table rows, the other data is {getattr(other, 'kind', other)!r}"
        theirs = {o.name: o for o in other.columns}
        lacking = [c.name for c in self.columns if c.name not in theirs]
        if lacking:
            return f"it needs columns {lacking}, which the other table lacks"
        # A category's name cannot be told from a number or a yes/no decoded from the other's rows.
        changed = [
            f"{c.name} ({c.type} here, {theirs[c.name].type} there)"
            for c in self.columns
            if (c.type == "categorical") != (theirs[c.name].type == "categorical")
        ]
        if changed:
            return f"columns changed between categories and values: {', '.join(changed)}"
        return None

    def adopt(self, other: TabularInput, raw: np.ndarray) -> np.ndarray:
        """Rows in ``other``'s raw encoding, in this contract's: through their values, as if read from a file.

        Two builds of one table fit their own categories and statistics, so their raw codes differ;
        their values do not. A category ``other`` had cut (``data.max_categories``) stays unknown.
        """
        return self.encode(other.decode_rows(raw)).raw

    def to_model_input(self, raw: np.ndarray) -> np.ndarray:
        """Raw rows -> the float32 vectors every exported variant takes (the recipe in the class docstring)."""
        raw = np.asarray(raw, dtype=np.float64)
        out = np.zeros((len(raw), self.shape[0]), np.float32)
        at = 0
        for j, column in enumerate(self.columns):
            values = raw[:, j]
            missing = np.isnan(values)
            if column.type == "categorical":
                codes = np.where(missing, -1, values).astype(np.int64)
                rows = np.flatnonzero(codes >= 0)
                out[rows, at + codes[rows]] = 1.0
                at += len(column.categories)
            else:
                out[:, at] = np.where(missing, 0.0, (values - column.mean) / column.std)
                at += 1
            if column.nullable:
                out[:, at] = missing
                at += 1
        return out

    def from_model_input(self, tensor: np.ndarray) -> np.ndarray:
        """The raw rows a model input was prepared from (a tensor sent as is): the inverse of :meth:`to_model_input`.

        A category block of zeros is a missing value when the missing indicator is on, else a new category.
        """
        tensor = np.asarray(tensor, dtype=np.float64)
        raw = np.full((len(tensor), len(self.columns)), np.nan)
        at = 0
        for j, column in enumerate(self.columns):
            if column.type == "categorical":
                block = tensor[:, at : at + len(column.categories)]
                raw[:, j] = np.where(block.max(axis=1, initial=0.0) > 0.5, block.argmax(axis=1), -1.0)
                at += len(column.categories)
            elif column.type == "boolean":
                # float32 rounding moves 0 and 1 a little: what is near neither was never a yes/no.
                value = tensor[:, at] * column.std + column.mean
                nearest = np.rint(value)
                raw[:, j] = np.where((np.abs(value - nearest) < 1e-3) & np.isin(nearest, (0.0, 1.0)), nearest, np.nan)
                at += 1
            else:
                raw[:, j] = tensor[:, at] * column.std + column.mean
                at += 1
            if column.nullable:
                raw[tensor[:, at] > 0.5, j] = np.nan
                at += 1
        return raw

    def statistics(self, raw: np.ndarray, meta: pd.DataFrame) -> pd.DataFrame:
        """The monitoring columns of raw rows: values, categories (missing and new ones named), missing fields."""
        import pandas as pd

        raw = np.asarray(raw, dtype=np.float64)
        frame = {}
        for j, column in enumerate(self.columns):
            values = raw[:, j]
            name = self._statistic(column)
            if column.type == "numeric":
                frame[name] = values
                continue
            labels = np.array(column.categories + [NEW_CATEGORY], dtype=object) if column.type == "categorical" else (
                np.array(["false", "true"], dtype=object)
            )
            codes = np.where(np.isnan(values), 0, values).astype(np.int64)
            text = labels[codes]  # a new category's code -1 picks the last label, NEW_CATEGORY
            text[np.isnan(values)] = MISSING
            frame[name] = text
        frame[MISSING_FIELDS] = np.isnan(raw).sum(axis=1).astype(np.float64)
        return pd.DataFrame(frame)

    def unfamiliar(self, rows: pd.DataFrame, reference: pd.DataFrame) -> tuple[int, str]:
        """How many monitoring ``rows`` hold a new category or a number outside the training range, and which columns."""
        flagged = np.zeros(len(rows), bool)
        where = []
        for column in self.columns:
            name = self._statistic(column)
            if name not in rows.columns:
                continue
            if column.type == "categorical":
                hit = (rows[name] == NEW_CATEGORY).to_numpy()
            elif column.type == "numeric" and column.minimum is not None and column.maximum is not None:
                values = rows[name].to_numpy(dtype=np.float64)
                # A row sent as a float32 tensor comes back a little off its value: not out of range for that.
                slack = 1e-5 * max(abs(column.minimum), abs(column.maximum), 1.0)
                hit = (values < column.minimum - slack) | (values > column.maximum + slack)
            else:
                continue
            if hit.any():
                where.append(f"{column.name} ({int(hit.sum())})")
            flagged |= hit
        note = (
            f"{int(flagged.sum())} rows hold a category never seen in training or a number outside its training range: "
            + ", ".join(where)
            if where
            else "every value is a known category or within its training range"
        )
        return int(flagged.sum()), note


# Distinct values counted per column (to tell an identifier or free text from a category): past
# this many, the column is one of those whatever else it holds.
DISTINCT_CAP = 200_000


@dataclass
class ColumnEvidence:
    """What one column's cells showed, accumulated chunk by chunk: enough to infer its type and fit it.

    Counted over the usable rows (``rows``): how many are present, numbers, yes/no values; their
    range and distinct texts. Over the train split's usable rows (``fit``): the missing share,
    the numbers (for mean, standard deviation and quartile bins), the yes/no and category counts.
    """

    rows: int = 0
    present: int = 0
    numberish: int = 0
    booleanish: int = 0
    minimum: float = np.inf
    maximum: float = -np.inf
    distinct: set[int] = field(default_factory=set)
    fit_rows: int = 0
    fit_missing: int = 0
    fit_numbers: list[np.ndarray] = field(default_factory=list)
    fit_booleans: list[int] = field(default_factory=lambda: [0, 0])
    fit_text: Counter = field(default_factory=Counter)
    too_many_categories: bool = False

    def add(self, cells: ParsedCells, rows: np.ndarray, fit: np.ndarray) -> None:
        """Count the cells of ``rows`` (and of ``fit``, the train split's usable rows among them)."""
        present = rows & ~cells.missing
        self.rows += int(rows.sum())
        self.present += int(present.sum())
        self.numberish += int((present & (cells.number | cells.infinite)).sum())
        self.booleanish += int((present & ~np.isnan(cells.boolean)).sum())
        finite = cells.numbers[present & cells.number]
        if len(finite):
            self.minimum, self.maximum = min(self.minimum, float(finite.min())), max(self.maximum, float(finite.max()))
        if len(self.distinct) <= DISTINCT_CAP:
            self.distinct.update(hash(t) for t in cells.text[present].unique())
        fit = fit & rows
        self.fit_rows += int(fit.sum())
        self.fit_missing += int((fit & cells.missing).sum())
        self.fit_numbers.append(cells.numbers[fit & cells.number])
        booleans = cells.boolean[fit & ~np.isnan(cells.boolean)]
        self.fit_booleans[0] += int((booleans == 0).sum())
        self.fit_booleans[1] += int((booleans == 1).sum())
        if not self.too_many_categories:
            self.fit_text.update(cells.text[fit & ~cells.missing].value_counts().to_dict())
            if len(self.fit_text) > DISTINCT_CAP:
                # More distinct train values than any category list: whatever the chunks, the column is
                # no categorical one (numbers, an identifier, free text). Counting stops; memory stays bounded.
                self.too_many_categories, self.fit_text = True, Counter()

    def inferred_type(self) -> ColumnType | None:
        """As :func:`tasks.data.tables.infer_type` on all the cells counted."""
        if not self.present:
            return None
        if self.booleanish == self.present:
            return "boolean"
        return "numeric" if self.numberish / self.present >= NUMERIC_SHARE else "categorical"

    def column(self, name: str, kind: ColumnType, max_categories: int, forced: bool) -> tuple[TabularColumn | None, list[str]]:
        """The schema column of type ``kind`` fitted from the evidence (None: left out), and notes."""
        missing_share = self.fit_missing / self.fit_rows if self.fit_rows else 0.0
        if kind == "categorical":
            distinct = len(self.distinct)
            capped = distinct > DISTINCT_CAP or self.too_many_categories
            if distinct > max_categories and (distinct > 0.5 * self.present or capped) and not forced:
                counted = f"more than {DISTINCT_CAP:,}" if capped else str(distinct)
                return None, [
                    f"column {name!r} has {counted} distinct values in {self.rows} rows: left out as an identifier "
                    f"or free text (name it in data.id_column, or set data.columns.{name}: categorical to keep it)"
                ]
            if self.too_many_categories:
                raise TableError(
                    f"column {name!r} has more than {DISTINCT_CAP:,} distinct values in training: too many for a categorical "
                    f"column (set data.columns.{name} to numeric, or ignore)"
                )
            ordered = sorted(self.fit_text.items(), key=lambda item: (-item[1], item[0]))
            notes = [
                f"column {name!r} has {len(ordered)} categories in training: the {max_categories} most frequent are kept "
                f"(data.max_categories), the rest count as new categories"
            ] if len(ordered) > max_categories else []
            kept = dict(ordered[:max_categories])
            categories = sorted(kept)
            return TabularColumn(
                name=name, type="categorical", missing_share=missing_share, categories=categories,
                value_counts=[int(kept[c]) for c in categories],
            ), notes
        fitted = (
            np.repeat([0.0, 1.0], self.fit_booleans) if kind == "boolean"
            else np.concatenate(self.fit_numbers).astype(np.float64) if self.fit_numbers else np.zeros(0)
        )
        std = float(fitted.std()) if len(fitted) > 1 else 1.0
        numeric = kind == "numeric" and np.isfinite(self.minimum)
        return TabularColumn(
            name=name,
            type=kind,
            missing_share=missing_share,
            mean=float(fitted.mean()) if len(fitted) else 0.0,
            std=std if std > 1e-12 else 1.0,
            minimum=self.minimum if numeric else None,
            maximum=self.maximum if numeric else None,
            bins=value_bins(fitted) if kind == "numeric" else None,
            value_counts=list(self.fit_booleans) if kind == "boolean" else [],
        ), []


def schema_from_evidence(
    evidence: dict[str, ColumnEvidence], *, label_column: str, id_column: str | None, types: dict[str, str], max_categories: int
) -> tuple[TabularInput, list[str]]:
    """The schema contract from each feature column's evidence, and notes on columns left out or cut.

    Raises:
        TableError: no feature column is left.
    """
    columns, notes = [], []
    for name, seen in evidence.items():
        if types.get(name) == "ignore":
            continue
        kind = types.get(name) or seen.inferred_type()
        if kind is None:
            notes.append(f"column {name!r} is empty in every row: left out")
            continue
        column, said = seen.column(name, kind, max_categories, forced=name in types)
        notes += said
        if column is not None:
            columns.append(column)
    if not columns:
        raise TableError(
            f"no feature column is left besides the label {label_column!r}"
            + (f" and the id {id_column!r}" if id_column else "")
            + (": " + "; ".join(notes) if notes else "")
        )
    return TabularInput(columns=columns, label_column=label_column, id_column=id_column), notes


def infer_schema(
    frame: pd.DataFrame,
    *,
    label_column: str,
    id_column: str | None,
    types: dict[str, str],
    fit_rows: np.ndarray,
    max_categories: int,
    parsed: dict[str, ParsedCells] | None = None,
    rows: np.ndarray | None = None,
) -> tuple[TabularInput, list[str]]:
    """The schema contract of one frame's feature columns (see :class:`ColumnEvidence`), and notes.

    Types follow ``types`` (column -> numeric, categorical, boolean or ignore), else what the
    cells of ``rows`` suggest (default: every row). What the model learns from is fitted on
    ``fit_rows`` (the train split's usable rows): means, standard deviations, quartile bins, the
    categories (a category seen only outside training would be an input the model never saw set)
    and the missing shares (likewise for a missing indicator). Ranges span ``rows``.

    Raises:
        TableError: no feature column is left.
    """
    rows = np.ones(len(frame), bool) if rows is None else rows
    fit = fit_rows & rows if (fit_rows & rows).any() else rows
    evidence = {}
    for name in frame.columns:
        if name in (label_column, id_column) or types.get(name) == "ignore":
            continue
        evidence[name] = ColumnEvidence()
        evidence[name].add(parsed[name] if parsed and name in parsed else parse_cells(frame[name]), rows, fit)
    return schema_from_evidence(evidence, label_column=label_column, id_column=id_column, types=types, max_categories=max_categories)
