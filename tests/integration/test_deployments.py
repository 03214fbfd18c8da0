"""prefect.yaml deploys against a real Prefect server and a process worker runs the build deployment."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml

from flows.config import BuildConfig, CleanConfig, ExplainConfig, FeedbackConfig, MonitorConfig, RollbackConfig, ScoreConfig
from tests.conftest import folder_build, write_class_images
from tests.integration.conftest import PROJECT, PrefectServer

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("build", BuildConfig), ("score", ScoreConfig), ("monitor", MonitorConfig), ("feedback", FeedbackConfig),
        ("explain", ExplainConfig), ("rollback", RollbackConfig), ("clean", CleanConfig),
    ],
)
def test_prefect_yaml_declares_the_deployment(name: str, config) -> None:
    spec = yaml.safe_load((PROJECT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert deployments[name]["entrypoint"] == f"flows/{name}.py:{name}"
    module, _, function = deployments[name]["entrypoint"].partition(":")
    assert (PROJECT / module).is_file() and f"def {function}(" in (PROJECT / module).read_text()
    config.model_validate(deployments[name]["parameters"].get("config", {}))


def test_build_deployment_runs_on_a_process_worker(prefect_server: PrefectServer, deployed, tmp_path: Path) -> None:
    # Enough test images for the gate to tell the model from always predicting one class.
    images = write_class_images(tmp_path / "imgs", {"dark": 40, "light": 40}, seed=7)
    registry = tmp_path / "registry"
    config = folder_build(
        tmp_path, images, "from-deployment", compress={"int8": {"calibration_size": 20}},
        evaluate={"policy": {"accuracy_budget_pp": 50}},
    )
    params = {"config": config.model_dump(mode="json")}
    assert {"build", "score", "monitor", "feedback", "explain", "rollback", "clean"} <= set(deployed)
    for deployment in deployed.values():
        # What the UI renders as each deployment's parameter form.
        assert "config" in deployment["parameter_openapi_schema"]["properties"]
    prefect_server.cli("deployment", "run", "build/build", "--params", json.dumps(params))
    # The worker picks up the scheduled run, runs it in a subprocess from the project folder, and exits.
    prefect_server.cli("worker", "start", "--pool", "lepton-process", "--run-once", cwd=tmp_path, timeout=600)
    runs = httpx.post(
        f"{prefect_server.api_url}/flow_runs/filter",
        json={"flow_runs": {"deployment_id": {"any_": [deployed["build"]["id"]]}}},
    ).json()
    # Other tests start runs on this server too: the one started here is the one for this model.
    assert [r["state_type"] for r in runs if r["parameters"]["config"]["model_name"] == "from-deployment"] == ["COMPLETED"]
    alias = json.loads((registry / "models" / "from-deployment" / "aliases" / "production.json").read_text())
    assert (registry / "models" / "from-deployment" / alias["version"] / "manifest.json").is_file()


def test_the_build_trigger_says_in_words_what_starts_a_build(prefect_server: PrefectServer, deployed) -> None:
    found = httpx.post(f"{prefect_server.api_url}/automations/filter", json={}).json()
    starting_builds = [
        a for a in found
        if any(action.get("deployment_id") == deployed["build"]["id"] for action in a["actions"])
    ]
    assert [a["name"] for a in starting_builds] == ["retrain on drift or degraded accuracy"]
    description = starting_builds[0]["description"]
    assert "lepton.model.drift.detected" in description and "lepton.model.performance.degraded" in description


def test_every_schedule_has_a_name_and_reads_as_words_in_the_deployment_list(deployed) -> None:
    scheduled = {name: d["schedules"] for name, d in deployed.items() if d["schedules"]}
    assert set(scheduled) == {"score", "monitor", "explain", "clean"}
    for name, schedules in scheduled.items():
        for entry in schedules:
            # The UI's deployment list writes intervals in words ("Hourly"); a cron schedule shows as "+1".
            assert entry["slug"] and entry["schedule"].get("interval"), (name, entry)
    monitor = scheduled["monitor"][0]["schedule"]
    # Half past the hour: after the hourly score run has logged the hour's inputs.
    assert monitor["interval"] == 3600 and monitor["anchor_date"].startswith("2026-01-01T00:30:00")
