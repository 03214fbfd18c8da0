"""Prefect tasks of the registry stage: publish, gate, promote."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.data.snapshot import DatasetSnapshot
from tasks.export.onnx import INPUT_NAME, OUTPUT_NAME
from tasks.export.steps import Evaluation
from tasks.registry.aliases import move_alias, read_alias
from tasks.registry.config import GateConfig, StoreConfig
from tasks.registry.gate import GateDecision, gate_candidate
from tasks.registry.lineage import code_version
from tasks.registry.production import ProductionScore, score_production
from tasks.registry.release import Release, publish_release
from tasks.registry.store import ConditionalWriteFailed, open_store
from tasks.train.datamodule import to_model_input
from tasks.train.fit import TrainedModel


def release_files(snapshot: DatasetSnapshot, trained: TrainedModel, evaluation: Evaluation) -> dict[str, Path]:
    """Release-relative path -> local file: every variant, the dataset lineage, the training history."""
    files: dict[str, Path] = {}
    for variant in evaluation.variants:
        for path in variant.files():
            files[f"{variant.name}/{path.relative_to(variant.directory).as_posix()}"] = path
    files["dataset/validation_report.json"] = snapshot.report_path
    files["dataset/manifest.json"] = snapshot.directory / "manifest.json"
    files["training/history.json"] = trained.state_dict_path.parent / "history.json"
    return files


def release_manifest(
    snapshot: DatasetSnapshot, trained: TrainedModel, evaluation: Evaluation, config: dict
) -> dict:
    """Everything a reader needs besides the files: input contract, metrics, variants, lineage."""
    served = evaluation.served_variant()
    return {
        "schema_version": 1,
        "input": {
            "layout": "NCHW",
            "dtype": "float32",
            "channels": snapshot.channels,
            "image_size": snapshot.image_size,
            "scale": "pixel / 255",
            "input_name": INPUT_NAME,
            "output_name": OUTPUT_NAME,
        },
        "served": {
            "name": served.name,
            "runtime": served.runtime,
            "precision": served.precision,
            "entrypoint": served.entrypoint,
        },
        "metrics": {
            "test_accuracy_fp32": evaluation.baseline_accuracy,
            "test_accuracy_served": served.accuracy,
            "val_accuracy": trained.val_acc,
            "test_images": sum(snapshot.counts["test"].values()),
        },
        "variants": evaluation.table(),
        "entrypoints": {v.name: v.entrypoint for v in evaluation.variants},
        "parity": [p.model_dump() for p in evaluation.parity],
        "dataset": {
            "version": snapshot.version,
            "source": snapshot.source,
            "classes": snapshot.classes,
            "counts": snapshot.counts,
            "quarantined": len(snapshot.quarantined),
        },
        "training": {
            "model": trained.model_name,
            "best_epoch": trained.best_epoch,
            "epochs_run": len(trained.history),
        },
        "config": config,
        "code_version": code_version(),
    }


@task(retries=3, retry_delay_seconds=[2, 8, 30])
def publish(
    store_config: StoreConfig,
    model: str,
    snapshot: DatasetSnapshot,
    trained: TrainedModel,
    evaluation: Evaluation,
    config: dict,
) -> Release:
    """Upload the release files, then its manifest; a retry resumes where it stopped."""
    logger = get_run_logger()
    store = open_store(store_config)
    release = publish_release(
        store,
        model,
        release_files(snapshot, trained, evaluation),
        release_manifest(snapshot, trained, evaluation, config),
        served_variant=evaluation.served,
        progress=logger.info,
    )
    logger.info("release %s %s at %s", model, release.version, release.uri)
    return release


@task(retries=3, retry_delay_seconds=[2, 8, 30])
def score_current_production(
    store_config: StoreConfig, model: str, snapshot: DatasetSnapshot, work_dir: Path
) -> ProductionScore:
    """Production's accuracy on this build's test split (its served artifact, sha256-verified)."""
    images, labels = snapshot.arrays("test")
    score = score_production(open_store(store_config), model, to_model_input(images), labels, snapshot.classes, work_dir)
    get_run_logger().info(
        "production %s: %s",
        score.version or "-",
        f"accuracy {score.accuracy:.4f} on this test split" if score.accuracy is not None else score.note,
    )
    return score


@task
def gate(evaluation: Evaluation, production: ProductionScore, config: GateConfig, release: Release) -> GateDecision:
    """Decide whether the candidate may replace production; publish the verdict as an artifact."""
    decision = gate_candidate(evaluation.served_variant().accuracy, release.version, production, config)
    verdict = "promote" if decision.promote else "keep production"
    get_run_logger().info("gate: %s (%s)", verdict, decision.reason)
    create_markdown_artifact(
        key="release-gate",
        description=f"{release.model} {release.version}: {verdict}",
        markdown=(
            f"# {release.model} {release.version}\n\n"
            f"- release: `{release.uri}`\n- serving variant: `{release.served_variant}`\n"
            f"- gate: **{verdict}** ({decision.reason})\n"
        ),
    )
    return decision


@task(retries=3, retry_delay_seconds=[2, 8, 30])
def promote(store_config: StoreConfig, release: Release, decision: GateDecision) -> Release:
    """Move ``production`` to the release, conditionally on it not having moved since the gate read it.

    Returns the release with ``promoted`` set; a build that loses a race for
    the alias is told so in ``gate_reason`` and its version stays intact.
    """
    store = open_store(store_config)
    logger = get_run_logger()
    expected = read_alias(store, release.model)
    current = expected[0].version if expected[0] else None
    lost = f"production moved from {decision.production_version} to {current} while this build was gated"
    if current == decision.production_version:
        try:
            move_alias(store, release.model, release.version, decision.reason, expected)
        except ConditionalWriteFailed:
            lost = "another release moved production at the same moment"
        else:
            logger.info("production -> %s %s", release.model, release.version)
            return release.model_copy(update={"promoted": True, "gate_reason": decision.reason})
    # The loser of a race keeps its version, complete and listed; only the alias is not moved.
    logger.warning("not promoted: %s; version %s stays available", lost, release.version)
    return release.model_copy(update={"promoted": False, "gate_reason": f"{lost}; re-run to gate against it"})
