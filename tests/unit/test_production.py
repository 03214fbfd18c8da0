"""Scoring production on a candidate's test split, and the gate built on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.export.backends import OnnxRuntimeBackend
from tasks.export.evaluate import accuracy
from tasks.export.onnx import export_onnx
from tasks.registry.aliases import move_alias, read_alias
from tasks.registry.config import GateConfig
from tasks.registry.gate import gate_candidate
from tasks.registry.production import ProductionScore, UnsafeArtifactError, open_variant, score_production
from tasks.registry.release import publish_release
from tasks.registry.store import FileStore
from tasks.train.models import build_model

CLASSES = ["a", "b", "c"]


@pytest.fixture
def production(tmp_path: Path):
    """A registry whose production release serves a real ONNX model over 1x16x16 inputs."""
    torch.manual_seed(0)
    onnx_path = export_onnx(build_model("small_cnn", 3, 1).eval(), torch.rand(2, 1, 16, 16), tmp_path / "v" / "model.onnx")
    store = FileStore(tmp_path / "registry")
    manifest = {
        "input": {"channels": 1, "image_size": 16},
        "dataset": {"classes": CLASSES},
        "served": {"name": "onnx-fp32", "runtime": "onnxruntime", "entrypoint": "model.onnx"},
        "variants": [{"variant": "onnx-fp32", "runtime": "onnxruntime"}],
        "entrypoints": {"onnx-fp32": "model.onnx"},
    }
    files = {f"onnx-fp32/{p.name}": p for p in onnx_path.parent.iterdir()}
    release = publish_release(store, "m", files, manifest, "onnx-fp32")
    move_alias(store, "m", release.version, "first", read_alias(store, "m"))
    return store, release.version, onnx_path


def test_production_is_scored_with_its_served_artifact(production, tmp_path: Path) -> None:
    store, version, onnx_path = production
    rng = np.random.default_rng(0)
    inputs = rng.random((30, 1, 16, 16), dtype=np.float32)
    labels = rng.integers(0, 3, 30)
    score = score_production(store, "m", inputs, labels, CLASSES, tmp_path / "work")
    assert score.version == version and score.comparable
    assert score.accuracy == accuracy(OnnxRuntimeBackend(onnx_path), inputs, labels)


def test_other_classes_or_shapes_are_incomparable(production, tmp_path: Path) -> None:
    store, _, _ = production
    inputs = np.zeros((4, 1, 16, 16), np.float32)
    other_classes = score_production(store, "m", inputs, np.zeros(4, int), ["a", "b", "d"], tmp_path / "w1")
    assert not other_classes.comparable and "classes" in other_classes.note
    other_shape = score_production(store, "m", np.zeros((4, 3, 32, 32), np.float32), np.zeros(4, int), CLASSES, tmp_path / "w2")
    assert not other_shape.comparable and "[1, 16, 16]" in other_shape.note


def test_no_production_yet(tmp_path: Path) -> None:
    score = score_production(FileStore(tmp_path / "empty"), "m", np.zeros((1, 1, 4, 4), np.float32), np.zeros(1, int), CLASSES, tmp_path)
    assert score.version is None and score.accuracy is None


def test_gate_respects_incomparable_setting_and_current_production() -> None:
    incomparable = ProductionScore(version="old", comparable=False, note="production takes inputs [1, 16, 16]")
    assert not gate_candidate(0.99, "new", incomparable, GateConfig()).promote
    assert gate_candidate(0.99, "new", incomparable, GateConfig(promote_if_incomparable=True)).promote
    same = gate_candidate(0.99, "v1", ProductionScore(version="v1", accuracy=0.99), GateConfig())
    assert not same.promote and "already production" in same.reason
    worse = gate_candidate(0.90, "v2", ProductionScore(version="v1", accuracy=0.99), GateConfig(tolerance_pp=0.5))
    assert not worse.promote and "v1" in worse.reason


class Payload:
    """What a malicious state dict would carry: an object whose unpickling runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_a_pickled_payload_in_a_release_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    state = build_model("small_cnn", 3, 1).state_dict()
    state["extra"] = Payload(marker)
    weights = tmp_path / "model_state.pt"
    torch.save(state, weights)
    manifest = {
        "version": "x",
        "input": {"channels": 1},
        "dataset": {"classes": CLASSES},
        "training": {"model": "small_cnn"},
        "variants": [{"variant": "torch-fp32", "runtime": "torch"}],
        "entrypoints": {"torch-fp32": "model_state.pt"},
    }
    (tmp_path / "release" / "torch-fp32").mkdir(parents=True)
    weights.rename(tmp_path / "release" / "torch-fp32" / "model_state.pt")
    with pytest.raises(UnsafeArtifactError, match="model_state.pt holds pickled objects"):
        open_variant(manifest, tmp_path / "release", "torch-fp32")
    assert not marker.exists()
