"""LIME explanations of images, against whatever runtime serves the model.

The unit of work is an :class:`Explainer`: something that turns one input into an
:class:`Explanation` (per-label weights of interpretable features). ``ImageLimeExplainer``
wraps ``lime.lime_image``; a tabular explainer (``lime.lime_tabular``) fits the same shape,
with columns instead of superpixels.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tasks.monitor.features import softmax

# lime draws a tqdm bar per image; progress is logged per image instead. tqdm reads this when imported.
os.environ.setdefault("TQDM_DISABLE", "1")

Segmentation = Literal["auto", "grid", "slic", "quickshift"]


class LimeConfig(BaseModel):
    """How LIME perturbs and fits; defaults suit small images and run in seconds per image."""

    model_config = ConfigDict(extra="forbid")

    num_samples: int = Field(1000, ge=50, le=50_000, description="Perturbed copies per image")
    top_labels: int = Field(3, ge=1, le=20, description="Classes explained per image (highest probability first)")
    segmentation: Segmentation = Field(
        "auto", description="auto: a square grid up to 64 px, SLIC superpixels above; or force one"
    )
    grid_cells: int = Field(8, ge=2, le=64, description="Grid: cells per side")
    slic_segments: int = Field(50, ge=4, le=1000, description="SLIC: about this many superpixels")
    batch_size: int = Field(1000, ge=1, le=50_000, description="Perturbed images per model call")
    hide: Literal["image-mean", "black", "segment-mean"] = Field(
        "image-mean",
        description="What a switched-off superpixel becomes. lime's default (segment-mean) leaves a uniform bright "
        "region as bright as before, hiding nothing; the image's mean colour removes local evidence",
    )
    seed: int = 0


class Explanation(BaseModel):
    """One input explained: predicted probabilities, and per explained label the weight of each feature."""

    probabilities: list[float]
    labels: list[int]
    weights: dict[int, dict[int, float]]  # label -> feature (superpixel) -> weight
    intercepts: dict[int, float]
    segments: list[list[int]] | None = None  # images: superpixel id of each pixel
    model_calls: int = 0

    def top_features(self, label: int, k: int = 3, positive: bool = True) -> list[int]:
        """The ``k`` features pushing hardest towards (or away from) ``label``."""
        ranked = sorted(self.weights[label].items(), key=lambda kv: kv[1], reverse=positive)
        return [f for f, w in ranked[:k] if (w > 0 if positive else w < 0)]


class Explainer(Protocol):
    """Explains one input; images and (later) tabular rows implement it."""

    def explain(self, item: np.ndarray) -> Explanation: ...


def segment(image_hw3: np.ndarray, config: LimeConfig) -> np.ndarray:
    """Superpixels of an H x W x 3 image: a square grid for small images, SLIC (or quickshift) for larger ones."""
    height, width = image_hw3.shape[:2]
    kind = config.segmentation
    if kind == "auto":
        kind = "grid" if max(height, width) <= 64 else "slic"
    cells = min(config.grid_cells, height, width)
    rows = np.minimum(np.arange(height) * cells // height, cells - 1)
    cols = np.minimum(np.arange(width) * cells // width, cells - 1)
    grid = rows[:, None] * cells + cols[None, :]
    if kind == "grid":
        return grid
    from skimage.segmentation import quickshift, slic

    if kind == "slic":
        found = slic(image_hw3 / 255.0, n_segments=config.slic_segments, compactness=10, start_label=0, channel_axis=-1)
    else:
        found = quickshift(image_hw3 / 255.0, kernel_size=4, max_dist=200, ratio=0.2, rng=config.seed)
    # Texture without edges (noise, flat scans) can come back as one region: LIME needs several.
    return found if len(np.unique(found)) >= 4 else grid


def probabilities_fn(predict_logits: Callable[[np.ndarray], np.ndarray], channels: int) -> Callable[[np.ndarray], np.ndarray]:
    """LIME hands N x H x W x 3 images in 0..255; the model wants N x C x H x W in [0, 1] and gives logits."""

    def classifier_fn(images: np.ndarray) -> np.ndarray:
        batch = images.astype(np.float32) / 255.0
        batch = batch.mean(axis=3, keepdims=True) if channels == 1 else batch
        return softmax(predict_logits(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).astype(np.float64))

    return classifier_fn


def _vectorised_explainer(lime_image, seed: int):  # noqa: ANN001, ANN202 - the lime_image module
    """A LimeImageExplainer whose perturbed images are built with array operations, chunk by chunk.

    lime builds each perturbed image in a Python loop over its switched-off superpixels; this
    draws the very same random on/off matrix from the same random state and applies it with one
    ``np.where`` per chunk of ``batch_size`` images, so explanations are identical, only faster.
    """

    class VectorisedLimeImageExplainer(lime_image.LimeImageExplainer):
        def data_labels(self, image, fudged_image, segments, classifier_fn, num_samples, batch_size=10, **_):  # noqa: ANN001, ANN202
            n_features = np.unique(segments).shape[0]
            data = self.random_state.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
            data[0, :] = 1
            labels = []
            for start in range(0, num_samples, batch_size):
                keep = data[start : start + batch_size][:, segments].astype(bool)  # chunk x H x W
                labels.extend(classifier_fn(np.where(keep[..., None], image[None], fudged_image[None])))
            return data, np.array(labels)

    return VectorisedLimeImageExplainer(random_state=seed)


class ImageLimeExplainer:
    """``lime_image`` over a runtime's batched predict, seeded, with segmentation chosen for the image size."""

    def __init__(
        self,
        predict_logits: Callable[[np.ndarray], np.ndarray],
        channels: int,
        config: LimeConfig,
        vectorised: bool = True,
    ) -> None:
        self.config = config
        self.channels = channels
        self.vectorised = vectorised
        self._classifier = probabilities_fn(predict_logits, channels)

    def explain(self, item: np.ndarray) -> Explanation:
        """Explain a uint8 C x H x W image (as the model sees it, before scaling)."""
        from lime import lime_image

        image = np.repeat(item, 3, axis=0) if item.shape[0] == 1 else item
        image = image.transpose(1, 2, 0).astype(np.float64)
        calls = 0

        def counted(images: np.ndarray) -> np.ndarray:
            nonlocal calls
            calls += 1
            return self._classifier(images)

        hide_color = {"image-mean": image.mean(axis=(0, 1)), "black": 0.0, "segment-mean": None}[self.config.hide]
        explainer = (
            _vectorised_explainer(lime_image, self.config.seed)
            if self.vectorised
            else lime_image.LimeImageExplainer(random_state=self.config.seed)
        )
        result = explainer.explain_instance(
            image,
            counted,
            top_labels=self.config.top_labels,
            num_samples=self.config.num_samples,
            batch_size=self.config.batch_size,
            hide_color=hide_color,
            segmentation_fn=lambda img: segment(img, self.config),
            random_seed=self.config.seed,
        )
        probabilities = self._classifier(image[None])[0]
        return Explanation(
            probabilities=probabilities.tolist(),
            labels=[int(label) for label in result.top_labels],
            weights={int(k): {int(f): float(w) for f, w in v} for k, v in result.local_exp.items()},
            intercepts={int(k): float(v) for k, v in result.intercept.items()},
            segments=result.segments.astype(int).tolist(),
            model_calls=calls,
        )


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
