"""Prefect tasks of the export stage: FP32 exports with parity checks, and variant evaluation."""

from __future__ import annotations

import shutil

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel

from tasks.data.snapshot import DatasetSnapshot
from tasks.export.backends import Backend, TorchBackend, load_backend
from tasks.export.config import EvaluateConfig
from tasks.export.evaluate import Variant, choose_variant, measure_variant, variant_table
from tasks.export.fp32 import export_fp32_checked
from tasks.export.parity import ParityResult
from tasks.train.datamodule import to_model_input
from tasks.train.fit import TrainedModel


class Exported(BaseModel):
    """The FP32 variants and their parity against PyTorch."""

    variants: list[Variant]
    parity: list[ParityResult]


class Evaluation(BaseModel):
    """Every variant measured on the test split, and the one chosen to serve."""

    variants: list[Variant]
    parity: list[ParityResult]
    served: str
    baseline_accuracy: float

    def served_variant(self) -> Variant:
        return next(v for v in self.variants if v.name == self.served)

    def table(self) -> list[dict[str, object]]:
        """The variant table: artifact, manifest and console rows."""
        return variant_table(self.variants, self.served)


def local_backend(variant: Variant, trained: TrainedModel) -> Backend:
    """A variant of this build, opened from its local files (the torch variant from the trained weights)."""
    if variant.runtime == "torch":
        return TorchBackend(trained.load())
    return load_backend(variant.runtime, variant.directory / variant.entrypoint)


@task
def export_fp32(trained: TrainedModel, snapshot: DatasetSnapshot, config: EvaluateConfig) -> Exported:
    """Export ONNX (dynamic batch) and OpenVINO IR; check both against PyTorch on the test images.

    Raises:
        ParityError: an export's logits differ beyond ``config.parity_tolerance``.
    """
    logger = get_run_logger()
    root = trained.state_dict_path.parent / "variants"
    shutil.rmtree(root, ignore_errors=True)
    torch_dir = root / "torch-fp32"
    torch_dir.mkdir(parents=True)
    shutil.copyfile(trained.state_dict_path, torch_dir / "model_state.pt")
    images, _ = snapshot.arrays("test")
    onnx_path, ir_path, parity = export_fp32_checked(
        trained.load(), to_model_input(images), root, config.parity_tolerance
    )
    for result in parity:
        logger.info(
            "parity %s: max |diff| %.2e (tolerance %.0e), top-1 agreement %.1f%%",
            result.variant,
            result.max_abs_diff,
            result.tolerance,
            result.top1_agreement * 100,
        )
    return Exported(
        variants=[
            Variant(name="torch-fp32", runtime="torch", precision="fp32", directory=torch_dir, entrypoint="model_state.pt"),
            Variant(name="onnx-fp32", runtime="onnxruntime", precision="fp32", directory=onnx_path.parent, entrypoint="model.onnx"),
            Variant(name="openvino-fp32", runtime="openvino", precision="fp32", directory=ir_path.parent, entrypoint="model.xml"),
        ],
        parity=parity,
    )


@task
def evaluate_variants(
    trained: TrainedModel,
    exported: Exported,
    quantized: list[Variant],
    snapshot: DatasetSnapshot,
    config: EvaluateConfig,
) -> Evaluation:
    """Measure accuracy, size and latency of every variant on the test split; pick the one to serve."""
    logger = get_run_logger()
    images, labels = snapshot.arrays("test")
    inputs = to_model_input(images)
    measured = []
    for variant in [*exported.variants, *quantized]:
        logger.info("measuring %s", variant.name)
        measured.append(measure_variant(variant, local_backend(variant, trained), inputs, labels, config.latency_repeats))
    baseline = next(v.accuracy for v in measured if v.name == "torch-fp32")
    served = choose_variant(measured, baseline, config.policy)
    evaluation = Evaluation(
        variants=measured, parity=exported.parity, served=served.name, baseline_accuracy=baseline
    )
    create_table_artifact(
        key="variant-table",
        table=evaluation.table(),
        description=f"Served: {served.name} (fastest within {config.policy.accuracy_budget_pp} pp of FP32)",
    )
    logger.info(
        "serving %s: accuracy %.4f on %d test images, p50 %.3f ms at batch 1",
        served.name,
        served.accuracy,
        len(labels),
        served.latency_ms_b1,
    )
    return evaluation
