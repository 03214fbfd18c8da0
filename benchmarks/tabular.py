"""The tabular modality, measured: the embedded table's build, and a synthetic table of a million rows.

Usage:
    .venv/bin/python benchmarks/tabular.py [--rows 1000000] [--skip-build] [--work DIR]

1. The embedded breast cancer table built by the build flow with its defaults: the MLP against
   scikit-learn's HistGradientBoosting on the same split (accuracy, macro-F1, batch latency),
   and every variant's accuracy, size and latency as ratios to PyTorch eager.
2. A synthetic table (``--rows``; numeric, categorical, boolean and missing cells): ingestion
   rows/s and peak RSS, each run in a fresh process (peak RSS is the child's own), and the
   monitoring of the whole table as a window: its monitoring rows (scoring with the release's
   artifact) and the drift verdict against the reference, each timed.

Goals: MLP within 2 pp of HistGradientBoosting on the embedded table; served variant >= 5x
PyTorch eager at batch 1; ingesting 1 M rows in under 60 s on 2 cores with bounded memory.
Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from tasks.export.measure import measuring_host  # noqa: E402
from tasks.tables import text_table  # noqa: E402


def synthetic(rows: int, seed: int = 0) -> pd.DataFrame:
    """A table like a churn extract: 8 numbers (2 % missing), 2 categories, a yes/no, the label from a few of them."""
    rng = np.random.default_rng(seed)
    numbers = rng.normal(0, 1, (rows, 8))
    numbers[rng.random((rows, 8)) < 0.02] = np.nan
    plan = rng.choice(["basic", "plus", "pro", "team"], rows)
    region = rng.choice([f"r{i:02d}" for i in range(20)], rows)
    member = rng.random(rows) < 0.4
    score = np.nan_to_num(numbers[:, 0]) + 0.5 * np.nan_to_num(numbers[:, 1]) + (plan == "pro") * 0.8 - member * 0.5
    frame = pd.DataFrame(np.round(numbers * 100, 2), columns=[f"x{i}" for i in range(8)])
    frame["plan"], frame["region"], frame["member"] = plan, region, np.where(member, "yes", "no")
    frame["label"] = np.where(score + rng.normal(0, 0.5, rows) > 0.3, "churn", "stay")
    return frame


def ingest_in_child(csv: Path, work: Path) -> dict:
    """Ingest ``csv`` in a fresh Python process; its wall time and its own peak RSS."""
    code = f"""
import json, resource, sys, time
sys.path.insert(0, {str(PROJECT)!r})
from pathlib import Path
from tasks.data.config import DataConfig
from tasks.data.tabular import ingest_table
started = time.perf_counter()
snapshot = ingest_table(Path({str(csv)!r}), DataConfig(source={str(csv)!r}), Path({str(work)!r}))
seconds = time.perf_counter() - started
print(json.dumps({{"seconds": seconds, "rows": snapshot.num_examples, "quarantined": len(snapshot.quarantined),
    "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "directory": str(snapshot.directory)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_embedded(work: Path) -> dict:
    """The build flow on the embedded table with its defaults; the release's manifest."""
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    subprocess.run(
        [sys.executable, "-m", "flows.build", "--config", str(PROJECT / "configs" / "tabular.json"),
         "--set", f"work_dir={work / 'work'}", "--set", f"store.uri=file://{work / 'registry'}"],
        cwd=PROJECT, env=env, check=True, capture_output=True,
    )
    newest = max((work / "registry" / "models").glob("*/*/manifest.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text())


def embedded_tables(manifest: dict) -> None:
    variants = manifest["variants"]
    eager = next(v for v in variants if v["runtime"] == "torch" and v["stage"] == "trained" and v["precision"] == "fp32")
    served = next(v for v in variants if v["name"] == manifest["served"]["name"])
    batch_n = manifest["latency"]["batch_n"]
    rows = [
        {
            "model": f"MLP, served ({served['name']})", "accuracy": round(served["accuracy"], 4),
            "macro_f1": round(served["macro_f1"], 4), "p50_ms_b1": round(served["p50_ms_b1"], 4),
            f"p50_ms_b{batch_n}": round(served["p50_ms_bn"], 4),
        },
        {
            "model": "MLP, trained (torch eager)", "accuracy": round(eager["accuracy"], 4), "macro_f1": round(eager["macro_f1"], 4),
            "p50_ms_b1": round(eager["p50_ms_b1"], 4), f"p50_ms_b{batch_n}": round(eager["p50_ms_bn"], 4),
        },
    ] + [
        {
            "model": r["name"], "accuracy": round(r["accuracy"], 4), "macro_f1": round(r["macro_f1"], 4),
            "p50_ms_b1": round(r["p50_ms_b1"], 4), f"p50_ms_b{batch_n}": round(r["p50_ms_bn"], 4),
        }
        for r in manifest["references"]
    ]
    test_rows = sum(manifest["dataset"]["counts"]["test"].values())
    print(f"\n## Embedded table: breast cancer, {test_rows} test rows (one row is {100 / test_rows:.2f} pp)\n")
    print(text_table(rows))
    trees = manifest["references"][0]
    gap = (served["accuracy"] - trees["accuracy"]) * 100
    speedup = eager["p50_ms_b1"] / served["p50_ms_b1"]
    print(f"\nMLP (served) vs HistGradientBoosting: {gap:+.2f} pp (goal: no worse than -2 pp) -> {'met' if gap >= -2 else 'missed'}")
    print(f"served vs PyTorch eager at batch 1: {speedup:.1f}x (goal 5x) -> {'met' if speedup >= 5 else 'missed'}")
    print("\n## Every variant vs PyTorch eager\n")
    print(text_table([
        {
            "variant": v["name"], "accuracy": round(v["accuracy"], 4), "size_kb": round(v["size_bytes"] / 1024, 1),
            "p50_ms_b1": round(v["p50_ms_b1"], 4), "x_eager_b1": round(eager["p50_ms_b1"] / v["p50_ms_b1"], 1),
            f"p50_ms_b{batch_n}": round(v["p50_ms_bn"], 4), f"x_eager_b{batch_n}": round(eager["p50_ms_bn"] / v["p50_ms_bn"], 1),
            "served": v["name"] == served["name"],
        }
        for v in variants
    ]))


def million_rows(rows: int, work: Path, registry: Path | None) -> None:
    csv = work / f"synthetic-{rows}.csv"
    if not csv.exists():
        started = time.perf_counter()
        synthetic(rows).to_csv(csv, index=False)
        print(f"\nwrote {csv} ({csv.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - started:.1f} s")
    measured = []
    for size in sorted({min(rows, 100_000), rows}):
        part = csv if size == rows else work / f"synthetic-{size}.csv"
        if not part.exists():
            synthetic(size).to_csv(part, index=False)
        result = ingest_in_child(part, work / f"snapshots-{size}")
        measured.append({
            "rows": size, "seconds": round(result["seconds"], 1), "rows_per_s": round(size / result["seconds"]),
            "peak_rss_mib": round(result["peak_mib"]), "quarantined": result["quarantined"],
        })
    print(f"\n## Ingestion of a synthetic table ({csv.stat().st_size / 2**20:.0f} MiB CSV at {rows} rows), fresh process each\n")
    print(text_table(measured))
    big = measured[-1]
    print(f"\ningest {big['rows']} rows: {big['seconds']} s (goal < 60 s) -> {'met' if big['seconds'] < 60 else 'missed'}; "
          f"peak RSS {big['peak_rss_mib']} MiB at {big['rows']} rows vs {measured[0]['peak_rss_mib']} MiB at {measured[0]['rows']}")
    if registry is not None:
        monitor_whole_table(csv, rows, registry, work)


def monitor_whole_table(csv: Path, rows: int, registry: Path, work: Path) -> None:
    """A build of a 20k-row sample, then the whole table as one window: monitoring rows and the verdict, timed."""
    from tasks.monitor.config import DriftConfig
    from tasks.monitor.drift import detect_drift, reference_rows
    from tasks.registry.config import StoreConfig
    from tasks.registry.serving import fetch_production
    from tasks.registry.store import open_store
    from tasks.score.features import load_projection
    from tasks.score.inputs import InputFile
    from tasks.score.scoring import score_files

    sample = work / "synthetic-20000.csv"
    synthetic(20_000, seed=1).to_csv(sample, index=False)
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    subprocess.run(
        [sys.executable, "-m", "flows.build", "--set", f"data.source={sample}", "--set", "model_name=churn",
         "--set", f"work_dir={work / 'work-churn'}", "--set", f"store.uri=file://{registry}", "--set", "compress.plan=[\"int8\"]"],
        cwd=PROJECT, env=env, check=True, capture_output=True,
    )
    production = fetch_production(open_store(StoreConfig(uri=f"file://{registry}")), "churn", work / "work-churn")
    manifest, monitoring = production.manifest, production.manifest.monitoring
    backend = production.open()
    projection = load_projection(production.release_dir / monitoring.projection)
    reference = reference_rows(pd.read_parquet(production.release_dir / monitoring.reference), monitoring.reference_splits)
    started = time.perf_counter()
    scored = score_files([InputFile(name=csv.name, path=csv, sha256="-")], lambda _: backend, manifest.input, manifest.classes, projection, 4096)
    scoring = time.perf_counter() - started
    started = time.perf_counter()
    result = detect_drift(
        reference, scored.features, monitoring.numerical_columns, monitoring.categorical_columns, DriftConfig(),
        monitoring.calibration, num_classes=len(manifest.classes), optional=manifest.input.optional_statistics,
    )
    verdict = time.perf_counter() - started
    print(f"\n## Monitoring {rows} rows as one window (release {manifest.served.name}, built on a 20k-row sample)\n")
    print(text_table([
        {"step": "read + encode + infer + monitoring rows", "seconds": round(scoring, 1), "rows_per_s": round(len(scored.features) / scoring)},
        {"step": "drift verdict (seeded samples of the window)", "seconds": round(verdict, 1), "rows_per_s": round(len(scored.features) / verdict)},
    ]))
    print(f"\nverdict on the same distribution: {result.headline()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-build", action="store_true", help="only the synthetic table's ingestion")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="lepton-tabular-"))
    work.mkdir(parents=True, exist_ok=True)
    host = measuring_host()
    print(f"CPU: {host.cpu}, {host.logical_cpus} logical CPUs, flags: {', '.join(host.flags) or 'no AVX2'}")
    print(f"this process's peak RSS so far: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if not args.skip_build:
        embedded_tables(build_embedded(work / "embedded"))
    million_rows(args.rows, work, None if args.skip_build else work / "registry-churn")


if __name__ == "__main__":
    main()
