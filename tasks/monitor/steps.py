"""Prefect tasks of the monitoring stage: the release-time reference, production windows, drift, label feedback, events."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.events import emit_event
from pydantic import BaseModel

from tasks.caching import STEP_KEY
from tasks.data.imagefolder import merge_imagefolders
from tasks.data.snapshot import DatasetSnapshot
from tasks.data.tabular import source_kind
from tasks.errors import STORE_RETRIES, LeptonError
from tasks.events import DRIFT, PERFORMANCE_DEGRADED, model_event
from tasks.export.evaluate import Evaluation
from tasks.hashing import sha256_bytes, sha256_file
from tasks.monitor.config import DriftConfig, LabelRow, PerformanceConfig, ReferenceConfig
from tasks.monitor.drift import DriftResult, detect_drift, reference_rows, write_drift_report
from tasks.monitor.feedback import (
    LabelProblem,
    RealizedPerformance,
    clean_labels,
    join_labels,
    label_rows,
    read_label_tables,
    realized_performance,
    write_performance_report,
)
from tasks.monitor.reference import MONITORING_FOLDER, build_reference
from tasks.registry.config import StoreConfig
from tasks.registry.manifest import MonitoringReference
from tasks.registry.serving import FetchedRelease
from tasks.registry.store import ConditionalWriteFailed, open_store
from tasks.score.inputs import collect_batch
from tasks.score.logs import logged_variants, read_window
from tasks.train.trained import TrainedModel


class NoReferenceData(LeptonError):
    """The production release predates monitoring: it carries no reference data."""


@task(cache_key_fn=STEP_KEY)
def monitoring_reference(
    snapshot: DatasetSnapshot, trained: TrainedModel, evaluation: Evaluation, config: ReferenceConfig
) -> MonitoringReference:
    """Monitoring rows of the validation and test splits, computed by the served artifact, for the release.

    Each host alternative (a variant a scoring or serving host may serve instead) gets its own,
    computed by itself, under ``monitoring/{variant}/``.
    """
    logger = get_run_logger()
    by_name = {v.name: v for v in evaluation.variants}
    out_dir = trained.state_dict_path.parent / "monitoring"
    served = evaluation.served_variant()
    reference = build_reference(served.open(trained), served.name, snapshot, config, out_dir)
    for name in evaluation.alternatives:
        other = build_reference(
            by_name[name].open(trained), name, snapshot, config, out_dir / name, folder=f"{MONITORING_FOLDER}/{name}"
        )
        reference.alternatives.append(other.section)
        reference.files.update(other.files)
    logger.info(
        "monitoring reference: %d rows of %d columns, by %s%s",
        reference.section.rows, len(reference.section.numerical_columns + reference.section.categorical_columns), served.name,
        f" (and by each host alternative: {', '.join(evaluation.alternatives)})" if evaluation.alternatives else "",
    )
    return reference


class MonitorWindow(BaseModel):
    """The production rows of the window, saved locally, and what was left out.

    ``variant`` computed the rows kept: a host may serve another in-budget variant than the build
    chose, and its embeddings and confidences compare only with its own reference.
    """

    path: Path
    rows: int
    other_versions_rows: int
    since: str | None
    variant: str | None = None
    other_variants_rows: dict[str, int] = {}


def variant_rows(window: pd.DataFrame, served: str) -> tuple[str, pd.DataFrame, dict[str, int]]:
    """The rows of the variant that computed most of the window, and how many rows each other variant computed.

    Rows logged before rows named their variant were computed by the build's choice, ``served``.
    A tie goes to ``served``, then by name, so the same window always picks the same variant.
    """
    variants = logged_variants(window, served)
    counts = variants.value_counts()
    if counts.empty:
        return served, window, {}
    top = counts.max()
    chosen = min((name for name, n in counts.items() if n == top), key=lambda name: (name != served, name))
    others = {str(name): int(n) for name, n in counts.items() if name != chosen}
    return chosen, window.loc[variants == chosen].assign(variant=chosen).reset_index(drop=True), others


@task(**STORE_RETRIES)
def read_production_window(
    store_config: StoreConfig,
    production: FetchedRelease,
    window_hours: float | None,
    window_rows: int | None,
    work_dir: Path,
) -> MonitorWindow:
    """The logged monitoring rows of the window that production's release scored, by one variant.

    Rows scored by other releases are left out: their embeddings come from another model and
    another projection, so they cannot be compared with this reference. Of this release's rows,
    those of the variant that computed most of them are kept (see :func:`variant_rows`); the
    rest are counted and named in the verdict's notes.
    """
    if not production.monitored:
        raise NoReferenceData(
            f"{production.model} release {production.version} has no monitoring reference (it was built before "
            "monitoring existed); build a new release to monitor it"
        )
    since = datetime.now(timezone.utc) - timedelta(hours=window_hours) if window_hours else None
    window = read_window(open_store(store_config), "monitoring", production.model, since=since)
    other, variant, other_variants = 0, production.manifest.served.name, {}
    if not window.empty:
        mine = window["release_version"] == production.version
        other = int((~mine).sum())
        window = window.loc[mine].reset_index(drop=True)
        if window_rows is not None:
            window = window.tail(window_rows).reset_index(drop=True)  # the newest rows decide whose they are
        variant, window, other_variants = variant_rows(window, variant)
    if production.manifest.monitoring_of(variant) is None:
        raise NoReferenceData(
            f"{production.model} release {production.version} has no monitoring reference for {variant}, which computed "
            f"the window's rows; it has references for {', '.join(v.name for v in production.manifest.host_candidates())}"
        )
    path = work_dir / "monitor" / production.model / f"window-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    window.to_parquet(path, index=False)
    left_out = [f"{other} rows of other releases"] if other else []
    left_out += [f"{n} rows computed by {name}" for name, n in other_variants.items()]
    get_run_logger().info(
        "window: %d rows of release %s computed by %s%s", len(window), production.version, variant,
        f" (left out: {'; '.join(left_out)})" if left_out else "",
    )
    return MonitorWindow(
        path=path, rows=len(window), other_versions_rows=other, since=since.isoformat() if since else None,
        variant=variant, other_variants_rows=other_variants,
    )


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
    """Two-sample drift tests of the window against the release's reference; the report opens with the verdict."""
    logger = get_run_logger()
    monitoring = production.manifest.monitoring_of(window.variant or production.manifest.served.name)
    reference = reference_rows(pd.read_parquet(production.release_dir / monitoring.reference), monitoring.reference_splits)
    current = pd.read_parquet(window.path) if window.rows else pd.DataFrame(columns=reference.columns)
    numerical, categorical = monitoring.numerical_columns, monitoring.categorical_columns
    # Rows the online server logged for tensor requests do not measure the inputs' size on disk.
    optional = production.manifest.input.optional_statistics
    result = detect_drift(
        reference, current, numerical, categorical, config, monitoring.calibration,
        num_classes=len(production.manifest.classes), optional=optional,
    )
    if monitoring.calibration is None:
        result.notes.append("release built before label-free accuracy estimation: no estimate")
    if window.other_variants_rows:
        others = ", ".join(f"{n} by {name}" for name, n in window.other_variants_rows.items())
        result.notes.append(
            f"tested the rows computed by {monitoring.variant} (most of the window) against its reference; rows computed "
            f"by other variants, which hosts chose on their CPUs, compare only with their own references: {others}"
        )
    for note in result.quarantined + result.notes:
        logger.warning(note)
    logger.info("drift verdict: %s", result.headline())
    if result.status == "not enough data":
        return result, None
    html = work_dir / "monitor" / production.model / f"drift-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}.html"
    title = f"Drift of {production.model} release {production.version}"
    write_drift_report(reference, current, numerical, categorical, result, title, html, config, optional)
    return result, html


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
        create_link_artifact(
            key="drift-report", link=store.browser_link(key), link_text=f"drift report: {production.model} {result.status}",
            description=f"{production.model} {production.version}: the Evidently report, opening with the verdict",
        )
    lines = [f"- {result.detail}", f"- rows in window: {result.rows} (tested: {result.rows_tested}); reference rows: {result.reference_rows}"]
    if result.drift_share is not None:
        lines.append(f"- drifted columns: {', '.join(result.drifted_columns) or 'none'} (share {result.drift_share:.2f})")
    if result.embedding is not None:
        lines.append(f"- embedding: MMD p = {result.embedding.p_value:.3g} at level {result.embedding.level:.2g}")
    if result.estimate is not None:
        lines.append(f"- {result.estimate.describe()}" + ("" if result.harmful is None else f"; harmful: {result.harmful}"))
    lines += [f"- note: {note}" for note in result.quarantined + result.notes]
    if uri:
        lines.append(f"- report: {uri}")
    create_markdown_artifact(
        key="drift-verdict",
        description=f"{production.model} {production.version}: {result.status}",
        markdown=f"# Drift of {production.model} (release {production.version}): **{result.status}**\n\n" + "\n".join(lines) + "\n",
    )
    return DriftReport(model=production.model, release_version=production.version, result=result, report_uri=uri)


def _emit(name: str, model: str, payload: dict, what: str) -> str | None:
    """Emit one of the model's events; its id (None when Prefect could not take it)."""
    event = emit_event(**model_event(name, model, payload))
    if event is None:
        get_run_logger().warning("%s: %s for lepton.model.%s could not be emitted (no Prefect API?)", what, name, model)
        return None
    get_run_logger().warning("%s: emitted %s for lepton.model.%s", what, name, model)
    return str(event.id)


@task
def emit_drift_event(report: DriftReport) -> DriftReport:
    """Emit ``lepton.model.drift.detected`` for a drift verdict; the build deployment's trigger listens for it."""
    if not report.result.drift:
        return report
    result = report.result
    payload = {
        "release_version": report.release_version,
        "drift_share": round(result.drift_share or 0.0, 4),
        "drifted_columns": result.drifted_columns,
        "prediction_drift": result.prediction_drift,
        "embedding_p_value": result.embedding.p_value if result.embedding else None,
        "estimated_accuracy": round(result.estimate.accuracy, 4) if result.estimate else None,
        "harmful": result.harmful,
        "rows": result.rows,
        "report_uri": report.report_uri,
    }
    return report.model_copy(update={"event_id": _emit(DRIFT, report.model, payload, "drift")})


class NoLabels(LeptonError):
    """The feedback run was given no labels."""


class LabelledWindow(BaseModel):
    """Labelled predictions of the window (saved locally), and the labels that could not be used."""

    path: Path
    rows: int
    production_rows: int
    labels: int
    problems: list[LabelProblem]


def _label_files(source: str, store_config: StoreConfig, work_dir: Path) -> list[Path]:
    """A CSV/Parquet file, a folder of them, or an ``s3://`` key or prefix on the store's endpoint."""
    local = Path(source).expanduser()
    if not source.startswith("s3://") and local.is_file():
        return [local]
    batch = collect_batch(source, store_config, work_dir / "labels")
    return [f.path for f in batch.files if f.path.suffix.lower() in (".csv", ".parquet", ".pq")]


@task(**STORE_RETRIES)
def join_feedback(
    store_config: StoreConfig,
    production: FetchedRelease,
    source: str | None,
    rows: list[LabelRow],
    window_hours: float | None,
    work_dir: Path,
) -> LabelledWindow:
    """Read the labels, check them against the release's classes, join them to the model's logged predictions.

    Raises:
        NoLabels: neither a source nor inline rows were given.
        LabelFileError: a label table that cannot be read or lacks its columns.
    """
    logger = get_run_logger()
    files = _label_files(source, store_config, work_dir) if source else []
    if not files and not rows:
        raise NoLabels(
            f"no labels: {source!r} holds no .csv/.parquet label table" if source else "no labels: set source or labels"
        )
    contract = production.manifest.input
    row_ids = contract.id_column if contract.kind == "tabular" else None
    labels = pd.concat([read_label_tables(files, row_ids), label_rows(rows)], ignore_index=True)
    kept, problems = clean_labels(labels, production.manifest.classes)
    since = datetime.now(timezone.utc) - timedelta(hours=window_hours) if window_hours else None
    predictions = read_window(open_store(store_config), "predictions", production.model, since=since)
    joined, never = join_labels(kept, predictions, input_identity(production))
    problems += never
    for problem in problems[:20]:
        logger.warning("label not used: %s (%s): %s", problem.id, problem.origin, problem.reason)
    if len(problems) > 20:
        logger.warning("... %d more labels not used (listed in the report)", len(problems) - 20)
    path = work_dir / "feedback" / production.model / f"labelled-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    joined.to_parquet(path, index=False)
    mine = int((joined["release_version"] == production.version).sum()) if len(joined) else 0
    logger.info(
        "%d labels: %d labelled predictions (%d of release %s), %d labels not used",
        len(labels), len(joined), mine, production.version, len(problems),
    )
    return LabelledWindow(path=path, rows=len(joined), production_rows=mine, labels=len(labels), problems=problems)


def input_identity(production: FetchedRelease) -> tuple[str, ...]:
    """The logged columns that tell one input from another: an image's content; a table row's values and place."""
    return ("image_sha256", "file") if production.manifest.input.kind == "tabular" else ("image_sha256",)


@task
def measure_performance(
    production: FetchedRelease, window: LabelledWindow, config: PerformanceConfig, work_dir: Path
) -> tuple[RealizedPerformance, Path | None]:
    """The realized accuracy of production's release on its labelled predictions, tested against its test accuracy."""
    joined = pd.read_parquet(window.path)
    mine = joined.loc[joined["release_version"] == production.version] if len(joined) else joined
    manifest = production.manifest
    mine = mine.assign(variant=logged_variants(mine, manifest.served.name))
    # An input scored twice by one variant got the same prediction twice: one trial, not two.
    once = [*input_identity(production), "variant"]
    repeats = len(mine) - len(mine.drop_duplicates(once)) if len(mine) else 0
    if repeats:
        get_run_logger().info("%d repeated scorings of the same inputs counted once", repeats)
        mine = mine.drop_duplicates(once)
    # Hosts may serve different in-budget variants: each row is held to its own variant's test accuracy.
    expected = float(np.mean([manifest.variant(v).accuracy for v in mine["variant"]])) if len(mine) else manifest.metrics.test_accuracy_served
    result = realized_performance(
        (mine["label"] == mine["predicted_class"]).to_numpy() if len(mine) else [],
        production.version, expected, manifest.metrics.test_images,
        config.significance, config.min_drop_pp, config.min_rows,
    )
    get_run_logger().info("performance: %s (%s)", result.status, result.detail)
    if not len(mine):
        return result, None
    html = work_dir / "feedback" / production.model / f"performance-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}.html"
    title = f"Performance of {production.model} release {production.version}"
    write_performance_report(mine, production.manifest.classes, result, window.problems, title, html)
    return result, html


class FeedbackReport(BaseModel):
    """What a feedback run found and kept."""

    model: str
    release_version: str
    result: RealizedPerformance
    labelled_rows: int
    problems: list[LabelProblem]
    report_uri: str | None = None
    labels_uri: str | None = None
    kept_for_training: int = 0
    event_id: str | None = None


@task(**STORE_RETRIES)
def publish_feedback(
    store_config: StoreConfig,
    production: FetchedRelease,
    window: LabelledWindow,
    result: RealizedPerformance,
    html: Path | None,
    keep_for_training: bool,
) -> FeedbackReport:
    """Store the report, the labelled predictions (``labels/{model}/``) and, for training, the labelled inputs.

    Each labelled input still at the path it was scored from (and with the same sha256) is stored
    once under ``feedback/{model}/images/{label}/{sha256}{suffix}``: a build with
    ``include_feedback`` trains on them.
    """
    store = open_store(store_config)
    joined = pd.read_parquet(window.path)
    problems = list(window.problems)
    report_uri = labels_uri = None
    stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    if html is not None:
        key = f"reports/{production.model}/performance/{html.name}"
        store.put_bytes(key, html.read_bytes())
        report_uri = store.location(key)
        create_link_artifact(
            key="performance-report", link=store.browser_link(key),
            link_text=f"performance report: {production.model} {result.status}",
            description=f"{production.model} {production.version}: realized accuracy on labelled predictions",
        )
    kept = 0
    if len(joined):
        labels_key = f"labels/{production.model}/{stamp}-{sha256_bytes(window.path.read_bytes())[:12]}.parquet"
        try:
            store.put_bytes(labels_key, window.path.read_bytes(), if_absent=True)
        except ConditionalWriteFailed:
            pass  # the same labelled rows, written by a retry
        labels_uri = store.location(labels_key)
        if keep_for_training and production.manifest.input.kind == "tabular":
            # A row is not a file to keep: its labelled copy is in the labels table written above.
            get_run_logger().info(
                "labelled table rows are not copied for training: they are in %s; append them to the source table to "
                "train on them", labels_uri,
            )
        elif keep_for_training:
            kept, missing = keep_labelled_inputs(store, production.model, joined)
            problems += missing
    lines = [f"- {result.detail}", f"- labelled predictions: {window.rows} ({window.production_rows} of this release)"]
    lines += [f"- labels not used: {len(problems)}"] + [f"  - `{p.id}` ({p.origin}): {p.reason}" for p in problems[:20]]
    lines += [f"- report: {report_uri}"] if report_uri else []
    lines += [f"- inputs kept for training: {kept}"] if keep_for_training else []
    create_markdown_artifact(
        key="performance-verdict",
        description=f"{production.model} {production.version}: {result.status}",
        markdown=f"# Performance of {production.model} (release {production.version}): **{result.status}**\n\n" + "\n".join(lines) + "\n",
    )
    return FeedbackReport(
        model=production.model, release_version=production.version, result=result, labelled_rows=window.rows,
        problems=problems, report_uri=report_uri, labels_uri=labels_uri, kept_for_training=kept,
    )


def keep_labelled_inputs(store, model: str, joined: pd.DataFrame) -> tuple[int, list[LabelProblem]]:
    """Copy each labelled input (verified by its sha256) into the model's feedback images; say which were gone."""
    kept, problems = 0, []
    for row in joined.drop_duplicates("image_sha256").itertuples():
        path = Path(row.path)
        if not path.is_file() or sha256_file(path) != row.image_sha256:
            problems.append(
                LabelProblem(id=row.id, origin=row.file, reason=f"labelled but not kept for training: no longer at {path}")
            )
            continue
        key = f"feedback/{model}/images/{row.label}/{row.image_sha256}{path.suffix.lower()}"
        try:
            store.put_bytes(key, path.read_bytes(), if_absent=True)
        except ConditionalWriteFailed:
            pass  # the same content under its own hash: already kept
        kept += 1
    return kept, problems


@task
def emit_performance_event(report: FeedbackReport) -> FeedbackReport:
    """Emit ``lepton.model.performance.degraded`` when labelled accuracy fell significantly below the test accuracy."""
    if not report.result.degraded:
        return report
    result = report.result
    payload = {
        "release_version": report.release_version,
        "accuracy": round(result.accuracy, 4),
        "test_accuracy": round(result.test_accuracy, 4),
        "drop_pp": round(result.drop_pp, 2),
        "p_value": result.p_value,
        "rows": result.rows,
        "report_uri": report.report_uri,
    }
    return report.model_copy(update={"event_id": _emit(PERFORMANCE_DEGRADED, report.model, payload, "performance degraded")})


@task(**STORE_RETRIES)
def feedback_source(source: Path, store_config: StoreConfig, model: str, work_dir: Path) -> Path:
    """The data source plus the model's labelled production inputs, as one ImageFolder (files linked, not copied).

    Returns ``source`` unchanged when nothing was kept for training yet.
    """
    logger = get_run_logger()
    if source_kind(source) == "tabular":
        logger.info(
            "%s is a table: labelled production rows are kept as label tables (labels/%s/ in the store), not merged in; "
            "append them to the table to train on them", source, model,
        )
        return source
    store = open_store(store_config)
    prefix = f"feedback/{model}/images/"
    keys = [k for k in store.list_keys(prefix) if k.count("/") == prefix.count("/") + 1]
    if not keys:
        logger.info("no labelled production inputs kept for %s yet: training on %s alone", model, source)
        return source
    extra = work_dir / "datasets" / f"{model}-feedback"
    wanted, kept = set(), 0
    for key in keys:
        label, name = key[len(prefix):].split("/")
        target = extra / label / f"feedback-{name}"
        if not target.is_file() or sha256_file(target) != Path(name).stem:
            data, _ = store.get_bytes(key)
            if sha256_bytes(data) != Path(name).stem:
                logger.warning("feedback image %s does not match its sha256: left out", store.location(key))
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        wanted.add(target)
        kept += 1
    # An input removed from the store (a wrong label taken back) is no longer trained on.
    for stale in [p for p in extra.rglob("*") if p.is_file() and p not in wanted]:
        stale.unlink()
    # Named by what it holds (every file of both, by path, size and time): two builds of the same
    # inputs share it, neither deletes the other's, and a changed source gives a new one.
    listing = [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(source.rglob("*")) if p.is_file()]
    digest = sha256_bytes("\n".join([str(source.resolve()), *listing, *sorted(str(p) for p in wanted)]).encode())[:12]
    merged = work_dir / "datasets" / f"{model}-with-feedback-{digest}"
    if not merged.is_dir():
        partial = merged.with_name(f".{merged.name}.{os.getpid()}.partial")
        merge_imagefolders([source, extra], partial)
        try:
            partial.rename(merged)
        except OSError:  # another build finished the same folder first
            shutil.rmtree(partial, ignore_errors=True)
    logger.info("training data: %s plus %d labelled production inputs (%s)", source, kept, merged)
    return merged
