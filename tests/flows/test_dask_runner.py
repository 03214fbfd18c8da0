"""The dask runner: the same flows fanned out over a 2-worker LocalCluster give what the local runner gives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from flows.config import ExplainConfig, RunnerConfig, ScoreConfig
from flows.explain import explain
from flows.score import score
from tasks.explain.config import LimeConfig
from tasks.registry.store import open_store
from tests.flows.conftest import release_files_of

DASK = RunnerConfig(kind="dask", workers=2)


def _logged(store_uri: str, kind: str, batch_id: str) -> pd.DataFrame:
    """The log of one batch of one kind (``predictions`` or ``monitoring``) in a file:// store; it must be one object."""
    root = Path(store_uri.removeprefix("file://"))
    (found,) = [p for p in root.rglob(f"*-{batch_id}.parquet") if p.relative_to(root).parts[0] == kind]
    return pd.read_parquet(found)


def test_scoring_shards_on_dask_logs_what_the_local_runner_logs(demo, tmp_path: Path) -> None:
    config, release, _, _ = demo
    folder = tmp_path / "batch"
    folder.mkdir()
    for item in release_files_of(demo)[:90]:
        shutil.copy(item.path, folder / item.path.name)
    (folder / "broken.png").write_bytes(b"not an image")
    # Two copies of the registry: each runner logs the same batch into its own.
    stores = {}
    for name in ("local", "dask"):
        registry = tmp_path / f"registry-{name}"
        shutil.copytree(Path(config.store.uri.removeprefix("file://")), registry)
        stores[name] = config.store.model_copy(update={"uri": f"file://{registry}"})
    common = {"source": str(folder), "shard_files": 25, "variant_choice": {"measure": False}}
    results = {
        name: score(ScoreConfig(work_dir=tmp_path / f"work-{name}", store=stores[name], runner=runner, **common))
        for name, runner in (("local", RunnerConfig()), ("dask", DASK))
    }
    local, dask = results["local"], results["dask"]
    assert local.scored == dask.scored == 90 and local.variant == dask.variant
    assert [f.name for f in dask.failed] == [f.name for f in local.failed] == ["broken.png"]
    assert dask.class_counts == local.class_counts
    for kind in ("predictions", "monitoring"):
        ours, theirs = (
            _logged(stores[name].uri, kind, results[name].batch_id).drop(columns=["path", "scored_at"], errors="ignore")
            for name in ("local", "dask")
        )
        assert len(ours) == 90
        pd.testing.assert_frame_equal(
            ours.sort_values("image_sha256").reset_index(drop=True), theirs.sort_values("image_sha256").reset_index(drop=True),
            check_exact=False, rtol=1e-5,
        )
    # Scored once: the same batch again logs nothing, on either runner.
    again = score(ScoreConfig(work_dir=tmp_path / "work-dask", store=stores["dask"], runner=DASK, **common), return_state=True)
    assert again.result(raise_on_failure=False).scored == 0


def test_lime_batches_on_dask_explain_as_the_local_runner_does(demo, tmp_path: Path) -> None:
    config, release, _, _ = demo
    common = {"num_images": 5, "batch_images": 2, "lime": LimeConfig(num_samples=120), "store": config.store}
    results = {
        name: explain(ExplainConfig(work_dir=tmp_path / name, runner=runner, **common))
        for name, runner in (("local", RunnerConfig()), ("dask", DASK))
    }
    assert results["dask"].explained == results["local"].explained and len(results["dask"].explained) == 5
    local, dask = (json.loads(Path(r.weights_uri.removeprefix("file://")).read_text()) for r in results.values())
    assert dask == local


def test_a_runner_address_must_be_a_scheduler_url() -> None:
    assert RunnerConfig(kind="dask", address="tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    with pytest.raises(ValueError, match="scheduler address"):
        RunnerConfig(kind="dask", address="10.0.0.5")
    with pytest.raises(ValueError, match="kind"):
        RunnerConfig(kind="ray")
