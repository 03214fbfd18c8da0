"""Calibration sample shared by both INT8 back ends."""

from __future__ import annotations

import numpy as np


def calibration_sample(images: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A seeded random subset of ``size`` images (all of them when fewer), read into memory.

    ``images`` may be a split still on disk (``StoredRows``): only the sample is read.
    """
    if len(images) <= size:
        return np.asarray(images)
    index = np.random.default_rng(seed).choice(len(images), size=size, replace=False)
    return images[np.sort(index)]
