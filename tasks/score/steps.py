"""Prefect tasks of the scoring stage: collect a batch, score it with production, log it for monitoring."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from tasks.errors import STORE_RETRIES
from tasks.export.backends import RUNTIMES
from tasks.registry.config import HostChoiceConfig, StoreConfig
from tasks.registry.serving import FetchedRelease
from tasks.registry.store import open_store
from tasks.score.features import load_projection, off_schema_summary
from tasks.score.inputs import InputBatch, archive_inputs, collect_batch
from tasks.score.logs import batch_logs, log_batch, scored_before
from tasks.score.scoring import ScoreResult, score_files


@task(**STORE_RETRIES)
def collect_inputs(source: str, store_config: StoreConfig, work_dir: Path) -> InputBatch:
    """List a folder, or download an ``s3://`` prefix (same endpoint and credentials as the store)."""
    batch = collect_batch(source, store_config, work_dir)
    get_run_logger().info("%d files in %s", len(batch.files), source)
    return batch


# The scorer times the candidates at most at batch 64: per-input time has levelled off there, and
# three rounds of every candidate at a scorer's 256 or more would take longer than the few seconds
# this may cost. Without spinning threads: each candidate's idle pool must not slow the next one's call.
TIMING_BATCH = 64


@task(**STORE_RETRIES)
def score_batch(
    production: FetchedRelease,
    batch: InputBatch,
    store_config: StoreConfig,
    batch_size: int,
    variant_choice: HostChoiceConfig,
    work_dir: Path,
) -> ScoreResult:
    """Score the batch with the released variant fastest on this host; log its rows to the store.

    The candidates are timed only when there is something new to score, and the choice is kept per
    host and release under ``work_dir`` (see ``FetchedRelease.open_here``), so a scheduled scorer
    times them once. The monitoring rows are computed against the chosen variant's own reference
    (its projection), and each row names the variant, so the monitor compares like with like.
    Each log is one object written once, so a failure leaves no half-written log; a retry completes
    a batch logged halfway, and a re-run on the same files does not log it twice.
    """
    logger = get_run_logger()
    store = open_store(store_config)
    manifest, model = production.manifest, production.model
    base = ScoreResult(
        model=model, version=production.version, batch_id=batch.batch_id, files=len(batch.files), scored=0,
        failed=[], class_counts={},
    )
    if not batch.files:
        logger.warning("nothing to score in %s", batch.source)
        return base.model_copy(update={"note": f"no files in {batch.source}"})
    logged = batch_logs(store, model, batch.batch_id)
    earlier = scored_before(logged, production.monitored)
    if earlier:
        logger.info("batch %s was already scored: %s", batch.batch_id, store.location(earlier))
        return base.model_copy(update={"note": f"already scored: {store.location(earlier)}"})
    choice, backend = production.open_here(
        variant_choice, min(batch_size, TIMING_BATCH), RUNTIMES, spin=False, cache_dir=work_dir
    )
    variant = choice.variant
    logger.info("scoring with %s: %s", variant, choice.reason)
    if choice.timings:
        create_table_artifact(key="host-choice", table=choice.table(), description=f"Scoring with {variant}. {choice.reason}")
    base = base.model_copy(update={"variant": variant, "variant_reason": choice.reason})
    monitoring = manifest.monitoring_of(variant)
    projection = None
    if monitoring is not None:
        projection = load_projection(production.release_dir / monitoring.projection)
    else:
        logger.warning("release %s has no monitoring reference for %s: predictions only", production.version, variant)
    scored = score_files(batch.files, backend, manifest.input, manifest.classes, projection, batch_size)
    for failure in scored.failures:
        logger.warning("not scored: %s (%s)", failure.name, failure.reason)
    unseen = 0
    if scored.features is not None:
        off_schema, note = off_schema_summary(scored.features)
        if off_schema:
            logger.warning(note)
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
        table=[{"class": k, "inputs": v} for k, v in counts.items()],
        description=f"{model} {production.version} ({variant}): {len(predictions)} scored, {len(scored.failures)} not scored",
    )
    what = "rows of" if manifest.input.kind == "tabular" else "of"
    logger.info("scored %d %s %d files; predictions %s", len(predictions), what, len(batch.files), store.location(predictions_key))
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
