"""`make serve` on a terminal: one Ctrl-C stops the worker and the server, leaves nothing behind, and exits 0.

Run in a pseudo-terminal, as a person runs it: Ctrl-C is the terminal's interrupt character, sent to
whatever process group holds the terminal's foreground.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.conftest import PROJECT

pytestmark = pytest.mark.integration


class Terminal:
    """A command on its own pseudo-terminal, in its own session; its output is collected as it comes."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: exec the command on the terminal
            os.chdir(PROJECT)
            os.execvpe(argv[0], argv, env)
        self.output = b""

    def read_until(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.output:
            assert time.monotonic() < deadline, f"no {text!r} after {timeout} s:\n{self.text()[-3000:]}"
            self._pump(0.5)

    def _pump(self, seconds: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], seconds)
        if ready:
            try:
                self.output += os.read(self.fd, 65536)
            except OSError:  # the terminal closed: every process on it has gone
                time.sleep(seconds)

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if the command is still running after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._pump(0.2)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        return None

    def text(self) -> str:
        return self.output.decode(errors="replace")


def _serve_env(port: int, tmp_path: Path) -> dict[str, str]:
    """`make serve` on its own port and Prefect home; no scheduler, so no hourly run touches the checkout's .lepton."""
    env = {**os.environ, "LEPTON_PREFECT_PORT": str(port), "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_one_ctrl_c_stops_the_worker_and_the_server_and_make_exits_0(tmp_path: Path) -> None:
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = _serve_env(port, tmp_path)
    started: list[psutil.Process] = []  # the command's descendants while a build runs
    terminal = Terminal(["make", "--no-print-directory", "serve"], env)
    session = terminal.pid  # pty.fork makes the child a session leader: everything it starts is in this session
    try:
        terminal.read_until("started!", timeout=240)
        # A build is running when the user stops everything.
        deployment = httpx.get(f"{api}/deployments/name/build/build").raise_for_status().json()
        config = {"reason": "interrupted", "work_dir": str(tmp_path / "work"), "store": {"uri": f"file://{tmp_path}/registry"}}
        for attempt in range(6):
            created = httpx.post(f"{api}/deployments/{deployment['id']}/create_flow_run",
                                 json={"parameters": {"config": config}})
            # A server still busy after `deploy --all` (SQLite locked) answers 503; Prefect's client retries too.
            if created.status_code != 503:
                break
            time.sleep(2**attempt)
        assert created.status_code == 201, created.text
        run = created.json()
        terminal.read_until("epoch 1:", timeout=240)
        # Flow runs start in sessions of their own: they are followed by ancestry, not by session.
        started = psutil.Process(terminal.pid).children(recursive=True)
        assert any("prefect.engine" in p.cmdline() for p in started)  # the build's own process
        os.write(terminal.fd, b"\x03")  # Ctrl-C
        code = terminal.wait(timeout=90)
        assert code == 0, f"exit {code}:\n{terminal.text()[-3000:]}"
    finally:
        leftovers = [p for p in psutil.process_iter(["pid"]) if _session(p) == session]
        leftovers += [p for p in started if p.is_running() and p not in leftovers]
        for process in leftovers:
            process.kill()
    assert leftovers == [], [p.cmdline() for p in leftovers if p.is_running()]
    assert "Interrupt" not in terminal.text() and "Error" not in terminal.text()
    # The interrupted build is not left "Running" in the UI.
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        state, message = db.execute(
            "SELECT flow_run_state.type, flow_run_state.message FROM flow_run JOIN flow_run_state "
            "ON flow_run.state_id = flow_run_state.id WHERE flow_run.id = ?", (run["id"],)
        ).fetchone()
    assert state == "CRASHED" and "stopped (Ctrl-C)" in message, json.dumps([state, message])


def _session(process: psutil.Process) -> int | None:
    try:
        return os.getsid(process.pid)
    except (ProcessLookupError, PermissionError):
        return None


def test_sigterm_without_a_terminal_stops_everything_too(tmp_path: Path) -> None:
    # A service manager or CI: no terminal, so no job control; the worker must still get its stop signal
    # (a command started with & in such a script inherits SIGINT ignored, and the worker hung on it).
    env = _serve_env(_free_port(), tmp_path)
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        script = subprocess.Popen(["infra/serve.sh"], cwd=PROJECT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "started!" not in log.read_text():
            assert time.monotonic() < deadline and script.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        script.send_signal(signal.SIGTERM)
        assert script.wait(timeout=90) == 0, log.read_text()[-3000:]
    finally:
        leftovers = [p for p in psutil.process_iter(["pid"]) if _session(p) == script.pid]
        for process in leftovers:
            process.kill()
    assert leftovers == []
