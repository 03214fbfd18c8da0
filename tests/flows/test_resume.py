"""Long runs survive: ``python -m flows.build`` killed with SIGKILL while training leaves nothing running, and the
same command started again continues the training where it was and skips what was finished."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from tasks.registry.config import StoreConfig
from tasks.registry.release import read_manifest
from tasks.registry.store import open_store

PROJECT = Path(__file__).resolve().parents[2]
EPOCHS = 8  # the kill comes after epoch 2 is logged: five more epochs leave it time on a fast machine
BUILD = [
    "--set", "work_dir=work", "--set", "store.uri=file://registry", "--set", "train.model=tiny_cnn",
    "--set", f"train.max_epochs={EPOCHS}", "--set", "train.early_stopping_patience=10", "--set", "compress.plan=[]",
    "--set", "evaluate.latency.repeats=3", "--set", "evaluate.latency.warmup=1", "--set", "evaluate.latency.batch_n=16",
]
KEPT_STEPS = ("ingest", "train", "export_fp32", "evaluate_variants", "monitoring_reference")


def _environment(root: Path) -> dict[str, str]:
    # As on a laptop: no Prefect settings of the test session, so each command starts its own temporary API.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(root / "prefect-home"), PYTHONPATH=str(PROJECT),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180", PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    return env


def _ours(root: Path) -> list[psutil.Process]:
    """Every live process started for this test's commands (they all carry its PREFECT_HOME)."""
    home = str(root / "prefect-home")
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("PREFECT_HOME") == home and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def _build(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.build", *BUILD], cwd=root, env=_environment(root), capture_output=True, text=True,
        timeout=600,
    )


def _kill_while_training(root: Path) -> tuple[str, list[psutil.Process], list[str]]:
    """Start the build, SIGKILL it once its third epoch is logged; its console and its processes then."""
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.build", *BUILD], cwd=root, env=_environment(root), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    lines: list[str] = []
    training = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if re.search(r"- epoch 2: train_loss", line):
                training.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert training.wait(timeout=300), "".join(lines)[-3000:]
        running = psutil.Process(process.pid).children(recursive=True)
        commands = [" ".join(p.cmdline()) for p in running]
        os.kill(process.pid, signal.SIGKILL)  # what no handler sees: no atexit, no finally
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    reader.join(timeout=10)
    return "".join(lines), running, commands


def test_a_build_killed_while_training_leaves_nothing_running_and_resumes_on_rerun(tmp_path: Path) -> None:
    started = time.monotonic()
    try:
        console, running, commands = _kill_while_training(tmp_path)
        assert any("uvicorn" in command for command in commands), commands
        # The temporary Prefect API (and anything else it started) goes with it, within seconds.
        gone, alive = psutil.wait_procs(running, timeout=15)
        assert alive == [], alive
        deadline = time.monotonic() + 15
        while _ours(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _ours(tmp_path) == []
        assert "release:" not in console
        killed_at = time.monotonic() - started

        # The same command again: unchanged files are not ingested again; training continues after its last epoch.
        second = _build(tmp_path)
        console = second.stdout + second.stderr
        assert second.returncode == 0, console[-3000:]
        assert "| ERROR" not in console and "Traceback" not in console, console[-3000:]
        assert re.search(r"Task run 'ingest-\w+' - Finished in state Cached", console), console[-3000:]
        resumed = re.search(r"resuming the interrupted run in .* from last\.ckpt: epoch (\d+) was done", console)
        assert resumed and int(resumed.group(1)) >= 1, console[-3000:]
        epochs = [int(e) for e in re.findall(r"- epoch (\d+): train_loss", console)]
        assert epochs == list(range(int(resumed.group(1)) + 1, EPOCHS)), epochs  # none trained twice
        release = re.search(r"^release:\s+digits-classifier (\w+)", second.stdout, re.MULTILINE)
        assert release, second.stdout
        manifest = read_manifest(open_store(StoreConfig(uri=f"file://{tmp_path / 'registry'}")), "digits-classifier", release.group(1))
        # The released model's epoch table is the whole run's, from before and after the kill.
        assert manifest.training.epochs_run == EPOCHS and manifest.metrics.test_accuracy_fp32 > 0.5
        resumed_at = time.monotonic() - started

        # Once more: every kept step is reused, and the release is the same one.
        third = _build(tmp_path)
        console = third.stdout + third.stderr
        assert third.returncode == 0 and "| ERROR" not in console, console[-3000:]
        for step in KEPT_STEPS:
            assert re.search(rf"Task run '{step}-\w+' - Finished in state Cached", console), (step, console[-3000:])
        assert re.search(rf"^release:\s+digits-classifier {release.group(1)}\b", third.stdout, re.MULTILINE), third.stdout
        print(f"killed after {killed_at:.0f} s, resumed build done at {resumed_at:.0f} s, rerun at {time.monotonic() - started:.0f} s")
        # A command that ends on its own stops its temporary API and the watchdog beside it.
        deadline = time.monotonic() + 15
        while _ours(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _ours(tmp_path) == []
    finally:
        for process in _ours(tmp_path):
            process.kill()

