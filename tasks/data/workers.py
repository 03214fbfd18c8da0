"""Worker processes that decode files: how many, the pool, and results in job order with a bounded window.

Ingestion decodes a folder with them, scoring decodes and scores a batch with them: decoding a JPEG
costs more than a small model's inference, so one process would leave the other cores idle.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from tasks.errors import LeptonError
from tasks.host import exit_with_parent, usable_cpus

# Below this many files, worker processes cost more than they save: decode in this process.
PARALLEL_FROM_FILES = 2000
# Jobs in flight per worker: enough that no worker waits for the next, few enough that memory holds them.
JOBS_IN_FLIGHT = 4

Job = TypeVar("Job")
Result = TypeVar("Result")


class DecodingWorkerDied(LeptonError):
    """A worker process decoding (and, scoring, scoring) files died; the message says how far it got and what to change."""


def decoding_workers(requested: int, files: int) -> int:
    """Processes to decode (and, scoring, score) ``files`` with: ``requested``, or for 0 one per usable CPU
    once there are enough files.

    A daemonic process (a Dask worker's, say) may not start processes of its own: it decodes alone,
    and the fan-out over its siblings does the rest.
    """
    if multiprocessing.current_process().daemon:
        return 1
    if requested:
        return requested
    return usable_cpus() if files >= PARALLEL_FROM_FILES else 1


@contextmanager
def worker_pool(
    workers: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()
) -> Iterator[ProcessPoolExecutor | None]:
    """Worker processes (forked: they start in milliseconds, need nothing re-imported, and inherit
    ``initializer(*initargs)``'s arguments unpickled), or None for one."""
    if workers <= 1:
        yield None
        return
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_start, initargs=(os.getpid(), initializer, initargs)
    )
    try:
        yield pool
    finally:
        # A failure (or a consumer that stops early) cancels what has not started rather than decoding on.
        pool.shutdown(wait=True, cancel_futures=True)


def _start(owner: int, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    """A worker's start: it ends with ``owner``, the process that started it (a killed run leaves no worker behind)."""
    exit_with_parent(owner)
    if initializer is not None:
        initializer(*initargs)


def in_order(
    pool: ProcessPoolExecutor | None,
    workers: int,
    work: Callable[..., Result],
    jobs: Iterable[tuple[Job, tuple[Any, ...]]],
) -> Iterator[tuple[Job, Result]]:
    """``(job, work(*arguments))`` for each ``(job, arguments)``, in job order; in the pool, a few jobs per worker in flight.

    Raises:
        concurrent.futures.process.BrokenProcessPool: a worker died (the caller says what it was doing).
    """
    if pool is None:
        for job, arguments in jobs:
            yield job, work(*arguments)
        return
    pending: deque[tuple[Job, Future]] = deque()
    for job, arguments in jobs:
        pending.append((job, pool.submit(work, *arguments)))
        if len(pending) >= JOBS_IN_FLIGHT * workers:
            first, future = pending.popleft()
            yield first, future.result()
    while pending:
        first, future = pending.popleft()
        yield first, future.result()
