"""Configuration of INT8 post-training quantization."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class QuantizeConfig(BaseModel):
    """Static INT8 quantization of the ONNX (ONNX Runtime) and OpenVINO (NNCF) models."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    calibration_size: int = Field(300, ge=1, le=100_000, description="Train images used for calibration")
    onnx_calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    reduce_range: bool = Field(
        True,
        description=(
            "7-bit weights for ONNX Runtime: avoids int16 saturation in the u8s8 kernels of x86 CPUs "
            "without VNNI, where 8-bit per-channel weights can cost several points of accuracy"
        ),
    )
    seed: int = Field(0, ge=0, description="Seeds the choice of calibration images")
