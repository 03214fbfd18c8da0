"""LightningModule for classification."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F


class ClassifierModule(L.LightningModule):
    """Cross-entropy classifier around any ``nn.Module``, with AdamW and cosine decay.

    Subclasses change only ``training_loss`` (distillation adds the teacher's soft targets);
    the logged metrics stay the same, so every fit shares one epoch table.
    """

    def __init__(self, model: nn.Module, learning_rate: float, weight_decay: float, max_epochs: int) -> None:
        super().__init__()
        # The architecture is the model itself (it may be pruned, so not rebuildable by name).
        self.save_hyperparameters(
            {"learning_rate": learning_rate, "weight_decay": weight_decay, "max_epochs": max_epochs}
        )
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_loss(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The objective being trained. Validation and test always report cross-entropy
        against the labels, so early stopping and the best epoch follow the task itself."""
        return F.cross_entropy(logits, y)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.training_loss(logits, x, y) if stage == "train" else F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        # Averaged over every process of a distributed fit (each sees its share of the batches).
        self.log(f"{stage}_loss", loss, on_epoch=True, on_step=False, prog_bar=stage != "train", sync_dist=True)
        self.log(f"{stage}_acc", acc, on_epoch=True, on_step=False, prog_bar=stage != "train", sync_dist=True)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self):  # noqa: ANN201 - Lightning's own return type
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.hparams.max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
