"""The training parts of benchmarks/scale.py: engines' throughput, and what augmentation buys on shifted copies.

Each throughput runs in a fresh process (``--throughput JSON``): the same model (small_cnn, the same
initial weights), the same snapshot, the same loader (``SplitDataset``, batch 64, shuffled, the same
order) and AdamW; the first 10 steps are warm-up, the next ``STEPS`` are timed one by one, each from
the end of one optimizer step to the end of the next (the batch's loading included). The rate is
``BATCH / median step``: on a shared machine a neighbour's burst lengthens some steps, and the median
leaves those out where a total would not (the total's rate is reported too). Lightning's DDP
relaunches this script for its second rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

WARMUP, STEPS, BATCH = 10, 60, 64


def _snapshot(folder: Path, snaps: Path):  # noqa: ANN202 - a DatasetSnapshot
    from tasks.data.config import DataConfig
    from tasks.data.imagefolder import ingest_imagefolder

    return ingest_imagefolder(folder, DataConfig(source=str(folder), image_size=64, channels=3, workers=2), snaps)


def _rates(ends: list[float], images_per_step: int) -> dict:
    """Images/s from the ends of the warm-up's last step and the timed steps: by the median step, and overall."""
    steps = np.diff(ends)
    return {
        "images_per_s": images_per_step / float(np.median(steps)),
        "overall_images_per_s": images_per_step * len(steps) / float(steps.sum()),
        "median_step_ms": 1000 * float(np.median(steps)),
    }


def _model(name: str, snapshot):  # noqa: ANN001, ANN202 - a DatasetSnapshot; an nn.Module
    """small_cnn, or ``linear``: one linear layer, a model with almost no work, so a step's time is the loop's own."""
    from torch import nn

    from tasks.train.models import build_model

    if name == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(snapshot.input.shape)), len(snapshot.classes)))
    return build_model(name, len(snapshot.classes), snapshot.input)


def plain_loop(snapshot, model_name: str = "small_cnn") -> dict:  # noqa: ANN001
    """Images/s of a hand-written PyTorch loop over the same loader."""
    import lightning as L
    import torch
    from torch.nn import functional as F

    from tasks.train.datamodule import SnapshotDataModule

    L.seed_everything(0, verbose=False)  # as the Trainer's run: the same initial weights
    data = SnapshotDataModule(snapshot, BATCH)
    data.setup()
    model = _model(model_name, snapshot).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    def endless():  # epoch after epoch, as the Trainer goes on
        while True:
            yield from data.train_dataloader()

    batches = endless()
    ends = []
    for step in range(WARMUP + STEPS):
        x, y = next(batches)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= WARMUP - 1:
            ends.append(time.perf_counter())
    return _rates(ends, BATCH)


def lightning_loop(snapshot, devices: int, precision: str, channels_last: bool, model_name: str = "small_cnn") -> dict | None:  # noqa: ANN001
    """Images/s of the project's LightningModule and data module under the Trainer (None on ranks other than 0)."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import Callback

    from tasks.train.datamodule import SnapshotDataModule
    from tasks.train.module import ClassifierModule

    class Timer(Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        # By optimizer step (epochs roll over as the plain loop's do).
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            if trainer.global_step >= WARMUP:
                self.ends.append(time.perf_counter())

    L.seed_everything(0, verbose=False)
    model = _model(model_name, snapshot)
    data = SnapshotDataModule(snapshot, BATCH, channels_last=channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    timer = Timer()
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", precision=precision,
        max_steps=WARMUP + STEPS, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )
    trainer.fit(ClassifierModule(model, 3e-3, 1e-4, 1), datamodule=data)
    if trainer.global_rank != 0:
        return None
    return _rates(timer.ends, BATCH * devices)


def throughput_child(spec: dict) -> None:
    """``--throughput``: one measurement in this process; rank 0 prints its JSON."""
    from tasks.data.snapshot import DatasetSnapshot

    snapshot = DatasetSnapshot.model_validate(spec["snapshot"])
    if spec["engine"] == "plain":
        result = plain_loop(snapshot, spec.get("model", "small_cnn"))
    else:
        result = lightning_loop(snapshot, spec["devices"], spec["precision"], spec["channels_last"], spec.get("model", "small_cnn"))
    if result is not None:
        print(json.dumps(result), flush=True)


def _measure(name: str, spec: dict, snapshot) -> dict:  # noqa: ANN001 - a DatasetSnapshot
    """One engine's measurement in a fresh process (``--throughput``)."""
    spec = {**spec, "snapshot": snapshot.model_dump(mode="json")}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--throughput", json.dumps(spec)],
        cwd=PROJECT, capture_output=True, text=True, timeout=1800,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
    )
    if out.returncode:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def train_section(work: Path, write_folder: Callable[..., Path], rounds: int = 5) -> list[dict]:
    folder = write_folder(work / "images-10000", 10_000)
    snapshot = _snapshot(folder, work / "snaps-train")
    engines = [
        ("plain PyTorch loop", {"engine": "plain"}),
        ("Lightning fp32", {"engine": "lightning", "devices": 1, "precision": "32-true", "channels_last": False}),
        ("Lightning bf16-mixed", {"engine": "lightning", "devices": 1, "precision": "bf16-mixed", "channels_last": False}),
        ("Lightning fp32 channels_last", {"engine": "lightning", "devices": 1, "precision": "32-true", "channels_last": True}),
        ("Lightning bf16-mixed channels_last", {"engine": "lightning", "devices": 1, "precision": "bf16-mixed", "channels_last": True}),
        ("Lightning DDP 2 processes (gloo), fp32", {"engine": "lightning", "devices": 2, "precision": "32-true", "channels_last": False}),
    ]
    # Engines take turns, round after round, in the opposite order every other round; each engine is
    # compared with the plain loop of its own round. This machine's speed drifts by tens of per cent
    # over minutes (neighbours on the host); a ratio within a round cancels most of that drift.
    rates: dict[str, list[float]] = {name: [] for name, _ in engines}
    for round_ in range(rounds):
        for name, spec in engines if round_ % 2 == 0 else engines[::-1]:
            measured = _measure(name, spec, snapshot)
            rates[name].append(measured["images_per_s"])
            print(f"  round {round_ + 1}, {name}: {rates[name][-1]:.0f} images/s by the median step, "
                  f"{measured['overall_images_per_s']:.0f} overall", flush=True)
    plain = np.asarray(rates[engines[0][0]])
    rows = []
    for name, r in rates.items():
        ratios = np.asarray(r) / plain
        rows.append({
            "engine": name, "images_per_s (median)": round(float(np.median(r))), "min": round(min(r)), "max": round(max(r)),
            "vs_plain (median of rounds)": round(float(np.median(ratios)), 3),
            "vs_plain range": f"{ratios.min():.2f}-{ratios.max():.2f}",
        })
    return rows


def trainer_cost_section(work: Path, write_folder: Callable[..., Path], rounds: int = 5) -> list[dict]:
    """The Trainer's own time per step, apart from the model's: Lightning minus the plain loop on a model with
    almost no work (one linear layer), against a small_cnn step of the plain loop in the same round.

    A difference of milliseconds does not drown in the machine's drift the way a 5 % difference of
    two 100 ms steps does.
    """
    snapshot = _snapshot(write_folder(work / "images-10000", 10_000), work / "snaps-train")
    lightning = {"engine": "lightning", "devices": 1, "precision": "32-true", "channels_last": False}
    engines = [
        ("plain loop, linear model", {"engine": "plain", "model": "linear"}),
        ("Lightning, linear model", {**lightning, "model": "linear"}),
        ("plain loop, small_cnn", {"engine": "plain"}),
    ]
    steps: dict[str, list[float]] = {name: [] for name, _ in engines}
    for round_ in range(rounds):
        for name, spec in engines if round_ % 2 == 0 else engines[::-1]:
            steps[name].append(_measure(name, spec, snapshot)["median_step_ms"])
            print(f"  round {round_ + 1}, {name}: {steps[name][-1]:.2f} ms per step", flush=True)
    plain, light, cnn = (np.asarray(steps[name]) for name, _ in engines)
    cost = light - plain
    share = cost / cnn
    return [
        {"measure": "median step, plain loop, linear model (ms)", "median of rounds": round(float(np.median(plain)), 2), "range": f"{plain.min():.2f}-{plain.max():.2f}"},
        {"measure": "median step, Lightning, linear model (ms)", "median of rounds": round(float(np.median(light)), 2), "range": f"{light.min():.2f}-{light.max():.2f}"},
        {"measure": "the Trainer's own time per step (ms)", "median of rounds": round(float(np.median(cost)), 2), "range": f"{cost.min():.2f}-{cost.max():.2f}"},
        {"measure": "median step, plain loop, small_cnn (ms)", "median of rounds": round(float(np.median(cnn)), 1), "range": f"{cnn.min():.1f}-{cnn.max():.1f}"},
        {"measure": "the Trainer's own time, share of a small_cnn step", "median of rounds": f"{100 * float(np.median(share)):.1f} %", "range": f"{100 * share.min():.1f}-{100 * share.max():.1f} %"},
    ]


def _shifted(raw: np.ndarray, kind: str) -> np.ndarray:
    """The test images rotated by 15 degrees (about their centre, black corners) or 40 % brighter (clipped)."""
    from PIL import Image

    if kind == "as is":
        return raw
    if kind == "brighter":
        return np.clip(raw.astype(np.float64) * 1.4, 0, 255).astype(np.uint8)
    return np.stack([
        np.asarray(Image.fromarray(img[0]).rotate(15, resample=Image.Resampling.BILINEAR))[None] for img in raw
    ])


AUGMENT = {"rotate_degrees": 15.0, "shear_degrees": 8.0, "zoom": 0.1, "shift": 0.08, "brightness": 0.3, "contrast": 0.2}


def augment_section(work: Path, seeds: tuple[int, ...] = (0, 1, 2)) -> list[dict]:
    """Digits (embedded) trained with and without ``AUGMENT``, tested as they are and on shifted copies."""
    from tasks.data.config import DataConfig
    from tasks.data.digits import write_digits_imagefolder
    from tasks.data.imagefolder import ingest_imagefolder
    from tasks.export.backends import TorchBackend
    from tasks.export.measure import accuracy
    from tasks.train.config import TrainConfig
    from tasks.train.fit import fit_classifier

    folder = write_digits_imagefolder(work / "digits")
    snapshot = ingest_imagefolder(folder, DataConfig(), work / "snaps-digits")
    raw, labels = snapshot.arrays("test")
    raw = np.asarray(raw)
    shifts = ("as is", "rotated 15 degrees", "40 % brighter")
    copies = {s: snapshot.input.to_model_input(_shifted(raw, "rotated" if s.startswith("rot") else "brighter" if "bright" in s else s))
              for s in shifts}
    results: dict[str, dict[str, list[float]]] = {}
    for name, augment in (("no augmentation", {}), ("augmented", AUGMENT)):
        for seed in seeds:
            config = TrainConfig(seed=seed, augment=augment)
            trained = fit_classifier(snapshot, config, work / f"augment-{name.replace(' ', '-')}-{seed}")
            backend = TorchBackend(trained.load())
            for shift, inputs in copies.items():
                results.setdefault(name, {}).setdefault(shift, []).append(accuracy(backend, inputs, labels))
            print(f"  {name}, seed {seed}: " + ", ".join(f"{s} {results[name][s][-1]:.3f}" for s in shifts), flush=True)
    print(f"  augment settings: {json.dumps(AUGMENT)}; {len(seeds)} seeds, test split of {len(labels)} images", flush=True)
    return [
        {"training": name, **{f"acc {s}": f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" for s, v in per_shift.items()}}
        for name, per_shift in results.items()
    ]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--throughput":
        throughput_child(json.loads(sys.argv[2]))
    else:
        raise SystemExit("run benchmarks/scale.py; this module is its training part")
