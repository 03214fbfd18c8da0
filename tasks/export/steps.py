"""Prefect tasks of the export stage: FP32 exports with parity checks, and variant evaluation."""

from __future__ import annotations

import shutil
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from tasks.caching import STEP_KEY, code_version, computed_once, fingerprint, step_folder
from tasks.data.snapshot import DatasetSnapshot
from tasks.export.config import EvaluateConfig
from tasks.export.evaluate import Evaluation, split_for_pages
from tasks.export.fp32 import export_model
from tasks.export.measure import measure_variant, measuring_host
from tasks.export.policy import choose_variant, host_alternatives
from tasks.export.reference_models import fit_reference_models
from tasks.export.variants import TRAINED_STAGE, Exported, Variant
from tasks.train.trained import TrainedModel


@task(cache_key_fn=STEP_KEY)
def export_fp32(trained: TrainedModel, snapshot: DatasetSnapshot, config: EvaluateConfig, stage: str = TRAINED_STAGE) -> Exported:
    """Export a trained (or distilled) model to ONNX and OpenVINO IR, each checked against PyTorch.

    The trained model also keeps its PyTorch weights as ``torch-fp32``: the eager baseline of the variant table.

    Raises:
        ParityError: an export's logits differ beyond ``config.parity_tolerance``.
    """
    logger = get_run_logger()
    root = step_folder(
        trained.state_dict_path.parent, "variants", stage=stage, snapshot=snapshot.version, config=config,
        weights=fingerprint(trained.state_dict_path), code=code_version(__name__),
    )
    return computed_once(root, lambda: _export(trained, snapshot, config, stage, root), logger.info)


def _export(trained: TrainedModel, snapshot: DatasetSnapshot, config: EvaluateConfig, stage: str, root: Path) -> Exported:
    """``export_fp32``'s files, in ``root``."""
    exported = export_model(trained.load(), stage, snapshot, root, config.parity_tolerance, get_run_logger().info)
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


@task(cache_key_fn=STEP_KEY)
def evaluate_variants(
    trained: TrainedModel,
    exported: list[Exported],
    quantized: list[Variant],
    snapshot: DatasetSnapshot,
    config: EvaluateConfig,
) -> Evaluation:
    """Measure accuracy, size and latency of every variant on the test split; pick the one to serve.

    Tables also get a reference model of another family (gradient-boosted trees) on the same split, reported beside.

    Raises:
        NoServableVariant: there is not even a servable FP32 export.
    """
    logger = get_run_logger()
    inputs, labels = snapshot.model_inputs("test")
    latency = config.latency
    host = measuring_host()
    logger.info(
        "timing every variant on the same %d test inputs: %d warm-up + %d timed calls at batch 1, batch %d too, "
        "%d threads, on %s (%s)",
        len(labels), latency.warmup, latency.repeats, latency.batch_n, latency.threads, host.cpu,
        ", ".join(host.flags) or "no AVX2",
    )
    measured = []
    variants = [v for e in exported for v in e.variants] + quantized
    for i, variant in enumerate(variants, 1):
        result = measure_variant(variant, variant.open(trained, latency.threads), inputs, labels, latency)
        logger.info(
            "[%d/%d] %s: accuracy %.4f, %.1f KB, p50 %.3f ms (p95 %.3f) at batch 1",
            i, len(variants), variant.name, result.accuracy, result.size_bytes / 1024, result.p50_ms_b1, result.p95_ms_b1,
        )
        measured.append(result)
    references, skipped_references = fit_reference_models(snapshot, latency)
    for note in skipped_references:
        logger.warning(note)
    for ref in references:
        logger.info(
            "reference model %s (%s): accuracy %.4f, macro-F1 %.4f, p50 %.3f ms at batch 1, fitted in %.1f s",
            ref.name, ref.library, ref.accuracy, ref.macro_f1, ref.p50_ms_b1, ref.fit_seconds,
        )
    baseline = next(v.accuracy for v in measured if v.runtime == "torch" and v.uncompressed)
    choice = choose_variant(measured, baseline, config.policy)
    alternatives = [v.name for v in host_alternatives(measured, choice, config.policy)]
    return Evaluation(
        variants=measured, parity=[p for e in exported for p in e.parity], choice=choice, latency=latency, host=host,
        alternatives=alternatives, references=references,
    )


@task
def report_evaluation(evaluation: Evaluation, exported: list[Exported], config: EvaluateConfig) -> None:
    """The variant tables and the choice, in every run: also when ``evaluate_variants`` was reused from an earlier one."""
    logger = get_run_logger()
    choice, latency, alternatives = evaluation.choice, evaluation.latency, evaluation.alternatives
    deciding, details = split_for_pages(evaluation.table(), config.policy.objective, latency.batch_n)
    skipped = [reason for stage in exported for reason in stage.skipped]
    for reason in skipped:
        logger.info("%s", reason)
    create_table_artifact(
        key="variant-table",
        table=deciding,
        description=f"Served: {choice.served}. {choice.reason}. Latency: {latency.threads} threads, "
        f"p50/p95 of {latency.repeats} calls after {latency.warmup} warm-up, batch 1 and {latency.batch_n}."
        + "".join(f" Not offered: {reason}." for reason in skipped),
    )
    create_table_artifact(
        key="variant-details",
        table=details,
        description=f"Each variant's runtime, precision, size ratio, MACs, parameters, p95 and batch-{latency.batch_n} "
        "latency (the variant-table artifact has the columns that chose the served one).",
    )
    for miss in choice.out_of_budget:
        logger.warning(
            "%s is out of budget: accuracy %.4f drops %.2f pp, %.2f pp more than the %.2f pp allowed",
            miss.variant, miss.accuracy, miss.drop_pp, miss.over_budget_pp, choice.accuracy_budget_pp,
        )
    logger.info("serving %s: %s", choice.served, choice.reason)
    if alternatives:
        logger.info("a scoring or serving host times these too and serves the fastest on its CPU: %s", ", ".join(alternatives))
