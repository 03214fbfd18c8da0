"""Dynamic batching: concurrent requests' rows run as one model call, off the event loop.

Requests queue their rows; one consumer takes what is waiting (up to ``max_batch_size`` rows),
runs it on the model's own thread and hands each request its slice. A batch is held open for
more rows (at most ``max_queue_delay``) only while other requests are already being received, so
a lone request never waits for company that is not coming, and under load the model's run time
is what gathers the next batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

Outputs = tuple[np.ndarray, ...]


@dataclass
class _Pending:
    rows: np.ndarray
    future: asyncio.Future = field(repr=False)


class BatcherClosed(RuntimeError):
    """The batcher was stopped; the request should go to the model that replaced it."""


class DynamicBatcher:
    """Group rows from concurrent ``submit`` calls into calls of ``run`` on one worker thread.

    Args:
        run: the model call: an N x ... float32 batch to a tuple of N x ... outputs.
        max_batch_size: most rows per call (a request with more runs alone).
        max_queue_delay: seconds a batch may wait for more rows.
        arriving: how many requests are being received (not yet submitted); a batch waits only while this is > 0.
        on_batch: told each call's row count (metrics).
    """

    def __init__(
        self,
        run: Callable[[np.ndarray], Outputs],
        max_batch_size: int,
        max_queue_delay: float,
        arriving: Callable[[], int] = lambda: 0,
        on_batch: Callable[[int], None] = lambda rows: None,
    ) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay
        self._arriving = arriving
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._carry: _Pending | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lepton-model")
        self._task: asyncio.Task | None = None
        self._closed = False
        self.queued_rows = 0

    def start(self) -> None:
        """Start consuming (on the running event loop)."""
        self._task = asyncio.get_running_loop().create_task(self._consume(), name="lepton-batcher")

    async def submit(self, rows: np.ndarray) -> Outputs:
        """The model's outputs for ``rows`` (computed in a batch with whatever else is waiting).

        Raises:
            BatcherClosed: the batcher was stopped before the rows were queued.
        """
        if self._closed:
            raise BatcherClosed("this model is being replaced")
        future = asyncio.get_running_loop().create_future()
        self.queued_rows += len(rows)
        self._queue.put_nowait(_Pending(rows, future))
        return await future

    async def stop(self) -> None:
        """Finish every queued request, then stop the consumer and the model's thread."""
        self._closed = True
        self._queue.put_nowait(None)
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def _next(self, timeout: float | None) -> _Pending | None:
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        if timeout is None:
            return await self._queue.get()
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            pass
        if timeout <= 0:
            raise TimeoutError
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def _consume(self) -> None:
        try:
            await self._batches()
        finally:
            # However the consumer ends, nothing may wait on it: later submits are refused, queued ones failed.
            self._closed = True
            leftover = [self._carry] if self._carry else []
            while not self._queue.empty():
                leftover.append(self._queue.get_nowait())
            for pending in leftover:
                if pending is not None and not pending.future.done():
                    pending.future.set_exception(BatcherClosed("the model's batcher stopped"))

    async def _batches(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._next(None)
            if first is None:
                break
            batch, rows = [first], len(first.rows)
            deadline = loop.time() + self.max_queue_delay
            while rows < self.max_batch_size:
                # Wait for company only while someone is on the way; take what is already queued regardless.
                waiting = self._arriving() > 0 and loop.time() < deadline
                try:
                    item = await self._next(deadline - loop.time() if waiting else 0)
                except TimeoutError:
                    break
                if item is None:
                    stopping = True
                    break
                if rows + len(item.rows) > self.max_batch_size:
                    self._carry = item  # it starts the next batch
                    break
                batch.append(item)
                rows += len(item.rows)
            await self._execute(loop, batch, rows)
        while self._carry is not None or not self._queue.empty():
            # Stopped: whatever was queued before the stop still gets its answer.
            item = await self._next(0)
            if item is not None:
                await self._execute(loop, [item], len(item.rows))

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending], rows: int) -> None:
        self.queued_rows -= rows
        try:
            self._on_batch(rows)
            inputs = batch[0].rows if len(batch) == 1 else np.concatenate([p.rows for p in batch])
            outputs = await loop.run_in_executor(self._executor, self._run, inputs)
            start = 0
            for pending in batch:
                end = start + len(pending.rows)
                if not pending.future.done():  # a client that went away cancelled its future
                    pending.future.set_result(tuple(o[start:end] if o is not None else None for o in outputs))
                start = end
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request; the consumer lives on
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
