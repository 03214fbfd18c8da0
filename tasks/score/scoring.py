"""Score files with a released artifact: predictions, and the monitoring row of each scored input.

Files are decoded by the release's input contract (as in training) and their rows computed by the
same function as the release's reference, so build and serve cannot drift apart.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from tasks.data.contract import InputContract
from tasks.data.decoded import DecodedInputs
from tasks.data.workers import DecodingWorkerDied, in_order, worker_pool
from tasks.export.backends import Backend
from tasks.host import usable_cpus
from tasks.score.features import SCHEMA_PROBLEMS, Projection, monitoring_columns, monitoring_features, non_finite_rows
from tasks.score.inference import infer, probabilities, softmax
from tasks.score.inputs import FailedInput, InputFile


@dataclass(frozen=True)
class ScoredFiles:
    """Predictions (one row per scored input), monitoring rows (None without a projection), failures."""

    predictions: pd.DataFrame
    features: pd.DataFrame | None
    failures: list[FailedInput]


class ScoreResult(BaseModel):
    """What a scoring run did."""

    model: str
    version: str
    variant: str | None = None
    variant_reason: str = ""
    batch_id: str
    files: int
    scored: int
    failed: list[FailedInput]
    unseen_sizes: int = 0
    class_counts: dict[str, int]
    predictions_uri: str | None = None
    monitoring_uri: str | None = None
    note: str = ""


# Files scored at a time in one process: memory holds one chunk's inputs, whatever the size of the batch.
CHUNK_FILES = 4096
# Files a worker process takes at a time: small enough that every worker is busy on a shard of a few thousand files.
JOB_FILES = 512

Opener = Callable[[int | None], Backend]
"""Opens the variant to score with: a back end with this many intra-op threads (None: the runtime's default)."""


def score_files(
    files: list[InputFile],
    open_backend: Opener,
    contract: InputContract,
    classes: list[str],
    projection: Projection | None,
    batch_size: int = 256,
    chunk_files: int = CHUNK_FILES,
    workers: int = 1,
    threads: int | None = None,
) -> ScoredFiles:
    """Decode, predict and describe every file, ``chunk_files`` at a time; an unusable file is a failure of that file only.

    A file that cannot be decoded, or whose monitoring row comes out NaN/infinite, is
    reported with its reason; the rest of the batch is scored.

    ``workers`` > 1 scores images in that many forked processes (at most one per job), each with a back
    end of its own with ``threads`` / ``workers`` threads (at least one; a torch variant runs on one in a
    worker), a job of whole inference batches at a time; the rows are those of one process, in the same
    order. Each worker decodes a job and then runs its model on it, so decoding never runs beside a
    model's threads: there it stalled them, and cost the model about twice its own time. Tables are
    scored in this process: a table's rows are checked across its files (repeated ids), so its files
    stay together.

    Raises:
        DecodingWorkerDied: a scoring process died (killed, or out of memory).
    """
    job = _ScoringJob(contract, classes, projection, batch_size)
    # In jobs of whole inference batches, so that a job's batches are the batches of one process.
    size = min(chunk_files, max(1, JOB_FILES // batch_size) * batch_size)
    # No more processes than jobs (the CPUs go to those that work); tables in this one.
    workers = min(workers, max(1, -(-len(files) // size))) if contract.kind == "image" else 1
    if workers <= 1:
        backend = open_backend(threads)
        return _joined([job.score(files[start : start + chunk_files], backend) for start in range(0, len(files), chunk_files)])
    jobs = ((start, (files[start : start + size],)) for start in range(0, len(files), size))
    per_worker = max(1, (threads or usable_cpus()) // workers)
    parts: list[ScoredFiles] = []
    done = 0
    with worker_pool(workers, _start_worker, (job, open_backend, per_worker)) as pool:
        try:
            for _, part in in_order(pool, workers, _score_job, jobs):
                parts.append(part)
                done += len(part.predictions) + len(part.failures)
        except BrokenProcessPool:
            raise DecodingWorkerDied(
                f"a process scoring inputs died (killed, or out of memory) after {done} of {len(files)} files; "
                f"run again with fewer scoring processes (the score config's workers, now {workers})"
            ) from None
    return _joined(parts)


@dataclass(frozen=True)
class _ScoringJob:
    """What scoring a list of files needs besides the back end: the same in this process and in a worker."""

    contract: InputContract
    classes: list[str]
    projection: Projection | None
    batch_size: int

    def score(self, files: list[InputFile], backend: Backend) -> ScoredFiles:
        """The files decoded, described (with a projection) and scored together."""
        decoded = self.contract.read([f.path for f in files])
        statistics = None
        if self.projection is not None and decoded.source:
            statistics = self.contract.statistics(decoded.raw, decoded.meta)
        return _score_decoded(files, decoded, statistics, backend, self.contract, self.classes, self.projection, self.batch_size)


# A scoring worker's job and back end. The back end is opened by the worker's first job, so that a
# variant that cannot be opened fails that job with its own error rather than breaking the pool.
_worker: dict[str, Any] = {}


def _start_worker(job: _ScoringJob, open_backend: Opener, threads: int) -> None:
    """Set up a forked scoring worker (its arguments are inherited, never pickled)."""
    _worker.clear()
    _worker.update(job=job, open_backend=open_backend, threads=threads)
    if "torch" in sys.modules:
        # libgomp is not fork-safe: a forked process that enters the OpenMP pool its parent started hangs.
        # One thread never enters it (a torch variant is the only user of torch's threads here).
        sys.modules["torch"].set_num_threads(1)


def _score_job(files: list[InputFile]) -> ScoredFiles:
    """A worker's job: score ``files`` with the worker's own back end."""
    if "backend" not in _worker:
        _worker["backend"] = _worker["open_backend"](_worker["threads"])
    return _worker["job"].score(files, _worker["backend"])


def _joined(parts: list[ScoredFiles]) -> ScoredFiles:
    """The rows and failures of consecutive parts of a batch, as one."""
    if len(parts) == 1:
        return parts[0]
    scored = [p for p in parts if not p.predictions.empty]
    failures = [f for p in parts for f in p.failures]
    if not scored:
        return ScoredFiles(pd.DataFrame(), None, failures)
    predictions = pd.concat([p.predictions for p in scored], ignore_index=True)
    features = None if scored[0].features is None else pd.concat([p.features for p in scored], ignore_index=True)
    return ScoredFiles(predictions, features, failures)


def _score_decoded(
    files: list[InputFile],
    decoded: DecodedInputs,
    statistics: pd.DataFrame | None,
    backend: Backend,
    contract: InputContract,
    classes: list[str],
    projection: Projection | None,
    batch_size: int,
) -> ScoredFiles:
    """``score_files`` for files decoded together (``statistics``: theirs, when the release has a projection)."""
    failures = [FailedInput(name=files[index].name, reason=reason) for index, reason in decoded.failures]
    if not decoded.source:
        return ScoredFiles(pd.DataFrame(), None, failures)
    kept = [files[index] for index in decoded.source]
    items = _items(kept, decoded)
    if projection is None:
        # No monitoring reference: predictions only, from the logits output alone (variants released
        # before monitoring existed have no embedding output).
        return ScoredFiles(_predictions(items, probabilities(backend, contract, decoded.raw, batch_size), classes), None, failures)
    logits, embeddings = infer(backend, contract, decoded.raw, batch_size)
    predictions = _predictions(items, softmax(logits), classes)
    features = monitoring_features(statistics, logits, embeddings, projection, classes)
    features.insert(0, "file", predictions["file"])
    features.insert(1, "image_sha256", predictions["image_sha256"])
    if "problems" in decoded.meta:
        features[SCHEMA_PROBLEMS] = decoded.meta["problems"].to_numpy()
    numerical = monitoring_columns(contract, projection.n_components)[0]
    bad = non_finite_rows(features, [c for c in numerical if c not in contract.optional_statistics])
    # A model or input that yields NaN/inf cannot be tested for drift: report it, keep the rest.
    failures += [FailedInput(name=name, reason="monitoring features are NaN or infinite") for name in features.loc[bad, "file"]]
    return ScoredFiles(predictions.loc[~bad].reset_index(drop=True), features.loc[~bad].reset_index(drop=True), failures)


def _items(kept: list[InputFile], decoded: DecodedInputs) -> pd.DataFrame:
    """Each scored item's name, file and content hash: the file's own, or a table row's ``file:line`` and values' hash.

    The column keeps its name ``image_sha256`` for every modality: logs, feedback and monitoring
    join on it (for a table row it is the hash of the row's values). A table's id column, when
    the schema has one, comes along as ``id`` so predictions join back to the rows they describe.
    """
    items = pd.DataFrame(
        {
            "file": decoded.names if decoded.names is not None else [f.name for f in kept],
            "path": _real_paths([f.path for f in kept]),
            "image_sha256": decoded.keys if decoded.keys is not None else [f.sha256 for f in kept],
        }
    )
    if "id" in decoded.meta:
        items["id"] = decoded.meta["id"].to_numpy()
    return items


def _real_paths(paths: list[Path]) -> list[str]:
    """Each file's real path (``Path.resolve``: links followed), resolving each folder once: a file's own
    link still costs one ``lstat``, its folders' links nothing more (resolving each path in full took
    several system calls a file, a sixth of scoring)."""
    folders: dict[Path, str] = {}
    real = []
    for path in paths:
        if path.parent not in folders:
            folders[path.parent] = os.path.realpath(path.parent)
        full = os.path.join(folders[path.parent], path.name)
        real.append(os.path.realpath(full) if os.path.islink(full) else full)
    return real


def _predictions(items: pd.DataFrame, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """One row per scored item: where it is, its content hash, the predicted class and its probability."""
    return items.assign(predicted_class=[classes[i] for i in probs.argmax(axis=1)], confidence=probs.max(axis=1))
