"""Dynamic batching: who shares a model call, who waits, and that every request gets its own rows back."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from serve.batching import BatcherClosed, DynamicBatcher


class Model:
    """Doubles its input; records each call's row count; can block until released."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.gate.wait(10)
        self.calls.append(len(batch))
        return batch * 2, batch.sum(axis=1, keepdims=True)


def rows(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32)[:, None].repeat(3, axis=1)


def test_concurrent_requests_share_calls_and_each_gets_its_own_slice() -> None:
    async def scenario() -> tuple[list, Model]:
        model = Model()
        model.gate.clear()  # the first call blocks, so everything after it queues up
        batcher = DynamicBatcher(model, max_batch_size=8, max_queue_delay=0.0)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(rows(0, 1)))
        await asyncio.sleep(0.05)
        sizes = [1, 3, 2, 4, 1, 2]
        later = [asyncio.ensure_future(batcher.submit(rows(100 * (i + 1), n))) for i, n in enumerate(sizes)]
        await asyncio.sleep(0.05)
        model.gate.set()
        answers = await asyncio.gather(first, *later)
        await batcher.stop()
        return answers, model

    answers, model = asyncio.run(scenario())
    starts, sizes = [0] + [100 * (i + 1) for i in range(6)], [1, 1, 3, 2, 4, 1, 2]
    for (doubled, summed), start, n in zip(answers, starts, sizes):
        np.testing.assert_array_equal(doubled, rows(start, n) * 2)
        np.testing.assert_array_equal(summed, rows(start, n).sum(axis=1, keepdims=True))
    # The first call ran alone; the 13 queued rows filled calls of at most 8 in arrival order (a request is never split).
    assert model.calls == [1, 6, 7]


def test_a_request_larger_than_the_batch_runs_alone() -> None:
    async def scenario() -> Model:
        model = Model()
        batcher = DynamicBatcher(model, max_batch_size=4, max_queue_delay=0.0)
        batcher.start()
        doubled, _ = await batcher.submit(rows(0, 10))
        np.testing.assert_array_equal(doubled, rows(0, 10) * 2)
        await batcher.stop()
        return model

    assert asyncio.run(scenario()).calls == [10]


def test_a_lone_request_does_not_wait_for_company_but_arriving_ones_are_waited_for() -> None:
    async def scenario() -> tuple[float, list[int]]:
        model = Model()
        arriving = {"n": 0}
        batcher = DynamicBatcher(model, max_batch_size=8, max_queue_delay=2.0, arriving=lambda: arriving["n"])
        batcher.start()
        start = time.perf_counter()
        await batcher.submit(rows(0, 1))
        lone = time.perf_counter() - start
        # Someone is being received: the batch waits for them (up to the delay), and they join it.
        arriving["n"] = 1
        first = asyncio.ensure_future(batcher.submit(rows(10, 1)))
        await asyncio.sleep(0.1)
        arriving["n"] = 0
        second = asyncio.ensure_future(batcher.submit(rows(20, 1)))
        await asyncio.gather(first, second)
        await batcher.stop()
        return lone, model.calls

    lone, calls = asyncio.run(scenario())
    assert lone < 1.0  # far below the 2 s delay: nobody was arriving
    assert calls == [1, 2]


def test_a_model_error_reaches_every_request_of_its_call_and_the_next_call_works() -> None:
    class Failing(Model):
        def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            self.calls.append(len(batch))
            if len(self.calls) == 1:
                raise RuntimeError("runtime failed")
            return batch, batch

    async def scenario() -> None:
        batcher = DynamicBatcher(Failing(), max_batch_size=8, max_queue_delay=0.05, arriving=lambda: 1)
        batcher.start()
        results = await asyncio.gather(batcher.submit(rows(0, 1)), batcher.submit(rows(1, 2)), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        again, _ = await batcher.submit(rows(5, 1))
        np.testing.assert_array_equal(again, rows(5, 1))
        await batcher.stop()

    asyncio.run(scenario())


def test_stop_answers_everything_queued_then_refuses_new_requests() -> None:
    async def scenario() -> None:
        model = Model()
        model.gate.clear()
        batcher = DynamicBatcher(model, max_batch_size=2, max_queue_delay=0.0)
        batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(rows(i * 10, 1))) for i in range(5)]
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(batcher.stop())
        await asyncio.sleep(0.05)
        model.gate.set()
        answers = await asyncio.gather(*pending)
        await stopping
        for i, (doubled, _) in enumerate(answers):
            np.testing.assert_array_equal(doubled, rows(i * 10, 1) * 2)
        with pytest.raises(BatcherClosed):
            await batcher.submit(rows(0, 1))

    asyncio.run(scenario())


def test_a_failure_outside_the_model_call_fails_that_call_only() -> None:
    # A metrics hook (or concatenation) that raises must not kill the consumer and leave later requests waiting.
    calls = {"n": 0}

    def flaky_hook(rows: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("hook failed")

    async def scenario() -> None:
        batcher = DynamicBatcher(Model(), max_batch_size=4, max_queue_delay=0.0, on_batch=flaky_hook)
        batcher.start()
        with pytest.raises(ValueError):
            await asyncio.wait_for(batcher.submit(rows(0, 1)), 5)
        doubled, _ = await asyncio.wait_for(batcher.submit(rows(3, 1)), 5)
        np.testing.assert_array_equal(doubled, rows(3, 1) * 2)
        await batcher.stop()

    asyncio.run(scenario())
