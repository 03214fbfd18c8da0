"""Prefect tasks of the data stage."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.data.config import DataConfig
from tasks.data.digits import write_digits_imagefolder
from tasks.data.imagefolder import ingest_imagefolder
from tasks.data.snapshot import DatasetSnapshot


@task(retries=2, retry_delay_seconds=[2, 8])
def prepare_source(config: DataConfig, work_dir: Path) -> Path:
    """The local ImageFolder to ingest; writes the embedded digits on first use."""
    path = config.source_path()
    if path is None:
        path = write_digits_imagefolder(work_dir / "datasets" / "digits")
        get_run_logger().info("embedded dataset: scikit-learn digits written as PNG files under %s", path)
    return path


@task
def ingest(source: Path, config: DataConfig, work_dir: Path) -> DatasetSnapshot:
    """Validate and normalise every file, quarantine bad ones, split, and snapshot the dataset."""
    logger = get_run_logger()
    snapshot = ingest_imagefolder(
        source,
        config,
        work_dir / "snapshots",
        progress=lambda done, total: logger.info("decoded %d/%d files", done, total),
    )
    for note in snapshot.warnings:
        logger.warning(note)
    rows = "\n".join(f"| `{q.path}` | {q.reason} |" for q in snapshot.quarantined) or "| (none) | |"
    counts = "\n".join(
        f"| {c} | " + " | ".join(str(snapshot.counts[s][c]) for s in ("train", "val", "test")) + " |"
        for c in snapshot.classes
    )
    create_markdown_artifact(
        key="dataset-validation",
        description=f"Dataset {snapshot.version}",
        markdown=(
            f"# Dataset {snapshot.version}\n\n{snapshot.num_examples} images accepted from `{source}`, "
            f"{len(snapshot.quarantined)} quarantined. Report: `{snapshot.report_path}`\n\n"
            f"| class | train | val | test |\n|---|---|---|---|\n{counts}\n\n"
            f"## Quarantined\n\n| file | reason |\n|---|---|\n{rows}\n"
        ),
    )
    logger.info(
        "dataset %s: %d images, %d classes, %d quarantined (report %s)",
        snapshot.version,
        snapshot.num_examples,
        len(snapshot.classes),
        len(snapshot.quarantined),
        snapshot.report_path,
    )
    return snapshot
