"""Inputs to score: the files of a local folder or an ``s3://`` prefix, and the batch's identity."""

from __future__ import annotations

import csv
import gc
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from pydantic import BaseModel

from tasks.data.workers import decoding_workers, in_order, worker_pool
from tasks.errors import LeptonError
from tasks.hashing import sha256_bytes, sha256_file
from tasks.registry.config import StoreConfig
from tasks.registry.store import open_store


class InputNotFound(LeptonError, FileNotFoundError):
    """The source to score or explain does not exist."""


class InputFile(BaseModel):
    """One file of a batch: its name in the source and where it is on local disk."""

    name: str
    path: Path
    sha256: str


class FailedInput(BaseModel):
    """A file of the batch that could not be used, and why."""

    name: str
    reason: str


class InputBatch(BaseModel):
    """The files of one batch, on local disk, and the batch's identity (a hash of their contents)."""

    source: str
    batch_id: str
    files: list[InputFile]


class InputNotReadable(LeptonError, PermissionError):
    """A folder of the source to score cannot be listed."""


# Files hashed per job in worker processes (at most, and at least): a batch of thousands is hashed on every core.
HASH_JOB_FILES = 4096
HASH_JOB_MIN_FILES = 256


def local_inputs(folder: Path) -> list[InputFile]:
    """Every non-hidden file under ``folder`` (recursively; links to folders are not followed), sorted by path,
    each with its content hash.

    Raises:
        InputNotFound: the folder does not exist or is not a folder.
        InputNotReadable: a folder in it cannot be listed.
    """
    if not folder.is_dir():
        raise InputNotFound(f"source {folder} is not an existing folder")
    names = list(_names_in_order(str(folder), ""))
    hashes = _hashes([os.path.join(folder, name) for name in names])
    with _no_cycle_collection():
        return [InputFile(name=name, path=folder / name, sha256=digest) for name, digest in zip(names, hashes, strict=True)]


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause Python's cycle collector while making objects that hold no cycles: made by the hundred thousand,
    they trigger it over and over, and it walks them all each time (two thirds of listing 200k files)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _names_in_order(root: str, prefix: str) -> Iterator[str]:
    """The non-hidden files under ``root`` as ``prefix``-ed relative names, in path order (part by part: each
    folder's entries by name, a subfolder's files at its name's place); links to files followed, to folders not.

    Plain strings from ``os.scandir``: a regular file costs no ``stat``, and at hundreds of thousands of
    files pathlib's per-file objects cost more than hashing them.
    """
    try:
        with os.scandir(root) as scan:
            entries = sorted((entry for entry in scan if not entry.name.startswith(".")), key=lambda entry: entry.name)
    except FileNotFoundError:
        if not prefix:
            raise InputNotFound(f"source {root} is not an existing folder") from None
        return  # a subfolder removed since its parent was listed (an uploader renaming its temporary folder)
    except OSError as exc:
        raise InputNotReadable(
            f"cannot list {root}: {exc.strerror or exc}; make it readable, or move it out of the source"
        ) from None
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _names_in_order(entry.path, f"{prefix}{entry.name}/")
        elif _is_file(entry):
            yield f"{prefix}{entry.name}"


def _is_file(entry: os.DirEntry) -> bool:
    """A regular file, or a link to one; a link in a loop or to a place this user may not see is not."""
    try:
        return entry.is_file()
    except OSError:
        return False


def _hashes(paths: list[str]) -> list[str]:
    """The sha256 of each file, in order; a batch of thousands hashed in worker processes, on every core."""
    workers = decoding_workers(0, len(paths))
    # A few jobs per worker, so that none waits on another's last one.
    size = min(HASH_JOB_FILES, max(HASH_JOB_MIN_FILES, -(-len(paths) // (4 * workers))))
    jobs = ((start, (paths[start : start + size],)) for start in range(0, len(paths), size))
    with worker_pool(workers) as pool:
        return [digest for _, part in in_order(pool, workers, _hash_files, jobs) for digest in part]


def _hash_files(paths: list[str]) -> list[str]:
    return [sha256_file(path) for path in paths]


def s3_inputs(source: str, store_config: StoreConfig, dest: Path) -> list[InputFile]:
    """Download every non-hidden object under an ``s3://`` prefix (the store's endpoint and credentials) to ``dest``."""
    inputs = open_store(store_config.model_copy(update={"uri": source, "sse": "none", "kms_key_id": None}))
    keys = [k for k in inputs.list_keys("") if not any(part.startswith(".") for part in k.split("/"))]
    for key in keys:
        inputs.get_file(key, dest / key)
    hashes = _hashes([os.path.join(dest, key) for key in keys])
    with _no_cycle_collection():
        return [InputFile(name=key, path=dest / key, sha256=digest) for key, digest in zip(keys, hashes, strict=True)]


def batch_id(files: list[InputFile]) -> str:
    """The batch's identity: a hash of its files' contents, so re-scoring the same files is recognised."""
    return sha256_bytes("\n".join(sorted(f.sha256 for f in files)).encode())[:12]


def collect_batch(source: str, store_config: StoreConfig, work_dir: Path) -> InputBatch:
    """The files of a folder, or of an ``s3://`` prefix downloaded under ``work_dir/incoming``."""
    if source.startswith("s3://"):
        files = s3_inputs(source, store_config, work_dir / "incoming" / sha256_bytes(source.encode())[:12])
    else:
        files = local_inputs(Path(source).expanduser())
    return InputBatch(source=source, batch_id=batch_id(files), files=files)


def archive_inputs(files: list[InputFile], failed: list[FailedInput], inbox: Path, processed: Path, day: date) -> Path:
    """Move a scored batch out of its inbox: into ``processed/{day}/``, unusable files into its ``rejected/``.

    Names keep their path under the inbox; a name already taken that day gets the file's hash prefix.
    ``rejected/reasons.csv`` says why each rejected file was not scored. Called only once the batch's
    logs are written, so a failed run leaves its files in the inbox for the next one. Returns the day's folder.
    """
    folder = processed / day.isoformat()
    reasons = {f.name: f.reason for f in failed}
    for item in files:
        source = inbox / item.name
        if not source.is_file():
            continue  # moved by an earlier attempt of this run
        target = (folder / "rejected" if item.name in reasons else folder) / item.name
        if target.exists():
            target = target.with_name(f"{target.stem}-{item.sha256[:8]}{target.suffix}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, target)
    if reasons:
        log = folder / "rejected" / "reasons.csv"
        new = not log.exists()
        with log.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["file", "reason"])
            writer.writerows(sorted(reasons.items()))
    return folder
