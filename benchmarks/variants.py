"""Latency and size of every variant of a release, side by side, as ratios to PyTorch eager FP32.

Usage (after `make demo`):
    .venv/bin/python benchmarks/variants.py [--store file://.lepton/registry] [--model digits-classifier]
        [--version VERSION] [--repeats 200] [--threads N]

Every variant is timed in this same process on the same seeded inputs, so the
ratios compare like with like. Beside the release's variants, what a user would run
instead, each in its one-line default: ``torch.compile`` (inductor) of the trained
model, a plain ``onnxruntime.InferenceSession`` on ``onnx-fp32`` and a plain OpenVINO
``compile_model`` on the ``openvino-fp32`` IR (no hints: bf16 on a bf16 CPU). A second
table gives the served variant's speed-up over each. Not part of the test run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.baselines import baselines, speedup_table  # noqa: E402
from tasks.export.measure import latency_ms, measuring_host, size_on_disk  # noqa: E402
from tasks.registry.config import StoreConfig  # noqa: E402
from tasks.registry.release import download_release  # noqa: E402
from tasks.registry.serving import open_variant, production_version  # noqa: E402
from tasks.registry.store import open_store  # noqa: E402
from tasks.tables import text_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="file://.lepton/registry")
    parser.add_argument("--model", default="digits-classifier")
    parser.add_argument("--version", help="defaults to the production alias")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads for every runtime")
    args = parser.parse_args()

    store = open_store(StoreConfig(uri=args.store))
    version = args.version or production_version(store, args.model)
    if version is None:
        raise SystemExit(f"{args.model} has no production release in {store.uri}; run make demo or pass --version")
    work = Path(tempfile.mkdtemp(prefix="lepton-bench-"))
    manifest = download_release(store, args.model, version, work / "release", work / "cache")
    contract = manifest.input
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images = rng.random((64, *contract.shape), dtype=np.float32)

    def timed(name: str, backend, folder: Path) -> dict:  # noqa: ANN001 - anything with predict()
        b1, _ = latency_ms(backend, images, 1, args.repeats, warmup=20)
        b64, _ = latency_ms(backend, images, 64, max(args.repeats // 4, 10), warmup=5)
        size = size_on_disk(sorted(p for p in folder.rglob("*") if p.is_file())) / 1024
        return {"variant": name, "size_kb": size, "p50_ms_b1": b1, "p50_ms_b64": b64}

    release = work / "release"
    rows = [
        timed(v.name, open_variant(manifest, release, v.name, threads=args.threads), release / v.name)
        for v in manifest.variants
    ]
    folders = {"torch.compile": "torch-fp32", "plain onnxruntime": "onnx-fp32", "plain openvino": "openvino-fp32"}
    baseline_rows = [
        timed(f"baseline: {name}", backend, release / folders[name]) for name, backend in baselines(manifest, release).items()
    ]
    rows += baseline_rows

    base = next(r for r in rows if r["variant"] == "torch-fp32")
    table = [
        {
            "variant": r["variant"],
            "size_kb": f"{r['size_kb']:.1f}",
            "size_x": f"{r['size_kb'] / base['size_kb']:.2f}",
            "p50_ms_b1": f"{r['p50_ms_b1']:.3f}",
            "speedup_b1": f"{base['p50_ms_b1'] / r['p50_ms_b1']:.2f}",
            "p50_ms_b64": f"{r['p50_ms_b64']:.3f}",
            "speedup_b64": f"{base['p50_ms_b64'] / r['p50_ms_b64']:.2f}",
            "imgs_per_s_b64": f"{64_000 / r['p50_ms_b64']:.0f}",
        }
        for r in rows
    ]
    host = measuring_host()
    print(f"{args.model} {version}: {'x'.join(map(str, contract.shape))} inputs, "
          f"{args.repeats} timed calls at batch 1, baseline torch-fp32 (eager, same process); "
          f"{host.cpu}, {host.logical_cpus} logical CPUs ({', '.join(host.flags) or 'no AVX2'})")
    print(text_table(table))
    served = next(r for r in rows if r["variant"] == manifest.served.name)
    print(f"\nserved {manifest.served.name} against what a user would run instead (speed-up = baseline p50 / served p50):")
    others = [next(r for r in rows if r["variant"] == "torch-fp32"), *baseline_rows]
    print(text_table(speedup_table(
        (served["p50_ms_b1"], served["p50_ms_b64"]),
        {r["variant"].removeprefix("baseline: "): (r["p50_ms_b1"], r["p50_ms_b64"]) for r in others},
    )))


if __name__ == "__main__":
    main()
