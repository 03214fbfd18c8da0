"""The evaluation of a build: every variant measured on the test split, the one chosen to serve, and its table."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from tasks.export.config import LatencyConfig, Objective
from tasks.export.measure import Host
from tasks.export.parity import ParityResult
from tasks.export.policy import SLACK, Choice
from tasks.export.reference_models import ReferenceModel
from tasks.export.variants import Variant, VariantMetrics


class Evaluation(BaseModel):
    """Every variant measured on the test split, and the one chosen to serve."""

    variants: list[Variant]
    parity: list[ParityResult]
    choice: Choice
    latency: LatencyConfig
    host: Host
    alternatives: list[str] = []  # variants a serving host may time and serve instead (see policy.host_alternatives)
    references: list[ReferenceModel] = []  # other model families on the same split (tables: gradient-boosted trees)

    @property
    def served(self) -> str:
        return self.choice.served

    @property
    def baseline_accuracy(self) -> float:
        return self.choice.baseline_accuracy

    def served_variant(self) -> Variant:
        return next(v for v in self.variants if v.name == self.served)

    def table(self) -> list[dict[str, object]]:
        """The variant table: artifact, manifest and console rows."""
        return variant_table(self.variants, self.served, self.baseline_accuracy, self.latency.batch_n, self.choice.floor)


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 2) if denominator > 0 and np.isfinite(numerator / denominator) else None


def variant_table(
    variants: list[VariantMetrics], served: str, baseline_accuracy: float, batch_n: int, floor: float | None = None
) -> list[dict[str, object]]:
    """Rows for tables people read (artifact, model card, console), rounded, in a fixed column order.

    Size and speed-ups are relative to the PyTorch eager FP32 variant of the same run.
    """
    torch_fp32 = next((v for v in variants if v.runtime == "torch" and v.uncompressed), None)
    return [
        {
            "variant": v.name,
            "runtime": v.runtime,
            "precision": v.precision,
            "accuracy": round(v.accuracy, 4),
            "delta_pp": round((v.accuracy - baseline_accuracy) * 100, 2),
            "in_budget": None if floor is None else bool(v.accuracy >= floor - SLACK),
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
        for v in variants
    ]


# The columns that decide which variant is served: the artifact page shows them whole, whatever the screen.
DECIDING_COLUMNS = ("variant", "served", "accuracy", "delta_pp", "in_budget", "size_kb")


def split_for_pages(
    rows: list[dict[str, object]], objective: Objective, batch_n: int
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """The variant table as two tables narrow enough for a page: the deciding columns, and the rest by variant.

    Seventeen columns do not fit a browser window; the Prefect UI cuts them off at its right edge. The
    deciding ones are the served mark, accuracy against the budget, size, and the objective's latency.
    """
    latency = {"latency_b1": "p50_ms_b1", "latency_bn": f"p50_ms_b{batch_n}", "size": "p50_ms_b1"}[objective]
    columns = (*DECIDING_COLUMNS, latency)
    deciding = [{column: row[column] for column in columns} for row in rows]
    details = [
        {"variant": row["variant"], **{c: v for c, v in row.items() if c not in columns}} for row in rows
    ]
    return deciding, details
