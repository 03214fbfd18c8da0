"""Shifted copies of images: what a changed camera, scanner or pipeline does to production data.

Used by the drift drill, the tests and the drift benchmark to produce data that should be flagged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageFilter, ImageOps

Shift = Literal["none", "invert", "blur", "noise", "rotate", "dim"]
SHIFTS: tuple[str, ...] = ("none", "invert", "blur", "noise", "rotate", "dim")


def shift_image(image: Image.Image, kind: Shift, rng: np.random.Generator) -> Image.Image:
    """One image with the shift applied (``none`` returns a copy)."""
    grey = image.convert("L")
    if kind == "none":
        return grey.copy()
    if kind == "invert":
        return ImageOps.invert(grey)
    if kind == "blur":
        return grey.filter(ImageFilter.GaussianBlur(radius=max(1.0, grey.width / 8)))
    if kind == "noise":
        noisy = np.asarray(grey, dtype=np.float64) + rng.normal(0.0, 60.0, size=(grey.height, grey.width))
        return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), mode="L")
    if kind == "rotate":
        return grey.rotate(90)
    if kind == "dim":  # a darker camera or scanner: every pixel at 60 % brightness
        return grey.point(lambda v: int(v * 0.6))
    raise ValueError(f"shift {kind!r}; allowed: {SHIFTS}")


def write_shifted(files: list[Path], dest: Path, kind: Shift, seed: int = 0) -> list[Path]:
    """Write a shifted PNG copy of each file into ``dest`` (flat, names kept unique); return the new paths."""
    rng = np.random.default_rng(seed)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for index, path in enumerate(files):
        with Image.open(path) as image:
            out = dest / f"{index:05d}-{path.stem}.png"
            shift_image(image, kind, rng).save(out)
        written.append(out)
    return written
