"""Configuration of export checks and variant evaluation."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tasks.export.evaluate import Latency, VariantPolicy


class EvaluateConfig(BaseModel):
    """Parity tolerance, latency measurement and the policy that picks the served variant."""

    model_config = ConfigDict(extra="forbid")

    parity_tolerance: float = Field(
        1e-3, gt=0.0, le=1.0, description="Max abs logit difference allowed between PyTorch and an FP32 export"
    )
    latency: Latency = Field(default_factory=Latency)
    policy: VariantPolicy = Field(default_factory=VariantPolicy)
