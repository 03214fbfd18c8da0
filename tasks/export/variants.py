"""Variants: the servable forms of a model (runtime x precision x compression stage) and their numbers."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from tasks.export.backends import Backend, open_backend
from tasks.export.parity import ParityResult
from tasks.train.trained import TrainedModel

# What the trained model is called before any compression step; variant names of later stages carry a prefix.
TRAINED_STAGE = "trained"


def variant_prefix(stage: str) -> str:
    """Variant names of the trained model carry no prefix (``onnx-fp32``); later stages do (``pruned-onnx-fp32``)."""
    return "" if stage == TRAINED_STAGE else f"{stage}-"


class VariantMetrics(BaseModel):
    """One servable form of the model, and what was measured of it on the test split."""

    name: str = Field(description="e.g. onnx-int8, distilled-pruned-openvino-int8")
    runtime: str = Field(description="torch, onnxruntime or openvino")
    precision: str = Field(description="fp32, bf16 or int8")
    stage: str = Field(TRAINED_STAGE, description="Model it was made from: trained, distilled, distilled-pruned, ...")
    entrypoint: str | None = Field(None, description="File inside the variant's folder that the runtime opens")
    macs: int | None = Field(None, description="Multiply-accumulates of one input's forward pass (of the float model)")
    params: int | None = Field(None, description="Parameter count (of the float model)")
    accuracy: float = float("nan")
    macro_f1: float | None = Field(None, description="F1 averaged over classes on the test split (releases before schema 4: none)")
    size_bytes: int = 0
    p50_ms_b1: float = float("nan")
    p95_ms_b1: float = float("nan")
    p50_ms_bn: float = float("nan")
    p95_ms_bn: float = float("nan")

    @property
    def uncompressed(self) -> bool:
        """The trained model itself, in full precision."""
        return self.stage == TRAINED_STAGE and self.precision == "fp32"


class Variant(VariantMetrics):
    """A variant of this build, with its files on local disk."""

    directory: Path | None = Field(None, description="Folder holding every file of the variant")

    def files(self) -> list[Path]:
        """Every file of the variant (graph, external weights, IR bin)."""
        if self.directory is None:
            return []
        return sorted(p for p in self.directory.rglob("*") if p.is_file())

    def open(self, trained: TrainedModel, threads: int | None = None) -> Backend:
        """This variant as a back end, from its local files (``trained`` rebuilds a torch variant's architecture)."""
        return open_backend(
            self.runtime, self.directory / self.entrypoint, threads, torch_model=trained.architecture, precision=self.precision
        )


class Exported(BaseModel):
    """The FP32 variants of one model (the trained one, or a compressed one) and their parity against PyTorch."""

    stage: str = TRAINED_STAGE
    variants: list[Variant]
    parity: list[ParityResult]
    skipped: list[str] = Field(default_factory=list, description="Variants not made, each with the reason")
