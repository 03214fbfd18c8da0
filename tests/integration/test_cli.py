"""The command line as a user runs it: ``python -m flows.build`` in its own process.

A healthy build runs as ``make demo`` does, on its own temporary Prefect API; a failing one runs
against the session's Prefect server (the same console, without paying for a second API's start).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.build import main
from tests.conftest import folder_build, write_class_images
from tests.integration.conftest import PROJECT, PrefectServer

pytestmark = pytest.mark.integration


def run_cli(*args: str, cwd: Path, server: PrefectServer | None = None) -> subprocess.CompletedProcess[str]:
    # As on a laptop: no Prefect settings from the test session (its API, analytics switch, home).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    if server is not None:
        env.update({k: v for k, v in server.env.items() if k.startswith("PREFECT_")})
    else:
        env["PREFECT_HOME"] = str(cwd / "prefect-home")
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"  # a busy 2-core machine starts it slowly
    env["PYTHONPATH"] = str(PROJECT)
    return subprocess.run(
        [sys.executable, "-m", "flows.build", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_class_images(tmp_path_factory.mktemp("cli") / "imgs", {"dark": 12, "mid": 12, "light": 12}, seed=3)


def test_a_healthy_build_prints_its_release_and_no_error_line(images: Path, tmp_path: Path) -> None:
    config = tmp_path / "build.json"
    config.write_text(folder_build(tmp_path, images, "cli-demo", compress={"plan": []}).model_dump_json())
    result = run_cli("--config", str(config), cwd=tmp_path)
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-3000:]
    assert "| ERROR" not in console and "Traceback" not in console, console[-3000:]
    assert "\nrelease:    cli-demo " in result.stdout and "production: promoted (no production release yet; accuracy " in result.stdout
    serving = next(line for line in result.stdout.splitlines() if line.startswith("serving:"))
    served = serving.split()[1].rstrip(":")
    assert serving.count(served) == 1, serving  # the reason names the variant once


def test_bad_data_is_one_message_with_the_report_and_exit_2(prefect_server: PrefectServer, tmp_path: Path) -> None:
    one_class = write_class_images(tmp_path / "one", {"only": 8})
    args = ["--set", f"data.source={one_class}", "--set", "work_dir=work", "--set", f"store.uri=file://{tmp_path / 'registry'}"]
    result = run_cli(*args, cwd=tmp_path, server=prefect_server)
    console = result.stdout + result.stderr
    assert result.returncode == 2, console[-3000:]
    assert "Traceback" not in console and "| ERROR" not in console, console[-3000:]
    failure = [line for line in console.splitlines() if "need at least 2 classes" in line]
    assert len(failure) == 1 and failure[0].startswith("build failed: dataset ")
    assert (tmp_path / failure[0].rsplit("Validation report: ", 1)[1]).is_file()


def test_debug_shows_the_traceback_of_a_failure(prefect_api, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    one_class = write_class_images(tmp_path / "one", {"only": 8})
    monkeypatch.chdir(tmp_path)
    assert main(["--set", f"data.source={one_class}", "--set", "work_dir=work", "--set", "store.uri=file://registry", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "DataValidationError" in err and "build failed: dataset " in err
