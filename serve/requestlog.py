"""Served requests as monitoring rows: the same predictions and monitoring logs batch scoring writes.

Requests hand their rows to a bounded buffer and return at once; a background thread computes
the monitoring features (the same function as the release's reference and batch scoring) and
writes whole immutable Parquet objects through the scoring stage's log writer. A slow or failing
store never blocks or fails a request: rows wait (bounded by ``max_pending_rows``) and are retried;
what cannot be kept is dropped, counted and reported.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from serve.config import RequestLogConfig
from serve.model import LoadedVersion
from tasks.hashing import sha256_bytes
from tasks.score.features import SCHEMA_PROBLEMS, monitoring_columns, monitoring_features, non_finite_rows
from tasks.score.inference import softmax
from tasks.score.logs import batch_logs, log_batch
from tasks.registry.store import ArtifactStore

log = logging.getLogger("lepton.serve")

# Longest wait between attempts while the store fails.
MAX_BACKOFF_S = 60.0



@dataclass
class ServedRows:
    """The rows of one request as served: what the monitoring row of each input is computed from.

    Image requests carry the decoded pixels, their sizes and the files' hashes. Tensor requests
    carry the tensor only; its pixels and hashes are derived on the writer thread, off the request's path.
    """

    version: LoadedVersion
    files: list[str]
    logits: np.ndarray
    embeddings: np.ndarray | None
    raw: np.ndarray | None = None  # uint8 N x C x H x W as the input contract decoded
    sizes: np.ndarray | None = None  # N x 2 (width, height) before resizing; None: not carried (tensors)
    sha256: list[str] | None = None
    tensor: np.ndarray | None = None  # the float32 model input of a tensor request
    problems: list[str] | None = None  # table rows: what did not fit the schema, per row ('' when nothing)

    @property
    def nbytes(self) -> int:
        """Memory the rows hold while they wait."""
        arrays = (self.logits, self.embeddings, self.raw, self.sizes, self.tensor)
        return sum(a.nbytes for a in arrays if a is not None)

    def complete(self) -> None:
        """Derive what a tensor request did not carry: the pixels it scales, its rows' hashes, unknown sizes."""
        if self.raw is None:
            # The contract's preparation is invertible: these are the raw inputs the tensor came from.
            self.raw = self.version.contract.from_model_input(self.tensor)
        if self.sha256 is None:
            self.sha256 = [sha256_bytes(row.tobytes()) for row in (self.tensor if self.tensor is not None else self.raw)]
        if self.sizes is None:
            self.sizes = np.full((len(self.files), 2), np.nan)
        self.tensor = None  # four times the pixels' size; not needed once they are derived


@dataclass
class LogCounters:
    """What happened to served rows (exposed as metrics)."""

    written_rows: int = 0
    written_objects: int = 0
    write_failures: int = 0
    dropped_rows: int = 0
    pending_rows: int = 0
    pending_bytes: int = 0


class RequestLog:
    """The buffer and writer thread of served rows; ``record`` never blocks and never raises."""

    def __init__(
        self,
        store: ArtifactStore,
        model: str,
        config: RequestLogConfig,
        on_change: Callable[[LogCounters], None] = lambda counters: None,
    ) -> None:
        self.store = store
        self.model = model
        self.config = config
        self.counters = LogCounters()
        self._on_change = on_change
        self._pending: list[ServedRows] = []
        self._retry: list[tuple[str, list[ServedRows], bool]] = []
        self._oldest: float | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._instance = uuid.uuid4().hex
        self._sequence = 0
        self._thread = threading.Thread(target=self._loop, name="lepton-request-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def record(self, rows: ServedRows) -> None:
        """Queue a request's rows for the next object (dropped and counted when the buffer is full)."""
        if not self.config.enabled:
            return
        n, size = len(rows.files), rows.nbytes
        with self._lock:
            counters = self.counters
            if counters.pending_rows + n > self.config.max_pending_rows or counters.pending_bytes + size > self.config.max_pending_bytes:
                counters.dropped_rows += n
                dropped = True
            else:
                self._pending.append(rows)
                counters.pending_rows += n
                counters.pending_bytes += size
                self._oldest = self._oldest or time.monotonic()
                dropped = False
            full = counters.pending_rows >= self.config.flush_rows
        if dropped:
            log.warning(
                "request log buffer full (%d rows, %d bytes at most): %d served rows not logged",
                self.config.max_pending_rows, self.config.max_pending_bytes, n,
            )
        self._on_change(self.counters)
        if full:
            self._wake.set()

    def stop(self, timeout: float) -> None:
        """Write what is pending (one last attempt within ``timeout``) and stop the thread."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        with self._lock:
            left = self.counters.pending_rows
        if left:
            log.warning("%d served rows could not be written to the store before shutdown", left)

    def flush(self) -> bool:
        """Write every pending row now (on the caller's thread); True when nothing is left pending.

        Rows are written as one object per loaded version and attempt; a failed object keeps its batch id,
        so its retry completes it (predictions and monitoring rows each exactly once).
        """
        with self._lock:
            pending, self._pending = self._pending, []
            units, self._retry = self._retry, []
            self._oldest = None
        # One object per loaded version: a version loaded again (a rollback) may serve another variant,
        # whose rows carry its own name and projection.
        by_version: dict[int, list[ServedRows]] = {}
        for rows in pending:
            by_version.setdefault(id(rows.version), []).append(rows)
        for group in by_version.values():
            self._sequence += 1
            units.append((sha256_bytes(f"{self._instance}-{self._sequence}".encode())[:12], group, False))
        failed = []
        for batch, group, retried in units:
            try:
                self._write(batch, group, retried)
            except Exception as exc:  # noqa: BLE001 - any store failure: keep the rows, count it, retry later
                failed.append((batch, group, True))
                self.counters.write_failures += 1
                log.warning(
                    "request log: writing %d served rows of %s failed (%s: %s); will retry",
                    sum(len(g.files) for g in group), group[0].version.version, type(exc).__name__, exc,
                )
        with self._lock:
            self._retry = failed
            waiting = self._pending + [r for _, group, _ in failed for r in group]
            self.counters.pending_rows = sum(len(r.files) for r in waiting)
            self.counters.pending_bytes = sum(r.nbytes for r in waiting)
        self._on_change(self.counters)
        return not failed

    def _write(self, batch: str, group: list[ServedRows], retried: bool) -> None:
        loaded = group[0].version
        for rows in group:
            rows.complete()
        raw = np.concatenate([g.raw for g in group])
        sizes = np.concatenate([g.sizes for g in group])
        logits = np.concatenate([g.logits for g in group])
        probabilities = softmax(logits)
        predictions = pd.DataFrame(
            {
                "file": [f for g in group for f in g.files],
                "path": "",
                "image_sha256": [s for g in group for s in g.sha256],
                "predicted_class": [loaded.classes[i] for i in probabilities.argmax(axis=1)],
                "confidence": probabilities.max(axis=1),
            }
        )
        features = None
        if loaded.projection is not None and all(g.embeddings is not None for g in group):
            meta = pd.DataFrame(sizes, columns=["original_width", "original_height"])
            statistics = loaded.contract.statistics(raw, meta)
            embeddings = np.concatenate([g.embeddings for g in group])
            features = monitoring_features(statistics, logits, embeddings, loaded.projection, loaded.classes)
            features.insert(0, "file", predictions["file"])
            features.insert(1, "image_sha256", predictions["image_sha256"])
            if any(g.problems is not None for g in group):
                features[SCHEMA_PROBLEMS] = [p for g in group for p in (g.problems or [""] * len(g.files))]
            numerical = monitoring_columns(loaded.contract, loaded.projection.n_components)[0]
            # A tensor request carries no size on disk: those columns are NaN (not measured); nothing else may be.
            broken = non_finite_rows(features, [c for c in numerical if c not in loaded.contract.optional_statistics])
            if broken.any():
                log.warning("request log: %d served rows have NaN/inf monitoring features; left out", int(broken.sum()))
                features = features.loc[~broken].reset_index(drop=True)
        logged = batch_logs(self.store, self.model, batch) if retried else {}
        # This server's batch ids are its own (instance and sequence): no other writer shares one, nothing to claim.
        log_batch(
            self.store, self.model, loaded.version, batch, predictions, features, logged, variant=loaded.variant, claim=False
        )
        self.counters.written_rows += len(predictions)
        self.counters.written_objects += 1 + (features is not None)

    def _loop(self) -> None:
        backoff, failed_at = 0.0, 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                oldest = self._oldest
            if backoff:
                wait = backoff - (now - failed_at)  # the store failed: wait out the backoff, whatever is pending
            else:
                wait = self.config.flush_seconds - (now - oldest) if oldest else self.config.flush_seconds
            self._wake.wait(max(0.05, wait))
            self._wake.clear()
            if self._stop.is_set():
                break
            now = time.monotonic()
            with self._lock:
                full = self.counters.pending_rows >= self.config.flush_rows
                aged = self._oldest is not None and now - self._oldest >= self.config.flush_seconds
                anything = bool(self._pending or self._retry)
            due = anything and (now - failed_at >= backoff if backoff else full or aged)
            if due:
                if self.flush():
                    backoff = 0.0
                else:
                    backoff, failed_at = min(MAX_BACKOFF_S, max(1.0, backoff * 2)), time.monotonic()
        self.flush()
