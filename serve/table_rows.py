"""Table rows in requests: V2 named inputs (one per schema column) or V1 ``instances`` (JSON records).

Both become a frame of cells that the release's schema contract encodes exactly as batch scoring
does (:meth:`tasks.data.table_schema.TabularInput.encode`). What is refused, with the reason:
a column the schema does not have, a column the model needs that is absent (one never missing in
training), columns of different lengths, a datatype that does not fit the column, and a cell
that is no value of its column's type (text for a number, infinity), named by row and column.
A category the model never saw is served (it counts as none of the known ones) and reported per
row, as in batch scoring. Pure: no web framework.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from serve.protocol import InferRequest, ProtocolError
from tasks.data.table_schema import TabularInput
from tasks.export.backends import INPUT_NAME

NUMBER_TYPES = frozenset({"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
# V2 datatypes each column type takes; BYTES always (numbers and yes/no as text parse as in a CSV).
DATATYPES = {
    "numeric": NUMBER_TYPES | {"BYTES"},
    "boolean": NUMBER_TYPES | {"BOOL", "BYTES"},
    "categorical": NUMBER_TYPES | {"BOOL", "BYTES"},
}


class RowsRefused(ValueError):
    """Rows whose cells do not fit the schema: the message names rows and columns (an HTTP 422)."""


@dataclass(frozen=True)
class EncodedRequest:
    """The rows of a request in the contract's raw encoding, and each row's schema problems ('' when none)."""

    raw: np.ndarray
    problems: list[str]


def is_column_request(request: InferRequest) -> bool:
    """Inputs named as columns, not the one prepared tensor."""
    return not (len(request.inputs) == 1 and request.inputs[0].name == INPUT_NAME)


def frame_from_inputs(request: InferRequest, contract: TabularInput, max_rows: int) -> pd.DataFrame:
    """The cells of a V2 request whose inputs are the schema's columns, one ``[N]`` tensor each.

    Raises:
        ProtocolError: an unknown or repeated column, a required column absent, shapes or datatypes that do not fit.
    """
    columns = {c.name: c for c in contract.columns}
    names = [i.name for i in request.inputs]
    unknown = [n for n in names if n not in columns]
    if unknown:
        raise ProtocolError(
            f"inputs {unknown} are not columns of the model's schema; its columns are {list(columns)} "
            f"(or send the prepared tensor {INPUT_NAME!r} alone)"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ProtocolError(f"inputs {repeated} are given more than once")
    cells: dict[str, list[Any]] = {}
    rows = None
    for tensor in request.inputs:
        column = columns[tensor.name]
        if (tensor.parameters or {}).get("binary_data_size") is not None:
            raise ProtocolError(f"input {tensor.name!r}: send table columns as JSON data, not binary")
        if tensor.datatype not in DATATYPES[column.type]:
            raise ProtocolError(
                f"input {tensor.name!r} has datatype {tensor.datatype}; the {column.type} column takes "
                f"{', '.join(sorted(DATATYPES[column.type]))}"
            )
        if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise ProtocolError(f"input {tensor.name!r} has shape {tensor.shape}; a column is [N] (or [N, 1])")
        data = tensor.data
        if data and isinstance(data[0], list):
            data = [value for row in data for value in (row if isinstance(row, list) else [row])]
        if not isinstance(data, list) or len(data) != tensor.shape[0]:
            raise ProtocolError(f"input {tensor.name!r}: data must be a list of {tensor.shape[0]} values (the shape's N)")
        if rows is not None and len(data) != rows:
            raise ProtocolError(f"input {tensor.name!r} has {len(data)} rows, other inputs {rows}; every column needs one value per row")
        rows = len(data)
        cells[tensor.name] = data
    return _checked(cells, rows or 0, contract, max_rows)


def frame_from_instances(body: Any, contract: TabularInput, max_rows: int) -> pd.DataFrame:
    """The cells of a V1 ``{"instances": [{column: value, ...}, ...]}`` body.

    Raises:
        ProtocolError: not that shape, an unknown column, a required column absent.
    """
    instances = body.get("instances") if isinstance(body, dict) else None
    if not isinstance(instances, list) or not all(isinstance(row, dict) for row in instances):
        raise ProtocolError('the body must be {"instances": [{"<column>": value, ...}, ...]} (one JSON object per row)')
    columns = [c.name for c in contract.columns]
    unknown = sorted({key for row in instances for key in row} - set(columns))
    if unknown:
        raise ProtocolError(f"columns {unknown} are not in the model's schema; its columns are {columns}")
    cells = {name: [row.get(name) for row in instances] for name in columns if any(name in row for row in instances)}
    return _checked(cells, len(instances), contract, max_rows)


def _checked(cells: dict[str, list[Any]], rows: int, contract: TabularInput, max_rows: int) -> pd.DataFrame:
    if not 1 <= rows <= max_rows:
        raise ProtocolError(f"{rows} rows; between 1 and {max_rows} are allowed per request")
    required = [c.name for c in contract.columns if not c.nullable and c.name not in cells]
    if required:
        optional = [c.name for c in contract.columns if c.nullable]
        raise ProtocolError(
            f"columns {required} are required (never missing in training)"
            + (f"; only {optional} may be left out" if optional else "; no column may be left out")
        )
    return pd.DataFrame({name: pd.Series(values, dtype=object) for name, values in cells.items()})


def encode_request(frame: pd.DataFrame, contract: TabularInput) -> EncodedRequest:
    """The request's rows encoded by the schema contract.

    Raises:
        RowsRefused: a cell that is no value of its column's type (named by row and column).
    """
    encoded = contract.encode(frame)
    if encoded.invalid.any():
        bad = [f"row {row}: {reason}" for row, reason in encoded.problems if encoded.invalid[row]]
        raise RowsRefused(f"{int(encoded.invalid.sum())} of {len(frame)} rows do not fit the schema: " + "; ".join(bad[:5]))
    # What holds for the whole request (a column left out) is every row's problem, as in batch scoring.
    problems = [list(encoded.notes) for _ in range(len(frame))]
    for row, reason in encoded.problems:
        problems[row].append(reason)
    return EncodedRequest(raw=encoded.raw, problems=["; ".join(p) for p in problems])
