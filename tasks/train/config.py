"""Configuration of training."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ModelName = Literal["small_cnn", "tiny_cnn", "resnet18", "mobilenet_v3_small"]


class TrainConfig(BaseModel):
    """Model, optimiser and Lightning Trainer settings.

    ``devices``, ``num_nodes`` and ``strategy`` go to the Lightning Trainer
    unchanged, so the same config runs DDP on a cluster.
    """

    model_config = ConfigDict(extra="forbid")

    model: ModelName = Field("small_cnn", description="Architecture from the model zoo")
    weights_path: Path | None = Field(None, description="Optional local state_dict to start from; nothing is downloaded")
    max_epochs: int = Field(30, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536)
    learning_rate: float = Field(3e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    early_stopping_patience: int = Field(5, ge=1, description="Epochs without val_loss improvement before stopping")
    seed: int = Field(0, ge=0)
    accelerator: Literal["cpu", "gpu", "auto"] = "cpu"
    devices: int | Literal["auto"] = Field(1, description="Lightning devices per node")
    num_nodes: int = Field(1, ge=1)
    strategy: str = Field("auto", description="Lightning strategy, e.g. auto or ddp")
    limit_train_batches: float | int = Field(1.0, gt=0, description="Lightning's limit; shrinks epochs in tests")
    resume_from: Path | None = Field(None, description="Lightning checkpoint to resume training from")
