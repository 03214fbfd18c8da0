"""Measure a variant honestly: accuracy on the test split, size on disk, p50/p95 latency at fixed threads."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from tasks.export.backends import EVAL_BATCH, Backend, predict_batched
from tasks.export.config import LatencyConfig
from tasks.export.variants import Variant
from tasks.host import cpu_model_and_flags

# CPU features that decide which variant is fastest: VNNI speeds INT8, BF16/AMX speed bf16.
_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


class Host(BaseModel):
    """The machine variants were measured on: timings only compare within one host."""

    cpu: str
    logical_cpus: int
    flags: list[str]


def measuring_host(cpuinfo: Path = Path("/proc/cpuinfo")) -> Host:
    """This machine's CPU model, logical CPU count and the instruction-set flags that matter for inference."""
    model, flags = cpu_model_and_flags(cpuinfo)
    return Host(cpu=model, logical_cpus=os.cpu_count() or 1, flags=[f for f in _FLAGS if f in flags])


def size_on_disk(files: list[Path]) -> int:
    """Bytes of all the files of a variant."""
    return sum(p.stat().st_size for p in files)


def predicted_classes(backend: Backend, inputs: np.ndarray, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Top-1 class index of every input (run in batches)."""
    return predict_batched(backend, inputs, batch_size).argmax(axis=1) if len(inputs) else np.zeros(0, dtype=np.int64)


def accuracy(backend: Backend, inputs: np.ndarray, labels: np.ndarray, batch_size: int = EVAL_BATCH) -> float:
    """Top-1 accuracy of ``backend`` on a labelled set."""
    return float(np.mean(predicted_classes(backend, inputs, batch_size) == labels)) if len(inputs) else 0.0


def macro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """F1 averaged over the classes present in ``labels`` or ``predicted``: a rare class weighs as much as a common one."""
    from sklearn.metrics import f1_score

    return float(f1_score(labels, predicted, average="macro", zero_division=0.0)) if len(labels) else 0.0


def latency_ms(backend: Backend, inputs: np.ndarray, batch_size: int, repeats: int, warmup: int = 3) -> tuple[float, float]:
    """p50 and p95 wall time (ms) of one ``predict`` call on the first ``batch_size`` inputs.

    Inputs are tiled when the set is smaller than the batch, so every variant
    is timed on the same inputs; ``warmup`` untimed calls come first.
    """
    head = inputs[:batch_size]  # only these are read: ``inputs`` may be a lazily prepared split
    reps = -(-batch_size // len(head))
    batch = np.ascontiguousarray(np.concatenate([head] * reps)[:batch_size], dtype=np.float32)
    for _ in range(warmup):
        backend.predict(batch)
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        backend.predict(batch)
        times[i] = (time.perf_counter() - start) * 1000.0
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """PyTorch's intra-op thread count fixed to ``threads`` for the block (it is process-wide), then restored."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure_variant(variant: Variant, backend: Backend, inputs: np.ndarray, labels: np.ndarray, latency: LatencyConfig) -> Variant:
    """The variant with test accuracy, size on disk and p50/p95 latency at batch 1 and ``latency.batch_n``.

    ``backend`` must have been opened with ``latency.threads`` threads (torch's are set here).
    """
    with torch_threads(latency.threads):
        b1 = latency_ms(backend, inputs, 1, latency.repeats, latency.warmup)
        bn = latency_ms(backend, inputs, latency.batch_n, max(latency.repeats // 4, 3), max(latency.warmup // 2, 1))
    predicted = predicted_classes(backend, inputs)
    return variant.model_copy(
        update={
            "accuracy": float(np.mean(predicted == labels)) if len(labels) else 0.0,
            "macro_f1": macro_f1(labels, predicted),
            "size_bytes": size_on_disk(variant.files()),
            "p50_ms_b1": b1[0],
            "p95_ms_b1": b1[1],
            "p50_ms_bn": bn[0],
            "p95_ms_bn": bn[1],
        }
    )
