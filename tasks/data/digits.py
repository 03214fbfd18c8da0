"""The embedded default dataset: scikit-learn's bundled handwritten digits as an ImageFolder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def write_digits_imagefolder(root: Path) -> Path:
    """Write the 1,797 8x8 digits as PNG files, one folder per digit; return ``root``.

    Pixel values 0..16 are scaled to 0..255 (ink bright on black). Files that
    already exist are kept, so a second call is cheap and changes nothing.
    """
    digits = load_digits()
    for index, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"digit_{index:04d}.png"
        if not path.exists():
            pixels = np.round(image * (255.0 / 16.0)).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(path)
    return root
