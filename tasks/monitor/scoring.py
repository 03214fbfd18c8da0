"""Score a batch of new images with a released artifact and compute their monitoring features.

Inputs go through the same decoding as training (``tasks.data.images.decode_image``) and the
same feature function as the release's reference, so build and serve cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from tasks.data.images import BadImage, decode_image
from tasks.export.backends import Backend
from tasks.hashing import sha256_bytes, sha256_file
from tasks.monitor.features import Projection, feature_columns, monitoring_features, non_finite_rows, softmax
from tasks.monitor.reference import infer


class InputFile(BaseModel):
    """One file of a batch: where it came from and where it is on local disk."""

    name: str
    path: Path
    sha256: str


class FailedInput(BaseModel):
    """A file of the batch that could not be scored, and why."""

    name: str
    reason: str


def local_inputs(folder: Path) -> list[InputFile]:
    """Every non-hidden file under ``folder`` (recursively), sorted by name.

    Raises:
        FileNotFoundError: the folder does not exist or is not a folder.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"score source {folder} is not an existing folder")
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    return [InputFile(name=p.relative_to(folder).as_posix(), path=p, sha256=sha256_file(p)) for p in files]


def s3_inputs(source: str, store_config, dest: Path) -> list[InputFile]:  # noqa: ANN001 - StoreConfig
    """Download every non-hidden object under an ``s3://`` prefix (the store's endpoint and credentials) to ``dest``."""
    from tasks.registry.store import open_store

    inputs = open_store(store_config.model_copy(update={"uri": source, "sse": "none", "kms_key_id": None}))
    keys = [k for k in inputs.list_keys("") if not any(part.startswith(".") for part in k.split("/"))]
    for key in keys:
        inputs.get_file(key, dest / key)
    return [InputFile(name=k, path=dest / k, sha256=sha256_file(dest / k)) for k in keys]


def source_inputs(source: str, store_config, work_dir: Path) -> list[InputFile]:  # noqa: ANN001 - StoreConfig
    """The files of a folder, or of an ``s3://`` prefix downloaded under ``work_dir/incoming``."""
    if source.startswith("s3://"):
        return s3_inputs(source, store_config, work_dir / "incoming" / sha256_bytes(source.encode())[:12])
    return local_inputs(Path(source).expanduser())


def batch_id(files: list[InputFile]) -> str:
    """The batch's identity: a hash of its files' contents, so re-scoring the same files is recognised."""
    return sha256_bytes("\n".join(sorted(f.sha256 for f in files)).encode())[:12]


def decode_inputs(
    files: list[InputFile], image_size: int, channels: int
) -> tuple[np.ndarray, list[tuple[int, int]], list[InputFile], list[FailedInput]]:
    """Decode every file as in training: the uint8 images and original sizes of the readable ones,
    those files, and a failure with its reason for each unreadable one.
    """
    decoded, sizes, kept, failures = [], [], [], []
    for item in files:
        try:
            pixels, size = decode_image(item.path, image_size, channels)
        except BadImage as bad:
            failures.append(FailedInput(name=item.name, reason=bad.reason))
            continue
        decoded.append(pixels)
        sizes.append(size)
        kept.append(item)
    images = np.stack(decoded) if decoded else np.zeros((0, channels, image_size, image_size), np.uint8)
    return images, sizes, kept, failures


def score_inputs(
    files: list[InputFile],
    backend: Backend,
    classes: list[str],
    image_size: int,
    channels: int,
    projection: Projection | None,
    batch_size: int = 256,
) -> tuple[pd.DataFrame, pd.DataFrame | None, list[FailedInput]]:
    """Predictions (one row per scored file), monitoring features (None without a projection), failures.

    Images of any size and mode are converted and resized exactly as in training.

    An unreadable file, or one whose features come out NaN/infinite, is a failure of
    that file only; the rest of the batch is scored.
    """
    images, sizes, kept, failures = decode_inputs(files, image_size, channels)
    if not kept:
        return pd.DataFrame(), None, failures
    logits, embeddings = infer(backend, images, batch_size)
    probabilities = softmax(logits.astype(np.float64))
    predictions = pd.DataFrame(
        {
            "file": [f.name for f in kept],
            "path": [str(f.path.resolve()) for f in kept],
            "image_sha256": [f.sha256 for f in kept],
            "predicted_class": [classes[i] for i in probabilities.argmax(axis=1)],
            "confidence": probabilities.max(axis=1),
        }
    )
    features = None
    if projection is not None:
        features = monitoring_features(images, np.asarray(sizes), logits, embeddings, projection, classes)
        features.insert(0, "file", predictions["file"])
        features.insert(1, "image_sha256", predictions["image_sha256"])
        bad = non_finite_rows(features, feature_columns(projection.n_components)[0])
        # A model or image that yields NaN/inf cannot be tested for drift: report it, keep the rest.
        failures += [
            FailedInput(name=name, reason="monitoring features are NaN or infinite")
            for name in features.loc[bad, "file"]
        ]
        features = features.loc[~bad].reset_index(drop=True)
        predictions = predictions.loc[~bad].reset_index(drop=True)
    return predictions, features, failures
