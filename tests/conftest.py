"""Shared fixtures: a Prefect test API for the session, generated image folders, a local S3 endpoint."""

from __future__ import annotations

import os

# Before Prefect is imported anywhere: no analytics calls from tests.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402


@pytest.fixture(scope="session")
def prefect_api():
    """One Prefect test harness (temporary database and API) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


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
    from tasks.data.snapshot import ingest_imagefolder

    return ingest_imagefolder(digits_folder, DataConfig(), tmp_path_factory.mktemp("snapshots"))


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
