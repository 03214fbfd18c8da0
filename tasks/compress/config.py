"""Configuration of compression: the plan (distill -> prune -> int8) and each step's settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.compress.distill import DistillConfig
from tasks.compress.prune import PruneConfig

Step = Literal["distill", "prune", "int8"]
STEP_ORDER: tuple[Step, ...] = ("distill", "prune", "int8")


class QuantizeConfig(BaseModel):
    """Static INT8 quantization of the ONNX (ONNX Runtime) and OpenVINO (NNCF) models."""

    model_config = ConfigDict(extra="forbid")

    calibration_size: int = Field(300, ge=1, le=100_000, description="Train images used for calibration")
    onnx_calibration_method: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax", description="How ONNX Runtime turns calibration activations into ranges"
    )
    per_channel: bool = Field(True, description="ONNX Runtime: one weight scale per output channel")
    reduce_range: bool = Field(
        True,
        description=(
            "7-bit weights for ONNX Runtime: avoids int16 saturation in the u8s8 kernels of x86 CPUs "
            "without VNNI, where 8-bit per-channel weights can cost several points of accuracy"
        ),
    )
    nncf_preset: Literal["performance", "mixed"] = Field(
        "mixed", description="NNCF: symmetric weights and activations (performance) or asymmetric activations (mixed)"
    )
    fast_bias_correction: bool = Field(True, description="NNCF: the fast bias correction (False: the full one, slower)")
    accuracy_control: Literal["auto", "always", "never"] = Field(
        "auto",
        description=(
            "NNCF quantize_with_accuracy_control: auto runs it when plain INT8 drops more than the accuracy budget "
            "on the validation split; it keeps the most sensitive layers in FP32 until the drop fits"
        ),
    )
    models: Literal["every", "last"] = Field(
        "every",
        description="Quantize every model of the plan (trained, distilled, pruned) or only the plan's last one",
    )
    seed: int = Field(0, ge=0, description="Seeds the choice of calibration images")


class CompressConfig(BaseModel):
    """The compression plan: steps run in the order distill -> prune -> int8, each optional.

    Every intermediate model becomes variants of its own (``distilled-onnx-fp32``,
    ``distilled-pruned-openvino-fp32``, ...); INT8 quantizes each of them (or the last one only).
    """

    model_config = ConfigDict(extra="forbid")

    plan: list[Step] = Field(["distill", "prune", "int8"], description="Any of distill, prune, int8, in that order")
    distill: DistillConfig = Field(default_factory=DistillConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    int8: QuantizeConfig = Field(default_factory=QuantizeConfig)

    @field_validator("plan")
    @classmethod
    def _plan(cls, value: list[Step]) -> list[Step]:
        if len(set(value)) != len(value):
            raise ValueError(f"plan {value} repeats a step; each of {', '.join(STEP_ORDER)} runs at most once")
        if value != sorted(value, key=STEP_ORDER.index):
            raise ValueError(
                f"plan {value} is out of order: steps run as {' -> '.join(STEP_ORDER)} "
                "(a student is distilled from the trained model, pruning needs a float model, INT8 comes last)"
            )
        return value
