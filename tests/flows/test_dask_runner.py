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
    assert _dask_runs("score_shard-on-dask") >= 1
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
    # Progress is the inputs explained, kept per batch (2 + 2 + 1) and summed whatever order batches end in.
    for name in results:
        (count,) = (tmp_path / name / "explain").rglob("explained.json")
        assert json.loads(count.read_text()) == {"0": 2, "2": 2, "4": 1}


def test_a_build_on_dask_quantizes_each_model_in_parallel_and_releases_what_the_local_build_does(
    prefect_api, quick_build, tmp_path: Path
) -> None:
    from flows.build import build
    from tasks.registry.release import read_manifest

    overrides = {
        "train": {"max_epochs": 4},
        "compress": {"plan": ["distill", "int8"], "distill": {"max_epochs": 3}, "int8": {"models": "every", "calibration_size": 100}},
    }
    manifests = {}
    for name, runner in (("local", RunnerConfig()), ("dask", DASK)):
        config = quick_build(tmp_path / name, model_name="on-runners", runner=runner.model_dump(), **overrides)
        release = build(config)
        manifests[name] = read_manifest(open_store(config.store), release.model, release.version)
    local, dask = manifests["local"], manifests["dask"]
    # INT8 of both models (trained, distilled), computed on the cluster: the same variants, numbers and files.
    assert {v.name for v in dask.variants} >= {"onnx-int8", "distilled-onnx-int8"}
    # (Sizes differ by a few bytes: some formats record where they were written, and the two work dirs differ.)
    assert [(v.name, v.accuracy, v.macro_f1) for v in dask.variants] == [(v.name, v.accuracy, v.macro_f1) for v in local.variants]
    hashes = {name: {f.path: f.sha256 for f in m.files if "int8" in f.path and f.path.endswith(".onnx")} for name, m in manifests.items()}
    assert hashes["dask"] == hashes["local"] and len(hashes["dask"]) == 2
    # (Which variant is served is not compared: it is the fastest in budget, timed on a machine the test shares.)
    assert dask.dataset.version == local.dataset.version and dask.training == local.training
    assert _dask_runs("quantize_int8-on-dask") == 1  # the local build ran none


def _dask_runs(name: str) -> int:
    """Completed subflow runs that fanned tasks out on Dask, by the subflow's name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])))
    return sum(run.state is not None and run.state.is_completed() for run in runs)


def test_a_runner_address_must_be_a_scheduler_url() -> None:
    assert RunnerConfig(kind="dask", address="tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    with pytest.raises(ValueError, match="scheduler address"):
        RunnerConfig(kind="dask", address="10.0.0.5")
    with pytest.raises(ValueError, match="kind"):
        RunnerConfig(kind="ray")
