"""The drift drill: the whole loop on the embedded default, on a real local Prefect server.

build -> score a clean batch (quiet) -> score a shifted batch (inverted digits): drift and the estimated
harm -> its true labels arrive: the measured harm -> the events start one run of the `build` deployment
(cool-down) -> a worker retrains on the data plus the labelled batch -> the gate decides, with its interval,
and production moves (or not, and why).

    make drill            # or: .venv/bin/python infra/drill.py [--shift blur] [--no-wait]

Uses the same work dir and registry as `make demo` (.lepton/); the Prefect server, its database and
the worker live under .lepton/drill/ and are stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HOME = PROJECT / ".lepton" / "drill"


def say(step: str, text: str) -> None:
    print(f"\n[{step}] {text}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server() -> tuple[subprocess.Popen, dict[str, str]]:
    port = free_port()
    prefect_home = HOME / "prefect"
    # A fresh server each drill: runs, automations and concurrency state of an earlier drill (or of
    # one that was killed) must not decide this one.
    shutil.rmtree(prefect_home, ignore_errors=True)
    prefect_home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "LEPTON_PROJECT_DIR": str(PROJECT),
    }
    log = open(prefect_home / "server.log", "w")
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200:
                return server, env
        except httpx.HTTPError:
            time.sleep(0.5)
        if server.poll() is not None:
            break
    raise SystemExit(f"the Prefect server did not start; see {prefect_home / 'server.log'}")


def prefect(env: dict[str, str], *args: str) -> None:
    result = subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], cwd=PROJECT, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"prefect {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shift", default="invert", choices=["invert", "blur", "noise", "rotate", "dim"])
    parser.add_argument("--no-wait", action="store_true", help="stop once the build run exists; do not wait for it")
    args = parser.parse_args()

    say("server", "starting a Prefect server on 127.0.0.1")
    server, env = start_server()
    worker = None
    try:
        os.environ.update({k: env[k] for k in ("PREFECT_API_URL", "PREFECT_HOME", "LEPTON_PROJECT_DIR")})
        print(f"UI: {env['PREFECT_API_URL'].removesuffix('/api')}")
        prefect(env, "work-pool", "create", "lepton-process", "--type", "process", "--overwrite")
        prefect(env, "deploy", "--all")
        prefect(env, "deployment", "schedule", "pause", "--all")  # the drill sets the pace, not the schedules
        say("deploy", "deployments build (with the drift and performance trigger), score, monitor, feedback, rollback on pool lepton-process")
        worker_log = open(HOME / "worker.log", "w")
        worker = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", "lepton-process"],
            cwd=PROJECT, env=env, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        # Imported only now: Prefect reads PREFECT_API_URL when it is first imported.
        import httpx
        import numpy as np

        from flows.build import build
        from flows.config import BuildConfig, FeedbackConfig, MonitorConfig, ScoreConfig
        from flows.feedback import feedback
        from flows.monitor import monitor
        from flows.score import score
        from tasks.data.shift import write_shifted
        from tasks.hashing import sha256_file
        from tasks.registry.aliases import read_alias
        from tasks.registry.serving import fetch_production, release_split
        from tasks.registry.store import open_store

        config = BuildConfig(
            work_dir=PROJECT / ".lepton" / "work",
            reason="drill: initial build",
            store={"uri": f"file://{PROJECT / '.lepton' / 'registry'}"},
        )
        say("1 build", "training and releasing the default digits classifier")
        release = build(config)
        store = open_store(config.store)
        production = read_alias(store, config.model_name)[0].version
        print(f"release {release.version}; production is {production}")

        # The batches come from production's own held-out test images (listed in its dataset manifest).
        fetched = fetch_production(store, config.model_name, config.work_dir)
        test_files = release_split(store, fetched, config.work_dir / "cache")
        rng = np.random.default_rng(int(time.time()))  # a new batch each drill: a scored batch is never logged twice
        labelled = [test_files[i] for i in sorted(rng.choice(len(test_files), size=200, replace=False))]
        batch = [f.path for f in labelled]
        stamp = time.strftime("%Y%m%dT%H%M%S")
        clean, shifted = HOME / "batches" / f"{stamp}-clean", HOME / "batches" / f"{stamp}-{args.shift}"
        write_shifted(batch, clean, "none")
        write_shifted(batch, shifted, args.shift, seed=1)

        for step, folder in (("2 clean batch", clean), (f"3 {args.shift} batch", shifted)):
            say(step, f"scoring {folder.relative_to(PROJECT)} with production {production}")
            scored = score(ScoreConfig(source=str(folder), work_dir=config.work_dir, store=config.store))
            print(f"scored {scored.scored} images; classes {scored.class_counts}")
            report = monitor(
                MonitorConfig(window_hours=None, window_rows=scored.scored, work_dir=config.work_dir, store=config.store)
            )
            result = report.result
            print(f"monitor: {result.headline()}")
            print(f"tests: {result.detail}")
            print(f"report: {report.report_uri}")
            print(f"event: {'lepton.model.drift.detected ' + report.event_id if report.event_id else 'none'}")

        if not report.event_id:
            say("result", "no drift event: nothing to retrain")
            return 1
        say("4 labels", "the true labels of the shifted batch arrive (a CSV of image_sha256 -> label)")
        labels = HOME / "batches" / f"{stamp}-{args.shift}-labels.csv"
        # Labelled by content hash (the clean and shifted copies share file names); write_shifted wrote
        # copy i of the batch as "{i:05d}-{stem}.png", and the labels come from the release's dataset manifest.
        rows = [f"{sha256_file(shifted / f'{i:05d}-{f.path.stem}.png')},{f.label}\n" for i, f in enumerate(labelled)]
        labels.write_text("image_sha256,label\n" + "".join(rows))
        fed = feedback(FeedbackConfig(source=str(labels), work_dir=config.work_dir, store=config.store))
        print(f"realized: {fed.result.status.upper()} - {fed.result.detail}")
        print(f"labelled inputs kept for the retrain: {fed.kept_for_training}; report: {fed.report_uri}")
        print(f"event: {'lepton.model.performance.degraded ' + fed.event_id if fed.event_id else 'none'}")
        say("5 trigger", "the drift event starts one retrain; the performance event falls in the same cool-down")
        api = env["PREFECT_API_URL"]
        build_id = next(d["id"] for d in httpx.post(f"{api}/deployments/filter", json={}).json() if d["name"] == "build")
        events = [e for e in (report.event_id, fed.event_id) if e]

        def started_by_this_drill() -> list[dict]:
            # The run's reason names the event that started it; earlier drills' runs are on this server too.
            runs = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"deployment_id": {"any_": [build_id]}}}).json()
            return [r for r in runs if any(e in r["parameters"].get("config", {}).get("reason", "") for e in events)]

        run = None
        deadline = time.monotonic() + 120
        while run is None and time.monotonic() < deadline:
            runs = started_by_this_drill()
            # The run that builds, not one the cool-down cancelled (if a second event got through).
            runs.sort(key=lambda r: r.get("state_type") == "CANCELLED")
            run = runs[0] if runs else None
            time.sleep(1)
        if run is None:
            say("result", "the event did not start a build run within 120 s")
            return 1
        time.sleep(10)  # both events are in: give a second run the chance to appear
        runs = started_by_this_drill()
        print(f"build run {run['name']} ({run['id']}) created by the trigger; build runs for the {len(events)} events: {len(runs)}")
        print(f"parameters: {json.dumps(run['parameters'])}")
        if args.no_wait:
            return 0
        say("6 retrain", "the worker runs the build on the data plus the labelled batch; the gate decides")
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            state = httpx.get(f"{api}/flow_runs/{run['id']}").json()["state"]
            if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(3)
        print(f"build run {run['name']}: {state['type']}" + (f" ({state['message']})" if state.get("message") else ""))
        # The gate's verdict (with its interval and the number of test images) is the run's release-gate artifact.
        artifacts = httpx.post(
            f"{api}/artifacts/filter", json={"artifacts": {"key": {"any_": ["release-gate"]}, "flow_run_id": {"any_": [run["id"]]}}}
        ).json()
        for artifact in artifacts:
            print(artifact.get("data") or artifact.get("description"))
        alias = read_alias(store, config.model_name)[0]
        last = alias.history[-1]
        print(f"production now {alias.version} (last move: {last.kind} {last.from_version} -> {last.to_version}, {last.reason})")
        return 0 if state["type"] == "COMPLETED" else 1
    finally:
        if worker is not None:
            stop(worker)
        stop(server)


if __name__ == "__main__":
    raise SystemExit(main())
