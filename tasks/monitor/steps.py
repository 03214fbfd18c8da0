"""Prefect tasks of the monitoring stage: release-time reference, scoring, drift, events."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from pydantic import BaseModel

from tasks.data.snapshot import DatasetSnapshot
from tasks.export.steps import Evaluation, local_backend
from tasks.monitor.drift import DriftConfig, DriftResult, detect_drift
from tasks.monitor.logs import batch_logged, read_window, write_log
from tasks.monitor.reference import MonitoringReference, ReferenceConfig, build_reference, load_projection
from tasks.monitor.scoring import FailedInput, InputFile, batch_id, score_inputs, source_inputs
from tasks.registry.aliases import read_alias
from tasks.registry.config import StoreConfig
from tasks.registry.production import open_variant
from tasks.registry.release import download_release, read_manifest
from tasks.registry.steps import STORE_RETRIES
from tasks.registry.store import open_store
from tasks.train.fit import TrainedModel


@task
def monitoring_reference(
    snapshot: DatasetSnapshot, trained: TrainedModel, evaluation: Evaluation, config: ReferenceConfig
) -> MonitoringReference:
    """Features of the test split and a train sample, computed by the served artifact, for the release."""
    out_dir = trained.state_dict_path.parent / "monitoring"
    reference_path, projection_path, rows = build_reference(local_backend(evaluation.served_variant(), trained), snapshot, config, out_dir)
    components = load_projection(projection_path).n_components
    get_run_logger().info("monitoring reference: %d rows, %d embedding components, by %s", rows, components, evaluation.served)
    return MonitoringReference(
        reference_path=reference_path,
        projection_path=projection_path,
        rows=rows,
        embedding_components=components,
        variant=evaluation.served,
    )


class ProductionRelease(BaseModel):
    """The production release's files needed here, downloaded and sha256-verified."""

    model: str
    version: str
    release_dir: Path
    manifest: dict

    @property
    def monitored(self) -> bool:
        return "monitoring" in self.manifest


class NoProductionRelease(RuntimeError):
    """There is nothing in production to score with or monitor."""

    permanent = True  # no retry fixes it


class NoReferenceData(RuntimeError):
    """The production release predates monitoring: it carries no reference data."""

    permanent = True  # no retry fixes it


@task(**STORE_RETRIES)
def fetch_production(store_config: StoreConfig, model: str, work_dir: Path) -> ProductionRelease:
    """Download production's served variant and monitoring files, each verified by sha256 (cached by hash)."""
    store = open_store(store_config)
    alias, _ = read_alias(store, model)
    if alias is None:
        raise NoProductionRelease(f"{model} has no production release in {store.uri}; run the build flow first")
    manifest = read_manifest(store, model, alias.version)
    release_dir = work_dir / "production" / model / alias.version
    folders = [manifest["served"]["name"]] + (["monitoring"] if "monitoring" in manifest else [])
    for folder in folders:
        download_release(store, model, alias.version, release_dir, work_dir / "cache", only=folder, manifest=manifest)
    get_run_logger().info("production %s %s (%s), files verified", model, alias.version, manifest["served"]["name"])
    return ProductionRelease(model=model, version=alias.version, release_dir=release_dir, manifest=manifest)


class InputBatch(BaseModel):
    """The files of one scoring batch, on local disk."""

    source: str
    batch_id: str
    files: list[InputFile]


@task(**STORE_RETRIES)
def collect_inputs(source: str, store_config: StoreConfig, work_dir: Path) -> InputBatch:
    """List a folder, or download an ``s3://`` prefix (same endpoint and credentials as the store)."""
    files = source_inputs(source, store_config, work_dir)
    get_run_logger().info("%d files in %s", len(files), source)
    return InputBatch(source=source, batch_id=batch_id(files), files=files)


class ScoreResult(BaseModel):
    """What a scoring run did."""

    model: str
    version: str
    batch_id: str
    files: int
    scored: int
    failed: list[FailedInput]
    unseen_sizes: int = 0
    class_counts: dict[str, int]
    predictions_uri: str | None = None
    monitoring_uri: str | None = None
    note: str = ""


@task(**STORE_RETRIES)
def score_batch(
    production: ProductionRelease, batch: InputBatch, store_config: StoreConfig, batch_size: int
) -> ScoreResult:
    """Score the batch with the served artifact; write predictions and monitoring features to the store.

    Each log is one object written once, predictions first, so a failure leaves
    no half-written log, and a retry (or a re-run on the same files) does not log twice.
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
    earlier = batch_logged(store, "predictions", model, batch.batch_id)
    if earlier:
        logger.info("batch %s was already scored: %s", batch.batch_id, store.location(earlier))
        return base.model_copy(update={"note": f"already scored: {store.location(earlier)}"})
    projection = None
    if production.monitored:
        projection = load_projection(production.release_dir / manifest["monitoring"]["projection"])
    else:
        logger.warning("release %s has no monitoring reference (built before monitoring): predictions only", production.version)
    served = manifest["served"]
    backend = open_variant(manifest, production.release_dir, served["name"])
    predictions, features, failed = score_inputs(
        batch.files, backend, manifest["dataset"]["classes"], manifest["input"]["image_size"],
        manifest["input"]["channels"], projection, batch_size,
    )
    for failure in failed:
        logger.warning("not scored: %s (%s)", failure.name, failure.reason)
    unseen = 0
    if features is not None:
        reference = pd.read_parquet(
            production.release_dir / manifest["monitoring"]["reference"], columns=["original_width", "original_height"]
        )
        known = set(zip(reference["original_width"], reference["original_height"]))
        unseen = sum((w, h) not in known for w, h in zip(features["original_width"], features["original_height"]))
        if unseen:
            logger.warning(
                "%d images have a size never seen in training data (sizes there: %s); they were resized as in training",
                unseen, sorted(known)[:5],
            )
    result = base.model_copy(update={"scored": len(predictions), "failed": failed, "unseen_sizes": unseen})
    if predictions.empty:
        return result.model_copy(update={"note": "no readable image in the batch"})
    scored_at = datetime.now(timezone.utc)
    for frame in (predictions, features):
        if frame is not None:
            frame.insert(0, "scored_at", scored_at)
            frame.insert(1, "release_version", production.version)
    predictions_key = write_log(store, "predictions", model, predictions, scored_at, batch.batch_id)
    monitoring_key = write_log(store, "monitoring", model, features, scored_at, batch.batch_id) if features is not None else None
    counts = {str(k): int(v) for k, v in predictions["predicted_class"].value_counts().sort_index().items()}
    create_table_artifact(
        key="score-class-counts",
        table=[{"class": k, "images": v} for k, v in counts.items()],
        description=f"{model} {production.version}: {len(predictions)} scored, {len(failed)} not scored",
    )
    logger.info("scored %d of %d files; predictions %s", len(predictions), len(batch.files), store.location(predictions_key))
    return result.model_copy(
        update={
            "class_counts": counts,
            "predictions_uri": store.location(predictions_key),
            "monitoring_uri": store.location(monitoring_key) if monitoring_key else None,
        }
    )


class MonitorWindow(BaseModel):
    """The production rows of the window, saved locally, and what was left out."""

    path: Path
    rows: int
    other_versions_rows: int
    since: str | None


@task(**STORE_RETRIES)
def read_production_window(
    store_config: StoreConfig,
    production: ProductionRelease,
    window_hours: float | None,
    window_rows: int | None,
    work_dir: Path,
) -> MonitorWindow:
    """The logged monitoring rows of the window that production's release scored.

    Rows scored by other releases are left out: their embeddings come from
    another model and another projection, so they cannot be compared with this reference.
    """
    if not production.monitored:
        raise NoReferenceData(
            f"{production.model} release {production.version} has no monitoring reference (it was built before "
            "monitoring existed); build a new release to monitor it"
        )
    since = datetime.now(timezone.utc) - timedelta(hours=window_hours) if window_hours else None
    window = read_window(open_store(store_config), "monitoring", production.model, since=since)
    other = 0
    if not window.empty:
        mine = window["release_version"] == production.version
        other = int((~mine).sum())
        window = window.loc[mine].reset_index(drop=True)
    if window_rows is not None:
        window = window.tail(window_rows).reset_index(drop=True)
    path = work_dir / "monitor" / production.model / f"window-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    window.to_parquet(path, index=False)
    get_run_logger().info(
        "window: %d rows of release %s%s", len(window), production.version,
        f" ({other} rows of other releases left out)" if other else "",
    )
    return MonitorWindow(path=path, rows=len(window), other_versions_rows=other, since=since.isoformat() if since else None)


class DriftReport(BaseModel):
    """A drift verdict, and where its Evidently report is."""

    model: str
    release_version: str
    result: DriftResult
    report_uri: str | None = None
    event_id: str | None = None


@task
def check_drift(production: ProductionRelease, window: MonitorWindow, config: DriftConfig, work_dir: Path) -> tuple[DriftResult, Path | None]:
    """Run the Evidently drift report of the window against the release's reference."""
    monitoring = production.manifest["monitoring"]
    reference = pd.read_parquet(production.release_dir / monitoring["reference"])
    current = pd.read_parquet(window.path) if window.rows else pd.DataFrame(columns=reference.columns)
    html = work_dir / "monitor" / production.model / f"drift-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}.html"
    result = detect_drift(
        reference, current, monitoring["numerical_columns"], monitoring["categorical_columns"], config, html
    )
    get_run_logger().info("drift verdict: %s (%s)", result.status, result.detail)
    return result, html if html.exists() else None


@task(**STORE_RETRIES)
def publish_drift_report(
    store_config: StoreConfig, production: ProductionRelease, result: DriftResult, html: Path | None
) -> DriftReport:
    """Save the HTML report under ``reports/{model}/drift/`` and publish the verdict as a Prefect artifact."""
    store = open_store(store_config)
    uri = None
    if html is not None:
        key = f"reports/{production.model}/drift/{html.name}"
        store.put_bytes(key, html.read_bytes())
        uri = store.location(key)
    drifted = ", ".join(result.drifted_columns) or "none"
    create_markdown_artifact(
        key="drift-verdict",
        description=f"{production.model} {production.version}: {result.status}",
        markdown=(
            f"# Drift of {production.model} (release {production.version}): **{result.status}**\n\n"
            f"- {result.detail}\n- rows in window: {result.rows} (tested: {result.rows_tested}); "
            f"reference rows: {result.reference_rows}\n"
            + (f"- drift share: {result.drift_share:.2f}\n- drifted columns: {drifted}\n" if result.drift_share is not None else "")
            + (f"- report: {uri}\n" if uri else "")
        ),
    )
    return DriftReport(model=production.model, release_version=production.version, result=result, report_uri=uri)


DRIFT_EVENT = "lepton.model.drift.detected"


@task
def emit_drift_event(report: DriftReport) -> DriftReport:
    """Emit ``lepton.model.drift.detected`` for a drift verdict; the build deployment's trigger listens for it."""
    if not report.result.drift:
        return report
    event = emit_event(
        event=DRIFT_EVENT,
        resource={"prefect.resource.id": f"lepton.model.{report.model}", "prefect.resource.name": report.model},
        payload={
            "model": report.model,
            "release_version": report.release_version,
            "drift_share": round(report.result.drift_share or 0.0, 4),
            "drifted_columns": report.result.drifted_columns,
            "prediction_drift": report.result.prediction_drift,
            "rows": report.result.rows,
            "report_uri": report.report_uri,
        },
    )
    get_run_logger().warning("drift: emitted %s for lepton.model.%s", DRIFT_EVENT, report.model)
    return report.model_copy(update={"event_id": str(event.id) if event else None})
