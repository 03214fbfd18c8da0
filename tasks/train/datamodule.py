"""LightningDataModule over a dataset snapshot, read from disk a batch at a time."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tasks.data.snapshot import DatasetSnapshot, SplitInputs
from tasks.train.augment import AugmentConfig, build_augmentation


class SplitDataset(Dataset):
    """One split of a snapshot as the model takes it (the input contract's scaling), prepared per batch.

    The split stays on disk: each batch is read from ``images.npy`` and prepared when the loader
    asks for it, so memory does not grow with the dataset. The split's reader is opened
    lazily and never pickled, so the dataset travels cheaply to loader workers and DDP processes.
    """

    def __init__(self, snapshot: DatasetSnapshot, split: str) -> None:
        self.snapshot = snapshot
        self.split = split
        self.size = snapshot.count(split)
        self._inputs: SplitInputs | None = None
        self._labels: torch.Tensor | None = None

    def _open(self) -> tuple[SplitInputs, torch.Tensor]:
        if self._inputs is None or self._labels is None:
            inputs, labels = self.snapshot.model_inputs(self.split)
            self._inputs, self._labels = inputs, torch.from_numpy(np.ascontiguousarray(labels))
        return self._inputs, self._labels

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_inputs": None, "_labels": None}

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, labels = self._open()
        return torch.from_numpy(inputs[index : index + 1][0]), labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole batch in one read (PyTorch's loaders call this when it exists); see :func:`as_batch`."""
        inputs, labels = self._open()
        rows = np.asarray(indices, dtype=np.int64)
        return torch.from_numpy(inputs[rows]), labels[rows]


def as_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The loader's collate function: ``SplitDataset.__getitems__`` already returns the stacked batch."""
    return batch


class SnapshotDataModule(L.LightningDataModule):
    """Serves a snapshot's train/val/test splits as the model takes them (the input contract's scaling).

    ``augment`` changes training batches (images only), once they are on the training device;
    ``channels_last`` lays image batches out NHWC (the model must be converted too).
    """

    def __init__(
        self,
        snapshot: DatasetSnapshot,
        batch_size: int,
        seed: int = 0,
        augment: AugmentConfig | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.batch_size = batch_size
        self.seed = seed
        self._sets: dict[str, SplitDataset] = {}
        images = snapshot.input.kind == "image"
        self.augment = build_augmentation(augment) if augment is not None and images else None
        self.channels_last = channels_last and images

    def on_after_batch_transfer(self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, labels = batch
        # Training batches only: validation and test measure the images as they are.
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            with torch.no_grad():
                inputs = self.augment.to(inputs.device)(inputs)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs, labels

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val", "test"):
            if split not in self._sets:
                self._sets[split] = SplitDataset(self.snapshot, split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        # A last training batch of one row cannot be batch-normalised (BatchNorm1d needs two): it is
        # left out of that epoch; with shuffling, another row each epoch. Under DDP each process batches
        # its own share of the split (Lightning's sampler gives each ceil(rows / processes)).
        processes = self.trainer.world_size if self.trainer is not None else 1
        rows = math.ceil(len(self._sets[split]) / processes)
        lone = shuffle and rows % self.batch_size == 1 and rows > 1
        return DataLoader(
            self._sets[split], batch_size=self.batch_size, shuffle=shuffle, generator=generator, drop_last=lone,
            collate_fn=as_batch,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
