"""Drift sensitivity: detection and false-alarm rates of the monitor, and its label-free accuracy vs the truth.

Usage:
    .venv/bin/python benchmarks/drift_sensitivity.py [--seeds 20] [--clean-seeds 100] [--sizes-digits 200 1000]
        [--sizes-shapes 1000 5000 20000]

Two sources, each with a release the benchmark builds itself (default build plan, a temporary registry):

- digits: scikit-learn's digits; 40 % of the images (by content hash) are held out of the build
  altogether, so they are neither trained on nor in the release's reference. Windows are drawn
  from that pool (about 700 images: windows of 1,000 rows repeat images, which overstates any test).
- shapes: procedurally generated 16 x 16 shapes (circle, square, triangle, cross; random place,
  size, stroke, background and noise). Every window is new data, so 1,000 to 20,000-row windows
  say what the monitor does on fresh in-distribution traffic.

Shifts (``tasks.data.shift``): dim (60 % brightness), noise, blur, rotate (90 degrees), invert,
each applied to 5, 10, 20, 50 and 100 % of a window's rows. For each condition: the detection
rate over seeds, the served model's true accuracy on the windows, and the two label-free
estimates (binned calibration and ATC). Clean windows give the false-alarm rate with its 95 %
Clopper-Pearson interval. The time per monitor run (``detect_drift``, the verdict without the
HTML) is printed. CPU model and flags are printed first. Not part of the test run.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

SHIFT_KINDS = ("dim", "noise", "blur", "rotate", "invert")
FRACTIONS = (0.05, 0.10, 0.20, 0.50, 1.0)
SHAPES = ("circle", "square", "triangle", "cross")


def shape_image(kind: str, rng: np.random.Generator, size: int = 16) -> Image.Image:
    """One procedurally generated grey shape on a noisy background."""
    scale = 4
    canvas = Image.new("L", (size * scale, size * scale), int(rng.uniform(0, 60)))
    draw = ImageDraw.Draw(canvas)
    radius = rng.uniform(0.22, 0.4) * size * scale
    cx, cy = (rng.uniform(0.35, 0.65, size=2) * size * scale).tolist()
    ink, width = int(rng.uniform(150, 255)), int(rng.uniform(1.5, 3.5) * scale)
    if kind == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=ink, width=width)
    elif kind == "square":
        angle = rng.uniform(0, np.pi / 2)
        corners = [(cx + radius * np.cos(angle + k * np.pi / 2), cy + radius * np.sin(angle + k * np.pi / 2)) for k in range(4)]
        draw.polygon(corners, outline=ink, width=width)
    elif kind == "triangle":
        angle = rng.uniform(0, 2 * np.pi)
        corners = [(cx + radius * np.cos(angle + k * 2 * np.pi / 3), cy + radius * np.sin(angle + k * 2 * np.pi / 3)) for k in range(3)]
        draw.polygon(corners, outline=ink, width=width)
    else:
        angle = rng.uniform(0, np.pi / 2)
        for k in range(2):
            dx, dy = radius * np.cos(angle + k * np.pi / 2), radius * np.sin(angle + k * np.pi / 2)
            draw.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=ink, width=width)
    small = np.asarray(canvas.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float64)
    small += rng.normal(0.0, rng.uniform(2, 10), size=small.shape)
    return Image.fromarray(np.clip(small, 0, 255).astype(np.uint8), mode="L")


def write_shapes(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for kind in SHAPES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape_image(kind, rng).save(root / kind / f"{kind}-{seed}-{i:05d}.png")
    return root


def build_release(source: Path, work: Path, model: str):
    """Build a release of ``source`` with the default plan; return the fetched production release and its store."""
    from flows.build import build
    from flows.config import BuildConfig
    from tasks.registry.serving import fetch_production
    from tasks.registry.store import open_store

    config = BuildConfig(
        model_name=model, work_dir=work / "work", data={"source": str(source)}, store={"uri": f"file://{work / 'registry'}"},
        reason="drift sensitivity benchmark",
    )
    build(config)
    store = open_store(config.store)
    return fetch_production(store, model, work / "work"), config


class Featurizer:
    """Monitoring rows of raw images through the served artifact (the scoring stage's own functions)."""

    def __init__(self, production) -> None:
        from tasks.score.features import load_projection

        self.production = production
        self.manifest = production.manifest
        self.backend = production.open()
        self.projection = load_projection(production.release_dir / self.manifest.monitoring.projection)

    def files(self, paths: list[Path]) -> pd.DataFrame:
        from tasks.score.inputs import InputFile
        from tasks.score.scoring import score_files

        files = [InputFile(name=str(i), path=p, sha256="0" * 64) for i, p in enumerate(paths)]
        scored = score_files(files, lambda _: self.backend, self.manifest.input, self.manifest.classes, self.projection, 1024)
        assert not scored.failures, scored.failures[:3]
        return scored.features

    def arrays(self, images: list[Image.Image]) -> pd.DataFrame:
        from tasks.score.features import monitoring_features
        from tasks.score.inference import infer

        raw = np.stack([np.asarray(image, dtype=np.uint8) for image in images])[:, None]
        meta = pd.DataFrame({"original_width": [raw.shape[3]] * len(raw), "original_height": [raw.shape[2]] * len(raw)})
        logits, embeddings = infer(self.backend, self.manifest.input, raw, 1024)
        contract = self.manifest.input
        return monitoring_features(contract.statistics(raw, meta), logits, embeddings, self.projection, self.manifest.classes)


def reference_of(production) -> tuple[pd.DataFrame, list[str], list[str]]:
    from tasks.monitor.drift import reference_rows

    monitoring = production.manifest.monitoring
    frame = pd.read_parquet(production.release_dir / monitoring.reference)
    return reference_rows(frame, monitoring.reference_splits), monitoring.numerical_columns, monitoring.categorical_columns


def run_monitor(reference, window, numerical, categorical, calibration, config, num_classes: int) -> dict:
    """One monitor verdict (timed; its harm uses the default estimator), and both estimators on the same window."""
    from tasks.monitor.drift import FAMILIAR_QUANTILE, detect_drift
    from tasks.monitor.estimate import estimate_accuracy, familiar_rows

    start = time.perf_counter()
    result = detect_drift(reference, window, numerical, categorical, config, calibration, num_classes=num_classes)
    seconds = time.perf_counter() - start
    embedding = [c for c in numerical if c.startswith("embedding_")]
    familiar = familiar_rows(reference[embedding].to_numpy(np.float64), window[embedding].to_numpy(np.float64), FAMILIAR_QUANTILE)
    estimates = {
        estimator: estimate_accuracy(
            calibration, window["confidence"].to_numpy(), estimator, familiar, 1.0 / num_classes, 1.0 - FAMILIAR_QUANTILE
        ).accuracy
        for estimator in ("binned", "atc")
    }
    return {
        "drift": result.drift, "seconds": seconds, **estimates, "harmful": bool(result.harmful),
        "unfamiliar": result.estimate.unfamiliar_share,
        "novel": result.novelty[0].share if result.novelty else 0.0,
        "novel_embedding": result.novelty[-1].share if result.novelty else 0.0,
    }


def summarise(rows: list[dict]) -> dict:
    from scipy.stats import binomtest

    hits = sum(r["drift"] for r in rows)
    ci = binomtest(hits, len(rows)).proportion_ci(method="exact")
    truth = float(np.mean([r["true"] for r in rows]))
    binned, atc = float(np.mean([r["binned"] for r in rows])), float(np.mean([r["atc"] for r in rows]))
    return {
        "alarms": f"{hits}/{len(rows)}",
        "rate": round(hits / len(rows), 3),
        "ci95": f"{ci.low:.3f}-{ci.high:.3f}",
        "true_acc": round(truth, 3),
        "est_binned": round(binned, 3),
        "err_binned_pp": round((binned - truth) * 100, 1),
        "est_atc": round(atc, 3),
        "err_atc_pp": round((atc - truth) * 100, 1),
        "harmful": f"{sum(r['harmful'] for r in rows)}/{len(rows)}",
        "unfamiliar": round(float(np.mean([r["unfamiliar"] for r in rows])), 3),
        "novel": round(float(np.mean([r["novel"] for r in rows])), 3),
        "novel_emb": round(float(np.mean([r["novel_embedding"] for r in rows])), 3),
        "s_per_run": round(float(np.mean([r["seconds"] for r in rows])), 3),
    }


def digits_rows(args, work: Path, table: list[dict]) -> None:
    from tasks.data.digits import write_digits_imagefolder
    from tasks.data.shift import write_shifted

    everything = write_digits_imagefolder(work / "digits-all")
    build_root, pool = work / "digits-build", []
    for path in sorted(everything.rglob("*.png")):
        held_out = int(hashlib.sha256(path.read_bytes()).hexdigest()[:8], 16) / 16**8 < 0.4
        if held_out:
            pool.append(path)
        else:
            (build_root / path.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, build_root / path.parent.name / path.name)
    production, _ = build_release(build_root, work / "digits", "bench-digits")
    featurizer = Featurizer(production)
    labels = np.array([p.parent.name for p in pool])
    versions = {}
    for kind in ("none",) + SHIFT_KINDS:
        copies = write_shifted(pool, work / "digits-shifted" / kind, kind, seed=1)
        frame = featurizer.files(copies)
        frame["correct"] = frame["predicted_class"].to_numpy() == labels
        versions[kind] = frame
    print(f"digits: release {production.version} serves {production.manifest.served.name}; pool of {len(pool)} held-out images")
    evaluate("digits", versions, args.sizes_digits, args, production, table)


def evaluate(source: str, versions: dict[str, pd.DataFrame] | None, sizes: list[int], args, production, table, fresh=None) -> None:
    from tasks.monitor.config import DriftConfig

    reference, numerical, categorical = reference_of(production)
    calibration = production.manifest.monitoring.calibration
    config = DriftConfig()
    for rows in sizes:
        conditions = [("clean", 0.0)] + [(k, f) for k in SHIFT_KINDS for f in FRACTIONS]
        if rows > 1000 and not args.all_shifts_large:
            conditions = [("clean", 0.0)] + [(k, f) for k in SHIFT_KINDS for f in (0.1, 1.0)]
        for kind, fraction in conditions:
            seeds = args.clean_seeds if kind == "clean" else args.seeds
            results = []
            for seed in range(seeds):
                rng = np.random.default_rng([rows, seed, int(fraction * 100), SHIFT_KINDS.index(kind) if kind != "clean" else 9])
                if fresh is not None:
                    window = fresh(rows, kind, fraction, rng)
                else:
                    pool = len(versions["none"])
                    pick = rng.choice(pool, size=rows, replace=rows > pool)
                    window = versions["none"].iloc[pick].reset_index(drop=True)
                    moved = int(round(fraction * rows))
                    if moved:
                        window.iloc[:moved] = versions[kind].iloc[pick[:moved]].to_numpy()
                truth = float(window["correct"].mean())
                outcome = run_monitor(reference, window, numerical, categorical, calibration, config, len(production.manifest.classes))
                results.append({**outcome, "true": truth})
            row = {"source": source, "window": rows, "shift": kind, "shifted": f"{fraction:.0%}", **summarise(results)}
            table.append(row)
            print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)


def shapes_rows(args, work: Path, table: list[dict]) -> None:
    from tasks.data.shift import shift_image

    production, _ = build_release(write_shapes(work / "shapes-build", args.shapes_per_class, seed=0), work / "shapes", "bench-shapes")
    featurizer = Featurizer(production)
    # The in-memory path must give the same rows as files scored by the scoring stage.
    check = work / "shapes-check"
    check.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(12345)
    images = [shape_image(SHAPES[i % 4], rng) for i in range(40)]
    paths = []
    for i, image in enumerate(images):
        image.save(check / f"{i:03d}.png")
        paths.append(check / f"{i:03d}.png")
    numerical = production.manifest.monitoring.numerical_columns
    np.testing.assert_allclose(featurizer.files(paths)[numerical], featurizer.arrays(images)[numerical], rtol=1e-5, atol=1e-6)
    print(f"shapes: release {production.version} serves {production.manifest.served.name}")

    def fresh(rows: int, kind: str, fraction: float, rng: np.random.Generator) -> pd.DataFrame:
        classes = rng.integers(0, len(SHAPES), size=rows)
        images = [shape_image(SHAPES[c], rng) for c in classes]
        moved = int(round(fraction * rows))
        for i in range(moved):
            images[i] = shift_image(images[i], kind, rng)
        frame = featurizer.arrays(images)
        frame["correct"] = frame["predicted_class"].to_numpy() == np.array([SHAPES[c] for c in classes])
        return frame

    evaluate("shapes", None, args.sizes_shapes, args, production, table, fresh=fresh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20, help="windows per shifted condition")
    parser.add_argument("--clean-seeds", type=int, default=100, help="clean windows per size (false-alarm rate)")
    parser.add_argument("--sizes-digits", type=int, nargs="*", default=[200, 1000])
    parser.add_argument("--sizes-shapes", type=int, nargs="*", default=[1000, 5000, 20000])
    parser.add_argument("--shapes-per-class", type=int, default=600)
    parser.add_argument("--all-shifts-large", action="store_true", help="every fraction at windows over 1,000 rows too")
    args = parser.parse_args()

    import warnings

    from tasks.export.measure import measuring_host
    from tasks.tables import text_table

    warnings.simplefilter("ignore")
    host = measuring_host()
    print(f"CPU: {host.cpu} ({host.logical_cpus} logical); flags: {', '.join(host.flags)}")
    work = Path(tempfile.mkdtemp(prefix="lepton-drift-sensitivity-"))
    table: list[dict] = []
    if args.sizes_digits:
        digits_rows(args, work, table)
    if args.sizes_shapes:
        shapes_rows(args, work, table)
    print()
    print(text_table(table))


if __name__ == "__main__":
    main()
