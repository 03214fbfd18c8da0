"""Cost as the data grows: ingestion, the whole build, training engines, scoring, and what augmentation buys.

Usage:
    .venv/bin/python benchmarks/scale.py [--sizes 10000 50000 200000] [--sections ingest build train score augment]
                                         [--build-sizes 10000 200000] [--score-sizes 2000 20000 200000] [--work DIR]

Synthetic ImageFolders the script writes (64 x 64 RGB JPEGs of two classes, smooth colour fields whose
class is in their hue), ingested at ``image_size`` 64, 3 channels. Every measurement runs in a fresh
Python process, so a peak RSS is that process's own (decoding workers are reported apart).

1. ingest: images/s and peak RSS for each size, with 1 and 2 decoding workers.
2. build: the whole build flow's peak RSS (its own process: ingestion, training, distillation,
   pruning, INT8, evaluation, the monitoring reference, release, gate) for each of ``--build-sizes``,
   training capped at a fixed number of batches so that only the data's size changes.
3. train: training images/s of the same model on the same snapshot: a plain PyTorch loop, Lightning
   fp32, Lightning bf16-mixed, Lightning with channels_last, and DDP with 2 processes (gloo); and the
   Trainer's own time per step, measured on a model with almost no work.
4. score: end-to-end scoring (files -> predictions and monitoring rows in the store) of batches of
   each of ``--score-sizes`` files with the default (one scoring process per CPU), the middle size also
   with one process, and the scoring stage alone (``score_files``: what is left is a run's fixed cost),
   against two ceilings: the raw throughput of the served variant at batch 64 on prepared inputs, and
   decoding the same files alone. For the default model (small_cnn, distilled and pruned) and for
   resnet18. The batches are inboxes of regular files (hard links).
5. augment: digits trained with and without augmentation, tested on the test split as it is and on
   shifted copies (rotated 15 degrees, brightened 40 %).

Goals: peak RSS of ingestion and of the whole build flat within +-20 % from 10k to 200k images; 2
workers >= 1.7x one; Lightning within 5 % of the plain loop; end-to-end scoring >= 50 % of the
ceiling (the raw model's; where decoding is slower than the model, the lower of the two is the real
ceiling, and both ratios are printed). Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from tasks.export.measure import measuring_host  # noqa: E402
from tasks.tables import text_table  # noqa: E402

SECTIONS = ("ingest", "build", "train", "score", "augment")


def write_folder(root: Path, images: int, size: int = 64, seed: int = 0) -> Path:
    """Two classes of RGB JPEGs: smooth colour fields from 2 x 2 corner colours, class ``warm`` redder than ``cool``.

    Written once per size and reused (a marker file records a finished folder).
    """
    from PIL import Image

    done = root / ".complete"
    if done.exists():
        return root
    rng = np.random.default_rng(seed)
    for c, name in enumerate(("cool", "warm")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(images // 2):
            corners = rng.integers(0, 200, (2, 2, 3))
            corners[..., 0 if c else 2] += 55
            field = Image.fromarray(corners.astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR)
            field.save(root / name / f"{i:06d}.jpg", quality=90)
    done.write_text("")
    return root


def in_child(code: str, timeout: float = 3600) -> dict:
    """Run ``code`` in a fresh interpreter; the JSON object it prints last."""
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(PROJECT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise RuntimeError(f"child failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


PEAK = "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024"
CHILDREN_PEAK = "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024"


def ingest_section(sizes: list[int], work: Path) -> list[dict]:
    rows = []
    for n in sizes:
        folder = write_folder(work / f"images-{n}", n)
        for workers in (1, 2):
            snaps = work / f"snaps-{n}-{workers}"
            result = in_child(f"""
import json, resource, time
from pathlib import Path
from tasks.data.config import DataConfig
from tasks.data.imagefolder import ingest_imagefolder
config = DataConfig(source={str(folder)!r}, image_size=64, channels=3, workers={workers})
started = time.perf_counter()
snapshot = ingest_imagefolder(Path({str(folder)!r}), config, Path({str(snaps)!r}))
seconds = time.perf_counter() - started
print(json.dumps({{"seconds": seconds, "images": snapshot.num_examples, "peak_mib": {PEAK}, "workers_peak_mib": {CHILDREN_PEAK}}}))
""")
            rows.append({"images": n, "workers": workers, **result})
            print(f"  ingest {n} images, {workers} worker(s): {result['seconds']:.1f} s, peak {result['peak_mib']:.0f} MiB", flush=True)
    base = {r["workers"]: r for r in rows if r["images"] == sizes[0]}
    one = {r["images"]: r for r in rows if r["workers"] == 1}
    return [
        {
            "images": r["images"], "workers": r["workers"], "seconds": round(r["seconds"], 1),
            "images_per_s": round(r["images"] / r["seconds"]),
            "vs_1_worker": round(one[r["images"]]["seconds"] / r["seconds"], 2),
            "peak_rss_mib": round(r["peak_mib"]), f"peak_vs_{sizes[0] // 1000}k": round(r["peak_mib"] / base[r["workers"]]["peak_mib"], 2),
            "worker_peak_mib": round(r["workers_peak_mib"]) if r["workers"] > 1 else None,
        }
        for r in rows
    ]


def build_config(work: Path, folder: Path, tag: str, train_batches: int = 20) -> dict:
    """The build flow's config for a size: everything at its default but training capped at ``train_batches`` per epoch."""
    return {
        "model_name": f"scale-{tag}",
        "work_dir": str(work / f"build-{tag}"),
        "store": {"uri": f"file://{work / f'registry-{tag}'}"},
        "data": {"source": str(folder), "image_size": 64, "channels": 3, "workers": 2},
        "train": {"model": "small_cnn", "max_epochs": 2, "max_batches_per_epoch": train_batches},
        "compress": {"distill": {"max_epochs": 1}, "prune": {"finetune_epochs": 1}, "int8": {"calibration_size": 300}},
        "evaluate": {"latency": {"repeats": 5, "warmup": 2, "batch_n": 16}},
    }


def build_section(sizes: list[int], work: Path) -> list[dict]:
    rows = []
    for n in sizes:
        folder = write_folder(work / f"images-{n}", n)
        config = build_config(work, folder, str(n))
        result = in_child(f"""
import json, resource, time
from flows.build import build
from flows.config import BuildConfig
config = BuildConfig.model_validate({config!r})
started = time.perf_counter()
release = build(config)
print(json.dumps({{"seconds": time.perf_counter() - started, "peak_mib": {PEAK}, "version": getattr(release, "version", str(release))}}))
""", timeout=7200)
        rows.append({"images": n, **result})
        print(f"  build on {n} images: {result['seconds']:.0f} s, peak {result['peak_mib']:.0f} MiB", flush=True)
    return [
        {"images": r["images"], "seconds": round(r["seconds"]), "peak_rss_mib": round(r["peak_mib"]),
         f"peak_vs_{sizes[0] // 1000}k": round(r["peak_mib"] / rows[0]["peak_mib"], 2)}
        for r in rows
    ]


SCORED_MODELS = {
    # The build's default recipe: small_cnn, distilled and pruned; its served variant runs at tens of
    # thousands of images/s, faster than any JPEG decoder.
    "small_cnn (default plan)": {},
    # A model whose inference costs more than decoding: resnet18, INT8 only.
    # Trained briefly, but enough to beat the gate's majority-class baseline and reach production.
    "resnet18 (plan: int8)": {"train": {"model": "resnet18", "max_epochs": 3, "max_batches_per_epoch": 30},
                              "compress": {"plan": ["int8"], "int8": {"calibration_size": 300}}},
}


def score_section(sizes: list[int], work: Path) -> list[dict]:
    """Per model: a release scores fresh batches of each size end to end (the default: one scoring process per
    CPU), and the middle size with one process too; the scoring stage alone and the ceilings at that size.

    The ceilings of the same files and variant: the raw model at batch 64 on prepared inputs, and
    decoding alone (``contract.read``, the same worker processes). A first small batch chooses the
    variant (timed once per host and release), so the measured runs are a scheduled scorer's. A run's
    fixed cost (listing, planning, logging, Prefect) is what end to end adds to the stage alone; the
    sizes show it spread over more files.
    """
    train = write_folder(work / "images-score-train", 4000, seed=1)
    warmup = _flat(write_folder(work / "images-score-warmup", 400, seed=4))
    middle = sorted(sizes)[len(sizes) // 2]
    # The batches are shared by the models (each has a registry of its own, so each batch is new to each).
    batches = {size: str(_flat(write_folder(work / f"images-{size}", size))) for size in sizes}
    one_process = str(_flat(write_folder(work / f"images-score-{middle}-one-process", middle, seed=11)))
    # Each batch read once before the runs, so every model reads it from memory, as a scorer reads an inbox just
    # written (the first model to read a batch written long ago would otherwise also measure the disk).
    for folder in [*batches.values(), one_process]:
        for path in Path(folder).iterdir():
            path.read_bytes()
    rows = []
    for label, recipe in SCORED_MODELS.items():
        tag = "score" if not recipe else "score-" + label.split()[0]
        config = build_config(work, train, tag)
        for key, value in recipe.items():
            config[key] = {**config.get(key, {}), **value}
        # Built in a process of its own: a scorer does not share its process with a build's leftovers.
        in_child(f"""
import json
from flows.build import build
from flows.config import BuildConfig
build(BuildConfig.model_validate({config!r}))
print(json.dumps({{}}))
""", timeout=7200)
        result = in_child(f"""
import json, shutil, time
from functools import partial
from urllib.parse import urlparse
from pathlib import Path
import numpy as np
from flows.config import BuildConfig, ScoreConfig
from flows.score import score
from tasks.data.workers import decoding_workers, in_order, worker_pool
from tasks.registry.serving import fetch_production
from tasks.registry.store import open_store
from tasks.score.features import load_projection
from tasks.score.inputs import local_inputs
from tasks.score.scoring import score_files
config = BuildConfig.model_validate({config!r})
# The benchmark's own registry: logs of an earlier run on this --work would make its batches "already scored".
for kind in ("predictions", "monitoring", "scored-batches"):
    shutil.rmtree(Path({str(work)!r}) / f"registry-{tag}" / kind / config.model_name, ignore_errors=True)
common = dict(model_name=config.model_name, store=config.store, work_dir=config.work_dir)
score(ScoreConfig(**common, source={str(warmup)!r}))
out = {{"end_to_end": {{}}, "landed": {{}}}}
runs = [(size, folder, 0) for size, folder in {batches!r}.items()] + [("one_process", {one_process!r}, 1)]
for size, folder, workers in runs:
    started, wall = time.perf_counter(), time.time()
    result = score(ScoreConfig(**common, source=folder, workers=workers))
    out["end_to_end"][size] = result.scored / (time.perf_counter() - started)
    # Until both files of rows are in the (file://) store; the flow returns after Prefect's teardown.
    written = max(Path(urlparse(uri).path).stat().st_mtime for uri in (result.predictions_uri, result.monitoring_uri) if uri)
    out["landed"][size] = result.scored / (written - wall)
    out["variant"] = result.variant
production = fetch_production(open_store(config.store), config.model_name, config.work_dir, candidates=True)
manifest = production.manifest
contract = manifest.input
files = local_inputs(Path({batches[middle]!r}))
paths = [f.path for f in files]
# The scoring stage alone, as the score flow's shard runs it: what is left of end to end is the run's fixed cost.
projection = load_projection(production.release_dir / manifest.monitoring_of(out["variant"]).projection)
started = time.perf_counter()
score_files(files, partial(production.open, out["variant"], spin=False), contract, manifest.classes, projection,
            ScoreConfig.model_fields["batch_size"].default, workers=decoding_workers(0, len(files)))
out["stage"] = len(files) / (time.perf_counter() - started)
for workers in (1, decoding_workers(0, len(paths))):
    jobs = ((start, (paths[start : start + 512],)) for start in range(0, len(paths), 512))
    started = time.perf_counter()
    with worker_pool(workers) as pool:
        decoded = sum(len(d.source) for _, d in in_order(pool, workers, contract.read, jobs))
    out[f"decode_{{workers}}"] = decoded / (time.perf_counter() - started)
    out["auto_workers"] = workers
backend = production.open(out["variant"])
batch = np.random.default_rng(0).random((64, *contract.shape), dtype=np.float32)
for _ in range(5):
    backend.predict(batch)
calls, started = 0, time.perf_counter()
while time.perf_counter() - started < 5.0:
    backend.predict(batch); calls += 1
out["raw"] = calls * 64 / (time.perf_counter() - started)
print(json.dumps(out))
""", timeout=7200)
        auto = result["auto_workers"]
        ceiling = min(result["raw"], result[f"decode_{auto}"])
        print(f"  {label}: {json.dumps(result)}", flush=True)
        end_to_end, landed = result["end_to_end"], result["landed"]
        fixed = middle / end_to_end[str(middle)] - middle / result["stage"]
        teardown = middle / end_to_end[str(middle)] - middle / landed[str(middle)]
        half = 0.5 * ceiling
        # End to end is n / (fixed + n / stage): at least half the ceiling from this many files a run on.
        crossing = f"from {fixed * half * result['stage'] / (result['stage'] - half):,.0f} files a run" if result["stage"] > half else "never"
        print(f"  {label}: a score run's fixed cost (listing, planning, logging, Prefect) {fixed:.1f} s of "
              f"{middle / end_to_end[str(middle)]:.1f} s at {middle:,} files, {teardown:.1f} s of it the flow's teardown after "
              f"its rows are written; end to end reaches half the lower ceiling {crossing}")
        paths = [
            *((f"files -> predictions + monitoring rows in the store, {size:,} files a run", end_to_end[str(size)]) for size in sizes),
            *((f"  the same until the rows are written (without the flow's teardown), {size:,} files", landed[str(size)])
              for size in sizes),
            (f"files -> rows in the store, {middle:,} files, 1 process", end_to_end["one_process"]),
            (f"the scoring stage alone (score_files), {middle:,} files, {auto} scoring processes", result["stage"]),
            ("raw model, batch 64, prepared inputs", result["raw"]),
            ("decoding alone, 1 process", result["decode_1"]),
            (f"decoding alone, {auto} processes", result[f"decode_{auto}"]),
        ]
        for what, rate in paths:
            rows.append({"model": label, "variant": result["variant"], "path": what, "images_per_s": round(rate),
                         "vs_raw_model": round(rate / result["raw"], 3), "vs_lower_ceiling": round(rate / ceiling, 3)})
    return rows


def _flat(folder: Path) -> Path:
    """The folder's images side by side in one folder, as an inbox holds them: a batch to score has no class
    folders. Hard links: regular files, as a real inbox has (a symbolic link costs scoring its resolving)."""
    flat = folder.parent / (folder.name + "-inbox")
    if not flat.exists():
        flat.mkdir()
        for path in sorted(folder.rglob("*.jpg")):
            os.link(path, flat / (path.parent.name + "-" + path.name))
    return flat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--build-sizes", type=int, nargs="+", default=[10_000, 200_000])
    parser.add_argument("--score-sizes", type=int, nargs="+", default=[2_000, 20_000, 200_000], help="files a score run")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--work", type=Path, default=None, help="Where folders and builds go (kept); default: a temporary folder")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="lepton-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    host = measuring_host()
    print(f"CPU: {host.cpu}; {host.logical_cpus} logical CPUs, {len(os.sched_getaffinity(0))} usable; flags: {', '.join(host.flags)}")
    print(f"work: {work}\n", flush=True)
    tables = {}
    if "ingest" in args.sections:
        tables["Ingestion (64 x 64 RGB JPEGs, image_size 64, 3 channels)"] = ingest_section(args.sizes, work)
    if "build" in args.sections:
        tables["Whole build flow (training capped at 20 batches per epoch)"] = build_section(args.build_sizes, work)
    if "train" in args.sections:
        from benchmarks.scale_train import train_section

        from benchmarks.scale_train import trainer_cost_section

        tables["Training throughput (small_cnn, batch 64, the same snapshot)"] = train_section(work, write_folder)
        tables["Lightning's own cost per step (batch 64)"] = trainer_cost_section(work, write_folder)
    if "score" in args.sections:
        tables["Scoring end to end vs the raw model"] = score_section(args.score_sizes, work)
    if "augment" in args.sections:
        from benchmarks.scale_train import augment_section

        tables["Augmentation on shifted test copies (embedded digits)"] = augment_section(work)
    for title, rows in tables.items():
        print(f"\n{title}\n{text_table(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
