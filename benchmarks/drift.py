"""Drift monitoring on 10k, 100k and 1M logged rows: our monitor vs a plain Evidently Report on the full frames.

Usage (after `make demo`):
    .venv/bin/python benchmarks/drift.py [--store file://.lepton/registry] [--model digits-classifier]
        [--sizes 10000 100000 1000000] [--shift invert]

Data: the production release's monitoring reference, and "logged" windows made by resampling
real feature rows: clean windows resample the reference rows; shifted windows resample the
features of the release's test images shifted (default: inverted) and scored by the served
artifact. The baseline is a plain Evidently Report (DataDriftPreset) over the whole window;
ours (`tasks.monitor.drift.detect_drift` + `write_drift_report`) runs two-sample tests (KS per
number, chi-square on the 2 x K table of the predicted class, MMD on the embedding) on a seeded
sample of at most 5,000 rows (1,000 for MMD), then Evidently's per-column report of the same tests.
The baseline's tests run at the same per-column level (its categorical test is goodness of fit). Both write the HTML report. Each cell runs in a
fresh process (its peak RSS is its own) with Evidently imported before the clock starts.
Reading the logs from the store is the same for both and not timed. Not part of the test run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def prepare(args: argparse.Namespace, work: Path) -> tuple[Path, Path, Path]:
    """Reference rows, shifted rows (real features of shifted test images) and the columns, as files."""
    import pandas as pd

    from tasks.data.shift import write_shifted
    from tasks.registry.config import StoreConfig
    from tasks.registry.serving import fetch_production, release_split
    from tasks.registry.store import open_store
    from tasks.score.features import load_projection
    from tasks.score.inputs import local_inputs
    from tasks.score.scoring import score_files

    store = open_store(StoreConfig(uri=args.store))
    production = fetch_production(store, args.model, work)
    manifest, monitoring = production.manifest, production.manifest.monitoring
    if monitoring is None:
        raise SystemExit(f"{args.model} {production.version} has no monitoring reference (built before monitoring); build again")
    test = [f.path for f in release_split(store, production, work / "cache")]
    write_shifted(test, work / "shifted-images", args.shift, seed=0)
    projection = load_projection(production.release_dir / monitoring.projection)
    scored = score_files(local_inputs(work / "shifted-images"), lambda threads: production.open(threads=threads), manifest.input, manifest.classes, projection)
    pd.read_parquet(production.release_dir / monitoring.reference).to_parquet(work / "reference.parquet")
    scored.features.to_parquet(work / "shifted.parquet")
    (work / "columns.json").write_text(json.dumps([monitoring.numerical_columns, monitoring.categorical_columns]))
    return work / "reference.parquet", work / "shifted.parquet", work / "columns.json"


def plain_evidently(reference, current, numerical: list[str], categorical: list[str], config, html: Path) -> dict:
    """What a user writes without us: Evidently's DataDriftPreset over the whole window, same tests and thresholds."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    # Evidently's own per-column tests (KS, chi-square goodness of fit) at the level our run gives each column.
    level = config.column_level(len(numerical + categorical))
    preset = DataDriftPreset(
        columns=numerical + categorical, drift_share=0.3, num_method="ks", cat_method="chisquare",
        num_threshold=level, cat_threshold=level,
    )
    snapshot = Report([preset], include_tests=True).run(
        current_data=Dataset.from_pandas(current, data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition),
    )
    snapshot.save_html(str(html))
    result = snapshot.dict()
    drifted = {
        t["metric_config"]["params"]["column"]
        for t in result["tests"]
        if t["metric_config"]["params"]["type"].endswith("ValueDrift") and str(t["status"]).endswith("FAIL")
    }
    return {"status": "drift" if drifted else "no drift", "drifted": len(drifted)}


def cell(work: Path, method: str, rows: int, scenario: str) -> dict:
    """Run one monitor on one window in this process; return its time, peak RSS and verdict."""
    import warnings

    importlib.import_module("evidently.presets")  # before the clock: a monitor process pays it once
    import numpy as np
    import pandas as pd

    from tasks.monitor.config import DriftConfig
    from tasks.monitor.drift import detect_drift, write_drift_report

    warnings.simplefilter("ignore", RuntimeWarning)
    numerical, categorical = json.loads((work / "columns.json").read_text())
    reference = pd.read_parquet(work / "reference.parquet")
    pool = reference if scenario == "clean" else pd.read_parquet(work / "shifted.parquet")
    rng = np.random.default_rng(rows)
    current = pool.iloc[rng.integers(0, len(pool), size=rows)].reset_index(drop=True)
    config = DriftConfig(min_rows=10)
    html = work / f"{method}-{rows}-{scenario}.html"
    start = time.perf_counter()
    if method == "lepton":
        result = detect_drift(reference, current, numerical, categorical, config)
        write_drift_report(reference, current, numerical, categorical, result, "drift", html, config)
        verdict = {"status": result.status, "drifted": len(result.drifted_columns)}
    else:
        verdict = plain_evidently(reference, current, numerical, categorical, config, html)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **verdict,
        "html_mb": html.stat().st_size / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="file://.lepton/registry")
    parser.add_argument("--model", default="digits-classifier")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--shift", default="invert")
    parser.add_argument("--cell", nargs=4, metavar=("WORK", "METHOD", "ROWS", "SCENARIO"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        work, method, rows, scenario = args.cell
        print(json.dumps(cell(Path(work), method, int(rows), scenario)))
        return

    from tasks.tables import text_table

    work = Path(tempfile.mkdtemp(prefix="lepton-drift-bench-"))
    prepare(args, work)
    table = []
    for rows in args.sizes:
        for scenario in ("clean", args.shift):
            out = {}
            for method in ("evidently-full", "lepton"):
                done = subprocess.run(
                    [sys.executable, __file__, "--cell", str(work), method, str(rows), scenario],
                    cwd=PROJECT, capture_output=True, text=True, check=True,
                )
                out[method] = json.loads(done.stdout.strip().splitlines()[-1])
            full, ours = out["evidently-full"], out["lepton"]
            table.append(
                {
                    "rows": rows,
                    "window": scenario,
                    "evidently_s": round(full["seconds"], 2),
                    "lepton_s": round(ours["seconds"], 2),
                    "speedup": round(full["seconds"] / ours["seconds"], 1),
                    "evidently_rss_mb": round(full["peak_rss_mb"]),
                    "lepton_rss_mb": round(ours["peak_rss_mb"]),
                    "evidently_verdict": f"{full['status']} ({full['drifted']} cols)",
                    "lepton_verdict": f"{ours['status']} ({ours['drifted']} cols)",
                    "same_verdict": full["status"] == ours["status"],
                    "html_mb": f"{full['html_mb']:.1f} / {ours['html_mb']:.1f}",
                }
            )
            print(text_table(table[-1:]) if len(table) == 1 else text_table(table[-1:]).splitlines()[-1], flush=True)
    print()
    print(text_table(table))


if __name__ == "__main__":
    main()
