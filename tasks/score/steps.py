"""Prefect tasks of the scoring stage: collect a batch, score it with production, log it for monitoring."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from tasks.errors import STORE_RETRIES
from tasks.export.backends import RUNTIMES
from tasks.export.measure import measuring_host
from tasks.registry.config import HostChoiceConfig, StoreConfig
from tasks.registry.hostchoice import HostChoice
from tasks.registry.serving import FetchedRelease
from tasks.registry.store import open_store
from tasks.score.features import load_projection
from tasks.score.inputs import InputBatch, archive_inputs, collect_batch
from tasks.score.logs import batch_logs, log_batch, scored_before
from tasks.score.scoring import ScoreResult, score_files


@task(**STORE_RETRIES)
def collect_inputs(source: str, store_config: StoreConfig, work_dir: Path) -> InputBatch:
    """List a folder, or download an ``s3://`` prefix (same endpoint and credentials as the store)."""
    batch = collect_batch(source, store_config, work_dir)
    get_run_logger().info("%d files in %s", len(batch.files), source)
    return batch


TIMING_BATCH = 64


@task
def choose_variant_here(production: FetchedRelease, host: HostChoiceConfig, batch_size: int, work_dir: Path) -> HostChoice:
    """The variant this host scores with: the release's candidates timed here near ``batch_size``, the fastest.

    The choice is kept per host and release under ``work_dir``, so a scheduled scorer times them once.
    With ``host.measure`` off, the build's choice.
    """
    logger = get_run_logger()
    manifest = production.manifest
    if not host.measure:
        return HostChoice(
            variant=manifest.served.name, reason=f"{manifest.served.name}: the build's choice (host timing is off)",
            batch_size=batch_size, host=measuring_host(), timings=[], measured_at=datetime.now(timezone.utc),
        )
    # Timed at most at batch 64: per-input time has levelled off there, and three rounds of every
    # candidate at a scorer's 256 or more would take longer than the few seconds this may cost.
    # Timed without spinning threads: each candidate's idle pool must not slow the next one's call.
    choice, _ = production.open_on_host(min(batch_size, TIMING_BATCH), host.seconds, RUNTIMES, spin=False, cache_dir=work_dir)
    logger.info("scoring with %s: %s", choice.variant, choice.reason)
    if choice.timings:
        create_table_artifact(key="host-choice", table=choice.table(), description=f"Scoring with {choice.variant}. {choice.reason}")
    return choice


@task(**STORE_RETRIES)
def score_batch(
    production: FetchedRelease, batch: InputBatch, store_config: StoreConfig, batch_size: int, choice: HostChoice | None = None
) -> ScoreResult:
    """Score the batch with the released variant ``choice`` names (default: the build's); log its rows to the store.

    The monitoring rows are computed against that variant's own reference (its projection), and
    each row names the variant, so the monitor compares like with like.
    Each log is one object written once, so a failure leaves no half-written log; a retry completes
    a batch logged halfway, and a re-run on the same files does not log it twice.
    """
    logger = get_run_logger()
    store = open_store(store_config)
    manifest, model = production.manifest, production.model
    variant = choice.variant if choice else manifest.served.name
    monitoring = manifest.monitoring_of(variant)
    base = ScoreResult(
        model=model, version=production.version, variant=variant, variant_reason=choice.reason if choice else "",
        batch_id=batch.batch_id, files=len(batch.files), scored=0, failed=[], class_counts={},
    )
    if not batch.files:
        logger.warning("nothing to score in %s", batch.source)
        return base.model_copy(update={"note": f"no files in {batch.source}"})
    logged = batch_logs(store, model, batch.batch_id)
    earlier = scored_before(logged, production.monitored)
    if earlier:
        logger.info("batch %s was already scored: %s", batch.batch_id, store.location(earlier))
        return base.model_copy(update={"note": f"already scored: {store.location(earlier)}"})
    projection = None
    if monitoring is not None:
        projection = load_projection(production.release_dir / monitoring.projection)
    else:
        logger.warning("release %s has no monitoring reference for %s: predictions only", production.version, variant)
    scored = score_files(batch.files, production.open(variant), manifest.input, manifest.classes, projection, batch_size)
    for failure in scored.failures:
        logger.warning("not scored: %s (%s)", failure.name, failure.reason)
    unseen = 0
    if scored.features is not None and not scored.features.empty:
        reference = pd.read_parquet(production.release_dir / monitoring.reference)
        unseen, note = manifest.input.unfamiliar(scored.features, reference)
        if unseen:
            logger.warning(note)
    predictions, features = scored.predictions, scored.features
    result = base.model_copy(update={"scored": len(predictions), "failed": scored.failures, "unseen_sizes": unseen})
    if predictions.empty:
        return result.model_copy(update={"note": "no readable input in the batch"})
    predictions_key, monitoring_key = log_batch(
        store, model, production.version, batch.batch_id, predictions, features, logged, variant=variant
    )
    counts = {str(k): int(v) for k, v in predictions["predicted_class"].value_counts().sort_index().items()}
    create_table_artifact(
        key="score-class-counts",
        table=[{"class": k, "images": v} for k, v in counts.items()],
        description=f"{model} {production.version} ({variant}): {len(predictions)} scored, {len(scored.failures)} not scored",
    )
    logger.info("scored %d of %d files; predictions %s", len(predictions), len(batch.files), store.location(predictions_key))
    return result.model_copy(
        update={
            "class_counts": counts,
            "predictions_uri": store.location(predictions_key),
            "monitoring_uri": store.location(monitoring_key) if monitoring_key else None,
        }
    )


@task
def archive_batch(batch: InputBatch, result: ScoreResult, processed: Path) -> str:
    """Move the scored batch out of its inbox (see :func:`archive_inputs`); nothing moves unless it was logged."""
    logged = result.predictions_uri is not None or result.note.startswith("already scored")
    all_rejected = bool(batch.files) and len(result.failed) == len(batch.files)
    if not batch.files or not (logged or all_rejected):
        return ""
    folder = archive_inputs(
        batch.files, result.failed, Path(batch.source).expanduser(), processed, datetime.now(timezone.utc).date()
    )
    get_run_logger().info("moved %d files from %s to %s", len(batch.files), batch.source, folder)
    return str(folder)
