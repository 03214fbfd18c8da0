"""Evaluate variants: accuracy, size on disk, latency; and the policy that picks one to serve."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tasks.export.backends import Backend


class Variant(BaseModel):
    """One servable form of the model and its measured numbers."""

    name: str = Field(description="e.g. onnx-int8")
    runtime: str = Field(description="torch, onnxruntime or openvino")
    precision: str = Field(description="fp32 or int8")
    directory: Path | None = Field(None, description="Folder holding every file of the variant")
    entrypoint: str | None = Field(None, description="File inside directory that the runtime opens")
    accuracy: float = float("nan")
    size_bytes: int = 0
    latency_ms_b1: float = float("nan")
    latency_ms_b64: float = float("nan")

    def files(self) -> list[Path]:
        """Every file of the variant (graph, external weights, IR bin)."""
        if self.directory is None:
            return []
        return sorted(p for p in self.directory.rglob("*") if p.is_file())


class VariantPolicy(BaseModel):
    """Serve the fastest variant (batch-1 p50) whose accuracy is within the budget of the FP32 model."""

    model_config = ConfigDict(extra="forbid")

    accuracy_budget_pp: float = Field(1.0, ge=0.0, le=100.0, description="Allowed drop in percentage points")
    servable_runtimes: list[str] = Field(
        ["onnxruntime", "openvino"], min_length=1, description="Runtimes a release may serve"
    )


def size_on_disk(files: list[Path]) -> int:
    """Bytes of all the files of a variant."""
    return sum(p.stat().st_size for p in files)


def accuracy(backend: Backend, images: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``backend`` on a labelled set."""
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = backend.predict(images[start : start + batch_size])
        correct += int(np.sum(logits.argmax(axis=1) == labels[start : start + batch_size]))
    return correct / max(len(images), 1)


def latency_p50_ms(backend: Backend, images: np.ndarray, batch_size: int, repeats: int, warmup: int = 3) -> float:
    """Median wall time (ms) of one ``predict`` call on a batch of ``batch_size`` images.

    Images are tiled when the set is smaller than the batch, so every
    variant is timed on the same inputs.
    """
    reps = -(-batch_size // len(images))
    batch = np.ascontiguousarray(np.concatenate([images] * reps)[:batch_size], dtype=np.float32)
    for _ in range(warmup):
        backend.predict(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend.predict(batch)
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times))


class NoServableVariant(RuntimeError):
    """No variant meets the policy; the message lists each one's shortfall."""


def choose_variant(variants: list[Variant], baseline_accuracy: float, policy: VariantPolicy) -> Variant:
    """The fastest servable variant (batch-1 p50 latency) within the accuracy budget.

    Raises:
        NoServableVariant: every servable variant misses the budget.
    """
    floor = baseline_accuracy - policy.accuracy_budget_pp / 100.0
    servable = [v for v in variants if v.runtime in policy.servable_runtimes]
    eligible = [v for v in servable if v.accuracy >= floor - 1e-12]
    if not eligible:
        shortfalls = ", ".join(f"{v.name} {v.accuracy:.4f}" for v in servable) or "none servable"
        raise NoServableVariant(
            f"no variant within {policy.accuracy_budget_pp} pp of the FP32 accuracy {baseline_accuracy:.4f} "
            f"(floor {floor:.4f}): {shortfalls}"
        )
    return min(eligible, key=lambda v: (v.latency_ms_b1, v.size_bytes, v.name))


def measure_variant(
    variant: Variant, backend: Backend, images: np.ndarray, labels: np.ndarray, latency_repeats: int
) -> Variant:
    """The variant with its test accuracy, size on disk and p50 latency at batch 1 and 64 filled in."""
    return variant.model_copy(
        update={
            "accuracy": accuracy(backend, images, labels),
            "size_bytes": size_on_disk(variant.files()),
            "latency_ms_b1": latency_p50_ms(backend, images, 1, latency_repeats),
            "latency_ms_b64": latency_p50_ms(backend, images, 64, max(latency_repeats // 4, 3)),
        }
    )


def variant_table(variants: list[Variant], served: str) -> list[dict[str, object]]:
    """Rows for a table artifact, the manifest and the console, in a fixed column order."""
    torch_b1 = next((v.latency_ms_b1 for v in variants if v.runtime == "torch"), float("nan"))
    return [
        {
            "variant": v.name,
            "runtime": v.runtime,
            "accuracy": round(v.accuracy, 4),
            "size_kb": round(v.size_bytes / 1024, 1),
            "p50_ms_b1": round(v.latency_ms_b1, 3),
            "p50_ms_b64": round(v.latency_ms_b64, 3),
            "speedup_b1_vs_torch": round(torch_b1 / v.latency_ms_b1, 2) if v.latency_ms_b1 > 0 else None,
            "served": v.name == served,
        }
        for v in variants
    ]


def format_table(rows: list[dict[str, object]]) -> str:
    """A plain-text table of ``rows`` for terminals and logs."""
    if not rows:
        return ""
    columns = list(rows[0])
    cells = [[str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])
