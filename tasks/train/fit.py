"""Fit a classifier on a snapshot with Lightning; keep the best checkpoint and a plain state_dict."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pydantic import BaseModel
from torch import nn

from tasks.data.snapshot import DatasetSnapshot
from tasks.train.config import TrainConfig
from tasks.train.datamodule import SnapshotDataModule
from tasks.train.models import build_model, resolve_model
from tasks.train.module import ClassifierModule
from tasks.train.trained import EpochRecord, TrainedModel


class _History(Callback):
    """Collects per-epoch metrics after validation, for the epoch table."""

    def __init__(self, on_epoch: Callable[[EpochRecord], None] | None = None) -> None:
        self.records: list[EpochRecord] = []
        self.on_epoch = on_epoch

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
            yield
    finally:
        logger.setLevel(level)


class FitOutcome(BaseModel):
    """What a fit leaves behind besides the module (which holds the best weights)."""

    checkpoint_path: Path
    history: list[EpochRecord]
    best_epoch: int
    val_acc: float
    test_acc: float


def fit_module(
    module: ClassifierModule,
    snapshot: DatasetSnapshot,
    config: TrainConfig,
    out_dir: Path,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> FitOutcome:
    """Fit ``module`` on the snapshot, restore the epoch with the lowest validation loss, and test it.

    The one Lightning loop of the project: training, distillation and the
    fine-tune after pruning all run through it. ``module`` ends up holding the
    best weights. Seeded and deterministic on CPU; ``config.resume_from``
    continues from a Lightning checkpoint (loaded with ``weights_only``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    data = SnapshotDataModule(snapshot, config.batch_size, seed=config.seed)
    checkpoint = ModelCheckpoint(
        dirpath=out_dir / "checkpoints", filename="best-{epoch:03d}", monitor="val_loss", mode="min", save_last=True
    )
    history = _History(on_epoch)
    with _quiet_lightning():
        trainer = L.Trainer(
            max_epochs=config.max_epochs,
            accelerator=config.accelerator,
            devices=config.devices,
            num_nodes=config.num_nodes,
            strategy=config.strategy,
            deterministic=True,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_train_batches=config.max_batches_per_epoch or 1.0,  # an int is a count, 1.0 all batches
            default_root_dir=out_dir,
            callbacks=[
                checkpoint,
                EarlyStopping(monitor="val_loss", mode="min", patience=config.early_stopping_patience),
                history,
            ],
        )
        # weights_only: a checkpoint to resume from is tensors and plain containers, never code to run.
        trainer.fit(
            module,
            datamodule=data,
            ckpt_path=str(config.resume_from) if config.resume_from else None,
            weights_only=True,
        )
        best_path = Path(checkpoint.best_model_path)
        best = torch.load(best_path, map_location="cpu", weights_only=True)
        module.load_state_dict(best["state_dict"])
        test_metrics = trainer.test(module, datamodule=data, verbose=False)[0]
    (out_dir / "history.json").write_text(json.dumps([r.model_dump() for r in history.records], indent=2))
    best_val = min(history.records, key=lambda r: r.val_loss) if history.records else None
    return FitOutcome(
        checkpoint_path=best_path,
        history=history.records,
        best_epoch=int(best.get("epoch", 0)),
        val_acc=best_val.val_acc if best_val else float("nan"),
        test_acc=float(test_metrics["test_acc"]),
    )


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
) -> TrainedModel:
    """Train ``config.model`` from the zoo, select the best epoch by validation loss, test it, write its weights.

    Seeded and deterministic on CPU: the same snapshot and config give the
    same weights. ``config.resume_from`` continues from a Lightning checkpoint.

    Returns:
        Paths of the best checkpoint and of a plain ``state_dict`` (what export
        loads), the per-epoch history and validation/test accuracy.
    """
    L.seed_everything(config.seed, workers=True, verbose=False)
    name = resolve_model(config.model, snapshot.input)
    model = build_model(name, len(snapshot.classes), snapshot.input, config.weights_path)
    module = ClassifierModule(model, config.learning_rate, config.weight_decay, config.max_epochs)
    outcome = fit_module(module, snapshot, config, out_dir, on_epoch)
    return trained_model(module.model, name, snapshot, outcome, out_dir)
