"""Shared fixtures of the flow tests: one default build of the embedded digits for every module."""

from __future__ import annotations

import pytest

from flows.build import build
from flows.config import BuildConfig
from tasks.export.config import EvaluateConfig
from tasks.registry.config import StoreConfig
from tasks.registry.release import download_release
from tasks.registry.store import open_store


@pytest.fixture(scope="session")
def demo(prefect_api, tmp_path_factory: pytest.TempPathFactory):
    """The default build (embedded digits) with a temporary work dir and registry."""
    root = tmp_path_factory.mktemp("demo")
    config = BuildConfig(
        work_dir=root / "work",
        store=StoreConfig(uri=f"file://{root / 'registry'}"),
        evaluate=EvaluateConfig(latency={"repeats": 5}),
    )
    release = build(config)
    store = open_store(config.store)
    manifest = download_release(store, release.model, release.version, root / "download", root / "cache")
    return config, release, manifest, root / "download"
