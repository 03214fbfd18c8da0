"""A real `prefect server start` on a free 127.0.0.1 port, for deployment and event tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

PROJECT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")


@dataclass
class PrefectServer:
    """A running server and the environment that points CLI calls at it."""

    api_url: str
    env: dict[str, str]

    def cli(self, *args: str, timeout: float = 300, cwd: Path = PROJECT) -> subprocess.CompletedProcess[str]:
        """Run ``prefect <args>`` against this server; fail the test with its output if it fails."""
        result = subprocess.run(
            [PREFECT, "--no-prompt", *args], cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, f"prefect {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "LEPTON_PROJECT_DIR": str(PROJECT),
    }
    with running_server(env, "127.0.0.1", port, home) as server:
        yield server


@contextmanager
def running_server(env: dict[str, str], host: str, port: int, home: Path, start_seconds: float = 180) -> Iterator[PrefectServer]:
    """``prefect server start`` with ``env`` on ``host:port`` until healthy (its log: ``home/server.log``), stopped after.

    ``env`` must hold the ``PREFECT_API_URL`` of ``host:port``; the first start on an empty database runs
    every migration, hence the generous ``start_seconds``.
    """
    log = open(home / "server.log", "w")
    process = subprocess.Popen(
        [PREFECT, "server", "start", "--host", host, "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + start_seconds
        while True:
            try:
                if httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not start; log: {(home / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield PrefectServer(api_url=env["PREFECT_API_URL"], env=env)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="session")
def deployed(prefect_server: PrefectServer) -> dict[str, dict]:
    """Every deployment of prefect.yaml on the session's server, on the process pool, schedules paused.

    Returns the deployments by name, as the API lists them.
    """
    prefect_server.cli("work-pool", "create", "lepton-process", "--type", "process", "--overwrite")
    prefect_server.cli("deploy", "--all")
    prefect_server.cli("deployment", "schedule", "pause", "--all")  # tests start the runs they look at
    return {d["name"]: d for d in httpx.post(f"{prefect_server.api_url}/deployments/filter", json={}).json()}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # noqa: ANN201
    """Each phase's report on the test item, so a fixture can tell in teardown that the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
