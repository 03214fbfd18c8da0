"""The monitoring row of a scored input: one function for the release's reference and for production.

Per input: the statistics its input contract computes (images: brightness, contrast, sharpness,
saturated fraction, width and height before resizing), the model's embedding reduced by a projection fitted at
release time, the predicted class and the top-1 confidence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from tasks.data.contract import InputContract
from tasks.score.inference import softmax

# A table row's cells that did not fit the release's schema (new category, text for a number, a
# missing column), '; '-separated; empty when it fit. Images have no such column.
SCHEMA_PROBLEMS = "schema_problems"


def off_schema_summary(frame: pd.DataFrame) -> tuple[int, str]:
    """How many monitoring rows did not fit the release's schema, and a line naming the most common problems."""
    if SCHEMA_PROBLEMS not in frame.columns:
        return 0, ""
    problems = frame[SCHEMA_PROBLEMS].fillna("")
    off = problems[problems != ""]
    if off.empty:
        return 0, ""
    counts = off.str.split("; ").explode().value_counts()
    common = ", ".join(f"{reason} ({count})" for reason, count in counts.head(5).items())
    more = f" and {len(counts) - 5} more kinds" if len(counts) > 5 else ""
    return len(off), f"{len(off)} of {len(frame)} rows did not fit the release's schema (scored with those cells as missing): {common}{more}"


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


def monitoring_features(
    statistics: pd.DataFrame,
    logits: np.ndarray,
    embeddings: np.ndarray,
    projection: Projection,
    classes: list[str],
) -> pd.DataFrame:
    """Every monitoring column for a batch: the inputs' statistics, the projected embedding, the prediction.

    ``statistics`` come from the input contract (one row per input); ``logits``/``embeddings``
    are the served artifact's outputs for the same inputs.
    """
    if not (len(statistics) == len(logits) == len(embeddings)):
        raise ValueError("statistics, logits and embeddings must have one row per input")
    frame = statistics.reset_index(drop=True).copy()
    projected = projection.transform(embeddings)
    for i, column in enumerate(embedding_columns(projection.n_components)):
        frame[column] = projected[:, i]
    probabilities = softmax(logits)
    frame["predicted_class"] = [classes[i] for i in probabilities.argmax(axis=1)]
    frame["confidence"] = probabilities.max(axis=1)
    return frame


def monitoring_columns(contract: InputContract, n_components: int) -> tuple[list[str], list[str]]:
    """(numerical, categorical) monitoring columns of inputs of ``contract``."""
    numerical = contract.statistic_columns + embedding_columns(n_components) + ["confidence"]
    return numerical, contract.categorical_statistics + ["predicted_class"]


def non_finite_rows(frame: pd.DataFrame, numerical: list[str]) -> np.ndarray:
    """Mask of rows with a NaN or infinite numerical feature."""
    return ~np.isfinite(frame[numerical].to_numpy(dtype=np.float64)).all(axis=1)


def load_projection(path: Path) -> Projection:
    """The projection a release stored (``monitoring/projection.json``)."""
    return Projection.model_validate_json(path.read_text())
