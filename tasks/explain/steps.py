"""Prefect tasks of the explain stage: gather inputs, explain them with the served artifact, publish the report."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from pydantic import BaseModel

from tasks.errors import STORE_RETRIES
from tasks.explain.config import LimeConfig
from tasks.explain.explainers import explain_files, explaining
from tasks.explain.explanation import ExplainedInput
from tasks.explain.inputs import explain_inputs
from tasks.hashing import sha256_file
from tasks.registry.config import StoreConfig
from tasks.registry.serving import FetchedRelease
from tasks.registry.store import open_store
from tasks.score.inputs import FailedInput, InputBatch
from tasks.tables import markdown_table


@task(**STORE_RETRIES)
def gather_explain_inputs(production: FetchedRelease, source: str, store_config: StoreConfig, work_dir: Path) -> InputBatch:
    """Files to explain: the release's test split, the latest scored batch, a folder or an ``s3://`` prefix."""
    batch = explain_inputs(production, source, store_config, work_dir)
    get_run_logger().info("%d candidate inputs from %s", len(batch.files), source)
    return batch


class ExplainResult(BaseModel):
    """Where the report is, and what was explained."""

    model: str
    version: str
    explained: list[dict]
    failed: list[FailedInput]
    report_uri: str
    weights_uri: str
    seconds_per_image: float


@task(**STORE_RETRIES)
def explain_images(
    production: FetchedRelease,
    batch: InputBatch,
    num_images: int,
    config: LimeConfig,
    store_config: StoreConfig,
    work_dir: Path,
) -> ExplainResult:
    """LIME on the served artifact for a stratified choice of inputs; HTML + JSON to ``reports/{model}/explain/``."""
    logger = get_run_logger()
    manifest = production.manifest
    backend = production.open()
    kit = explaining(manifest.input, backend.predict, config)
    progress = create_progress_artifact(progress=0.0, description=f"LIME on up to {num_images} inputs")

    def on_explained(number: int, total: int, item: ExplainedInput) -> None:
        top = item.explanation.labels[0]
        logger.info(
            "explained %d/%d: %s -> %s (p=%.3f)", number, total, item.name, manifest.classes[top],
            item.explanation.probabilities[top],
        )
        update_progress_artifact(progress, progress=100.0 * number / total)

    result = explain_files(
        batch.files, backend, manifest.input, manifest.classes, num_images, kit.explainer, config.seed, on_explained
    )
    stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    report, weights = kit.write_report(
        work_dir / "explain" / production.model / stamp,
        f"LIME explanations: {production.model} {production.version}",
        f"{len(result.items)} inputs from {batch.source}, explained with the served artifact {manifest.served.name} "
        + (
            f"({config.num_samples} perturbations each, sampled from the release's training statistics, seed {config.seed})."
            if manifest.input.kind == "tabular"
            else f"({config.num_samples} perturbations each, {config.segmentation} segmentation, seed {config.seed})."
        ),
        result.items,
        manifest.classes,
    )
    store = open_store(store_config)
    prefix = f"reports/{production.model}/explain/{stamp}"
    store.put_file(report, f"{prefix}/report.html", sha256_file(report))
    store.put_file(weights, f"{prefix}/explanations.json", sha256_file(weights))
    explained = [
        {
            "image": item.name,
            "class": manifest.classes[item.explanation.labels[0]],
            "probability": round(item.explanation.probabilities[item.explanation.labels[0]], 4),
            "why": item.why,
        }
        for item in result.items
    ]
    create_markdown_artifact(
        key="explain-report",
        description=f"{production.model} {production.version}: {len(result.items)} inputs explained",
        markdown=(
            f"# LIME report for {production.model} {production.version}\n\n- report: {store.location(prefix + '/report.html')}\n"
            f"- weights (JSON): {store.location(prefix + '/explanations.json')}\n"
            f"- {result.seconds_per_input:.2f} s per input\n\n{markdown_table(explained)}\n"
        ),
    )
    return ExplainResult(
        model=production.model, version=production.version, explained=explained, failed=result.failed,
        report_uri=store.location(prefix + "/report.html"), weights_uri=store.location(prefix + "/explanations.json"),
        seconds_per_image=result.seconds_per_input,
    )
