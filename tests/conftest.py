"""Shared fixtures: a Prefect test API, the one shrunken build config, generated image folders, a local S3 endpoint."""

from __future__ import annotations

import os

# Before Prefect is imported anywhere: no analytics calls from tests.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from flows.config import BuildConfig  # noqa: E402


@pytest.fixture(scope="session")
def prefect_api():
    """One Prefect test harness (temporary database and API) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# What every test build changes from the defaults: short training and fine-tunes, few timed calls.
# The plan stays the default (distill -> prune -> int8) unless a test says otherwise.
QUICK_BUILD: dict[str, Any] = {
    "train": {"max_epochs": 12},
    "compress": {"distill": {"max_epochs": 10}, "prune": {"finetune_epochs": 3}, "int8": {"calibration_size": 100}},
    "evaluate": {"latency": {"repeats": 3, "warmup": 1, "batch_n": 16}},
}


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def shrunken_build(root: Path, **overrides: Any) -> BuildConfig:
    """A build config for tests: work dir and registry under ``root``, short training, few timed calls.

    ``overrides`` are BuildConfig fields as plain data, merged into the quick settings
    (``train={"max_epochs": 2}`` changes only the epochs).
    """
    base = _merged(QUICK_BUILD, {"work_dir": str(root / "work"), "store": {"uri": f"file://{root / 'registry'}"}})
    return BuildConfig.model_validate(_merged(base, overrides))


def folder_build(root: Path, images: Path, model_name: str, **overrides: Any) -> BuildConfig:
    """A shrunken build of a small generated ImageFolder at 8x8: INT8 only, and a budget loose enough for noise images."""
    preset = {
        "model_name": model_name,
        "data": {"source": str(images), "image_size": 8},
        "train": {"max_epochs": 15, "batch_size": 16},
        "compress": {"plan": ["int8"], "int8": {"calibration_size": 40}},
        "evaluate": {"policy": {"accuracy_budget_pp": 5.0}},
    }
    return shrunken_build(root, **_merged(preset, overrides))


@pytest.fixture(scope="session")
def quick_build() -> Callable[..., BuildConfig]:
    """The one way tests shrink a build: ``quick_build(root, **overrides) -> BuildConfig``."""
    return shrunken_build


def write_class_images(root: Path, classes: dict[str, int], size: int = 12, seed: int = 0) -> Path:
    """An ImageFolder of seeded random grayscale PNGs; each class has its own mean brightness."""
    rng = np.random.default_rng(seed)
    for index, (name, count) in enumerate(sorted(classes.items())):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            base = 40 + 60 * index
            pixels = np.clip(rng.normal(base, 20, size=(size, size)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{name}_{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three classes of twelve small seeded PNG images each."""
    return write_class_images(tmp_path / "images", {"a": 12, "b": 12, "c": 12})


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded digits written once as an ImageFolder for the session."""
    from tasks.data.digits import write_digits_imagefolder

    return write_digits_imagefolder(tmp_path_factory.mktemp("datasets") / "digits")


@pytest.fixture(scope="session")
def digits_snapshot(digits_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    """A snapshot of the digits at the default size, shared by tests that only read it."""
    from tasks.data.config import DataConfig
    from tasks.data.imagefolder import ingest_imagefolder

    return ingest_imagefolder(digits_folder, DataConfig(), tmp_path_factory.mktemp("snapshots"))


def release_draft(model: str, served: str = "onnx-fp32", **updates: Any):  # noqa: ANN201 - ReleaseDraft
    """A valid manifest draft for registry tests that release files rather than a trained model."""
    from tasks.data.contract import ImageInput
    from tasks.registry.manifest import (
        DatasetLineage,
        LatencyRecord,
        Metrics,
        PolicyRecord,
        ReleaseDraft,
        ReleasedVariant,
        ServedVariant,
        TrainingLineage,
    )

    timing = {"p50_ms_b1": 0.1, "p95_ms_b1": 0.2, "p50_ms_bn": 1.0, "p95_ms_bn": 2.0}
    draft = ReleaseDraft(
        model=model,
        input=ImageInput(channels=1, image_size=16),
        classes=["a", "b", "c"],
        served=ServedVariant(
            name=served, runtime="onnxruntime", precision="fp32", stage="trained", entrypoint="model.onnx", reason="test"
        ),
        policy=PolicyRecord(objective="latency_b1", accuracy_budget_pp=1.0, baseline_accuracy=1.0, floor=0.99, out_of_budget=[]),
        latency=LatencyRecord(),
        metrics=Metrics(test_accuracy_fp32=1.0, test_accuracy_served=1.0, val_accuracy=1.0, test_images=3),
        variants=[
            ReleasedVariant(
                name=served, runtime="onnxruntime", precision="fp32", entrypoint="model.onnx", accuracy=1.0,
                in_budget=True, **timing,
            )
        ],
        parity=[],
        dataset=DatasetLineage(version="test", source="test", counts={"test": {"a": 1, "b": 1, "c": 1}}, quarantined=0),
        training=TrainingLineage(model="small_cnn", best_epoch=0, epochs_run=1),
        config={},
        code_version="test",
        model_card="MODEL_CARD.md",
    )
    return draft.model_copy(update=updates)


# Distinctive, so a test can prove they appear in no log, artifact or manifest.
TEST_ACCESS_KEY = "AKIALEPTONTESTKEY0001"
TEST_SECRET = "lepton-test-secret-never-logged"


@pytest.fixture(scope="session")
def s3_endpoint(s3_server) -> str:
    """The URL of a real S3-compatible HTTP endpoint on 127.0.0.1 (moto's server), with test credentials set."""
    return s3_server.url


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 with a request log and injectable faults (tests/s3_endpoint.py)."""
    from tests.s3_endpoint import S3Endpoint

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID=TEST_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=TEST_SECRET, AWS_DEFAULT_REGION="us-east-1")
    server = S3Endpoint()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def as_javascript_sends(value: Any) -> Any:
    """What ``JSON.stringify`` writes for a value the form holds: integral floats lose their ``.0``."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: as_javascript_sends(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_javascript_sends(v) for v in value]
    return value
