"""LightningModule for classification."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from tasks.train.models import build_model


class ClassifierModule(L.LightningModule):
    """Cross-entropy classifier over a model-zoo architecture, with AdamW and cosine decay."""

    def __init__(
        self,
        model_name: str,
        num_classes: int,
        in_channels: int,
        learning_rate: float,
        weight_decay: float,
        max_epochs: int,
        weights_path: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model: nn.Module = build_model(model_name, num_classes, in_channels, weights_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        self.log(f"{stage}_loss", loss, on_epoch=True, on_step=False, prog_bar=stage != "train")
        self.log(f"{stage}_acc", acc, on_epoch=True, on_step=False, prog_bar=stage != "train")
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self):  # noqa: ANN201 - Lightning's own return type
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.hparams.max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
