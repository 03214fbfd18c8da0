"""The model server as users run it (``python -m serve``, its own process) on a free 127.0.0.1 port, for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

PROJECT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A running ``python -m serve`` and an HTTP client for it."""

    def __init__(self, args: list[str], env: dict[str, str], log_dir: Path, token: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.stdout, self.stderr = log_dir / f"serve-{self.port}.out", log_dir / f"serve-{self.port}.err"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serve", "--port", str(self.port), *args],
            cwd=PROJECT,
            env=env,
            stdout=self.stdout.open("w"),
            stderr=self.stderr.open("w"),
        )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def wait_ready(self, timeout: float = 90) -> None:
        """Until ``/v2/health/ready`` answers 200 (the model loaded and warmed up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self.client.get("/v2/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the server was not ready within {timeout} s:\n{self.log()}")

    def wait_version(self, model: str, version: str, timeout: float = 60) -> None:
        """Until the server answers with ``version``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.client.get(f"/v2/models/{model}")
            if answer.status_code == 200 and answer.json()["versions"] == [version]:
                return
            time.sleep(0.05)
        raise AssertionError(f"the server did not switch to {version} within {timeout} s:\n{self.log()}")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of ``/metrics``, keyed by (sample name, sorted labels)."""
        answer = self.client.get("/metrics")
        assert answer.status_code == 200, answer.text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text)
            for sample in family.samples
        }

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM (what Kubernetes sends), and the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self.client.close()

    def log(self) -> str:
        return self.stderr.read_text() + self.stdout.read_text()[-4000:]


@contextmanager
def running_server(
    args: list[str], log_dir: Path, token: str | None = None, ready: bool = True, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """A server for the duration of the block; stopped (SIGTERM, then SIGKILL) however the block ends."""
    environment = {**os.environ, **(env or {})}
    environment.pop("LEPTON_SERVE_TOKEN", None)
    if token:
        environment["LEPTON_SERVE_TOKEN"] = token
    server = ServerProcess(args, environment, log_dir, token)
    try:
        if ready:
            server.wait_ready()
        yield server
    finally:
        if server.process.poll() is None:
            try:
                server.terminate(30)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()
