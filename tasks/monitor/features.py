"""Monitoring features of images: one function for the release's reference and for production.

Per image: brightness, contrast, sharpness (variance of the Laplacian), the fraction of
saturated pixels, the original width/height/aspect, the model's embedding reduced by a
projection fitted at release time, the predicted class and the top-1 confidence.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel

IMAGE_COLUMNS = ["brightness", "contrast", "sharpness", "saturated_fraction", "original_width", "original_height", "aspect"]
PREDICTION_COLUMNS = ["predicted_class", "confidence"]


def embedding_columns(n_components: int) -> list[str]:
    """Names of the projected embedding columns."""
    return [f"embedding_{i}" for i in range(n_components)]


class Projection(BaseModel):
    """A PCA of the model's embeddings, fitted on the release's train sample; stored as JSON, not pickled."""

    mean: list[float]
    components: list[list[float]]
    explained_variance_ratio: list[float]

    @property
    def n_components(self) -> int:
        return len(self.components)

    def transform(self, embeddings: np.ndarray) -> np.ndarray:
        """Project N x D embeddings to N x n_components.

        Raises:
            ValueError: embeddings of another width than the projection was fitted on.
        """
        mean = np.asarray(self.mean, dtype=np.float64)
        if embeddings.ndim != 2 or embeddings.shape[1] != mean.shape[0]:
            raise ValueError(f"embeddings of shape {embeddings.shape}; the projection expects N x {mean.shape[0]}")
        return (embeddings.astype(np.float64) - mean) @ np.asarray(self.components, dtype=np.float64).T


def fit_projection(embeddings: np.ndarray, n_components: int, seed: int = 0) -> Projection:
    """Fit a PCA with at most ``n_components`` (fewer when there are fewer samples or dimensions)."""
    from sklearn.decomposition import PCA

    k = max(1, min(n_components, embeddings.shape[0] - 1, embeddings.shape[1]))
    pca = PCA(n_components=k, svd_solver="full", random_state=seed).fit(embeddings.astype(np.float64))
    # PCA's sign is arbitrary; fix it (largest loading positive) so refits of the same data agree.
    components = pca.components_ * np.sign(pca.components_[np.arange(k), np.abs(pca.components_).argmax(axis=1)])[:, None]
    return Projection(
        mean=pca.mean_.tolist(),
        components=components.tolist(),
        explained_variance_ratio=pca.explained_variance_ratio_.tolist(),
    )


def image_statistics(images: np.ndarray, original_sizes: np.ndarray) -> pd.DataFrame:
    """Photometric statistics of uint8 N x C x H x W images, plus their size before resizing.

    Sharpness is the variance of the 4-neighbour Laplacian of the grey image in [0, 1]: blur lowers it.
    Saturated pixels are those within 2 levels of 0 or 255 (clipped shadows or highlights).
    """
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 N x C x H x W; got {images.dtype} {images.shape}")
    grey = images.astype(np.float64).mean(axis=1) / 255.0  # N x H x W
    padded = np.pad(grey, ((0, 0), (1, 1), (1, 1)), mode="edge")
    laplacian = (
        padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:] - 4.0 * grey
    )
    flat = images.reshape(images.shape[0], -1)
    sizes = np.asarray(original_sizes, dtype=np.float64).reshape(-1, 2)
    return pd.DataFrame(
        {
            "brightness": flat.mean(axis=1) / 255.0,
            "contrast": flat.std(axis=1) / 255.0,
            "sharpness": laplacian.reshape(grey.shape[0], -1).var(axis=1),
            "saturated_fraction": ((flat <= 2) | (flat >= 253)).mean(axis=1),
            "original_width": sizes[:, 0],
            "original_height": sizes[:, 1],
            "aspect": sizes[:, 0] / np.maximum(sizes[:, 1], 1.0),
        }
    )


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def monitoring_features(
    images: np.ndarray,
    original_sizes: np.ndarray,
    logits: np.ndarray,
    embeddings: np.ndarray,
    projection: Projection,
    classes: list[str],
) -> pd.DataFrame:
    """Every monitoring column for a batch: image statistics, projected embedding, prediction.

    ``images`` are the uint8 pixels the model saw; ``logits``/``embeddings`` the served
    artifact's outputs for them.
    """
    if not (len(images) == len(original_sizes) == len(logits) == len(embeddings)):
        raise ValueError("images, sizes, logits and embeddings must have one row per image")
    frame = image_statistics(images, original_sizes)
    projected = projection.transform(embeddings)
    for i, column in enumerate(embedding_columns(projection.n_components)):
        frame[column] = projected[:, i]
    probabilities = softmax(logits.astype(np.float64))
    frame["predicted_class"] = [classes[i] for i in probabilities.argmax(axis=1)]
    frame["confidence"] = probabilities.max(axis=1)
    return frame


def feature_columns(n_components: int) -> tuple[list[str], list[str]]:
    """(numerical, categorical) monitoring columns."""
    return IMAGE_COLUMNS + embedding_columns(n_components) + ["confidence"], ["predicted_class"]


def non_finite_rows(frame: pd.DataFrame, numerical: list[str]) -> np.ndarray:
    """Mask of rows with a NaN or infinite numerical feature."""
    return ~np.isfinite(frame[numerical].to_numpy(dtype=np.float64)).all(axis=1)
