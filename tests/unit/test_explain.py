"""LIME on images: seeded, segmentation fit for the size, samples chosen as promised, and it finds the evidence."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.data.config import DataConfig
from tasks.data.contract import ImageInput
from tasks.data.imagefolder import ingest_imagefolder
from tasks.explain.config import LimeConfig
from tasks.explain.explanation import ExplainedInput, choose_samples
from tasks.explain.lime_images import ImageLimeExplainer, segment
from tasks.explain.report import write_report
from tasks.export.backends import TorchBackend
from tasks.train.config import TrainConfig
from tasks.train.fit import fit_classifier
from tasks.train.models import build_model

GREY = ImageInput(channels=1, image_size=16)

PATCH = 4  # the evidence: a bright 4x4 patch, top-left for class "left", bottom-right for "right"


def patch_images(root: Path, per_class: int = 40, size: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for label, (row, col) in {"left": (0, 0), "right": (size - PATCH, size - PATCH)}.items():
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, size=(size, size)).astype(np.uint8)
            pixels[row : row + PATCH, col : col + PATCH] = rng.integers(220, 256, size=(PATCH, PATCH))
            Image.fromarray(pixels, mode="L").save(root / label / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def patch_model(tmp_path_factory: pytest.TempPathFactory):
    root = patch_images(tmp_path_factory.mktemp("patch"))
    snapshot = ingest_imagefolder(root, DataConfig(image_size=16), tmp_path_factory.mktemp("snap"))
    trained = fit_classifier(snapshot, TrainConfig(max_epochs=6, batch_size=16), tmp_path_factory.mktemp("run"))
    assert trained.test_acc >= 0.9
    return snapshot, TorchBackend(trained.load())


def test_explanations_are_deterministic_for_a_seed() -> None:
    torch.manual_seed(0)
    backend = TorchBackend(build_model("small_cnn", 4, GREY))
    image = np.random.default_rng(0).integers(0, 256, size=(1, 16, 16)).astype(np.uint8)
    config = LimeConfig(num_samples=300)
    first = ImageLimeExplainer(backend.predict, GREY, config).explain(image)
    again = ImageLimeExplainer(backend.predict, GREY, config).explain(image)
    other = ImageLimeExplainer(backend.predict, GREY, config.model_copy(update={"seed": 1})).explain(image)
    assert first == again
    assert first.weights != other.weights
    assert first.model_calls == 1  # 300 perturbations in one batched call (lime's default would make 30)
    # Building the perturbed images with array operations changes nothing but the speed.
    plain = ImageLimeExplainer(backend.predict, GREY, config.model_copy(update={"batch_size": 10}), vectorised=False)
    slow = plain.explain(image)
    assert slow.labels == first.labels and slow.model_calls == 30
    for label in first.labels:
        assert slow.weights[label].keys() == first.weights[label].keys()
        np.testing.assert_allclose(list(slow.weights[label].values()), list(first.weights[label].values()), atol=1e-9)


def test_segmentation_suits_the_image_size() -> None:
    small = segment(np.zeros((16, 16, 3)), LimeConfig(grid_cells=4))
    assert len(np.unique(small)) == 16 and (small[:4, :4] == 0).all()
    # A "photo": four flat colour blocks with a little noise; SLIC follows the block edges.
    photo = np.zeros((96, 96, 3))
    photo[:48, :48], photo[:48, 48:], photo[48:, :48], photo[48:, 48:] = (200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)
    photo += np.random.default_rng(0).normal(0, 5, photo.shape)
    large = segment(np.clip(photo, 0, 255), LimeConfig(slic_segments=30))
    assert 4 <= len(np.unique(large)) <= 60 and large.shape == (96, 96)
    assert len(np.unique(large[:40, :40])) < len(np.unique(large))  # regions, not one big blob
    noise = np.random.default_rng(0).integers(0, 256, size=(96, 96, 3)).astype(np.float64)
    assert len(np.unique(segment(noise, LimeConfig(grid_cells=6)))) == 36  # one region found: the grid instead


def test_samples_are_least_confident_then_stratified() -> None:
    probabilities = np.array([[0.9, 0.1, 0]] * 6 + [[0.1, 0.85, 0.05]] * 6 + [[0.2, 0.2, 0.6]] * 6 + [[0.5, 0.45, 0.05]])
    chosen = choose_samples(probabilities, 8, seed=0)
    assert chosen[:2] == [18, 12]  # the least confident quarter first
    assert len(chosen) == len(set(chosen)) == 8
    assert {int(probabilities[i].argmax()) for i in chosen[2:]} == {0, 1, 2}
    assert sorted(choose_samples(probabilities, 1000)) == list(range(len(probabilities)))
    with pytest.raises(ValueError, match="at least 1"):
        choose_samples(probabilities, 0)


def test_the_top_region_is_the_evidence(patch_model) -> None:
    snapshot, backend = patch_model
    images, labels = snapshot.arrays("test")
    explainer = ImageLimeExplainer(backend.predict, GREY, LimeConfig(num_samples=400, grid_cells=4, top_labels=1))
    hits = 0
    for image, label in zip(images, labels):
        explanation = explainer.explain(image)
        segments = np.asarray(explanation.segments)
        top = explanation.top_features(explanation.labels[0], k=1)[0]
        region = segments == top
        corner = (slice(0, PATCH), slice(0, PATCH)) if snapshot.classes[label] == "left" else (slice(-PATCH, None), slice(-PATCH, None))
        hits += bool(region[corner].any())
    assert hits >= 0.8 * len(labels), f"top superpixel on the patch for {hits} of {len(labels)} images"


def test_report_is_self_contained_html(tmp_path: Path) -> None:
    torch.manual_seed(0)
    backend = TorchBackend(build_model("small_cnn", 3, GREY))
    images = np.random.default_rng(1).integers(0, 256, size=(3, 1, 16, 16)).astype(np.uint8)
    explainer = ImageLimeExplainer(backend.predict, GREY, LimeConfig(num_samples=100, top_labels=2))
    items = [
        ExplainedInput(name=f"img{i}.png", raw=image.tolist(), explanation=explainer.explain(image), why="test")
        for i, image in enumerate(images)
    ]
    report, weights = write_report(tmp_path, "title", "subtitle", items, ["a", "b", "c"])

    class Collect(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.sections, self.images, self.external = 0, [], []

        def handle_starttag(self, tag, attrs):  # noqa: ANN001
            attrs = dict(attrs)
            if tag == "section" and attrs.get("class") == "explanation":
                self.sections += 1
            if tag == "img":
                self.images.append(attrs["src"])
            for key in ("src", "href"):
                if attrs.get(key, "").startswith(("http:", "https:", "//")):
                    self.external.append(attrs[key])

    parsed = Collect()
    parsed.feed(report.read_text())
    assert parsed.sections == 3 and not parsed.external
    # input + one overlay per explained label, per image; plus one summary map per predicted class
    assert len(parsed.images) >= 3 * 3 + 1 and all(src.startswith("data:image/png;base64,") for src in parsed.images)
    import json

    saved = json.loads(weights.read_text())
    assert [i["name"] for i in saved["images"]] == ["img0.png", "img1.png", "img2.png"]
    assert saved["images"][0]["weights"] and len(saved["images"][0]["segments"]) == 16
