"""Evaluate variants: accuracy, size on disk, honest latency; and the policy that picks one to serve."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tasks.export.backends import Backend

# What the trained model is called before any compression step; variant names of later stages carry a prefix.
TRAINED_STAGE = "trained"

Objective = Literal["latency_b1", "latency_bn", "size"]


class Variant(BaseModel):
    """One servable form of the model and its measured numbers."""

    name: str = Field(description="e.g. onnx-int8, distilled-pruned-openvino-int8")
    runtime: str = Field(description="torch, onnxruntime or openvino")
    precision: str = Field(description="fp32 or int8")
    stage: str = Field(TRAINED_STAGE, description="Model it was made from: trained, distilled, distilled-pruned, ...")
    directory: Path | None = Field(None, description="Folder holding every file of the variant")
    entrypoint: str | None = Field(None, description="File inside directory that the runtime opens")
    macs: int | None = Field(None, description="Multiply-accumulates of one image's forward pass (of the float model)")
    params: int | None = Field(None, description="Parameter count (of the float model)")
    accuracy: float = float("nan")
    size_bytes: int = 0
    p50_ms_b1: float = float("nan")
    p95_ms_b1: float = float("nan")
    p50_ms_bn: float = float("nan")
    p95_ms_bn: float = float("nan")

    @property
    def uncompressed(self) -> bool:
        """The trained model itself, in full precision."""
        return self.stage == TRAINED_STAGE and self.precision == "fp32"

    def files(self) -> list[Path]:
        """Every file of the variant (graph, external weights, IR bin)."""
        if self.directory is None:
            return []
        return sorted(p for p in self.directory.rglob("*") if p.is_file())


class VariantPolicy(BaseModel):
    """Serve the best variant by ``objective`` among those within the accuracy budget of the FP32 model."""

    model_config = ConfigDict(extra="forbid")

    objective: Objective = Field(
        "latency_b1",
        description="latency_b1: p50 at batch 1; latency_bn: p50 at the large batch; size: bytes on disk",
    )
    accuracy_budget_pp: float = Field(
        1.0, ge=0.0, le=100.0, description="Allowed test-accuracy drop vs the uncompressed FP32 model, in pp"
    )
    servable_runtimes: list[Literal["onnxruntime", "openvino"]] = Field(
        ["onnxruntime", "openvino"], min_length=1, description="Runtimes a release may serve"
    )


class Latency(BaseModel):
    """How latency is measured: the same for every variant of a run, and recorded with it."""

    model_config = ConfigDict(extra="forbid")

    repeats: int = Field(30, ge=3, le=100_000, description="Timed calls at batch 1 (a quarter of that, at least 3, at batch N)")
    warmup: int = Field(5, ge=0, le=10_000, description="Untimed calls first: allocations, lazy kernel choice, caches")
    batch_n: int = Field(64, ge=2, le=65_536, description="The larger batch timed beside batch 1")
    threads: int = Field(
        2, ge=1, le=256, description="Intra-op threads of every runtime (torch, ONNX Runtime, OpenVINO) while timing"
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


def latency_ms(backend: Backend, images: np.ndarray, batch_size: int, repeats: int, warmup: int = 3) -> tuple[float, float]:
    """p50 and p95 wall time (ms) of one ``predict`` call on the first ``batch_size`` images.

    Images are tiled when the set is smaller than the batch, so every variant
    is timed on the same inputs; ``warmup`` untimed calls come first.
    """
    reps = -(-batch_size // len(images))
    batch = np.ascontiguousarray(np.concatenate([images] * reps)[:batch_size], dtype=np.float32)
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


def measure_variant(variant: Variant, backend: Backend, images: np.ndarray, labels: np.ndarray, latency: Latency) -> Variant:
    """The variant with test accuracy, size on disk and p50/p95 latency at batch 1 and ``latency.batch_n``.

    ``backend`` must have been opened with ``latency.threads`` threads (torch's are set here).
    """
    with torch_threads(latency.threads):
        b1 = latency_ms(backend, images, 1, latency.repeats, latency.warmup)
        bn = latency_ms(backend, images, latency.batch_n, max(latency.repeats // 4, 3), max(latency.warmup // 2, 1))
    return variant.model_copy(
        update={
            "accuracy": accuracy(backend, images, labels),
            "size_bytes": size_on_disk(variant.files()),
            "p50_ms_b1": b1[0],
            "p95_ms_b1": b1[1],
            "p50_ms_bn": bn[0],
            "p95_ms_bn": bn[1],
        }
    )


class NoServableVariant(RuntimeError):
    """Not even an uncompressed FP32 variant in a servable runtime exists to fall back on."""


class OutOfBudget(BaseModel):
    """A variant the policy refused, and by how much it missed the accuracy floor."""

    variant: str
    accuracy: float
    drop_pp: float
    over_budget_pp: float


class Choice(BaseModel):
    """The variant to serve and why: recorded in the manifest."""

    served: str
    objective: Objective
    accuracy_budget_pp: float
    baseline_accuracy: float
    floor: float
    reason: str
    out_of_budget: list[OutOfBudget]


def _objective_value(variant: Variant, objective: Objective) -> float:
    return {"latency_b1": variant.p50_ms_b1, "latency_bn": variant.p50_ms_bn, "size": float(variant.size_bytes)}[objective]


def _describe(variant: Variant, objective: Objective) -> str:
    if objective == "size":
        return f"{variant.size_bytes / 1024:.1f} KB on disk"
    return f"p50 {_objective_value(variant, objective):.3f} ms at batch {'1' if objective == 'latency_b1' else 'N'}"


def choose_variant(variants: list[Variant], baseline_accuracy: float, policy: VariantPolicy) -> Choice:
    """The servable variant best by ``policy.objective`` among those within the accuracy budget.

    With none within budget, the uncompressed FP32 model is served (best by the
    objective among its servable exports) and the reason says so.

    Raises:
        NoServableVariant: there is no servable variant at all, not even the FP32 export.
    """
    floor = baseline_accuracy - policy.accuracy_budget_pp / 100.0
    servable = [v for v in variants if v.runtime in policy.servable_runtimes]
    # A hair of slack: accuracies are ratios of counts, and the floor is a difference of floats.
    eligible = [v for v in servable if v.accuracy >= floor - 1e-9]
    refused = [
        OutOfBudget(
            variant=v.name,
            accuracy=v.accuracy,
            drop_pp=round((baseline_accuracy - v.accuracy) * 100, 3),
            over_budget_pp=round((floor - v.accuracy) * 100, 3),
        )
        for v in servable
        if v not in eligible
    ]
    missed = "; ".join(f"{r.variant} drops {r.drop_pp:.2f} pp ({r.over_budget_pp:.2f} pp over)" for r in refused)
    budget = f"{policy.accuracy_budget_pp} pp of the FP32 accuracy {baseline_accuracy:.4f}"

    def key(v: Variant) -> tuple[float, float, int, str]:
        return (_objective_value(v, policy.objective), v.p50_ms_b1, v.size_bytes, v.name)

    if eligible:
        best = min(eligible, key=key)
        reason = (
            f"{best.name}: best {policy.objective} ({_describe(best, policy.objective)}) of {len(eligible)} variants "
            f"within {budget}; its accuracy {best.accuracy:.4f}"
        )
    else:
        fallback = [v for v in servable if v.uncompressed]
        if not fallback:
            raise NoServableVariant(
                f"no variant in a servable runtime ({', '.join(policy.servable_runtimes)}) and no FP32 export to fall back on"
            )
        best = min(fallback, key=key)
        reason = f"no variant within {budget}, so the uncompressed FP32 model is served as {best.name}"
    if missed:
        reason += f". Out of budget: {missed}"
    return Choice(
        served=best.name,
        objective=policy.objective,
        accuracy_budget_pp=policy.accuracy_budget_pp,
        baseline_accuracy=baseline_accuracy,
        floor=floor,
        reason=reason,
        out_of_budget=refused,
    )


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 2) if denominator > 0 and np.isfinite(numerator / denominator) else None


def variant_table(
    variants: list[Variant], served: str, baseline_accuracy: float, batch_n: int, floor: float | None = None
) -> list[dict[str, object]]:
    """Rows for the table artifact, the manifest and the console, in a fixed column order.

    Size and speed-ups are relative to the PyTorch eager FP32 variant of the same run.
    """
    torch_fp32 = next((v for v in variants if v.runtime == "torch" and v.uncompressed), None)
    rows = []
    for v in variants:
        row: dict[str, object] = {
            "variant": v.name,
            "runtime": v.runtime,
            "precision": v.precision,
            "accuracy": round(v.accuracy, 4),
            "delta_pp": round((v.accuracy - baseline_accuracy) * 100, 2),
            "in_budget": None if floor is None else bool(v.accuracy >= floor - 1e-9),
            "size_kb": round(v.size_bytes / 1024, 1),
            "smaller_x": _ratio(torch_fp32.size_bytes, v.size_bytes) if torch_fp32 else None,
            "mmacs": round(v.macs / 1e6, 3) if v.macs is not None else None,
            "kparams": round(v.params / 1e3, 1) if v.params is not None else None,
            "p50_ms_b1": round(v.p50_ms_b1, 3),
            "p95_ms_b1": round(v.p95_ms_b1, 3),
            f"p50_ms_b{batch_n}": round(v.p50_ms_bn, 3),
            f"p95_ms_b{batch_n}": round(v.p95_ms_bn, 3),
            "speedup_b1": _ratio(torch_fp32.p50_ms_b1, v.p50_ms_b1) if torch_fp32 else None,
            f"speedup_b{batch_n}": _ratio(torch_fp32.p50_ms_bn, v.p50_ms_bn) if torch_fp32 else None,
            "served": v.name == served,
        }
        rows.append(row)
    return rows


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
