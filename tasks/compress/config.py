"""Configuration of compression: the plan (distill -> prune -> int8) and each step's settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tasks.forms import FormModel
from tasks.train.config import ModelName

Step = Literal["distill", "prune", "int8"]
STEP_ORDER: tuple[Step, ...] = ("distill", "prune", "int8")


class DistillConfig(FormModel):
    """Which student to train and how strongly it follows the teacher."""

    student: ModelName = Field(
        "auto",
        description="Architecture from the model zoo, smaller than the teacher; auto: tiny_cnn for images, "
        "tabular_mlp_small for tables",
    )
    temperature: float = Field(4.0, gt=0.0, le=100.0, description="Softens both logit sets before comparing them")
    alpha: float = Field(
        0.7, ge=0.0, le=1.0, description="Weight of the teacher's soft targets; 1 - alpha weighs the hard labels"
    )
    max_epochs: int = Field(40, ge=1, le=10_000, description="Most passes of the student over the training images")
    learning_rate: float = Field(5e-3, gt=0.0, le=10.0, description="The student's AdamW step size")


class PruneConfig(FormModel):
    """How much of the network's compute to remove."""

    keep_macs: float = Field(0.5, gt=0.05, lt=1.0, description="Fraction of the multiply-accumulates to keep")
    tolerance: float = Field(0.05, gt=0.0, le=0.2, description="Stop once MACs are within this of the target")
    steps: int = Field(20, ge=1, le=200, description="Pruning happens in this many small steps at most")
    round_to: int | None = Field(
        8,
        ge=1,
        le=128,
        description=(
            "Keep channel counts multiples of this: CPU kernels (ONNX Runtime, OpenVINO) vectorise over blocks of "
            "channels, and odd counts can make a pruned model slower than the original. None: any count"
        ),
    )
    finetune_epochs: int = Field(15, ge=0, le=10_000, description="Fine-tune after pruning; 0 skips it")
    finetune_learning_rate: float = Field(2e-3, gt=0.0, le=10.0, description="AdamW step size of the fine-tune after pruning")
    teacher_alpha: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Fine-tune against the unpruned trained model's soft targets with this weight (0: labels only)",
    )
    temperature: float = Field(4.0, gt=0.0, le=100.0, description="Softens logits for the teacher's targets")


class Int8Config(FormModel):
    """Static INT8 quantization of the ONNX (ONNX Runtime) and OpenVINO (NNCF) models."""

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


class CompressConfig(FormModel):
    """The compression plan: steps run in the order distill -> prune -> int8, each optional.

    Every intermediate model becomes variants of its own (``distilled-onnx-fp32``,
    ``distilled-pruned-openvino-fp32``, ...); INT8 quantizes each of them (or the last one only).
    """

    plan: list[Step] = Field(["distill", "prune", "int8"], description="Any of distill, prune, int8, in that order")
    distill: DistillConfig = Field(default_factory=DistillConfig, description="Distillation into a smaller student model")
    prune: PruneConfig = Field(default_factory=PruneConfig, description="Structured (channel) pruning and its fine-tune")
    int8: Int8Config = Field(default_factory=Int8Config, description="INT8 quantization (ONNX Runtime and NNCF) and its calibration")

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
