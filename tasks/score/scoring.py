"""Score files with a released artifact: predictions, and the monitoring row of each scored input.

Files are decoded by the release's input contract (as in training) and their rows computed by the
same function as the release's reference, so build and serve cannot drift apart.
"""

from __future__ import annotations

import os
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from tasks.data.contract import InputContract
from tasks.data.decoded import DecodedInputs
from tasks.data.workers import DecodingWorkerDied, in_order, worker_pool
from tasks.export.backends import Backend
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


# Files decoded at a time: memory holds one chunk's inputs, whatever the size of the batch.
CHUNK_FILES = 4096
# Files a decoding worker takes at a time: small enough that every worker is busy on a shard of a
# few thousand files, and this process runs the model on one job while the workers decode the next.
JOB_FILES = 512


def score_files(
    files: list[InputFile],
    backend: Backend,
    contract: InputContract,
    classes: list[str],
    projection: Projection | None,
    batch_size: int = 256,
    chunk_files: int = CHUNK_FILES,
    workers: int = 1,
) -> ScoredFiles:
    """Decode, predict and describe every file, ``chunk_files`` at a time; an unusable file is a failure of that file only.

    A file that cannot be decoded, or whose monitoring row comes out NaN/infinite, is
    reported with its reason; the rest of the batch is scored.

    ``workers`` > 1 decodes images in that many processes (see :mod:`tasks.data.workers`) while this
    one runs the model on what they have decoded; the rows are those of one process. Tables are
    read here: a table's rows are checked across its files (repeated ids), so its files stay together.

    Raises:
        DecodingWorkerDied: a decoding process died (killed, or out of memory).
    """
    workers = workers if contract.kind == "image" else 1
    # In jobs of whole inference batches, so that a job's batches are the batches of one process.
    size = chunk_files if workers <= 1 else min(chunk_files, max(1, JOB_FILES // batch_size) * batch_size)
    describe = projection is not None
    jobs = ((start, (contract, [f.path for f in files[start : start + size]], describe)) for start in range(0, len(files), size))
    parts: list[ScoredFiles] = []
    done = 0
    with worker_pool(workers) as pool:
        try:
            # A chunk's worth of decoded files in flight (or a job per worker and one more, where workers are
            # more than that): memory is bounded by the chunk and the workers, never by the batch.
            window = max(workers + 1, chunk_files // size)
            for start, (decoded, statistics) in in_order(pool, workers, _read, jobs, window):
                chunk = files[start : start + size]
                parts.append(_score_decoded(chunk, decoded, statistics, backend, contract, classes, projection, batch_size))
                done += len(chunk)
        except BrokenProcessPool:
            raise DecodingWorkerDied(
                f"a process decoding inputs died (killed, or out of memory) after {done} of {len(files)} files; "
                f"run again with fewer decoding processes (the score config's workers, now {workers})"
            ) from None
    if len(parts) == 1:
        return parts[0]
    scored = [p for p in parts if not p.predictions.empty]
    failures = [f for p in parts for f in p.failures]
    if not scored:
        return ScoredFiles(pd.DataFrame(), None, failures)
    predictions = pd.concat([p.predictions for p in scored], ignore_index=True)
    features = None if scored[0].features is None else pd.concat([p.features for p in scored], ignore_index=True)
    return ScoredFiles(predictions, features, failures)


def _read(contract: InputContract, paths: list[Path], describe: bool) -> tuple[DecodedInputs, pd.DataFrame | None]:
    """The files decoded, and (``describe``) their monitoring statistics: a decoding worker's job, so that
    the statistics too are computed beside the model rather than before it."""
    decoded = contract.read(paths)
    return decoded, contract.statistics(decoded.raw, decoded.meta) if describe and decoded.source else None


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
