"""Prefect tasks of the data stage."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.caching import step_key
from tasks.data.config import EMBEDDED_DIGITS, DataConfig
from tasks.data.digits import write_digits_imagefolder
from tasks.data.embedded_tables import write_sklearn_table
from tasks.data.imagefolder import ingest_imagefolder
from tasks.data.remote import download_prefix
from tasks.data.snapshot import DatasetSnapshot
from tasks.data.tabular import ingest_table, source_kind
from tasks.errors import retry_if_transient

QUARANTINE_SHOWN = 200


@task(retries=2, retry_delay_seconds=[2, 8], retry_condition_fn=retry_if_transient)
def prepare_source(config: DataConfig, work_dir: Path) -> Path:
    """The local ImageFolder or table to ingest: an s3:// prefix downloaded (cached by ETag), an embedded dataset written."""
    path = config.source_path()
    if config.source.startswith("s3://"):
        logger = get_run_logger()
        path = download_prefix(
            config.source, work_dir / "datasets" / "s3", config.endpoint_url,
            progress=lambda done, total: logger.info("downloaded %d/%d objects of %s", done, total, config.source),
        )
        logger.info("%s is at %s", config.source, path)
    elif path is None and config.source == EMBEDDED_DIGITS:
        path = write_digits_imagefolder(work_dir / "datasets" / "digits")
        get_run_logger().info("embedded dataset: scikit-learn digits written as PNG files under %s", path)
    elif path is None:
        name = config.source.removeprefix("embedded://")
        path = write_sklearn_table(name, work_dir / "datasets" / name)
        get_run_logger().info("embedded dataset: scikit-learn %s written as CSV at %s", name, path)
    return path


@task(cache_key_fn=step_key(files=("source",)))
def ingest(source: Path, config: DataConfig, work_dir: Path) -> DatasetSnapshot:
    """Validate and normalise every file (or table row), quarantine bad ones, split, and snapshot the dataset."""
    logger = get_run_logger()
    tabular = source_kind(source, config.kind) == "tabular"
    snapshot = (ingest_table if tabular else ingest_imagefolder)(
        source,
        config,
        work_dir / "snapshots",
        progress=lambda done, total: (
            logger.info("decoded %d/%d files", done, total) if not tabular
            else logger.info("read %d rows (first pass: types, statistics)", done) if not total
            else logger.info("encoded %d/%d rows", done, total)
        ),
    )
    return snapshot


@task
def report_snapshot(snapshot: DatasetSnapshot, source: Path) -> None:
    """The dataset's validation artifact and summary, in every run: also when ``ingest`` was reused from an earlier one."""
    logger = get_run_logger()
    tabular = snapshot.input.kind == "tabular"
    for note in snapshot.warnings:
        logger.warning(note)
    # The full list is in the report; an artifact of a million lines helps nobody.
    shown = snapshot.quarantined[:QUARANTINE_SHOWN]
    rows = "\n".join(f"| `{q.path}` | {q.reason} |" for q in shown) or "| (none) | |"
    if len(snapshot.quarantined) > len(shown):
        rows += f"\n| ... | {len(snapshot.quarantined) - len(shown)} more in the report |"
    counts = "\n".join(
        f"| {c} | " + " | ".join(str(snapshot.counts[s][c]) for s in ("train", "val", "test")) + " |"
        for c in snapshot.classes
    )
    create_markdown_artifact(
        key="dataset-validation",
        description=f"Dataset {snapshot.version}",
        markdown=(
            f"# Dataset {snapshot.version}\n\n{snapshot.num_examples} {'rows' if tabular else 'images'} accepted from `{source}`, "
            f"{len(snapshot.quarantined)} quarantined. Report: `{snapshot.report_path}`\n\n"
            f"| class | train | val | test |\n|---|---|---|---|\n{counts}\n\n"
            f"## Quarantined\n\n| {'row (file:line)' if tabular else 'file'} | reason |\n|---|---|\n{rows}\n"
        ),
    )
    logger.info(
        "dataset %s: %d examples, %d classes, %d quarantined (report %s)",
        snapshot.version,
        snapshot.num_examples,
        len(snapshot.classes),
        len(snapshot.quarantined),
        snapshot.report_path,
    )
