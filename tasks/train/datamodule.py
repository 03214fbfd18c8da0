"""LightningDataModule over a dataset snapshot."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from tasks.data.snapshot import DatasetSnapshot


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 N x C x H x W pixels -> float32 in [0, 1]: the input contract of every exported variant."""
    return images.astype(np.float32) / 255.0


class SnapshotDataModule(L.LightningDataModule):
    """Serves a snapshot's train/val/test splits as float tensors in [0, 1]."""

    def __init__(self, snapshot: DatasetSnapshot, batch_size: int, seed: int = 0) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.batch_size = batch_size
        self.seed = seed
        self._sets: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val", "test"):
            if split not in self._sets:
                images, labels = self.snapshot.arrays(split)
                self._sets[split] = TensorDataset(
                    torch.from_numpy(to_model_input(images)), torch.from_numpy(labels)
                )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self._sets[split], batch_size=self.batch_size, shuffle=shuffle, generator=generator)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
