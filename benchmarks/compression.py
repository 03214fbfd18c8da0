"""Compression side by side: every variant of a distill -> prune -> int8 build vs PyTorch eager FP32.

Usage:
    .venv/bin/python benchmarks/compression.py [--models digits resnet18] [--repeats 200] [--threads 2]
        [--budget-pp 0.5] [--work DIR]

One table per model, each from a single run of the build flow (a temporary
registry; nothing downloaded): accuracy on the held-out test split, its change
vs the FP32 model in percentage points, size on disk (MB and times smaller than
the PyTorch state dict), p50/p95 latency at batch 1 and 64 and the speedup of
each over PyTorch eager FP32, all timed in the same process, on the same test
images, with the same fixed thread count, after warm-up.

Models:
  digits    the default small CNN on the embedded 8x8 digits at 16x16; student tiny_cnn
  resnet18  resnet18 on the same digits upscaled to 64x64 (a 64x64 task without downloads; latency
            is what matters there); student mobilenet_v3_small

Goals (checked under each table for the best in-budget variant at batch 1):
  >= 6x faster than PyTorch eager at batch 1, >= 4x at batch 64, <= 0.5 pp accuracy drop, >= 3.5x smaller.

Then what a host on this machine would serve (the release's candidates timed here at batch 1
and 64, as the scorer and server do), and every variant timed again at 224x224 (``--sizes``; the resnet18 build is RGB), the
convolutional models taking any size: timing only, accuracy stays measured at the trained size.

Under each table: the served variant against what a user would run instead (torch.compile,
plain onnxruntime, plain OpenVINO at its default precision), timed again side by side in this
process; and its distance to the CPU's practical peak (a 1024^3 GEMM in ONNX Runtime, FP32 and
INT8): the GMAC/s it achieves at batch 64 (MACs of one input x 64 / p50) as a share of that peak.
Not part of the test run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.baselines import baselines, gemm_peak_gmacs, speedup_rows, timed_at_size  # noqa: E402

from flows.build import build  # noqa: E402 - Prefect reads the settings above at import
from flows.config import BuildConfig  # noqa: E402
from tasks.registry.lineage import release_table  # noqa: E402
from tasks.registry.hostchoice import choose_on_host  # noqa: E402
from tasks.registry.manifest import ReleaseManifest  # noqa: E402
from tasks.registry.release import read_manifest  # noqa: E402
from tasks.registry.serving import open_variant  # noqa: E402
from tasks.registry.store import open_store  # noqa: E402
from tasks.tables import text_table  # noqa: E402

# Columns of the variant table that must reach these values, and the largest accuracy drop allowed.
GOALS = {"speedup_b1": 6.0, "speedup_b64": 4.0, "smaller_x": 3.5}
MAX_DROP_PP = 0.5


def model_config(name: str, work: Path, repeats: int, threads: int, budget_pp: float) -> BuildConfig:
    """The build config of one benchmark model: the full plan, the benchmark's latency settings."""
    common = {
        "model_name": f"bench-{name}",
        "work_dir": str(work / name / "work"),
        "store": {"uri": f"file://{work / name / 'registry'}"},
        "evaluate": {
            "latency": {"repeats": repeats, "warmup": 20, "batch_n": 64, "threads": threads},
            "policy": {"objective": "latency_b1", "accuracy_budget_pp": budget_pp},
        },
        "compress": {"plan": ["distill", "prune", "int8"]},
    }
    if name == "digits":
        return BuildConfig.model_validate(common)
    if name == "resnet18":
        return BuildConfig.model_validate(
            {
                **common,
                "data": {"image_size": 64, "channels": 3},
                "train": {"model": "resnet18", "max_epochs": 10, "learning_rate": 1e-3, "early_stopping_patience": 8},
                "compress": {
                    "plan": ["distill", "prune", "int8"],
                    # small_cnn's two convolutions see too little of a 64x64 image (it distils to ~91 %).
                    "distill": {"student": "mobilenet_v3_small", "max_epochs": 25},
                    "prune": {"keep_macs": 0.5, "finetune_epochs": 10},
                },
            }
        )
    raise SystemExit(f"unknown model {name!r}; allowed: digits, resnet18")


def report(name: str, manifest: ReleaseManifest, seconds: float) -> None:
    """The side-by-side table and the goal check of one model."""
    rows = release_table(manifest)
    table = [
        {
            "variant": r["variant"],
            "accuracy": f"{r['accuracy']:.4f}",
            "delta_pp": f"{r['delta_pp']:+.2f}",
            "in_budget": "yes" if r["in_budget"] else "NO",
            "size_mb": f"{r['size_kb'] / 1024:.3f}",
            "smaller_x": f"{r['smaller_x']:.2f}",
            "mmacs": r["mmacs"],
            "kparams": r["kparams"],
            "p50_b1_ms": f"{r['p50_ms_b1']:.3f}",
            "p95_b1_ms": f"{r['p95_ms_b1']:.3f}",
            "p50_b64_ms": f"{r['p50_ms_b64']:.2f}",
            "p95_b64_ms": f"{r['p95_ms_b64']:.2f}",
            "speedup_b1": f"{r['speedup_b1']:.2f}",
            "speedup_b64": f"{r['speedup_b64']:.2f}",
            "served": "<-" if r["served"] else "",
        }
        for r in rows
    ]
    latency, host = manifest.latency, manifest.latency.host
    print(
        f"\n## {name}: {manifest.training.model} at {manifest.input.image_size}x{manifest.input.image_size}, "
        f"{manifest.metrics.test_images} test images; {latency.threads} threads, p50/p95 of "
        f"{latency.repeats} calls at batch 1 ({max(latency.repeats // 4, 3)} at 64) after warm-up; "
        f"build {seconds:.0f} s; {host.cpu} ({host.logical_cpus} logical CPUs; {', '.join(host.flags) or 'no AVX2'})"
    )
    print(text_table(table))
    print(f"served: {manifest.served.reason}")
    candidates = [r for r in rows if r["in_budget"] and r["runtime"] != "torch"]
    for goal, target in GOALS.items():
        best = max(candidates, key=lambda r, g=goal: r[g])
        print(f"goal {goal} >= {target}: best in-budget {best['variant']} {best[goal]:.2f} "
              f"({'met' if best[goal] >= target else 'MISSED'})")
    every = [
        r["variant"]
        for r in candidates
        if -r["delta_pp"] <= MAX_DROP_PP and all(r[goal] >= target for goal, target in GOALS.items())
    ]
    print(f"in-budget variants meeting every goal at once: {', '.join(every) or 'none'}")


def against_baselines(manifest: ReleaseManifest, release_dir: Path, repeats: int, threads: int) -> None:
    """The served variant against the baselines, and its distance to this CPU's practical peak."""
    images = np.random.default_rng(0).random((64, *manifest.input.shape), dtype=np.float32)
    served = manifest.served.name
    backends = {served: open_variant(manifest, release_dir, served, threads=threads), **baselines(manifest, release_dir)}
    print(f"\n{served} (served) against what a user would run instead, timed now side by side "
          "(speed-up = baseline p50 / served p50):")
    print(text_table(speedup_rows(served, backends, images, repeats)))
    variant = manifest.variant(served)
    peaks = {p: gemm_peak_gmacs(p, threads) for p in ("fp32", "int8")}
    if variant.macs:
        achieved = variant.macs * 64 / (variant.p50_ms_bn / 1000) / 1e9
        peak = peaks["int8" if variant.precision == "int8" else "fp32"]
        print(f"distance to peak: {served} ({variant.precision}) does {achieved:.1f} GMAC/s at batch 64 "
              f"({variant.macs / 1e6:.1f} MMAC per input, p50 {variant.p50_ms_bn:.2f} ms) = {achieved / peak:.1%} of "
              f"the practical {'INT8' if variant.precision == 'int8' else 'FP32'} peak; peaks on {threads} threads: "
              f"FP32 {peaks['fp32']:.0f}, INT8 {peaks['int8']:.0f} GMAC/s (ONNX Runtime 1024^3 GEMM)")


def host_choice(manifest: ReleaseManifest, release_dir: Path, threads: int) -> None:
    """What a scoring or serving host on this machine would serve: the release's candidates timed here.

    Without spinning threads, as the server and the scorer time them: an ONNX Runtime pool spinning
    after its call slows whichever candidate runs next (OpenVINO's bf16 variant measured 5.1 ms at
    batch 64 after spinning ONNX Runtime sessions, 3.2 ms without).
    """
    for batch_size in (1, 64):
        choice, _ = choose_on_host(
            manifest, lambda name: open_variant(manifest, release_dir, name, threads=threads, spin=False), batch_size, 3.0,
            ("onnxruntime", "openvino"),
        )
        print(f"\nhost choice at batch {batch_size}: {choice.reason}")
        print(text_table(choice.table()))


def at_sizes(manifest: ReleaseManifest, release_dir: Path, sizes: list[int], threads: int) -> None:
    """Every variant timed again at realistic input sizes (the convolutional models take any size)."""
    for size in sizes:
        layout = "RGB" if manifest.input.channels == 3 else "grayscale"
        print(f"\nevery variant at {size}x{size} {layout} (timing only: accuracy stays measured at the trained "
              f"{manifest.input.image_size}x{manifest.input.image_size}; speed-up vs torch-fp32 eager at {size}):", flush=True)
        print(text_table(timed_at_size(manifest, release_dir, size, threads, repeats=12)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["digits", "resnet18"])
    parser.add_argument("--repeats", type=int, default=200, help="timed calls at batch 1 (a quarter at 64)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of every runtime")
    parser.add_argument("--budget-pp", type=float, default=0.5, help="accuracy budget of the policy")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[224],
                        help="also time every variant at these input sizes (default: 224; none: skip)")
    parser.add_argument("--release", type=Path, default=None,
                        help="time an existing release folder (models/{name}/{version}) instead of building one")
    args = parser.parse_args()
    if args.release is not None:
        manifest = ReleaseManifest.model_validate_json((args.release / "manifest.json").read_text())
        report(manifest.model, manifest, float("nan"))
        against_baselines(manifest, args.release, args.repeats, args.threads)
        host_choice(manifest, args.release, args.threads)
        at_sizes(manifest, args.release, args.sizes, args.threads)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="lepton-compression-"))
    for name in args.models:
        config = model_config(name, work, args.repeats, args.threads, args.budget_pp)
        print(
            f"building {name}: {config.train.model} ({config.train.max_epochs} epochs max) -> distil into "
            f"{config.compress.distill.student} -> prune to {config.compress.prune.keep_macs:.0%} of its MACs -> INT8, "
            f"then timing every variant (work dir {work / name}; several minutes)",
            flush=True,
        )
        start = time.perf_counter()
        release = build(config)
        manifest = read_manifest(open_store(config.store), release.model, release.version)
        report(name, manifest, time.perf_counter() - start)
        against_baselines(manifest, Path(release.uri.removeprefix("file://")), args.repeats, args.threads)
        host_choice(manifest, Path(release.uri.removeprefix("file://")), args.threads)
        at_sizes(manifest, Path(release.uri.removeprefix("file://")), args.sizes, args.threads)


if __name__ == "__main__":
    main()
