"""The closed loop on a real Prefect server: a drift verdict's event starts the build deployment."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from flows.build import build
from flows.config import BuildConfig, ScoreConfig
from flows.score import score
from tasks.data.shift import write_shifted
from tests.conftest import folder_build, write_class_images
from tests.integration.conftest import PROJECT, PrefectServer

pytestmark = pytest.mark.integration


def test_drift_event_creates_a_build_run_with_templated_parameters(
    prefect_api, prefect_server: PrefectServer, deployed, tmp_path: Path
) -> None:
    # A production release with its monitoring reference, and a batch of inverted images scored by it.
    images = write_class_images(tmp_path / "imgs", {"dark": 40, "mid": 40, "light": 40}, seed=5)
    config = folder_build(tmp_path, images, "watched")
    store = config.store
    release = build(config)
    assert release.promoted
    write_shifted(sorted(images.rglob("*.png")), tmp_path / "shifted", "invert")
    assert score(ScoreConfig(model_name="watched", source=str(tmp_path / "shifted"), work_dir=tmp_path / "work", store=store)).scored == 120

    assert {"build", "score", "monitor", "rollback"} <= set(deployed)

    # The monitor runs as its own process against the server, as a scheduled run would.
    monitor_run = subprocess.run(
        [sys.executable, "-m", "flows.monitor", "--set", "model_name=watched", "--set", f"store.uri={store.uri}",
         "--set", f"work_dir={tmp_path / 'work'}", "--set", "window_hours=1"],
        cwd=PROJECT, env=prefect_server.env, capture_output=True, text=True, timeout=300,
    )
    assert monitor_run.returncode == 0, monitor_run.stderr[-3000:]
    # A healthy run's console has no ERROR line, even with a drift verdict (that is a WARNING).
    assert "| ERROR" not in monitor_run.stderr + monitor_run.stdout, monitor_run.stderr[-3000:]
    report = json.loads(monitor_run.stdout[monitor_run.stdout.index("{"):])
    assert report["result"]["status"] == "drift" and report["event_id"]

    build_id = deployed["build"]["id"]
    deadline = time.monotonic() + 90
    runs: list[dict] = []
    while time.monotonic() < deadline and not runs:
        # Other tests on this server start build runs too: only runs for this model count.
        runs = [
            run
            for run in httpx.post(
                f"{prefect_server.api_url}/flow_runs/filter",
                json={"flow_runs": {"deployment_id": {"any_": [build_id]}}},
            ).json()
            if run["parameters"].get("config", {}).get("model_name") == "watched"
        ]
        time.sleep(1)
    assert len(runs) == 1, "the drift event did not create a build run within 90 s"
    config = runs[0]["parameters"]["config"]
    assert config["model_name"] == "watched"
    # The run records the event that started it (its id), and keeps the cool-down and the feedback setting.
    assert config["reason"] == (
        f"event lepton.model.drift.detected {report['event_id']} on release {release.version}; report {report['report_uri']}"
    )
    assert config["cooldown_hours"] == 1 and config["include_feedback"] is True
    BuildConfig.model_validate(config)  # what the run will get is a valid build config
    httpx.delete(f"{prefect_server.api_url}/flow_runs/{runs[0]['id']}")  # not for a later worker to pick up


EMIT = """
import sys
from prefect.events import emit_event
for i in range(int(sys.argv[1])):
    for model in sys.argv[2:]:
        kind = "lepton.model.drift.detected" if i % 2 == 0 else "lepton.model.performance.degraded"
        emit_event(kind, resource={"prefect.resource.id": f"lepton.model.{model}"},
                   payload={"model": model, "release_version": "v1", "report_uri": "file:///report.html"})
"""


def build_runs(prefect_server: PrefectServer, deployed, models: set[str]) -> list[dict]:
    runs = httpx.post(
        f"{prefect_server.api_url}/flow_runs/filter",
        json={"flow_runs": {"deployment_id": {"any_": [deployed["build"]["id"]]}}},
    ).json()
    return [r for r in runs if r["parameters"].get("config", {}).get("model_name") in models]


def test_an_event_storm_starts_one_build_per_model(prefect_server: PrefectServer, deployed) -> None:
    # Six drift and performance events for each of two models, as fast as they can be sent.
    models = {"storm-a", "storm-b"}
    subprocess.run([sys.executable, "-c", EMIT, "6", *sorted(models)], env=prefect_server.env, check=True, timeout=120)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and {r["parameters"]["config"]["model_name"] for r in build_runs(prefect_server, deployed, models)} != models:
        time.sleep(1)
    time.sleep(10)  # any late firing would show up by now
    runs = build_runs(prefect_server, deployed, models)
    assert sorted(r["parameters"]["config"]["model_name"] for r in runs) == sorted(models)
    assert all(r["parameters"]["config"]["cooldown_hours"] == 1 for r in runs)
    for run in runs:
        httpx.delete(f"{prefect_server.api_url}/flow_runs/{run['id']}")
