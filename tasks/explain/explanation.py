"""What every explainer returns, and which inputs are explained.

An :class:`Explainer` turns one raw input into an :class:`Explanation`: per explained label,
the weight of each interpretable feature (superpixels of an image, columns of a table row).
Each modality implements one (``tasks/explain/lime_images.py``, ``tasks/explain/lime_tables.py``).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from pydantic import BaseModel


class Explanation(BaseModel):
    """One input explained: predicted probabilities, and per explained label the weight of each feature."""

    probabilities: list[float]
    labels: list[int]
    weights: dict[int, dict[int, float]]  # label -> feature (superpixel, table column) -> weight
    intercepts: dict[int, float]
    segments: list[list[int]] | None = None  # images: superpixel id of each pixel
    features: list[str] | None = None  # tables: each column's condition as LIME tested it ("age > 52.00", "colour=red")
    model_calls: int = 0

    def top_features(self, label: int, k: int = 3, positive: bool = True) -> list[int]:
        """The ``k`` features pushing hardest towards (or away from) ``label``."""
        ranked = sorted(self.weights[label].items(), key=lambda kv: kv[1], reverse=positive)
        return [f for f, w in ranked[:k] if (w > 0 if positive else w < 0)]


class Explainer(Protocol):
    """Explains one raw input (as the input contract decodes it); each modality implements it."""

    def explain(self, item: np.ndarray) -> Explanation: ...


class ExplainedInput(BaseModel):
    """One explained input with where it came from and why it was chosen."""

    name: str
    raw: list  # the input as decoded, as nested lists (small; kept so the report can be redrawn)
    explanation: Explanation
    why: str  # "least confident" or "predicted class k"


def least_confident_count(count: int) -> int:
    """How many of ``count`` chosen images are the least confident ones: a quarter, at least one."""
    return max(1, count // 4)


def choose_samples(probabilities: np.ndarray, count: int, seed: int = 0) -> list[int]:
    """Indices to explain: the least confident quarter, then round-robin over predicted classes (seeded)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    count = min(count, len(probabilities))
    confidence = probabilities.max(axis=1)
    chosen = list(np.argsort(confidence, kind="stable")[: least_confident_count(count)])
    rng = np.random.default_rng(seed)
    predicted = probabilities.argmax(axis=1)
    pools = {c: [i for i in rng.permutation(np.flatnonzero(predicted == c)) if i not in chosen] for c in np.unique(predicted)}
    while len(chosen) < count and any(pools.values()):
        for c in sorted(pools):
            if pools[c] and len(chosen) < count:
                chosen.append(pools[c].pop(0))
    return [int(i) for i in chosen]
