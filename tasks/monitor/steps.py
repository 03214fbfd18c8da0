"""Prefect tasks of the monitoring stage: the release-time reference, production windows, drift, events."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from pydantic import BaseModel

from tasks.data.snapshot import DatasetSnapshot
from tasks.errors import STORE_RETRIES, LeptonError
from tasks.export.evaluate import Evaluation
from tasks.monitor.config import DriftConfig, ReferenceConfig
from tasks.monitor.drift import DriftResult, detect_drift
from tasks.monitor.reference import build_reference
from tasks.registry.config import StoreConfig
from tasks.registry.manifest import MonitoringReference
from tasks.registry.serving import FetchedRelease
from tasks.registry.store import open_store
from tasks.score.logs import read_window
from tasks.train.trained import TrainedModel

DRIFT_EVENT = "lepton.model.drift.detected"


class NoReferenceData(LeptonError):
    """The production release predates monitoring: it carries no reference data."""


@task
def monitoring_reference(
    snapshot: DatasetSnapshot, trained: TrainedModel, evaluation: Evaluation, config: ReferenceConfig
) -> MonitoringReference:
    """Monitoring rows of the test split and a train sample, computed by the served artifact, for the release."""
    served = evaluation.served_variant()
    out_dir = trained.state_dict_path.parent / "monitoring"
    reference = build_reference(served.open(trained), served.name, snapshot, config, out_dir)
    get_run_logger().info(
        "monitoring reference: %d rows of %d columns, by %s",
        reference.section.rows, len(reference.section.numerical_columns + reference.section.categorical_columns), served.name,
    )
    return reference


class MonitorWindow(BaseModel):
    """The production rows of the window, saved locally, and what was left out."""

    path: Path
    rows: int
    other_versions_rows: int
    since: str | None


@task(**STORE_RETRIES)
def read_production_window(
    store_config: StoreConfig,
    production: FetchedRelease,
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
def check_drift(
    production: FetchedRelease, window: MonitorWindow, config: DriftConfig, work_dir: Path
) -> tuple[DriftResult, Path | None]:
    """Run the Evidently drift report of the window against the release's reference."""
    monitoring = production.manifest.monitoring
    reference = pd.read_parquet(production.release_dir / monitoring.reference)
    current = pd.read_parquet(window.path) if window.rows else pd.DataFrame(columns=reference.columns)
    html = work_dir / "monitor" / production.model / f"drift-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}.html"
    result = detect_drift(reference, current, monitoring.numerical_columns, monitoring.categorical_columns, config, html)
    get_run_logger().info("drift verdict: %s (%s)", result.status, result.detail)
    return result, html if html.exists() else None


@task(**STORE_RETRIES)
def publish_drift_report(
    store_config: StoreConfig, production: FetchedRelease, result: DriftResult, html: Path | None
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
