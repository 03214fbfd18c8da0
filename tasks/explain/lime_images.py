"""LIME explanations of images (the image modality's explainer), against whatever runtime serves the model."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tasks.data.contract import ImageInput
from tasks.explain.config import LimeConfig
from tasks.explain.explanation import Explanation
from tasks.score.inference import softmax


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


def probabilities_fn(
    predict_logits: Callable[[np.ndarray], np.ndarray], contract: ImageInput
) -> Callable[[np.ndarray], np.ndarray]:
    """LIME hands N x H x W x 3 images in 0..255; the model takes them as the input contract prepares them."""

    def classifier_fn(images: np.ndarray) -> np.ndarray:
        pixels = images.mean(axis=3, keepdims=True) if contract.channels == 1 else images
        return softmax(predict_logits(np.ascontiguousarray(contract.to_model_input(pixels.transpose(0, 3, 1, 2)))))

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
        contract: ImageInput,
        config: LimeConfig,
        vectorised: bool = True,
    ) -> None:
        self.config = config
        self.vectorised = vectorised
        self._classifier = probabilities_fn(predict_logits, contract)

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
