"""Configuration of export checks, variant measurement and the policy that picks the served variant."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.forms import FormModel

Objective = Literal["latency_b1", "latency_bn", "size"]
Runtime = Literal["onnxruntime", "openvino"]


class LatencyConfig(FormModel):
    """How latency is measured: the same for every variant of a run, and recorded with it."""

    repeats: int = Field(30, ge=3, le=100_000, description="Timed calls at batch 1 (a quarter of that, at least 3, at batch N)")
    warmup: int = Field(5, ge=0, le=10_000, description="Untimed calls first: allocations, lazy kernel choice, caches")
    batch_n: int = Field(64, ge=2, le=65_536, description="The larger batch timed beside batch 1")
    threads: int = Field(
        2, ge=1, le=256, description="Intra-op threads of every runtime (torch, ONNX Runtime, OpenVINO) while timing"
    )


class ServingPolicy(FormModel):
    """Serve the best variant by ``objective`` among those within the accuracy budget of the FP32 model."""

    objective: Objective = Field(
        "latency_b1",
        description="latency_b1: p50 at batch 1; latency_bn: p50 at the large batch; size: bytes on disk",
    )
    accuracy_budget_pp: float = Field(
        1.0, ge=0.0, le=100.0, description="Allowed test-accuracy drop vs the uncompressed FP32 model, in pp"
    )
    servable_runtimes: list[Runtime] = Field(
        ["onnxruntime", "openvino"], min_length=1, description="Runtimes a release may serve"
    )
    host_alternatives: int = Field(
        4,
        ge=0,
        le=32,
        description=(
            "Other in-budget variants (the best of each runtime x precision) a scoring or serving host may time "
            "and serve instead, when it is faster there; 0: every host serves the chosen one"
        ),
    )


class EvaluateConfig(FormModel):
    """Parity tolerance, latency measurement and the policy that picks the served variant."""

    parity_tolerance: float = Field(
        1e-3, gt=0.0, le=1.0, description="Max abs logit difference allowed between PyTorch and an FP32 export"
    )
    latency: LatencyConfig = Field(default_factory=LatencyConfig, description="How each variant's latency is timed")
    policy: ServingPolicy = Field(default_factory=ServingPolicy, description="Which variant is served: the objective and the accuracy budget")
