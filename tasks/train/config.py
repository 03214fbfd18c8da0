"""Configuration of training."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from tasks.forms import FormModel
from tasks.train.augment import AugmentConfig

ModelName = Literal["auto", "small_cnn", "tiny_cnn", "resnet18", "mobilenet_v3_small", "tabular_mlp", "tabular_mlp_small"]


class TrainConfig(FormModel):
    """Model, optimiser and Lightning Trainer settings.

    ``devices``, ``num_nodes`` and ``strategy`` go to the Lightning Trainer
    unchanged, so the same config runs DDP on a cluster.
    """

    model: ModelName = Field(
        "auto", description="Architecture from the model zoo; auto: small_cnn for images, tabular_mlp for tables"
    )
    weights_path: Path | None = Field(None, description="Optional local state_dict to start from; nothing is downloaded")
    max_epochs: int = Field(30, ge=1, le=10_000, description="Most passes over the training images (early stopping may end sooner)")
    batch_size: int = Field(64, ge=1, le=65_536, description="Images per optimiser step")
    learning_rate: float = Field(3e-3, gt=0.0, le=10.0, description="AdamW step size")
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0, description="AdamW weight decay (L2 shrinkage of the weights)")
    early_stopping_patience: int = Field(5, ge=1, description="Epochs without val_loss improvement before stopping")
    seed: int = Field(0, ge=0, description="Seed of weights, shuffling and augmentation: the same seed trains the same model")
    accelerator: Literal["cpu", "gpu", "auto"] = Field("cpu", description="Where to train: cpu, gpu, or auto (a GPU if there is one)")
    devices: int | Literal["auto"] = Field(1, description="Lightning devices per node")
    num_nodes: int = Field(1, ge=1, description="Machines training together (with a distributed strategy such as ddp)")
    strategy: str = Field(
        "auto", description="Lightning strategy: auto, or ddp with devices 2+ (processes of their own; gloo on CPUs)"
    )
    precision: Literal["32-true", "bf16-mixed"] = Field(
        "32-true", description="32-true, or bf16-mixed (bfloat16 matrix maths: fast where the CPU has AVX-512 BF16 or AMX)"
    )
    channels_last: bool = Field(
        False, description="Images: lay tensors out channels-last (NHWC) while training; faster for some CNNs, measure it"
    )
    max_batches_per_epoch: int | None = Field(
        None, ge=1, description="Train on at most this many batches per epoch (a quick trial); empty: every batch"
    )
    resume_from: Path | None = Field(None, description="Lightning checkpoint to resume training from")
    augment: AugmentConfig = Field(
        AugmentConfig(), description="Random changes to training images (affine, flips, colour); all off by default"
    )

    # float | int changed meaning on the way through JSON and the UI form: 1.0 (all) arrived as 1 (one batch).
    removed_fields: ClassVar[dict[str, str]] = {
        "limit_train_batches": "use max_batches_per_epoch (a number of batches; empty for all)"
    }
