"""Builds that resume: the cache policy of the steps whose results a rerun on the same work dir reuses.

A build killed at any step and started again on the same ``work_dir`` skips every step it had
finished: each deterministic step (ingest, train, distill, prune, quantize, export, evaluate, the
monitoring reference) is decorated with ``@task(cache_key_fn=STEP_KEY)`` (Prefect's
``CacheKeyFnPolicy``), and the flow gives it a place to keep its result with :func:`results_in`
(``work_dir/results``). Pure: Prefect calls these functions, they import none of it. Steps with side
effects on the store or that read moving state (the source, feedback, publish, gate, promote,
the cool-down claim) are never cached.

The key of a step's result is the hash of
- its inputs, as JSON (configs, and the results of earlier steps: the paths they hold and the
  dataset version),
- the code it runs: the step's module (its own source, what Prefect's ``TASK_SOURCE`` hashes) and
  every ``tasks`` module it imports, transitively, plus the versions of the numerical libraries,
- where a step says so, the state of files its inputs name outside the work dir (ingest's source
  files, the training config's ``weights_path``): each file's size and modification and change times,
and never the run id: a rerun finds what an earlier run finished.

A result is only reused while its files are as it left them: every path it holds must still
exist and be no newer than the result itself. A deleted work dir (or a file another build
overwrote) drops the cached result and the step runs again. ``PREFECT_TASKS_REFRESH_CACHE=true``
(or ``--fresh`` on the command line) recomputes every step and overwrites what was kept.

Where a step writes files, it writes them into a folder named by its own inputs, code and the
files it derives from (:func:`step_folder`), held by one process at a time and keeping its result
(:func:`computed_once`): two builds on one work dir that differ in a step's config (an INT8
setting, say) never write into each other's files, and two that agree share them instead of
rewriting them while the other reads them.
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

RESULTS_FOLDER = "results"
# Where ingestion keeps dataset snapshots and training its runs (the step folders of a model are inside its run).
SNAPSHOTS_FOLDER = "snapshots"
RUNS_FOLDER = "runs"
# A step folder's result, written last: a folder without it was left by a process that did not finish.
KEPT_RESULT = "result.pickle"
# In the results folder: held shared while a build checks a kept result and marks it used, and exclusively
# while cleaning checks an entry a last time and deletes it (see :func:`reuse_lock`).
REUSE_LOCK = ".reuse.lock"
# Libraries whose version changes what a step computes (weights, graphs, quantization).
LIBRARIES = ("torch", "lightning", "numpy", "onnx", "onnxruntime", "openvino", "nncf", "torch-pruning", "scikit-learn")
PROJECT = Path(__file__).resolve().parents[1]

T = TypeVar("T")


def results_in(work_dir: Path) -> Callable[[T], T]:
    """What a flow wraps a cached step in so its result is kept under ``work_dir/results``.

    ``results_in(work_dir)(train)(snapshot, config, work_dir)`` runs ``train`` or, when a
    run on this work dir finished it with the same inputs and code, returns its kept result.
    A step called without it computes every time.
    """
    storage = Path(work_dir) / RESULTS_FOLDER

    def keep(step: T) -> T:
        return step.with_options(result_storage=storage)  # type: ignore[attr-defined]

    return keep


def stable(value: Any) -> Any:
    """``value`` as plain JSON data, the same in every process (pydantic models by their JSON dump).

    Raises:
        TypeError: a value with no stable form (a live object); such a step cannot be cached.
    """
    if isinstance(value, BaseModel):
        return stable(value.model_dump(mode="json"))
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): stable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [stable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"no stable form for a {type(value).__name__}")


def _module_file(name: str) -> Path | None:
    base = PROJECT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def code_version(module: str) -> str:
    """Hash of ``module``'s source, of every ``tasks`` module it imports (transitively, at any depth,
    also inside functions), of their packages' ``__init__`` and of the numerical libraries' versions.

    A change to the code a step runs (not to a stage it never imports) gives its results a new key.
    """
    sources: dict[str, bytes] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in sources or not (name == "tasks" or name.startswith("tasks.")):
            continue
        path = _module_file(name)
        if path is None:  # a name imported from a module, not a module
            continue
        sources[name] = path.read_bytes()
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        for node in ast.walk(ast.parse(sources[name])):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                todo += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
    digest = hashlib.sha256()
    for name in sorted(sources):
        digest.update(name.encode() + b"\0" + sources[name] + b"\0")
    for library in LIBRARIES:
        try:
            version = metadata.version(library)
        except metadata.PackageNotFoundError:
            version = "-"
        digest.update(f"{library}=={version}\0".encode())
    return digest.hexdigest()


def _paths(value: Any) -> Iterator[Path]:
    """Every path a step's result holds (pydantic models, lists, dicts, at any depth)."""
    if isinstance(value, Path):
        yield value
    elif isinstance(value, BaseModel):
        # Its values as kept, not its class's fields now: a result kept by older code is walked whole.
        for item in vars(value).values():
            yield from _paths(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _paths(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _paths(item)


def outdated(result: Any, written_ns: int) -> str | None:
    """Why a result kept at ``written_ns`` can no longer be used, or None: a path it names is gone,
    or a file (in a folder it names, at any depth) was written after it."""
    for path in _paths(result):
        if not path.exists():
            return f"{path} is gone"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            if file.stat().st_mtime_ns > written_ns:
                return f"{file} changed after it was kept"
    return None


def _attribute(inputs: dict[str, Any], dotted: str) -> Any:
    head, *rest = dotted.split(".")
    value = inputs.get(head)
    for part in rest:
        value = getattr(value, part, None)
    return value


def fingerprint(path: Path) -> str | None:
    """What changes when any file at ``path`` (a file, or a folder at any depth) changes: each file's
    relative path, size, modification and status-change times (the latter no copy tool can set back).
    None when nothing is there."""
    if not path.exists():
        return None
    digest = hashlib.sha256()
    files = [(path.name, path.stat())] if path.is_file() else _files_in_order(path)
    for name, stat in files:
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}\0".encode())
    return digest.hexdigest()


def _files_in_order(folder: Path, prefix: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """Every file under ``folder`` with its stat, in name order folder by folder.

    Only one folder's names are held at a time: a source of a million files is walked, not listed.
    """
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        if entry.is_dir():
            yield from _files_in_order(Path(entry.path), f"{prefix}{entry.name}/")
        elif entry.is_file():
            yield f"{prefix}{entry.name}", entry.stat()


def step_key(files: tuple[str, ...] = ()) -> Callable[[Any, dict[str, Any]], str | None]:
    """The cache key function of a deterministic step: ``@task(cache_key_fn=step_key())``.

    Prefect wraps it in its ``CacheKeyFnPolicy``. The key hashes the step's inputs, its code and,
    for ``files`` (inputs by dotted path, ``source`` or ``config.weights_path``: files or folders
    outside the work dir), the state of every file there (:func:`fingerprint`); never the run id.
    It caches only where the flow said where results live (:func:`results_in`), and first drops a
    kept result whose files are gone or changed, so the step runs again.
    """

    def key(context: Any, inputs: dict[str, Any]) -> str | None:
        task = getattr(context, "task", None)
        if task is None or task.result_storage is None:
            return None
        fn = task.fn
        try:
            states = {dotted: fingerprint(Path(path)) if (path := _attribute(inputs, dotted)) else None for dotted in files}
            blob = {
                "step": f"{fn.__module__}.{fn.__qualname__}",
                "inputs": stable(inputs),
                "code": code_version(fn.__module__),
                "files": states,
            }
            digest = hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()
            _drop_if_outdated(context, digest)
        except Exception as exc:  # noqa: BLE001 - a key that cannot be made means: compute, keep nothing
            _log(context, logging.WARNING, "%s runs without its cache: %s", fn.__name__, exc)
            return None
        return digest

    return key


def _drop_if_outdated(context: Any, key: str) -> None:
    """Delete the result kept under ``key`` when its files are gone or changed, so the step runs again."""
    store = context.result_store
    basepath = getattr(store.result_storage, "basepath", None)
    if basepath is None:  # not a local folder: nothing here can tell
        return
    record = Path(basepath).expanduser().resolve() / key
    with reuse_lock(record.parent, shared=True):
        if not record.is_file():
            return
        written, checked = record.stat().st_mtime_ns, time.time_ns()
        try:
            reason = outdated(store.read(key).result, written)
        except Exception as exc:  # noqa: BLE001 - an unreadable record is as good as none
            reason = f"it cannot be read ({type(exc).__name__}: {exc})"
        if reason:
            _log(context, logging.INFO, "not reusing the kept result of %s: %s; computing it again", context.task.name, reason)
            store.cache.pop(key, None)
            record.unlink(missing_ok=True)
        else:
            _used(record, checked)


@contextmanager
def reuse_lock(results: Path, shared: bool) -> Iterator[None]:
    """Hold the results folder's reuse lock: ``shared`` while a build checks a kept result and marks it used,
    exclusive while cleaning checks an entry a last time and deletes it.

    Without it, a build could take up a result between cleaning's last check and its delete, and lose
    the files the result names. A lock file another user created is locked read-only (``flock`` needs
    no write access). Where it can be neither created nor opened (no results folder, a read-only work
    dir) nothing is held: no build can have kept a result there.
    """
    try:
        handle = open(results / REUSE_LOCK, "a+")  # noqa: SIM115 - closed below
    except PermissionError:
        try:
            handle = open(results / REUSE_LOCK)  # noqa: SIM115 - closed below
        except OSError:
            yield
            return
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield


def _used(kept: Path, checked_ns: int) -> None:
    """Mark a kept result reused: its time becomes its last use, which cleaning goes by (:func:`stale_entries`).

    The time is when its files were checked, not after: a file written during the check is still newer,
    and found by the next one. Where the time cannot be set (a result another user wrote), it stays as it is.
    """
    try:
        when = max(checked_ns, kept.stat().st_mtime_ns)  # never back (a file system whose clock runs ahead)
        os.utime(kept, ns=(when, when))
    except OSError:
        pass


def _log(context: Any, level: int, message: str, *args: Any) -> None:
    """Log as the task run (Prefect's run logger is the ``prefect.task_runs`` logger with the run's ids)."""
    run = getattr(context, "task_run", None)
    if run is None:
        logging.getLogger(__name__).log(level, message, *args)
        return
    extra = {
        "task_run_id": str(run.id), "flow_run_id": str(run.flow_run_id), "task_run_name": run.name,
        "task_name": context.task.name,
    }
    logging.getLogger("prefect.task_runs").log(level, message, *args, extra=extra)


STEP_KEY = step_key()


def step_folder(parent: Path, name: str, **inputs: Any) -> Path:
    """Where a step writes its files: ``parent/{name}-{hash of inputs}``.

    ``inputs`` are everything the step's files depend on: its configs, its code and the
    :func:`fingerprint` of each file it derives from (a model retrained in place gets new folders
    downstream, and a checkpoint is never resumed on weights it did not start from).
    """
    digest = hashlib.sha256(json.dumps(stable(inputs), sort_keys=True).encode()).hexdigest()[:12]
    return parent / f"{name}-{digest}"


def computed_once(folder: Path, compute: Callable[[], T], waiting: Callable[[str], None] | None = None) -> T:
    """``compute()``'s result, computed into ``folder`` by one process at a time and kept there (``result.pickle``).

    A process that finds the folder held waits for its holder (an advisory lock the system drops
    when the holder dies). Whoever then holds the folder reuses the result kept there, unless a file
    it names is gone or changed since (:func:`outdated`); a holder that died kept nothing, and the
    step is computed. Builds whose steps agree thus share the files instead of rewriting them while
    the other reads them; the folder's name (:func:`step_folder`) says when they agree.
    """
    kept = folder / KEPT_RESULT
    with _locked(folder.parent / f".{folder.name}.lock", folder, waiting):
        folder.mkdir(parents=True, exist_ok=True)  # once held: the holder before may have been a cleaning that removed it
        if kept.is_file():
            try:
                written, checked = kept.stat().st_mtime_ns, time.time_ns()
                result = pickle.loads(kept.read_bytes())  # noqa: S301 - written by this project, in its own work dir
                if outdated(result, written) is None:
                    _used(kept, checked)
                    return result
            except Exception:  # noqa: BLE001 - unreadable (another version's classes): computed again
                pass
        kept.unlink(missing_ok=True)
        result = compute()
        partial = kept.with_name(kept.name + ".partial")
        partial.write_bytes(pickle.dumps(result))
        os.replace(partial, kept)
        return result


@contextmanager
def _locked(lock: Path, folder: Path, waiting: Callable[[str], None] | None) -> Iterator[None]:
    """Hold ``lock`` (created with its folder where missing), waiting for its holder; ``waiting`` is told once.

    A lock file deleted while this process waited for it (a cleaning removed the run around it) locks
    nothing any other process can see: the lock is then taken again on the file now at that path.
    """
    told = False
    while True:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a+")  # noqa: SIM115 - closed below
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting is not None and not told:
                    waiting(f"another process is computing {folder}; waiting for it to finish, then using its result")
                    told = True
                fcntl.flock(handle, fcntl.LOCK_EX)
            if _same_file(handle, lock):
                break
        except BaseException:
            handle.close()
            raise
        handle.close()
    with handle:
        yield


def _same_file(handle: Any, path: Path) -> bool:
    """Whether ``path`` is still the file ``handle`` has open."""
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


@dataclass(frozen=True)
class Entry:
    """Something builds keep in a work dir: a kept result, a dataset snapshot, a training run or a step folder."""

    path: Path
    kind: str
    bytes: int
    last_used: float  # seconds since the epoch: its newest file (a kept result's time moves on each reuse)
    remove: bool
    why: str


def kept_value(record: Path) -> Any:
    """The value a step's result record holds: Prefect's record is JSON whose ``result`` is the base64 of the
    pickled value (its default serializer, cloudpickle). Raises for a record of another form."""
    import base64

    data = json.loads(record.read_text())
    if data.get("metadata", {}).get("serializer", {}).get("type") != "pickle":
        raise ValueError(f"{record} is not a pickled result")
    return pickle.loads(base64.b64decode(data["result"]))  # noqa: S301 - written by this project, in its own work dir


def stale_entries(work_dir: Path, unused_seconds: float, now: float) -> list[Entry]:
    """What ``work_dir`` keeps, each marked for removal or not, and why; outermost first, nothing under a removed entry.

    An entry goes when no build has used it for ``unused_seconds``: kept results not reused since
    (a reuse renews their time), and snapshots, runs and step folders whose newest file is older,
    that no result still kept names (a path inside them, or a folder around them), and that no
    process holds (a training or a step at work). Where a kept result still in use cannot be read,
    no folder goes: what it names is unknown. Links inside the work dir's folders are left alone.
    What goes is recomputed by the next build that needs it.
    """
    cutoff = now - unused_seconds
    entries: list[Entry] = []
    records = _read_records(work_dir)
    for record, used, value in records:
        stale = used < cutoff
        why = f"not reused for {_days(now - used)}" if stale else f"reused or written {_days(now - used)} ago"
        kind = f"kept {type(value).__name__}" if not isinstance(value, Exception) else "kept result"
        entries.append(Entry(record, kind, _size(record), used, stale, why))
    named, unreadable = _named_by(records, work_dir, cutoff)
    folders = [(p, "snapshot") for p in _children(work_dir / SNAPSHOTS_FOLDER)]
    folders += [(run, "training run") for version in _children(work_dir / RUNS_FOLDER, links=False) for run in _children(version)]
    for folder, kind in folders:
        entries += _folder_entries(folder, kind, named, cutoff, now, unreadable)
    return entries


# A kept result's record is named by its step key, a sha256.
_KEY = re.compile(r"[0-9a-f]{64}")


def _records(work_dir: Path) -> list[Path]:
    """The kept results' records: files named by a step key, no links."""
    folder = work_dir / RESULTS_FOLDER
    try:
        return sorted(p for p in folder.iterdir() if _KEY.fullmatch(p.name) and p.is_file() and not p.is_symlink())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _read_records(work_dir: Path) -> list[tuple[Path, float, Any]]:
    """Each kept result's record, its time and its value (or why it cannot be read); records dropped meanwhile skipped."""
    read = []
    for record in _records(work_dir):
        try:
            used = record.stat().st_mtime
        except FileNotFoundError:  # dropped by a build meanwhile
            continue
        try:
            value = kept_value(record)
        except FileNotFoundError:
            continue
        except Exception as exc:  # noqa: BLE001 - any record that cannot be read: see _named_by
            value = exc
        read.append((record, used, value))
    return read


def _named_by(records: list[tuple[Path, float, Any]], work_dir: Path, cutoff: float) -> tuple[list[Path], str]:
    """Every path the results used since ``cutoff`` name (where each may be: :func:`_as_named`), and the first
    of them that cannot be read or walked (then what it names is unknown)."""
    named: list[Path] = []
    for record, used, value in records:
        if used < cutoff:
            continue
        try:
            if isinstance(value, Exception):
                raise value
            named += [place for path in _paths(value) for place in _as_named(path, work_dir)]
        except Exception as exc:  # noqa: BLE001 - any record that cannot be read or walked
            return named, f"{record.name} ({type(exc).__name__}: {exc})"
    return named, ""


def _as_named(path: Path, work_dir: Path) -> list[Path]:
    """Where a path a kept result holds may be: as it is (absolute, or from here), and from this work dir's
    snapshots or runs on (a build run elsewhere: with a relative work dir, or one mounted at another path)."""
    parts = path.parts
    tops = [i for i, part in enumerate(parts) if part in (SNAPSHOTS_FOLDER, RUNS_FOLDER)]
    return [path.resolve(), *((work_dir / Path(*parts[i:])).resolve() for i in tops)]


def _folder_entries(
    folder: Path, kind: str, named: list[Path], cutoff: float, now: float, unreadable: str, holding: bool = False
) -> list[Entry]:
    """``folder``'s entry and, where it stays, those of the step folders in it (at any depth); ``holding``: this
    process holds the folder's locks (a second hold of one from here would look like another process's)."""
    if folder.is_symlink():
        return [Entry(folder, kind, 0, 0.0, False, "a link: left alone")]
    real = folder.resolve()
    used, size = _usage(folder)
    if any(path == real or real in path.parents or path in real.parents for path in named):
        why, remove = "named by a kept result", False
    elif used >= cutoff:
        why, remove = f"used {_days(now - used)} ago", False
    elif unreadable:
        why, remove = f"a kept result in use cannot be read, so what it names is unknown: {unreadable}", False
    elif not holding and _held(folder):
        why, remove = "held by a running process", False
    else:
        why, remove = f"unused for {_days(now - used)}", True
    entries = [Entry(folder, kind, size, used, remove, why)]
    if not remove:
        for step in _step_folders(folder):
            entries += _folder_entries(step, "step folder", named, cutoff, now, unreadable)
    return entries


def remove_entries(work_dir: Path, listed: list[Entry], unused_seconds: float, now: float) -> tuple[list[Entry], list[str]]:
    """Delete the entries ``listed`` for removal that are still unused when their turn comes (a build may have
    reused one since the listing), a folder only while holding its locks, so no process starts working in it.

    Returns what was removed, and why each that could not be was not.
    """
    removed: list[Entry] = []
    problems: list[str] = []
    for entry in listed:
        if not entry.remove:
            continue
        try:
            with reuse_lock(work_dir / RESULTS_FOLDER, shared=False):  # no build marks a result used meanwhile
                outcome = _remove(entry, work_dir, unused_seconds, now)
        except OSError as exc:
            problems.append(f"{entry.path}: {exc.strerror or exc}")
            continue
        if outcome == "":
            removed.append(entry)
        elif outcome is not None:
            problems.append(f"{entry.path}: {outcome}; kept")
    for version in {e.path.parent for e in removed if e.kind == "training run"}:  # a dataset version whose runs all went
        try:
            version.rmdir()
        except OSError:  # not empty (or a build just started a run in it): kept
            pass
    return removed, problems


def _remove(entry: Entry, work_dir: Path, unused_seconds: float, now: float) -> str | None:
    """Delete ``entry`` if it is still unused: "" when deleted, why not when kept, None when gone meanwhile."""
    cutoff = max(now, time.time()) - unused_seconds
    if entry.path.is_file():
        if entry.path.stat().st_mtime >= cutoff:
            return "reused since it was listed"
        entry.path.unlink()
        return ""
    if not entry.path.is_dir():
        return None
    with _holding(entry.path) as free:
        named, unreadable = _named_by(_read_records(work_dir), work_dir, cutoff)
        still = _folder_entries(entry.path, entry.kind, named, cutoff, now, unreadable, holding=True)[0]
        if not free or not still.remove:
            return "held by a running process" if not free else still.why
        shutil.rmtree(entry.path)
        return ""


def _usage(folder: Path) -> tuple[float, int]:
    """In one walk: the time of the newest file in ``folder`` (or of the folder itself), and its bytes on disk
    (blocks allocated, as ``du`` counts them). Files gone meanwhile count nothing."""
    newest, total = _mtime(folder), 0
    for file in _files(folder):
        newest = max(newest, _mtime(file))
        total += _size(file)
    return newest, total


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # gone meanwhile
        return 0.0


def _files(folder: Path) -> Iterator[Path]:
    """Every file under ``folder`` (links not followed); folders that vanish or cannot be read meanwhile are skipped."""
    for root, _, names in os.walk(folder, onerror=lambda _: None):
        for name in names:
            yield Path(root) / name


def _children(folder: Path, links: bool = True) -> list[Path]:
    """The folders in ``folder`` (``links``: links to folders too); none where it is not one."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and (links or not p.is_symlink()))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _step_folders(folder: Path) -> list[Path]:
    """The step folders directly in ``folder``: those :func:`computed_once` keeps a lock file beside."""
    return [p for p in _children(folder) if (folder / f".{p.name}.lock").exists()]


def _lock_files(folder: Path) -> list[Path]:
    """Every lock a process at work in ``folder`` holds: a training run's, each step folder's (beside it)."""
    locks = [folder.parent / f".{folder.name}.lock", *(f for f in _files(folder) if f.name.endswith(".lock"))]
    return [lock for lock in locks if lock.is_file()]


def _held(folder: Path) -> bool:
    with _holding(folder) as held:
        return not held


class _holding:
    """Every lock of ``folder`` taken without waiting (``True``) or none (``False``: a process holds one)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.handles: list[Any] = []

    def __enter__(self) -> bool:
        for lock in _lock_files(self.folder):
            try:
                handle = open(lock, "a+")  # noqa: SIM115 - closed in __exit__
            except OSError:  # a lock this process may not open: it cannot tell the folder is free
                return False
            self.handles.append(handle)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
        return True

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.close()


def _size(file: Path) -> int:
    """A file's bytes on disk (blocks allocated, as ``du`` counts them; a file gone meanwhile counts nothing)."""
    try:
        return file.lstat().st_blocks * 512
    except FileNotFoundError:
        return 0


def _days(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:.0f} days" if days >= 1 else f"{seconds / 3600:.0f} hours"
