"""Prefect tasks of the explain stage: gather inputs, explain them with the served artifact, publish the report."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from pydantic import BaseModel

from tasks.explain.lime_images import ImageLimeExplainer, LimeConfig, choose_samples, least_confident_count
from tasks.explain.report import ExplainedImage, write_report
from tasks.hashing import sha256_file
from tasks.monitor.features import softmax
from tasks.monitor.logs import latest_log
from tasks.monitor.scoring import FailedInput, InputFile, batch_id, decode_inputs, source_inputs
from tasks.monitor.steps import InputBatch, ProductionRelease
from tasks.registry.config import StoreConfig
from tasks.registry.production import open_variant
from tasks.registry.release import download_release
from tasks.registry.steps import STORE_RETRIES
from tasks.registry.store import open_store
from tasks.train.datamodule import to_model_input


class NothingToExplain(RuntimeError):
    """The chosen source has no image this run can read."""

    permanent = True  # no retry fixes it


@task(**STORE_RETRIES)
def gather_explain_inputs(
    production: ProductionRelease, source: str, store_config: StoreConfig, work_dir: Path
) -> InputBatch:
    """Files to explain: the release's test split, the latest scored batch, a folder or an ``s3://`` prefix."""
    logger = get_run_logger()
    store = open_store(store_config)
    if source == "test-split":
        download_release(store, production.model, production.version, production.release_dir, work_dir / "cache",
                         only="dataset", manifest=production.manifest)
        listed = json.loads((production.release_dir / "dataset" / "manifest.json").read_text())["files"]
        root = Path(production.manifest["dataset"]["source"])
        files = [InputFile(name=f["path"], path=root / f["path"], sha256=f["sha256"]) for f in listed if f["split"] == "test"]
        if not files or not files[0].path.exists():
            raise NothingToExplain(
                f"the test images of {production.model} {production.version} were read from {root}, which is not on "
                "this machine; explain a folder or an s3:// prefix instead"
            )
    elif source == "latest-batch":
        batch = latest_log(store, "predictions", production.model)
        if batch is None:
            raise NothingToExplain(f"{production.model} has no scored batch yet; run the score flow first")
        if "path" not in batch.columns:
            raise NothingToExplain("the latest scored batch does not record its files' paths; explain its folder instead")
        files = [InputFile(name=r.file, path=Path(r.path), sha256=r.image_sha256) for r in batch.itertuples() if Path(r.path).is_file()]
        if not files:
            raise NothingToExplain("the files of the latest scored batch are no longer on this machine")
    else:
        files = source_inputs(source, store_config, work_dir)
    logger.info("%d candidate images from %s", len(files), source)
    return InputBatch(source=source, batch_id=batch_id(files), files=files)


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
    production: ProductionRelease,
    batch: InputBatch,
    num_images: int,
    config: LimeConfig,
    store_config: StoreConfig,
    work_dir: Path,
) -> ExplainResult:
    """LIME on the served artifact for a stratified choice of images; HTML + JSON to ``reports/{model}/explain/``."""
    import time

    logger = get_run_logger()
    manifest = production.manifest
    classes, size, channels = manifest["dataset"]["classes"], manifest["input"]["image_size"], manifest["input"]["channels"]
    backend = open_variant(manifest, production.release_dir, manifest["served"]["name"])
    images, _, kept, failed = decode_inputs(batch.files, size, channels)
    if not kept:
        raise NothingToExplain(f"no readable image in {batch.source} ({len(failed)} unreadable)")
    probabilities = np.concatenate(
        [softmax(backend.predict(to_model_input(images[i : i + 1024]))) for i in range(0, len(images), 1024)]
    )
    chosen = choose_samples(probabilities, num_images, config.seed)
    least = set(chosen[: least_confident_count(len(chosen))])
    explainer = ImageLimeExplainer(backend.predict, channels, config)
    progress = create_progress_artifact(progress=0.0, description=f"LIME on {len(chosen)} images")
    items: list[ExplainedImage] = []
    start = time.perf_counter()
    for number, index in enumerate(chosen, 1):
        explanation = explainer.explain(images[index])
        top = explanation.labels[0]
        why = "least confident" if index in least else f"predicted class {classes[int(probabilities[index].argmax())]}"
        items.append(ExplainedImage(name=kept[index].name, pixels=images[index].tolist(), explanation=explanation, why=why))
        logger.info("explained %d/%d: %s -> %s (p=%.3f)", number, len(chosen), kept[index].name, classes[top],
                    explanation.probabilities[top])
        update_progress_artifact(progress, progress=100.0 * number / len(chosen))
    seconds = (time.perf_counter() - start) / len(chosen)
    stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    out = work_dir / "explain" / production.model / stamp
    report, weights = write_report(
        out,
        f"LIME explanations: {production.model} {production.version}",
        f"{len(items)} images from {batch.source}, explained with the served artifact {manifest['served']['name']} "
        f"({config.num_samples} perturbations each, {config.segmentation} segmentation, seed {config.seed}).",
        items,
        classes,
    )
    store = open_store(store_config)
    prefix = f"reports/{production.model}/explain/{stamp}"
    store.put_file(report, f"{prefix}/report.html", sha256_file(report))
    store.put_file(weights, f"{prefix}/explanations.json", sha256_file(weights))
    explained = [
        {"image": i.name, "class": classes[i.explanation.labels[0]], "probability": round(i.explanation.probabilities[i.explanation.labels[0]], 4), "why": i.why}
        for i in items
    ]
    create_markdown_artifact(
        key="explain-report",
        description=f"{production.model} {production.version}: {len(items)} images explained",
        markdown=(
            f"# LIME report for {production.model} {production.version}\n\n- report: {store.location(prefix + '/report.html')}\n"
            f"- weights (JSON): {store.location(prefix + '/explanations.json')}\n- {seconds:.2f} s per image\n\n"
            "| image | class | probability | why |\n|---|---|---|---|\n"
            + "".join(f"| {e['image']} | {e['class']} | {e['probability']} | {e['why']} |\n" for e in explained)
        ),
    )
    return ExplainResult(
        model=production.model, version=production.version, explained=explained, failed=failed,
        report_uri=store.location(prefix + "/report.html"), weights_uri=store.location(prefix + "/explanations.json"),
        seconds_per_image=seconds,
    )
