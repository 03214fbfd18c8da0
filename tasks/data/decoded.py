"""What every modality's contract returns when it reads raw inputs: the decoded items and what was left out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class DecodedInputs:
    """Raw inputs decoded from files: one row per item (an image file, a table row), and why each unusable one was left out."""

    raw: np.ndarray  # one row per item (images: uint8 C x H x W)
    meta: pd.DataFrame  # one row per item: what the statistics need besides ``raw`` (images: width, height before resizing)
    source: list[int]  # for each item, the index of the file it came from
    failures: list[tuple[int, str]]  # (file index, reason) of each file (or table line) that gave no item
    # Items that are not whole files (table rows): each one's name (``file:line``) and content hash.
    names: list[str] | None = None
    keys: list[str] | None = None
