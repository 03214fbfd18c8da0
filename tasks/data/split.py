"""Deterministic, stable train/val/test assignment by content hash."""

from __future__ import annotations

import hashlib
from typing import Literal

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


def assign_split(content_sha256: str, val_fraction: float, test_fraction: float, salt: str) -> Split:
    """Put one file in a split from its content hash alone.

    The split depends only on the file's bytes and the salt, never on which
    other files exist, so adding files later never moves existing files
    between splits, and a renamed file stays where it was. Because the
    assignment is a uniform draw per file, every class is split in the same
    proportions in expectation (stratified per class); the ingestion report
    shows the realised counts per class and split.
    """
    digest = hashlib.sha256(f"{salt}:{content_sha256}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"
