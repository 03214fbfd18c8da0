"""Prefect tasks of the explain stage: gather inputs, explain them with the served artifact, publish the report."""

from __future__ import annotations

import fcntl
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from uuid import UUID

import numpy as np

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from pydantic import BaseModel

from tasks.errors import STORE_RETRIES
from tasks.explain.config import LimeConfig
from tasks.explain.explainers import ChosenInputs, choose_inputs, explain_chosen, explaining
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


class ExplainPlan(BaseModel):
    """The inputs chosen to explain (their raw inputs in a ``.npy`` under the work dir), and where the report goes."""

    chosen: ChosenInputs
    raw_path: Path
    stamp: str
    progress_id: str | None = None


class ExplainedBatch(BaseModel):
    """Some of the chosen inputs explained, and the seconds it took."""

    items: list[ExplainedInput]
    seconds: float


@task
def choose_explained(production: FetchedRelease, batch: InputBatch, num_images: int, config: LimeConfig, work_dir: Path) -> ExplainPlan:
    """Choose ``num_images`` inputs to explain with the served artifact: the least confident quarter first, then by class."""
    manifest = production.manifest
    chosen, raw = choose_inputs(batch.files, production.open(), manifest.input, manifest.classes, num_images, config.seed)
    stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    folder = work_dir / "explain" / production.model / stamp
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "chosen.npy", raw)
    progress = create_progress_artifact(progress=0.0, description=f"LIME on {len(chosen.names)} inputs")
    return ExplainPlan(chosen=chosen, raw_path=folder / "chosen.npy", stamp=stamp, progress_id=str(progress) if progress else None)


@task
def explain_batch(production: FetchedRelease, plan: ExplainPlan, start: int, stop: int, config: LimeConfig) -> ExplainedBatch:
    """LIME on the chosen inputs ``start`` to ``stop`` with the served artifact."""
    logger = get_run_logger()
    manifest = production.manifest
    kit = explaining(manifest.input, production.open().predict, config)
    total = len(plan.chosen.names)

    def on_explained(number: int, _: int, item: ExplainedInput) -> None:
        top = item.explanation.labels[0]
        logger.info(
            "explained %d/%d: %s -> %s (p=%.3f)", number, total, item.name, manifest.classes[top],
            item.explanation.probabilities[top],
        )

    began = time.perf_counter()
    items = explain_chosen(plan.chosen, np.load(plan.raw_path)[start:stop], kit.explainer, start, on_explained)
    if plan.progress_id:
        _report_done(plan, start, len(items), total)
    return ExplainedBatch(items=items, seconds=time.perf_counter() - began)


def _report_done(plan: ExplainPlan, start: int, explained: int, total: int) -> None:
    """Record the batch from ``start`` as ``explained`` inputs (a file beside the chosen inputs) and show the sum as progress.

    Batches on Dask end in any order: the sum, not the batch's position, is the progress, and it is
    counted and reported under one lock so that the bar never steps back. Kept per batch, so a batch
    Dask runs again (a worker lost) is counted once.
    """
    with open(plan.raw_path.with_name("explained.json"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        done = json.loads(handle.read() or "{}")
        done[str(start)] = explained
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(done))
        handle.flush()
        update_progress_artifact(UUID(plan.progress_id), progress=100.0 * min(sum(done.values()), total) / total)


@task(**STORE_RETRIES)
def publish_explanations(
    production: FetchedRelease,
    batch: InputBatch,
    plan: ExplainPlan,
    explained: list[ExplainedBatch],
    config: LimeConfig,
    store_config: StoreConfig,
    work_dir: Path,
) -> ExplainResult:
    """The HTML report and the weights (JSON) of the explained inputs, to ``reports/{model}/explain/``."""
    manifest = production.manifest
    items = [item for part in explained for item in part.items]
    seconds_per_input = sum(part.seconds for part in explained) / max(len(items), 1)
    kit = explaining(manifest.input, production.open().predict, config)
    report, weights = kit.write_report(
        work_dir / "explain" / production.model / plan.stamp,
        f"LIME explanations: {production.model} {production.version}",
        f"{len(items)} inputs from {batch.source}, explained with the served artifact {manifest.served.name} "
        + (
            f"({config.num_samples} perturbations each, sampled from the release's training statistics, seed {config.seed})."
            if manifest.input.kind == "tabular"
            else f"({config.num_samples} perturbations each, {config.segmentation} segmentation, seed {config.seed})."
        ),
        items,
        manifest.classes,
    )
    plan.raw_path.unlink(missing_ok=True)
    store = open_store(store_config)
    prefix = f"reports/{production.model}/explain/{plan.stamp}"
    store.put_file(report, f"{prefix}/report.html", sha256_file(report))
    store.put_file(weights, f"{prefix}/explanations.json", sha256_file(weights))
    explained_rows = [
        {
            "image": item.name,
            "class": manifest.classes[item.explanation.labels[0]],
            "probability": round(item.explanation.probabilities[item.explanation.labels[0]], 4),
            "why": item.why,
        }
        for item in items
    ]
    create_markdown_artifact(
        key="explain-report",
        description=f"{production.model} {production.version}: {len(items)} inputs explained",
        markdown=(
            f"# LIME report for {production.model} {production.version}\n\n- report: {store.location(prefix + '/report.html')}\n"
            f"- weights (JSON): {store.location(prefix + '/explanations.json')}\n"
            f"- {seconds_per_input:.2f} s per input\n\n{markdown_table(explained_rows)}\n"
        ),
    )
    return ExplainResult(
        model=production.model, version=production.version, explained=explained_rows, failed=plan.chosen.failed,
        report_uri=store.location(prefix + "/report.html"), weights_uri=store.location(prefix + "/explanations.json"),
        seconds_per_image=seconds_per_input,
    )
