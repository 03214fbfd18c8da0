"""Alerting: the automations of infra/automations.yaml, applied by infra/automations.py, post to a webhook on 127.0.0.1.

A real Prefect server runs the automations; a real HTTP receiver collects what they post.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import PROJECT, PrefectServer

pytestmark = pytest.mark.integration

RAISE = """
import sys
from prefect.events import emit_event
from prefect.client.orchestration import get_client
from prefect.states import Failed
model, deployment_id = sys.argv[1], sys.argv[2]
resource = {"prefect.resource.id": f"lepton.model.{model}"}
emit_event("lepton.model.drift.detected", resource=resource, payload={"model": model, "release_version": "v1"})
emit_event("lepton.model.performance.degraded", resource=resource, payload={"model": model, "drop_pp": 9.5})
emit_event("lepton.model.promotion.refused", resource=resource, payload={"model": model, "candidate_version": "v2"})
with get_client(sync_client=True) as client:
    run = client.create_flow_run_from_deployment(deployment_id)
    client.set_flow_run_state(run.id, Failed(message="disk full"), force=True)
    print(run.id)
"""


class Receiver(BaseHTTPRequestHandler):
    posts: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Receiver.posts.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def automations(prefect_server: PrefectServer) -> list[dict]:
    found = httpx.post(f"{prefect_server.api_url}/automations/filter", json={}).json()
    return [a for a in found if a["name"].startswith("lepton: ")]


def apply(prefect_server: PrefectServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "infra/automations.py", *args], cwd=PROJECT, env=prefect_server.env,
        capture_output=True, text=True, timeout=180,
    )


def test_automations_post_failures_drift_degradation_and_refusals(prefect_server: PrefectServer, deployed, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # Without a URL nothing is created, and it says so.
        quiet = apply(prefect_server)
        assert quiet.returncode == 0 and "no LEPTON_ALERT_WEBHOOK_URL" in quiet.stdout and not automations(prefect_server)
        # Applied twice (as `make serve` does on every start): four automations, not eight.
        for _ in range(2):
            done = apply(prefect_server, "--webhook-url", f"http://127.0.0.1:{port}/hook")
            assert done.returncode == 0, done.stderr[-2000:]
        assert sorted(a["name"] for a in automations(prefect_server)) == [
            "lepton: a run failed", "lepton: drift detected", "lepton: performance degraded", "lepton: promotion refused",
        ]
        time.sleep(5)  # the server's trigger service picks new automations up on its next refresh
        raised = subprocess.run(
            [sys.executable, "-c", RAISE, "alerted", deployed["rollback"]["id"]],
            env=prefect_server.env, capture_output=True, text=True, timeout=120, check=True,
        )
        run_id = raised.stdout.strip().splitlines()[-1]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(Receiver.posts) < 4:
            time.sleep(1)
        by_alert = {post["alert"]: post for post in Receiver.posts}
        assert set(by_alert) == {"run failed", "drift", "performance degraded", "promotion refused"}, Receiver.posts
        assert by_alert["drift"]["model"] == "alerted" and by_alert["performance degraded"]["payload"]["drop_pp"] == 9.5
        assert by_alert["promotion refused"]["payload"]["candidate_version"] == "v2"
        failed = by_alert["run failed"]
        assert failed["flow_run_id"] == run_id and failed["deployment"] == "rollback" and failed["message"] == "disk full"
    finally:
        server.shutdown()
        # The drift and performance events also started a build run (the build trigger): not for a worker of a later test.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = [
                r for r in httpx.post(
                    f"{prefect_server.api_url}/flow_runs/filter",
                    json={"flow_runs": {"deployment_id": {"any_": [deployed["build"]["id"]]}}},
                ).json()
                if r["parameters"].get("config", {}).get("model_name") == "alerted"
            ]
            if runs:
                for run in runs:
                    httpx.delete(f"{prefect_server.api_url}/flow_runs/{run['id']}")
                break
            time.sleep(1)
        for automation in automations(prefect_server):
            httpx.delete(f"{prefect_server.api_url}/automations/{automation['id']}")


def test_a_bad_automation_file_names_the_automation_and_field(prefect_server: PrefectServer, tmp_path: Path) -> None:
    bad = tmp_path / "automations.yaml"
    bad.write_text("automations:\n  - name: broken\n    trigger: {type: event, posture: Sideways}\n    actions: []\n")
    result = apply(prefect_server, "--file", str(bad), "--webhook-url", "http://127.0.0.1:9/hook")
    assert result.returncode == 2 and "automation 'broken', field trigger" in result.stderr and "Traceback" not in result.stderr


def test_the_trigger_and_the_alerts_name_the_events_lepton_emits() -> None:
    import yaml

    from tasks import events

    deployments = yaml.safe_load((PROJECT / "prefect.yaml").read_text())["deployments"]
    build = next(d for d in deployments if d["name"] == "build")
    assert set(build["triggers"][0]["expect"]) == {events.DRIFT, events.PERFORMANCE_DEGRADED}
    alerts = yaml.safe_load((PROJECT / "infra" / "automations.yaml").read_text())["automations"]
    expected = {event for alert in alerts for event in alert["trigger"]["expect"]}
    assert {events.DRIFT, events.PERFORMANCE_DEGRADED, events.PROMOTION_REFUSED} <= expected
