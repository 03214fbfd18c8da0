"""The serving policy: the best variant by the objective among those within the accuracy budget."""

from __future__ import annotations

from pydantic import BaseModel

from tasks.errors import LeptonError
from tasks.export.config import Objective, ServingPolicy
from tasks.export.variants import VariantMetrics


# A hair of slack: accuracies are ratios of counts, and the floor is a difference of floats.
SLACK = 1e-9


class NoServableVariant(LeptonError):
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

    def in_budget(self, accuracy: float) -> bool:
        """Whether a test accuracy is within the budget (at or above the floor)."""
        return accuracy >= self.floor - SLACK


def _objective_value(variant: VariantMetrics, objective: Objective) -> float:
    return {"latency_b1": variant.p50_ms_b1, "latency_bn": variant.p50_ms_bn, "size": float(variant.size_bytes)}[objective]


def _describe(variant: VariantMetrics, objective: Objective) -> str:
    if objective == "size":
        return f"{variant.size_bytes / 1024:.1f} KB on disk"
    return f"p50 {_objective_value(variant, objective):.3f} ms at batch {'1' if objective == 'latency_b1' else 'N'}"


def choose_variant(variants: list[VariantMetrics], baseline_accuracy: float, policy: ServingPolicy) -> Choice:
    """The servable variant best by ``policy.objective`` among those within the accuracy budget.

    With none within budget, the uncompressed FP32 model is served (best by the
    objective among its servable exports) and the reason says so.

    Raises:
        NoServableVariant: there is no servable variant at all, not even the FP32 export.
    """
    floor = baseline_accuracy - policy.accuracy_budget_pp / 100.0
    servable = [v for v in variants if v.runtime in policy.servable_runtimes]
    eligible = [v for v in servable if v.accuracy >= floor - SLACK]
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

    def key(v: VariantMetrics) -> tuple[float, float, int, str]:
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


def host_alternatives(variants: list[VariantMetrics], choice: Choice, policy: ServingPolicy) -> list[VariantMetrics]:
    """The variants a serving host may time and serve instead of ``choice.served``, best first.

    Which runtime and precision is fastest depends on the host's CPU (VNNI speeds INT8, bf16
    needs AVX-512 BF16 or AMX); within one runtime and precision, the variant faster here is
    faster there too. So: of each runtime x precision other than the served one's, the in-budget
    servable variant best by the objective; at most ``policy.host_alternatives``. None when no
    variant is within budget (the FP32 fallback is served everywhere) or the objective is size
    (the same on every host).
    """
    if policy.objective == "size":
        return []
    served = next(v for v in variants if v.name == choice.served)
    eligible = [v for v in variants if v.runtime in policy.servable_runtimes and choice.in_budget(v.accuracy)]
    if served not in eligible:
        return []
    best: dict[tuple[str, str], VariantMetrics] = {}
    for v in sorted(eligible, key=lambda v: (_objective_value(v, policy.objective), v.p50_ms_b1, v.size_bytes, v.name)):
        best.setdefault((v.runtime, v.precision), v)
    best.pop((served.runtime, served.precision), None)
    return list(best.values())[: policy.host_alternatives]
