"""Shared fixtures of the flow tests: one shrunken build of the embedded digits (default plan) for every module."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client
from prefect.states import State

from flows.build import build
from tasks.registry.release import download_release
from tasks.registry.store import open_store


@pytest.fixture(scope="session")
def demo(prefect_api, quick_build, tmp_path_factory: pytest.TempPathFactory):
    """The embedded digits built with the default plan (distill -> prune -> int8), trained briefly.

    Returns the config, the release, its manifest and the folder it was downloaded to (verified).
    """
    root = tmp_path_factory.mktemp("demo")
    config = quick_build(root)
    release = build(config)
    manifest = download_release(open_store(config.store), release.model, release.version, root / "download", root / "cache")
    return config, release, manifest, root / "download"


def release_files_of(demo, split: str = "test"):  # noqa: ANN201 - list[LabelledFile]
    """The files of one split of the demo release, as this machine has them (through the registry's one helper)."""
    from tasks.registry.serving import fetch_release, release_split

    config, release, _, _ = demo
    store = open_store(config.store)
    fetched = fetch_release(store, release.model, release.version, config.work_dir)
    return release_split(store, fetched, config.work_dir / "cache", split)


def run_tags(state: State) -> list[str]:
    """The tags the run list shows for the flow run that ended in ``state``."""
    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id).tags
