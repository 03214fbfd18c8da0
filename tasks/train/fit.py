"""Fit a classifier on a snapshot with Lightning; keep the best checkpoint and a plain state_dict."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader

from tasks.data.snapshot import DatasetSnapshot
from tasks.train.config import TrainConfig
from tasks.train.datamodule import SnapshotDataModule
from tasks.train.launch import fit_in_processes, runs_in_processes
from tasks.train.models import build_model, resolve_model
from tasks.train.module import ClassifierModule
from tasks.train.trained import EpochRecord, FitOutcome, TrainedModel


class _History(Callback):
    """Collects per-epoch metrics after validation, for the epoch table; kept in checkpoints, so a resumed fit has them all."""

    def __init__(self, on_epoch: Callable[[EpochRecord], None] | None = None) -> None:
        self.records: list[EpochRecord] = []
        self.on_epoch = on_epoch

    def state_dict(self) -> dict[str, list[dict[str, float]]]:
        return {"records": [r.model_dump() for r in self.records]}

    def load_state_dict(self, state_dict: dict[str, list[dict[str, float]]]) -> None:
        self.records = [EpochRecord.model_validate(r) for r in state_dict.get("records", [])]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        m = trainer.callback_metrics
        if "val_loss" not in m or "train_loss" not in m:
            return
        self.records.append(
            EpochRecord(
                epoch=trainer.current_epoch,
                train_loss=float(m["train_loss"]),
                train_acc=float(m["train_acc"]),
                val_loss=float(m["val_loss"]),
                val_acc=float(m["val_acc"]),
            )
        )
        if self.on_epoch:
            self.on_epoch(self.records[-1])


class _ExactResume(Callback):
    """What a resumed fit needs besides Lightning's own checkpoint to go on as the uninterrupted one would:
    the random states (dropout, augmentation) and whether early stopping had already decided to stop.

    Saved with every checkpoint (after the epoch's last callback but the checkpoint's own) and put back
    when training starts again, after the sanity check has drawn what it draws.
    """

    KEY = "lepton_resume"

    def __init__(self) -> None:
        self._pending: dict | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        checkpoint[self.KEY] = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, keys.tolist(), position, has_gauss, gauss],
            "python": random.getstate(),
            "should_stop": bool(trainer.should_stop),
        }

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._pending = checkpoint.get(self.KEY)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._pending = self._pending, None
        if not state:
            return
        torch.set_rng_state(state["torch"])
        kind, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss))
        random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
        trainer.should_stop = state["should_stop"]


class _ResumableData(SnapshotDataModule):
    """The snapshot's data module, with the training loader's shuffling state kept in checkpoints.

    Lightning restores it before it draws the first batch of the resumed epoch, so that epoch sees
    the batches the uninterrupted fit would have.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._train_loader: DataLoader | None = None
        self._generator_state: torch.Tensor | None = None

    def train_dataloader(self) -> DataLoader:
        loader = super().train_dataloader()
        if self._generator_state is not None and getattr(loader, "generator", None) is not None:
            loader.generator.set_state(self._generator_state)
        self._train_loader = loader
        return loader

    def state_dict(self) -> dict[str, torch.Tensor]:
        generator = getattr(self._train_loader, "generator", None)
        return {"train_generator": generator.get_state()} if generator is not None else {}

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        self._generator_state = state_dict.get("train_generator")


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hide Lightning's start-up banner (accelerator lines, tips) for the duration of a fit."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # Lightning 2.6 on torch 2.14 warns about its own use of a deprecated torch API.
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
            # Distillation keeps its teacher in eval mode on purpose.
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
            # A resumed fit writes on into its own checkpoint folder.
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            yield
    finally:
        logger.setLevel(level)


def fit_module(
    module: ClassifierModule,
    snapshot: DatasetSnapshot,
    config: TrainConfig,
    out_dir: Path,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    resume: Path | None = None,
) -> FitOutcome:
    """Fit ``module`` on the snapshot, restore the epoch with the lowest validation loss, and test it.

    The one Lightning loop of the project: training, distillation and the
    fine-tune after pruning all run through it. ``module`` ends up holding the
    best weights. Seeded and deterministic on CPU; ``resume`` (else
    ``config.resume_from``) continues from a Lightning checkpoint (loaded with
    ``weights_only``). A checkpoint of this loop is written after every epoch
    (``checkpoints/last.ckpt``) with the random states and the shuffling, so a
    fit resumed from it ends with the weights the uninterrupted one would have.
    """
    if runs_in_processes(config):
        return fit_in_processes(module, snapshot, config, out_dir, on_epoch, resume)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = resume or config.resume_from
    if start is None and _first_process():
        # A fit from the first epoch: checkpoints an earlier, interrupted fit left here are not its own.
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    images = snapshot.input.kind == "image"
    data = _ResumableData(
        snapshot, config.batch_size, seed=config.seed, augment=config.augment, channels_last=config.channels_last and images
    )
    if config.channels_last and images:
        module.model.to(memory_format=torch.channels_last)
    checkpoint = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best-{epoch:03d}", monitor="val_loss", mode="min")
    # What a resumed fit starts from: every epoch's end, overwritten each time. (Lightning's own save_last
    # follows the best checkpoint, so it would lose every epoch since the last improvement.) After the
    # best checkpoint in the list, so it holds that callback's state of the same epoch.
    last = ModelCheckpoint(
        dirpath=out_dir / "checkpoints", filename="last", monitor=None, save_top_k=1, save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    history = _History(on_epoch)
    with _quiet_lightning():
        trainer = L.Trainer(
            max_epochs=config.max_epochs,
            accelerator=config.accelerator,
            devices=config.devices,
            num_nodes=config.num_nodes,
            strategy=config.strategy,
            precision=config.precision,
            deterministic=True,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_train_batches=config.max_batches_per_epoch or 1.0,  # an int is a count, 1.0 all batches
            default_root_dir=out_dir,
            callbacks=[
                checkpoint,
                last,
                EarlyStopping(monitor="val_loss", mode="min", patience=config.early_stopping_patience),
                history,
                _ExactResume(),
            ],
        )
        # weights_only: a checkpoint to resume from is tensors and plain containers, never code to run.
        trainer.fit(
            module,
            datamodule=data,
            ckpt_path=str(start) if start else None,
            weights_only=True,
        )
        best_path = Path(checkpoint.best_model_path)
        best = torch.load(best_path, map_location="cpu", weights_only=True)
        module.load_state_dict(best["state_dict"])
        test_metrics = trainer.test(module, datamodule=data, verbose=False)[0]
    module.model.to(memory_format=torch.contiguous_format)  # what export and the runtimes take
    if trainer.is_global_zero:
        (out_dir / "history.json").write_text(json.dumps([r.model_dump() for r in history.records], indent=2))
    best_val = min(history.records, key=lambda r: r.val_loss) if history.records else None
    return FitOutcome(
        checkpoint_path=best_path,
        history=history.records,
        best_epoch=int(best.get("epoch", 0)),
        val_acc=best_val.val_acc if best_val else float("nan"),
        test_acc=float(test_metrics["test_acc"]),
        processes=trainer.world_size,
    )


def _first_process() -> bool:
    """Whether this is a fit's first (or only) process: Lightning's DDP sets the ranks of the others."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def trained_model(
    model: nn.Module, model_name: str, snapshot: DatasetSnapshot, outcome: FitOutcome, out_dir: Path
) -> TrainedModel:
    """Write ``model``'s weights as a plain state_dict and describe them as a ``TrainedModel``."""
    state_dict_path = out_dir / "model_state.pt"
    torch.save(model.state_dict(), state_dict_path)
    return TrainedModel(
        model_name=model_name,
        classes=snapshot.classes,
        input=snapshot.input,
        checkpoint_path=outcome.checkpoint_path,
        state_dict_path=state_dict_path,
        history=outcome.history,
        best_epoch=outcome.best_epoch,
        val_acc=outcome.val_acc,
        test_acc=outcome.test_acc,
        dataset_version=snapshot.version,
    )


def fit_classifier(
    snapshot: DatasetSnapshot,
    config: TrainConfig,
    out_dir: Path,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    resume: Path | None = None,
) -> TrainedModel:
    """Train ``config.model`` from the zoo, select the best epoch by validation loss, test it, write its weights.

    Seeded and deterministic on CPU: the same snapshot and config give the
    same weights, also when resumed from one of its own checkpoints (``resume``).
    ``config.resume_from`` continues from a Lightning checkpoint.

    Returns:
        Paths of the best checkpoint and of a plain ``state_dict`` (what export
        loads), the per-epoch history and validation/test accuracy.
    """
    L.seed_everything(config.seed, workers=True, verbose=False)
    name = resolve_model(config.model, snapshot.input)
    model = build_model(name, len(snapshot.classes), snapshot.input, config.weights_path)
    module = ClassifierModule(model, config.learning_rate, config.weight_decay, config.max_epochs)
    outcome = fit_module(module, snapshot, config, out_dir, on_epoch, resume)
    return trained_model(module.model, name, snapshot, outcome, out_dir)
