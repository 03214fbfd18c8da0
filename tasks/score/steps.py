"""Prefect tasks of the scoring stage: collect a batch, score it with production, log it for monitoring."""

from __future__ import annotations

import os
import uuid
from functools import partial
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel

from tasks.data.workers import decoding_workers
from tasks.errors import STORE_RETRIES
from tasks.export.backends import RUNTIMES
from tasks.registry.config import HostChoiceConfig, StoreConfig
from tasks.registry.serving import FetchedRelease
from tasks.registry.store import open_store
from tasks.score.features import load_projection, off_schema_summary
from tasks.score.inputs import FailedInput, InputBatch, InputFile, archive_inputs, collect_batch
from tasks.score.logs import batch_logs, log_batch, scored_before
from tasks.score.scoring import ScoreResult, score_files


# The scoring tasks say NO_CACHE: a batch is logged once by its logs (see ``log_batch``), never by Prefect's
# cache, and by default Prefect would still hash every task's inputs for a key (the batch's files among them).
@task(**STORE_RETRIES, cache_policy=NO_CACHE)
def collect_inputs(source: str, store_config: StoreConfig, work_dir: Path) -> InputBatch:
    """List a folder, or download an ``s3://`` prefix (same endpoint and credentials as the store)."""
    batch = collect_batch(source, store_config, work_dir)
    get_run_logger().info("%d files in %s", len(batch.files), source)
    return batch


# The scorer times the candidates at most at batch 64: per-input time has levelled off there, and
# three rounds of every candidate at a scorer's 256 or more would take longer than the few seconds
# this may cost. Without spinning threads: each candidate's idle pool must not slow the next one's call.
TIMING_BATCH = 64


class ScoringPlan(BaseModel):
    """What a score run does before any input is decoded: the variant and the shards, or the result when it has nothing to score."""

    variant: str | None = None
    variant_reason: str = ""
    shards: list[list[InputFile]] = []
    done: ScoreResult | None = None  # set when nothing is scored: an empty batch, or one logged before


class ScoredShard(BaseModel):
    """One shard's predictions and monitoring rows (Parquet files under the work dir) and its unusable files."""

    predictions: Path | None
    features: Path | None
    failures: list[FailedInput]


@task(**STORE_RETRIES, cache_policy=NO_CACHE)
def plan_scoring(
    production: FetchedRelease,
    batch: InputBatch,
    store_config: StoreConfig,
    batch_size: int,
    variant_choice: HostChoiceConfig,
    work_dir: Path,
    shard_files: int,
) -> ScoringPlan:
    """Choose the released variant fastest on this host and cut the batch into shards; or say why nothing is scored.

    The candidates are timed only when there is something new to score, and the choice is kept per
    host and release under ``work_dir`` (see ``FetchedRelease.open_here``), so a scheduled scorer
    times them once. A re-run on files already logged scores nothing.
    """
    logger = get_run_logger()
    store = open_store(store_config)
    base = ScoreResult(
        model=production.model, version=production.version, batch_id=batch.batch_id, files=len(batch.files), scored=0,
        failed=[], class_counts={},
    )
    if not batch.files:
        logger.warning("nothing to score in %s", batch.source)
        return ScoringPlan(done=base.model_copy(update={"note": f"no files in {batch.source}"}))
    earlier = scored_before(batch_logs(store, production.model, batch.batch_id), production.monitored)
    if earlier:
        logger.info("batch %s was already scored: %s", batch.batch_id, store.location(earlier))
        return ScoringPlan(done=base.model_copy(update={"note": f"already scored: {store.location(earlier)}"}))
    choice, _ = production.open_here(variant_choice, min(batch_size, TIMING_BATCH), RUNTIMES, spin=False, cache_dir=work_dir)
    logger.info("scoring with %s: %s", choice.variant, choice.reason)
    if choice.timings:
        create_table_artifact(key="host-choice", table=choice.table(), description=f"Scoring with {choice.variant}. {choice.reason}")
    shards = [batch.files[i : i + shard_files] for i in range(0, len(batch.files), shard_files)]
    return ScoringPlan(variant=choice.variant, variant_reason=choice.reason, shards=shards)


@task(cache_policy=NO_CACHE)
def score_shard(
    production: FetchedRelease,
    files: list[InputFile],
    variant: str,
    batch_size: int,
    out_dir: Path,
    threads: int | None = None,
    workers: int = 0,
) -> ScoredShard:
    """Score one shard with ``variant``: its predictions and monitoring rows (against that variant's reference) as Parquet.

    Images are decoded and scored by ``workers`` processes (0: see :func:`decoding_workers`), each with the
    variant open on its share of ``threads`` (None: every usable CPU).
    """
    manifest = production.manifest
    monitoring = manifest.monitoring_of(variant)
    projection = load_projection(production.release_dir / monitoring.projection) if monitoring is not None else None
    scored = score_files(
        files, partial(production.open, variant, spin=False), manifest.input, manifest.classes, projection, batch_size,
        workers=decoding_workers(workers, len(files)), threads=threads,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    # Unique per attempt: shards never share a file, nor do two runs of one batch, nor a retry and its first try.
    name = uuid.uuid4().hex
    predictions = features = None
    if not scored.predictions.empty:
        predictions = _parquet(scored.predictions, out_dir / f"{name}-predictions.parquet")
        if scored.features is not None:
            features = _parquet(scored.features, out_dir / f"{name}-monitoring.parquet")
    return ScoredShard(predictions=predictions, features=features, failures=scored.failures)


def _parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` to ``path`` whole or not at all."""
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


@task(**STORE_RETRIES, cache_policy=NO_CACHE)
def log_scores(production: FetchedRelease, batch: InputBatch, plan: ScoringPlan, shards: list[ScoredShard], store_config: StoreConfig) -> ScoreResult:
    """Put the shards' rows together and log them to the store as one batch (each log one object, written once).

    A failure leaves no half-written log; a retry completes a batch logged halfway, and a re-run on the
    same files does not log it twice.
    """
    logger = get_run_logger()
    store = open_store(store_config)
    manifest, model, variant = production.manifest, production.model, plan.variant
    if plan.done is not None:
        return plan.done
    failures = [f for shard in shards for f in shard.failures]
    for failure in failures:
        logger.warning("not scored: %s (%s)", failure.name, failure.reason)
    result = ScoreResult(
        model=model, version=production.version, variant=variant, variant_reason=plan.variant_reason, batch_id=batch.batch_id,
        files=len(batch.files), scored=0, failed=failures, class_counts={},
    )
    parts = [shard for shard in shards if shard.predictions is not None]
    if not parts:
        return result.model_copy(update={"note": "no readable input in the batch"})
    predictions = pd.concat([pd.read_parquet(s.predictions) for s in parts], ignore_index=True)
    features = None
    if manifest.monitoring_of(variant) is None:
        logger.warning("release %s has no monitoring reference for %s: predictions only", production.version, variant)
    elif all(s.features is not None for s in parts):
        features = pd.concat([pd.read_parquet(s.features) for s in parts], ignore_index=True)
    unseen = 0
    if features is not None:
        off_schema, note = off_schema_summary(features)
        if off_schema:
            logger.warning(note)
        reference = pd.read_parquet(production.release_dir / manifest.monitoring_of(variant).reference)
        unseen, note = manifest.input.unfamiliar(features, reference)
        if unseen:
            logger.warning(note)
    logged = batch_logs(store, model, batch.batch_id)
    predictions_key, monitoring_key = log_batch(
        store, model, production.version, batch.batch_id, predictions, features, logged, variant=variant
    )
    counts = {str(k): int(v) for k, v in predictions["predicted_class"].value_counts().sort_index().items()}
    create_table_artifact(
        key="score-class-counts",
        table=[{"class": k, "inputs": v} for k, v in counts.items()],
        description=f"{model} {production.version} ({variant}): {len(predictions)} scored, {len(failures)} not scored",
    )
    for shard in parts:  # logged and reported: the shards' files have done their job
        for path in (shard.predictions, shard.features):
            if path is not None:
                path.unlink(missing_ok=True)
    what = "rows of" if manifest.input.kind == "tabular" else "of"
    logger.info("scored %d %s %d files; predictions %s", len(predictions), what, len(batch.files), store.location(predictions_key))
    return result.model_copy(
        update={
            "scored": len(predictions),
            "unseen_sizes": unseen,
            "class_counts": counts,
            "predictions_uri": store.location(predictions_key),
            "monitoring_uri": store.location(monitoring_key) if monitoring_key else None,
        }
    )


@task(cache_policy=NO_CACHE)
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
