"""Scoring production on a candidate's test split (through the one way to open a released variant), and the gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.data.contract import ImageInput
from tasks.export.backends import OnnxRuntimeBackend, UnsafeArtifactError
from tasks.export.measure import accuracy
from tasks.export.onnx import export_onnx
from tasks.registry.aliases import move_alias, read_alias
from tasks.registry.config import GateConfig
from tasks.registry.gate import ProductionScore, decide, score_production
from tasks.registry.release import download_release, publish_release
from tasks.registry.serving import open_variant
from tasks.registry.store import FileStore
from tasks.train.models import build_model
from tests.conftest import release_draft

CLASSES = ["a", "b", "c"]
CONTRACT = ImageInput(channels=1, image_size=16)


@pytest.fixture
def production(tmp_path: Path):
    """A registry whose production release serves a real ONNX model over 1x16x16 inputs."""
    torch.manual_seed(0)
    onnx_path = export_onnx(build_model("small_cnn", 3, CONTRACT).eval(), torch.rand(2, 1, 16, 16), tmp_path / "v" / "model.onnx")
    store = FileStore(tmp_path / "registry")
    files = {f"onnx-fp32/{p.name}": p for p in onnx_path.parent.iterdir()}
    release = publish_release(store, files, release_draft("m", input=CONTRACT, classes=CLASSES))
    move_alias(store, "m", release.version, "first", read_alias(store, "m"))
    return store, release.version, onnx_path


def test_production_is_scored_with_its_served_artifact(production, tmp_path: Path) -> None:
    store, version, onnx_path = production
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (30, 1, 16, 16), dtype=np.uint8)  # as the contract decodes images
    labels = rng.integers(0, 3, 30)
    score = score_production(store, "m", CONTRACT, raw, labels, CLASSES, tmp_path / "work")
    assert score.version == version and score.comparable
    assert score.accuracy == accuracy(OnnxRuntimeBackend(onnx_path), CONTRACT.to_model_input(raw), labels)
    assert len(score.correct) == 30 and np.mean(score.correct) == score.accuracy


def test_other_classes_or_shapes_are_incomparable(production, tmp_path: Path) -> None:
    store, _, _ = production
    inputs = np.zeros((4, 1, 16, 16), np.uint8)
    other_classes = score_production(store, "m", CONTRACT, inputs, np.zeros(4, int), ["a", "b", "d"], tmp_path / "w1")
    assert not other_classes.comparable and "classes" in other_classes.note
    rgb = ImageInput(channels=3, image_size=32)
    other_shape = score_production(store, "m", rgb, np.zeros((4, 3, 32, 32), np.uint8), np.zeros(4, int), CLASSES, tmp_path / "w2")
    assert not other_shape.comparable and "[1, 16, 16]" in other_shape.note and "[3, 32, 32]" in other_shape.note


def test_no_production_yet(tmp_path: Path) -> None:
    score = score_production(
        FileStore(tmp_path / "empty"), "m", CONTRACT, np.zeros((1, 1, 16, 16), np.uint8), np.zeros(1, int), CLASSES, tmp_path
    )
    assert score.version is None and score.accuracy is None


def correctness(seed: int, images: int, accuracy: float) -> np.ndarray:
    """Which of ``images`` a model got right: exactly ``accuracy`` of them, at seeded places."""
    right = np.zeros(images, bool)
    right[np.random.default_rng(seed).choice(images, size=round(accuracy * images), replace=False)] = True
    return right


LABELS = np.arange(400) % 10  # ten balanced classes: the majority baseline is 10 %


def production_score(correct: np.ndarray) -> ProductionScore:
    return ProductionScore(version="v1", accuracy=float(correct.mean()), correct=correct.tolist())


def test_gate_refuses_a_chance_level_model_and_one_below_the_floor() -> None:
    # The noise build of the issue: 3 classes, 8 test images, 3 right; 3 of 8 are the most frequent class.
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 1])
    chance = decide(np.array([1, 1, 1, 0, 0, 0, 0, 0], bool), labels, ProductionScore(), GateConfig(min_accuracy=0.0))
    assert not chance.promote and "majority-class baseline" in chance.reason and "8 test examples" in chance.reason
    floor = decide(correctness(0, 400, 0.45), LABELS, ProductionScore(), GateConfig())
    assert not floor.promote and "min_accuracy=0.5" in floor.reason
    first = decide(correctness(0, 400, 0.9), LABELS, ProductionScore(note="no production release yet"), GateConfig())
    assert first.promote and first.baseline.passed and "no production" in first.reason


def test_gate_refuses_a_significantly_worse_model_and_promotes_an_equal_one() -> None:
    production = correctness(1, 400, 0.95)
    worse = decide(correctness(2, 400, 0.85), LABELS, production_score(production), GateConfig(), "v2")
    assert not worse.promote and "significantly worse" in worse.reason
    assert worse.comparison.high_pp < -0.5 and worse.comparison.mcnemar_p < 0.01 and worse.test_images == 400
    # Equal accuracy, different mistakes: promoted, and the interval is stated.
    equal = decide(correctness(3, 400, 0.95), LABELS, production_score(production), GateConfig(), "v2")
    assert equal.promote and equal.comparison.low_pp < 0 < equal.comparison.high_pp and "400 test examples" in equal.reason
    identical = decide(production, LABELS, production_score(production), GateConfig(), "v2")
    assert identical.promote and identical.comparison.difference_pp == 0 and identical.comparison.mcnemar_p == 1.0


def test_gate_warns_when_the_test_images_are_too_few_for_the_tolerance() -> None:
    production, candidate = correctness(4, 400, 0.95), correctness(5, 400, 0.95)
    decision = decide(candidate, LABELS, production_score(production), GateConfig(tolerance_pp=0.5), "v2")
    assert decision.promote and len(decision.warnings) == 1
    assert "400 test examples are too few to decide at a 0.5 pp tolerance" in decision.warnings[0]
    relaxed = decide(candidate, LABELS, production_score(production), GateConfig(tolerance_pp=10.0), "v2")
    assert relaxed.promote and relaxed.warnings == []


def test_gate_respects_incomparable_setting_and_current_production() -> None:
    good = correctness(0, 400, 0.99)
    incomparable = ProductionScore(version="old", comparable=False, note="production takes inputs [1, 16, 16]")
    assert not decide(good, LABELS, incomparable, GateConfig(), "new").promote
    assert decide(good, LABELS, incomparable, GateConfig(promote_if_incomparable=True), "new").promote
    same = decide(good, LABELS, production_score(good), GateConfig(), "v1")
    assert not same.promote and "already production" in same.reason


class Payload:
    """What a malicious state dict would carry: an object whose unpickling runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_a_pickled_payload_in_a_release_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    state = build_model("small_cnn", 3, CONTRACT).state_dict()
    state["extra"] = Payload(marker)
    (tmp_path / "src").mkdir()
    torch.save(state, tmp_path / "src" / "model_state.pt")
    store = FileStore(tmp_path / "registry")
    draft = release_draft("m", input=CONTRACT, classes=CLASSES)
    torch_row = draft.variants[0].model_copy(update={"name": "torch-fp32", "runtime": "torch", "entrypoint": "model_state.pt"})
    release = publish_release(
        store, {"torch-fp32/model_state.pt": tmp_path / "src" / "model_state.pt"}, draft.model_copy(update={"variants": [torch_row]})
    )
    manifest = download_release(store, "m", release.version, tmp_path / "release", tmp_path / "cache")
    with pytest.raises(UnsafeArtifactError, match="model_state.pt holds pickled objects"):
        open_variant(manifest, tmp_path / "release", "torch-fp32")
    assert not marker.exists()


def test_a_variant_that_was_not_downloaded_is_named(production, tmp_path: Path) -> None:
    store, version, _ = production
    manifest = download_release(store, "m", version, tmp_path / "release", tmp_path / "cache", only="dataset")
    with pytest.raises(FileNotFoundError, match=f"onnx-fp32 of m {version} is not downloaded"):
        open_variant(manifest, tmp_path / "release")


def test_the_release_split_is_found_and_checked_by_sha256(tmp_path: Path) -> None:
    from tasks.data.snapshot import DatasetFile, DatasetManifest
    from tasks.hashing import sha256_file
    from tasks.registry.manifest import DatasetLineage
    from tasks.registry.serving import SplitNotAvailable, fetch_release, release_split

    source = tmp_path / "images"
    (source / "a").mkdir(parents=True)
    for name in ("one.png", "two.png"):
        (source / "a" / name).write_bytes(name.encode() * 10)
    listed = DatasetManifest(
        dataset_version="d",
        classes=["a"],
        files=[
            DatasetFile(path=f"a/{name}", sha256=sha256_file(source / "a" / name), label="a", split=split)
            for name, split in (("one.png", "test"), ("two.png", "train"))
        ],
    )
    (tmp_path / "dataset.json").write_text(listed.model_dump_json())
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    (onnx_dir / "model.onnx").write_bytes(b"graph")
    store = FileStore(tmp_path / "registry")
    lineage = DatasetLineage(version="d", source=str(source), counts={"test": {"a": 1}}, quarantined=0)
    files = {"dataset/manifest.json": tmp_path / "dataset.json", "onnx-fp32/model.onnx": onnx_dir / "model.onnx"}
    release = publish_release(store, files, release_draft("m", dataset=lineage))
    fetched = fetch_release(store, "m", release.version, tmp_path / "work")
    split = release_split(store, fetched, tmp_path / "cache")
    assert [(f.name, f.path, f.label) for f in split] == [("a/one.png", source / "a" / "one.png", "a")]
    (source / "a" / "one.png").write_bytes(b"edited")
    with pytest.raises(SplitNotAvailable, match="1 of the 1 test files of m .* changed since the build read them"):
        release_split(store, fetched, tmp_path / "cache")
    (source / "a" / "one.png").unlink()
    with pytest.raises(SplitNotAvailable, match=f"are not on this machine \\(the build read them from {source}"):
        release_split(store, fetched, tmp_path / "cache")
