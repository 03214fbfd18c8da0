"""Prefect tasks of the export stage: FP32 exports with parity checks, and variant evaluation."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel
from torch import nn

from tasks.data.snapshot import DatasetSnapshot
from tasks.export.backends import Backend, TorchBackend, load_backend
from tasks.export.config import EvaluateConfig
from tasks.export.evaluate import TRAINED_STAGE, Choice, Latency, Variant, choose_variant, measure_variant, variant_table
from tasks.export.fp32 import export_fp32_checked
from tasks.export.parity import ParityResult
from tasks.train.datamodule import to_model_input
from tasks.train.fit import TrainedModel
from tasks.train.models import count_macs_params


def variant_prefix(stage: str) -> str:
    """Variant names of the trained model carry no prefix (``onnx-fp32``); later stages do (``pruned-onnx-fp32``)."""
    return "" if stage == TRAINED_STAGE else f"{stage}-"


class Exported(BaseModel):
    """The FP32 variants of one model (the trained one, or a compressed one) and their parity against PyTorch."""

    stage: str = TRAINED_STAGE
    variants: list[Variant]
    parity: list[ParityResult]


class Evaluation(BaseModel):
    """Every variant measured on the test split, and the one chosen to serve."""

    variants: list[Variant]
    parity: list[ParityResult]
    choice: Choice
    latency: Latency

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


def local_backend(variant: Variant, trained: TrainedModel, threads: int | None = None) -> Backend:
    """A variant of this build, opened from its local files (the torch variant from the trained weights)."""
    if variant.runtime == "torch":
        return TorchBackend(trained.load())
    return load_backend(variant.runtime, variant.directory / variant.entrypoint, threads)


def export_model(
    model: nn.Module,
    stage: str,
    snapshot: DatasetSnapshot,
    root: Path,
    tolerance: float,
    logger: logging.Logger | logging.LoggerAdapter,
) -> Exported:
    """ONNX (dynamic batch) and OpenVINO IR of ``model`` under ``root``, both checked against PyTorch on the test images.

    Raises:
        ParityError: an export's logits differ beyond ``tolerance``.
    """
    prefix = variant_prefix(stage)
    for runtime in ("onnx", "openvino"):
        shutil.rmtree(root / f"{prefix}{runtime}-fp32", ignore_errors=True)
    images, _ = snapshot.arrays("test")
    inputs = to_model_input(images)
    onnx_path, ir_path, parity = export_fp32_checked(model, inputs, root, tolerance, prefix)
    for result in parity:
        logger.info(
            "parity %s: max |diff| %.2e (tolerance %.0e), top-1 agreement %.1f%%",
            result.variant,
            result.max_abs_diff,
            result.tolerance,
            result.top1_agreement * 100,
        )
    macs, params = count_macs_params(model, torch.from_numpy(inputs[:1]))
    common = {"precision": "fp32", "stage": stage, "macs": macs, "params": params}
    return Exported(
        stage=stage,
        variants=[
            Variant(name=f"{prefix}onnx-fp32", runtime="onnxruntime", directory=onnx_path.parent, entrypoint=onnx_path.name, **common),
            Variant(name=f"{prefix}openvino-fp32", runtime="openvino", directory=ir_path.parent, entrypoint=ir_path.name, **common),
        ],
        parity=parity,
    )


@task
def export_fp32(trained: TrainedModel, snapshot: DatasetSnapshot, config: EvaluateConfig, stage: str = TRAINED_STAGE) -> Exported:
    """Export a trained (or distilled) model to ONNX and OpenVINO IR, each checked against PyTorch.

    The trained model also keeps its PyTorch weights as ``torch-fp32``: the eager baseline of the variant table.

    Raises:
        ParityError: an export's logits differ beyond ``config.parity_tolerance``.
    """
    root = trained.state_dict_path.parent / "variants"
    exported = export_model(trained.load(), stage, snapshot, root, config.parity_tolerance, get_run_logger())
    if stage != TRAINED_STAGE:
        return exported
    torch_dir = root / "torch-fp32"
    shutil.rmtree(torch_dir, ignore_errors=True)
    torch_dir.mkdir(parents=True)
    shutil.copyfile(trained.state_dict_path, torch_dir / "model_state.pt")
    onnx = exported.variants[0]
    eager = Variant(
        name="torch-fp32", runtime="torch", precision="fp32", directory=torch_dir, entrypoint="model_state.pt",
        macs=onnx.macs, params=onnx.params,
    )
    return exported.model_copy(update={"variants": [eager, *exported.variants]})


@task
def evaluate_variants(
    trained: TrainedModel,
    exported: list[Exported],
    quantized: list[Variant],
    snapshot: DatasetSnapshot,
    config: EvaluateConfig,
) -> Evaluation:
    """Measure accuracy, size and latency of every variant on the test split; pick the one to serve.

    Raises:
        NoServableVariant: there is not even a servable FP32 export.
    """
    logger = get_run_logger()
    images, labels = snapshot.arrays("test")
    inputs = to_model_input(images)
    latency = config.latency
    logger.info(
        "timing every variant on the same %d test images: %d warm-up + %d timed calls at batch 1, batch %d too, %d threads",
        len(labels), latency.warmup, latency.repeats, latency.batch_n, latency.threads,
    )
    measured = []
    variants = [v for e in exported for v in e.variants] + quantized
    for i, variant in enumerate(variants, 1):
        result = measure_variant(variant, local_backend(variant, trained, latency.threads), inputs, labels, latency)
        logger.info(
            "[%d/%d] %s: accuracy %.4f, %.1f KB, p50 %.3f ms (p95 %.3f) at batch 1",
            i, len(variants), variant.name, result.accuracy, result.size_bytes / 1024, result.p50_ms_b1, result.p95_ms_b1,
        )
        measured.append(result)
    baseline = next(v.accuracy for v in measured if v.name == "torch-fp32")
    choice = choose_variant(measured, baseline, config.policy)
    evaluation = Evaluation(
        variants=measured, parity=[p for e in exported for p in e.parity], choice=choice, latency=latency
    )
    create_table_artifact(
        key="variant-table",
        table=evaluation.table(),
        description=f"Served: {choice.served}. {choice.reason}. Latency: {latency.threads} threads, "
        f"p50/p95 of {latency.repeats} calls after {latency.warmup} warm-up, batch 1 and {latency.batch_n}.",
    )
    for miss in choice.out_of_budget:
        logger.warning(
            "%s is out of budget: accuracy %.4f drops %.2f pp, %.2f pp more than the %.2f pp allowed",
            miss.variant, miss.accuracy, miss.drop_pp, miss.over_budget_pp, choice.accuracy_budget_pp,
        )
    logger.info("serving %s: %s", choice.served, choice.reason)
    return evaluation
