"""Prefect tasks of the registry stage: publish, gate, promote, roll back, and fetch production for later stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.events import emit_event

from tasks.data.snapshot import DatasetSnapshot
from tasks.errors import STORE_RETRIES
from tasks.events import PROMOTION_REFUSED, model_event
from tasks.export.evaluate import Evaluation
from tasks.export.measure import predicted_classes
from tasks.registry.aliases import default_actor, promote_if_unchanged
from tasks.registry.assemble import draft_manifest, release_files
from tasks.registry.config import GateConfig, StoreConfig
from tasks.registry.cooldown import claim_retrain
from tasks.registry.gate import GateDecision, ProductionScore, decide, score_production
from tasks.registry.lineage import model_card
from tasks.registry.manifest import MonitoringReference
from tasks.registry.release import Release, publish_release, version_prefix
from tasks.registry.rollback import RollbackResult, roll_back
from tasks.registry.serving import FetchedRelease
from tasks.registry.serving import fetch_production as fetch_production_release
from tasks.registry.store import open_store
from tasks.train.trained import TrainedModel


def run_actor() -> str:
    """Who moves an alias: this Prefect flow run (name and id) on ``user@host``."""
    from prefect.runtime import flow_run

    run = f"flow run {flow_run.name} ({flow_run.id})" if flow_run.id else "no flow run"
    return f"{default_actor()}, {run}"


@task(**STORE_RETRIES)
def publish(
    store_config: StoreConfig,
    model: str,
    snapshot: DatasetSnapshot,
    trained: TrainedModel,
    evaluation: Evaluation,
    config: dict[str, Any],
    monitoring: MonitoringReference | None = None,
) -> Release:
    """Upload the release files, then its manifest; a retry resumes where it stopped."""
    logger = get_run_logger()
    draft = draft_manifest(model, snapshot, trained, evaluation, config, monitoring)
    files = release_files(snapshot, trained, evaluation, monitoring)
    card = trained.state_dict_path.parent / draft.model_card
    card.write_text(model_card(draft))
    files[draft.model_card] = card
    store = open_store(store_config)
    stored = create_progress_artifact(0.0, description=f"storing the release of {model} in {store.uri}")

    def on_file(done: int, total: int) -> None:
        update_progress_artifact(stored, 100.0 * done / total, description=f"{model}: {done} of {total} release files stored")

    release = publish_release(store, files, draft, progress=logger.info, on_file=on_file)
    update_progress_artifact(
        stored, 100.0, description=f"{model} {release.version}: {release.files_uploaded} files sent, "
        f"{release.files_reused} already stored",
    )
    logger.info("release %s %s at %s", model, release.version, release.uri)
    create_link_artifact(
        key="release",
        link=store.browser_link(f"{version_prefix(model, release.version)}/{draft.model_card}"),
        link_text=f"{model} {release.version}: model card",
        description=f"The release's model card; its files and manifest: {release.uri}",
    )
    return release


@task(**STORE_RETRIES)
def fetch_production(store_config: StoreConfig, model: str, work_dir: Path, candidates: bool = False) -> FetchedRelease:
    """Production's served variant and monitoring files, downloaded and verified by sha256 (cached by hash).

    ``candidates=True`` fetches every variant a host may time and serve instead (see ``FetchedRelease.open_on_host``).
    """
    production = fetch_production_release(open_store(store_config), model, work_dir, candidates=candidates)
    fetched = [v.name for v in production.manifest.host_candidates()] if candidates else [production.manifest.served.name]
    get_run_logger().info("production %s %s (%s), files verified", model, production.version, ", ".join(fetched))
    return production


@task(**STORE_RETRIES)
def score_current_production(
    store_config: StoreConfig, model: str, snapshot: DatasetSnapshot, work_dir: Path
) -> ProductionScore:
    """Production's accuracy on this build's test split (its served artifact, sha256-verified)."""
    raw, labels = snapshot.arrays("test")
    score = score_production(open_store(store_config), model, snapshot.input, raw, labels, snapshot.classes, work_dir)
    get_run_logger().info(
        "production %s: %s",
        score.version or "-",
        f"accuracy {score.accuracy:.4f} on this test split" if score.accuracy is not None else score.note,
    )
    return score


@task
def gate(
    evaluation: Evaluation,
    trained: TrainedModel,
    snapshot: DatasetSnapshot,
    production: ProductionScore,
    config: GateConfig,
    release: Release,
    reason: str = "",
) -> GateDecision:
    """Decide whether the candidate may replace production; publish the verdict as an artifact.

    ``reason`` is why the build ran (for a triggered build: the event's name and id), stated in the artifact.
    """
    logger = get_run_logger()
    inputs, labels = snapshot.model_inputs("test")
    candidate = predicted_classes(evaluation.served_variant().open(trained), inputs) == labels
    decision = decide(candidate, labels, production, config, release.version)
    verdict = "promote" if decision.promote else "keep production"
    for warning in decision.warnings:
        logger.warning("gate: %s", warning)
    logger.info("gate: %s (%s)", verdict, decision.reason)
    if not decision.promote and production.version != release.version:
        emit_event(
            **model_event(
                PROMOTION_REFUSED,
                release.model,
                {
                    "candidate_version": release.version,
                    "production_version": decision.production_version,
                    "candidate_accuracy": round(decision.candidate_accuracy, 4),
                    "test_images": decision.test_images,
                    "reason": decision.reason[:1000],
                },
            )
        )
    create_markdown_artifact(
        key="release-gate",
        description=f"{release.model} {release.version}: {verdict}",
        markdown=(
            # The outcome first: a refused promotion must be the first thing anyone opening the run reads.
            f"# {'Promoted' if decision.promote else 'Kept production'}: {release.model} {release.version}\n\n"
            f"- release: `{release.uri}`\n- serving variant: `{release.served_variant}`\n"
            f"- gate: **{verdict}** ({decision.reason})\n- test examples: {decision.test_images}\n"
            + "".join(f"- warning: {w}\n" for w in decision.warnings)
            + (f"- why this build ran: {reason}\n" if reason else "")
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


@task(**STORE_RETRIES)
def claim_cooldown(store_config: StoreConfig, model: str, hours: float, reason: str) -> str | None:
    """Claim the model's retrain cool-down; the reason to skip this run when another retrain holds it."""
    skip = claim_retrain(open_store(store_config), model, hours, reason, by=run_actor())
    if skip:
        get_run_logger().warning(skip)
    return skip
