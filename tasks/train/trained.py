"""A trained model on disk, as tasks pass it on: light to import (torch only when the model is loaded)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from tasks.data.contract import InputContract

if TYPE_CHECKING:
    from torch import nn


class EpochRecord(BaseModel):
    """Loss and accuracy of one epoch."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float


class FitOutcome(BaseModel):
    """What a fit leaves behind besides the module (which holds the best weights)."""

    checkpoint_path: Path
    history: list[EpochRecord]
    best_epoch: int
    val_acc: float
    test_acc: float
    processes: int = 1  # the fit's world size: 2 for DDP over two processes


class TrainedModel(BaseModel):
    """A trained model on disk: how to rebuild it and where its weights are."""

    model_name: str
    classes: list[str]
    input: InputContract
    checkpoint_path: Path
    state_dict_path: Path
    history: list[EpochRecord]
    best_epoch: int
    val_acc: float
    test_acc: float
    dataset_version: str

    def architecture(self) -> nn.Module:
        """The model's architecture from the zoo, freshly initialised (no weights loaded)."""
        from tasks.train.models import build_model

        return build_model(self.model_name, len(self.classes), self.input)

    def load(self) -> nn.Module:
        """Rebuild the architecture and load the best weights (weights_only, nothing unpickled)."""
        import torch

        model = self.architecture()
        model.load_state_dict(torch.load(self.state_dict_path, map_location="cpu", weights_only=True))
        return model.eval()
