"""Rows of an array file on disk, read a batch at a time: the snapshot's inputs are never all in memory.

Reads go through ``readinto`` at the rows' offsets rather than a memory map: a map keeps every
page it has touched counted in the process's resident memory until it is unmapped, so a pass over
a split would look (and, in a container's memory limit, count) like holding it. Read this way,
the pages stay in the kernel's page cache and a batch costs its own bytes only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class StoredRows:
    """An array of rows in a file (a ``.npy`` or a raw block at ``offset``), indexed like a NumPy array.

    ``rows[i:j]``, ``rows[index_array]`` and ``rows[i]`` read just those rows; ``np.asarray(rows)``
    reads them all. ``select`` narrows the view (a split) without reading anything.
    """

    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple[int, ...], count: int, offset: int = 0,
                 select: np.ndarray | None = None) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.count = count
        self.offset = offset
        # Absolute rows of this view; None: rows 0..count-1 of the file.
        self._select = select
        self._row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize

    @classmethod
    def from_npy(cls, path: Path) -> StoredRows:
        """The rows of a C-ordered ``.npy`` file (first axis: rows)."""
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(handle)
            if fortran:
                raise ValueError(f"{path}: Fortran-ordered arrays are not stored rows")
            return cls(path, dtype, shape[1:], shape[0], handle.tell())

    def select(self, rows: slice | np.ndarray) -> StoredRows:
        """A view of some rows (a slice or indices of this view); nothing is read."""
        absolute = self._absolute(rows)
        if self._select is None and (not len(absolute) or (absolute[-1] - absolute[0] + 1 == len(absolute) and np.all(np.diff(absolute) == 1))):
            start = int(absolute[0]) if len(absolute) else 0
            return StoredRows(self.path, self.dtype, self.row_shape, len(absolute), self.offset + start * self._row_bytes)
        return StoredRows(self.path, self.dtype, self.row_shape, self.count, self.offset, absolute)

    def __len__(self) -> int:
        return self.count if self._select is None else len(self._select)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.row_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    def _absolute(self, index: slice | np.ndarray | list[int]) -> np.ndarray:
        if not isinstance(index, slice) and np.asarray(index).dtype == bool:  # a mask, as NumPy reads one
            index = np.flatnonzero(np.asarray(index))
        positions = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index, dtype=np.int64)
        if positions.ndim != 1:
            raise IndexError(f"index stored rows with a slice or a 1-d array of rows, got shape {positions.shape}")
        if len(positions) and (positions.min() < -len(self) or positions.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        positions = np.where(positions < 0, positions + len(self), positions)
        return positions if self._select is None else self._select[positions]

    def __getitem__(self, index: int | slice | np.ndarray | list[int] | tuple) -> np.ndarray:
        if isinstance(index, tuple):  # rows first, then within them: rows[:, 0]
            return self[index[0]][(slice(None), *index[1:])] if not isinstance(index[0], (int, np.integer)) else (
                self[index[0]][index[1:]]
            )
        if isinstance(index, (int, np.integer)):
            return self._read(self._absolute([int(index)]))[0]
        return self._read(self._absolute(index))

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def _read(self, absolute: np.ndarray) -> np.ndarray:
        """The rows at ``absolute`` file positions, in that order; each run of consecutive rows is one read."""
        out = np.empty((len(absolute), *self.row_shape), self.dtype)
        if not len(absolute):
            return out
        flat = out.reshape(len(absolute), -1).view(np.uint8)
        order = np.argsort(absolute, kind="stable")
        ordered = absolute[order]
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        in_place = bool(np.all(order == np.arange(len(order))))
        with open(self.path, "rb", buffering=0) as handle:
            for run in np.split(np.arange(len(ordered)), breaks):
                first, n = int(ordered[run[0]]), len(run)
                if in_place:
                    target = flat[run[0] : run[0] + n]
                    self._read_into(handle, first, target)
                else:
                    block = np.empty((n, self._row_bytes), np.uint8)
                    self._read_into(handle, first, block)
                    flat[order[run]] = block
        return out

    def copy_rows(self, index: np.ndarray, out) -> None:  # noqa: ANN001 - a binary file open for writing
        """Append the rows ``index`` (of this view) to ``out``, in that order, without reading them into this process.

        Each run of consecutive rows is one ``copy_file_range``: the kernel copies it file to file.
        """
        absolute = self._absolute(index)
        if not len(absolute):
            return
        out.flush()
        breaks = np.flatnonzero(np.diff(absolute) != 1) + 1
        with open(self.path, "rb", buffering=0) as source:
            for run in np.split(absolute, breaks):
                offset, remaining = self.offset + int(run[0]) * self._row_bytes, len(run) * self._row_bytes
                while remaining:
                    done = os.copy_file_range(source.fileno(), out.fileno(), remaining, offset)
                    if not done:
                        raise EOFError(f"{self.path} ends before row {int(run[-1])}: the file is truncated")
                    offset, remaining = offset + done, remaining - done
        out.seek(0, os.SEEK_END)

    def _read_into(self, handle, first: int, target: np.ndarray) -> None:  # noqa: ANN001 - a raw file object
        view = memoryview(target).cast("B")
        handle.seek(self.offset + first * self._row_bytes)
        done = 0
        while done < len(view):
            got = handle.readinto(view[done:])
            if not got:
                raise EOFError(f"{self.path} ends before row {first + len(target)}: the file is truncated")
            done += got


def write_rows(path: Path, rows: dict[int, np.ndarray], dtype: np.dtype, row_shape: tuple[int, ...], offset: int) -> None:
    """Write each ``rows[i]`` at row ``i`` of the block at ``offset`` in ``path`` (which must exist; pwrite, no map)."""
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    fd = os.open(path, os.O_WRONLY)
    try:
        for i, row in rows.items():
            data = np.ascontiguousarray(row, dtype=dtype).tobytes()
            if len(data) != row_bytes:
                raise ValueError(f"row {i} has {len(data)} bytes, rows of {path} have {row_bytes}")
            os.pwrite(fd, data, offset + i * row_bytes)
    finally:
        os.close(fd)


def create_npy(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> int:
    """An ``.npy`` file of ``shape`` (zeros, sparse on disk until written); returns where its data starts."""
    with open(path, "wb") as out:
        np.lib.format.write_array_header_2_0(
            out, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)}
        )
        offset = out.tell()
        out.truncate(offset + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
    return offset
