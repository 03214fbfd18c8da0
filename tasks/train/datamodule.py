"""LightningDataModule over a dataset snapshot."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from tasks.data.snapshot import DatasetSnapshot


class SnapshotDataModule(L.LightningDataModule):
    """Serves a snapshot's train/val/test splits as the model takes them (the input contract's scaling)."""

    def __init__(self, snapshot: DatasetSnapshot, batch_size: int, seed: int = 0) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.batch_size = batch_size
        self.seed = seed
        self._sets: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val", "test"):
            if split not in self._sets:
                inputs, labels = self.snapshot.model_inputs(split)
                self._sets[split] = TensorDataset(torch.from_numpy(inputs), torch.from_numpy(labels))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        # A last training batch of one row cannot be batch-normalised (BatchNorm1d needs two): it is
        # left out of that epoch; with shuffling, another row each epoch.
        lone = shuffle and len(self._sets[split]) % self.batch_size == 1 and len(self._sets[split]) > 1
        return DataLoader(self._sets[split], batch_size=self.batch_size, shuffle=shuffle, generator=generator, drop_last=lone)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
