"""The image modality's pixels: decode a file as training saw it, and the statistics monitoring compares.

Every file is fully decoded (not only its header) so that truncated and
corrupt files are caught at ingestion, rather than mid-training; training,
the release's monitoring reference, scoring and explanations all read images
through ``decode_image``, so the same file gives the same pixels everywhere.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    import pandas as pd


class BadImage(Exception):
    """A file that cannot be used as a training image; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL mode to L (1 channel) or RGB (3 channels).

    Transparency is composited onto black, because a transparent background
    behind a light glyph should stay background rather than turn white.
    """
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        img = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)


# Files up to this size are read whole and decoded from memory; larger ones are opened by PIL.
READ_WHOLE_BYTES = 16 * 2**20


def decode_image(
    source: Path | bytes, image_size: int, channels: int, max_pixels: int | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode a file (or the bytes of one, as a request carries it) fully.

    Returns the uint8 (channels, image_size, image_size) array and the original (width, height).
    ``max_pixels`` refuses a larger image from its header, before any pixel is decoded (the
    server's guard against decompression bombs; PIL's own limit still applies without it).

    Raises:
        BadImage: zero-byte, unreadable, not an image, truncated, corrupt or
            oversized files, with a reason a person can act on.
    """
    if isinstance(source, bytes):
        if not source:
            raise BadImage("zero-byte file")
        return _decode_opened(io.BytesIO(source), image_size, channels, max_pixels)
    # One stat and one read: checking the file, then letting PIL open it again, cost a sixth of decoding.
    try:
        status = os.stat(source)
        if not stat.S_ISREG(status.st_mode):
            raise BadImage("not a regular file")
        if status.st_size == 0:
            raise BadImage("zero-byte file")
        handle = open(source, "rb")  # noqa: SIM115 - closed below, once decoded
    except OSError as exc:
        raise BadImage(f"unreadable: {exc.strerror or exc}") from None
    with handle:
        if status.st_size > READ_WHOLE_BYTES:  # a large file (a video in an inbox, say): read only as far as PIL needs
            return _decode_opened(handle, image_size, channels, max_pixels)
        try:
            data = handle.read()
        except OSError as exc:
            raise BadImage(f"unreadable: {exc.strerror or exc}") from None
    return _decode_opened(io.BytesIO(data), image_size, channels, max_pixels)


def _decode_opened(
    opened: BinaryIO, image_size: int, channels: int, max_pixels: int | None
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode_image` of an open file or its bytes."""
    try:
        with warnings.catch_warnings():
            # Turn PIL's decompression-bomb warning into a quarantine entry, not a log line.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(opened) as img:
                width, height = img.size
                if max_pixels is not None and width * height > max_pixels:
                    raise BadImage(f"image too large: {width}x{height} pixels; at most {max_pixels} are allowed")
                img.load()
                original_size = img.size
                normalised = _to_mode(img, channels)
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("not an image (no decoder recognises it)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"image too large: {exc}") from None
    except OSError as exc:
        text = str(exc)
        if "truncated" in text:
            raise BadImage(f"truncated: {text}") from None
        raise BadImage(f"corrupt: {text}") from None
    except Exception as exc:  # noqa: BLE001 - PIL plugins raise many types for broken data
        raise BadImage(f"corrupt: {type(exc).__name__}: {exc}") from None
    # An image already at its size is not resized (PIL would return a copy).
    if normalised.size != (image_size, image_size):
        normalised = normalised.resize((image_size, image_size), Image.Resampling.BILINEAR)
    arr = np.asarray(normalised, dtype=np.uint8)
    if channels == 1:
        return arr[np.newaxis, :, :].copy(), original_size
    return np.ascontiguousarray(arr.transpose(2, 0, 1)), original_size


# Per-image statistics monitoring compares between the release's reference and production.
STATISTIC_COLUMNS = ("brightness", "contrast", "sharpness", "saturated_fraction", "original_width", "original_height", "aspect")


def image_statistics(images: np.ndarray, original_sizes: np.ndarray) -> pd.DataFrame:
    """Photometric statistics of uint8 N x C x H x W images, plus their (width, height) before resizing.

    Sharpness is the variance of the 4-neighbour Laplacian of the grey image in [0, 1]: blur lowers it.
    Saturated pixels are those within 2 levels of 0 or 255 (clipped shadows or highlights).
    """
    import pandas as pd

    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 N x C x H x W; got {images.dtype} {images.shape}")
    sizes = np.asarray(original_sizes, dtype=np.float64).reshape(-1, 2)
    # A few images at a time: their float64 copies stay in the CPU's cache instead of streaming gigabytes.
    photometric = np.concatenate(
        [_photometric(images[i : i + STATISTICS_BATCH]) for i in range(0, len(images), STATISTICS_BATCH)]
    ) if len(images) else np.zeros((0, 4))
    return pd.DataFrame(
        {
            "brightness": photometric[:, 0],
            "contrast": photometric[:, 1],
            "sharpness": photometric[:, 2],
            "saturated_fraction": photometric[:, 3],
            "original_width": sizes[:, 0],
            "original_height": sizes[:, 1],
            "aspect": sizes[:, 0] / np.maximum(sizes[:, 1], 1.0),
        }
    )


STATISTICS_BATCH = 64


def _photometric(images: np.ndarray) -> np.ndarray:
    """Brightness, contrast, sharpness and saturated fraction (columns) of a few uint8 N x C x H x W images.

    From exact integer sums, each statistic divided once: the float64 formulas' values (mean, std and the
    variance of the grey Laplacian; the mean and saturated fraction bit for bit, the variances correctly
    rounded where the two-pass formulas were off by up to 1e-14), at half their cost: they were a tenth
    of scoring an image.
    """
    n, channels = images.shape[:2]
    # The grey image times channels x 255, and its 4-neighbour Laplacian: small integers (int16 holds
    # up to 32 channels' sums, and their Laplacian's 4 x 255 x 32).
    grey = images.sum(axis=1, dtype=np.int16 if channels <= 32 else np.int64)
    padded = np.pad(grey, ((0, 0), (1, 1), (1, 1)), mode="edge")
    laplacian = padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:] - 4 * grey
    levels = images.reshape(n, -1).astype(np.float64)
    # Sums of integers in float64 are exact while below 2**53 (any image up to ~30,000 px square).
    brightness = levels.sum(axis=1) / levels.shape[1] / 255.0
    contrast = np.sqrt(_variances(levels)) / 255.0
    sharpness = _variances(laplacian.reshape(n, -1).astype(np.float64), (channels * 255) ** 2)
    # Within 2 levels of 0 or 255: v - 3 wraps 0..2 to 253..255 and moves 253..255 to 250..252.
    saturated = ((images.reshape(n, -1) - np.uint8(3)) >= 250).sum(axis=1) / levels.shape[1]
    return np.stack([brightness, contrast, sharpness, saturated], axis=1)


def _variances(rows: np.ndarray, scale: int = 1) -> np.ndarray:
    """Each row's population variance divided by ``scale``, for rows of integers held in float64:
    (n * sum(x^2) - sum(x)^2) / (n^2 * scale) in Python's exact integers, rounded once, at the division."""
    size = rows.shape[1]
    sums = rows.sum(axis=1).tolist()
    squares = np.einsum("ij,ij->i", rows, rows).tolist()
    denominator = size**2 * scale
    return np.array([(size * int(q) - int(s) ** 2) / denominator for s, q in zip(sums, squares, strict=True)], dtype=np.float64)
