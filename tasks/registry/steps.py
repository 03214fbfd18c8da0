"""Prefect tasks of the registry stage: publish, gate, promote."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.data.snapshot import DatasetSnapshot
from tasks.export.onnx import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAME
from tasks.export.steps import Evaluation
from tasks.monitor.reference import MonitoringReference
from tasks.registry.aliases import default_actor, promote_if_unchanged
from tasks.registry.config import GateConfig, StoreConfig
from tasks.registry.gate import GateDecision, gate_candidate
from tasks.registry.lineage import code_version, model_card
from tasks.registry.production import ProductionScore, score_production
from tasks.registry.release import Release, publish_release
from tasks.registry.rollback import RollbackResult, roll_back
from tasks.registry.store import open_store
from tasks.train.datamodule import to_model_input
from tasks.train.fit import TrainedModel


MODEL_CARD = "MODEL_CARD.md"


# Errors no retry can fix: bad requests, missing things, refused files. Error classes of this
# project mark themselves with ``permanent = True``.
PERMANENT_ERRORS = (ValueError, TypeError, LookupError, FileNotFoundError, NotADirectoryError, PermissionError)


def retry_if_transient(task, task_run, state) -> bool:
    """Retry what a flaky network or endpoint may fix; never a refused file or an impossible request."""
    error = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return not (isinstance(error, PERMANENT_ERRORS) or getattr(error, "permanent", False))


STORE_RETRIES = {"retries": 3, "retry_delay_seconds": [2, 8, 30], "retry_condition_fn": retry_if_transient}


def run_actor() -> str:
    """Who moves an alias: this Prefect flow run (name and id) on ``user@host``."""
    from prefect.runtime import flow_run

    run = f"flow run {flow_run.name} ({flow_run.id})" if flow_run.id else "no flow run"
    return f"{default_actor()}, {run}"


def release_files(
    snapshot: DatasetSnapshot, trained: TrainedModel, evaluation: Evaluation, reference: MonitoringReference | None = None
) -> dict[str, Path]:
    """Release-relative path -> local file: every variant, the dataset lineage, the training history, the monitoring reference."""
    files: dict[str, Path] = dict(reference.release_files()) if reference else {}
    for variant in evaluation.variants:
        for path in variant.files():
            files[f"{variant.name}/{path.relative_to(variant.directory).as_posix()}"] = path
    files["dataset/validation_report.json"] = snapshot.report_path
    files["dataset/manifest.json"] = snapshot.directory / "manifest.json"
    files["training/history.json"] = trained.state_dict_path.parent / "history.json"
    return files


def release_manifest(
    snapshot: DatasetSnapshot,
    trained: TrainedModel,
    evaluation: Evaluation,
    config: dict,
    reference: MonitoringReference | None = None,
) -> dict:
    """Everything a reader needs besides the files: input contract, metrics, variants, lineage, monitoring."""
    served = evaluation.served_variant()
    return {
        **({"monitoring": reference.manifest_entry()} if reference else {}),
        "schema_version": 1,
        "input": {
            "layout": "NCHW",
            "dtype": "float32",
            "channels": snapshot.channels,
            "image_size": snapshot.image_size,
            "scale": "pixel / 255",
            "input_name": INPUT_NAME,
            "output_name": OUTPUT_NAME,
            "embedding_output": EMBEDDING_NAME,
        },
        "served": {
            "name": served.name,
            "runtime": served.runtime,
            "precision": served.precision,
            "stage": served.stage,
            "entrypoint": served.entrypoint,
            "reason": evaluation.choice.reason,
        },
        "policy": evaluation.choice.model_dump(exclude={"reason", "served"}),
        "latency": evaluation.latency.model_dump(),
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


@task(**STORE_RETRIES)
def publish(
    store_config: StoreConfig,
    model: str,
    snapshot: DatasetSnapshot,
    trained: TrainedModel,
    evaluation: Evaluation,
    config: dict,
    reference: MonitoringReference | None = None,
) -> Release:
    """Upload the release files, then its manifest; a retry resumes where it stopped."""
    logger = get_run_logger()
    store = open_store(store_config)
    manifest = release_manifest(snapshot, trained, evaluation, config, reference)
    files = release_files(snapshot, trained, evaluation, reference)
    card = trained.state_dict_path.parent / MODEL_CARD
    card.write_text(model_card(model, manifest))
    files[MODEL_CARD] = card
    release = publish_release(
        store, model, files, {**manifest, "model_card": MODEL_CARD}, served_variant=evaluation.served, progress=logger.info
    )
    logger.info("release %s %s at %s", model, release.version, release.uri)
    return release


@task(**STORE_RETRIES)
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


@task(**STORE_RETRIES)
def promote(store_config: StoreConfig, release: Release, decision: GateDecision) -> Release:
    """Move ``production`` to the release, conditionally on it not having moved since the gate read it.

    Returns the release with ``promoted`` set; a build that loses a race for
    the alias is told so in ``gate_reason`` and its version stays intact.
    """
    logger = get_run_logger()
    promoted, why = promote_if_unchanged(
        open_store(store_config), release.model, release.version, decision.reason, decision.production_version,
        by=run_actor(),
    )
    if promoted:
        logger.info("production -> %s %s", release.model, release.version)
        return release.model_copy(update={"promoted": True, "gate_reason": decision.reason})
    # The loser of a race keeps its version, complete and listed; only the alias is not moved.
    logger.warning("not promoted: %s; version %s stays available", why, release.version)
    return release.model_copy(update={"promoted": False, "gate_reason": f"{why}; re-run to gate against it"})


@task(**STORE_RETRIES)
def rollback_production(
    store_config: StoreConfig, model: str, to_version: str | None, reason: str, work_dir: Path
) -> RollbackResult:
    """Verify the target version's files, then move ``production`` to it; record it in the history."""
    result = roll_back(open_store(store_config), model, work_dir, to_version, reason, by=run_actor())
    get_run_logger().info(
        "production %s: %s -> %s (%d files verified)", model, result.from_version, result.to_version, result.verified_files
    )
    create_markdown_artifact(
        key="rollback",
        description=f"{model}: production {result.from_version} -> {result.to_version}",
        markdown=(
            f"# Rollback of {model}\n\n- from: `{result.from_version}`\n- to: `{result.to_version}`\n"
            f"- files verified by sha256: {result.verified_files}\n- reason: {result.reason}\n"
        ),
    )
    return result
