"""LIME explanations per second: the released artifact with our batching vs lime's defaults on PyTorch.

Usage (after `make demo`):
    .venv/bin/python benchmarks/explain.py [--store file://.lepton/registry] [--model digits-classifier]
        [--images 20] [--num-samples 1000]

Same images (chosen from the release's test split as the explain flow chooses them), same
segmentation, same hiding, same seed for every row; only the runtime and the batch size given to
lime (its default is 10 perturbed images per model call) and how the perturbed images are built
(lime's Python loop, or our array version of it, which draws the same random matrix) change. "agree" compares each row's top
positive superpixel (and top 3) for the predicted class with the baseline's. Not part of the test run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from tasks.explain.config import LimeConfig
from tasks.explain.explanation import choose_samples
from tasks.explain.lime_images import ImageLimeExplainer
from tasks.registry.config import StoreConfig
from tasks.registry.serving import fetch_production, release_split
from tasks.registry.store import open_store
from tasks.score.inference import probabilities
from tasks.tables import text_table

# lime's own loop (the baseline rows) draws a tqdm bar per image; the table is the output here.
os.environ.setdefault("TQDM_DISABLE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="file://.lepton/registry")
    parser.add_argument("--model", default="digits-classifier")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--num-samples", type=int, default=1000)
    args = parser.parse_args()

    store = open_store(StoreConfig(uri=args.store))
    work = Path(tempfile.mkdtemp(prefix="lepton-explain-bench-"))
    production = fetch_production(store, args.model, work, extra=["torch-fp32", "openvino-fp32"])
    manifest, version, contract = production.manifest, production.version, production.manifest.input
    images = contract.read([f.path for f in release_split(store, production, work / "cache")]).raw
    served = manifest.served.name
    torch_backend = production.open("torch-fp32")
    chosen = images[choose_samples(probabilities(torch_backend, contract, images), args.images, seed=0)]

    config = LimeConfig(num_samples=args.num_samples, top_labels=1)
    ours = f"ours ({args.num_samples}, vectorised)"
    rows = [
        ("torch-fp32", "lime default (10)", torch_backend, 10, False),
        ("torch-fp32", f"lime ({args.num_samples})", torch_backend, args.num_samples, False),
        ("torch-fp32", ours, torch_backend, args.num_samples, True),
        (served, ours, production.open(), args.num_samples, True),
    ]
    if served != "openvino-fp32":
        rows.append(("openvino-fp32", ours, production.open("openvino-fp32"), args.num_samples, True))
    results, baseline_top = [], None
    for variant, batching, backend, batch, vectorised in rows:
        explainer = ImageLimeExplainer(
            backend.predict, contract, config.model_copy(update={"batch_size": batch}), vectorised=vectorised
        )
        explainer.explain(chosen[0])  # warm-up: first-call allocations are not the steady state
        start = time.perf_counter()
        explanations = [explainer.explain(image) for image in chosen]
        seconds = time.perf_counter() - start
        top1 = [e.top_features(e.labels[0], 1) for e in explanations]
        top3 = [set(e.top_features(e.labels[0], 3)) for e in explanations]
        if baseline_top is None:
            baseline_top = (top1, top3)
        results.append(
            {
                "variant": variant,
                "batch_per_call": batching,
                "calls_per_image": explanations[0].model_calls,
                "explanations_per_s": round(len(chosen) / seconds, 2),
                "top1_agree": round(float(np.mean([a == b for a, b in zip(top1, baseline_top[0])])), 2),
                "top3_jaccard": round(
                    float(np.mean([len(a & b) / max(1, len(a | b)) for a, b in zip(top3, baseline_top[1])])), 2
                ),
            }
        )
    base = results[0]["explanations_per_s"]
    for row in results:
        row["speedup"] = round(row["explanations_per_s"] / base, 2)
    print(f"{len(chosen)} images of {args.model} {version}, {args.num_samples} perturbations each, seed 0")
    print(text_table(results))


if __name__ == "__main__":
    main()
