"""The quickstart notebook runs top to bottom in a fresh kernel and reaches a useful accuracy."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

PROJECT = Path(__file__).resolve().parents[2]


def test_quickstart_notebook_executes(prefect_api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import get_current_settings

    notebook = nbformat.read(PROJECT / "notebooks" / "quickstart.ipynb", as_version=4)
    # The kernel is a fresh process: point it at temporary folders and at the session's test API
    # (a temporary API of its own would cost a server start; the command-line tests run one).
    monkeypatch.setenv("LEPTON_QUICKSTART_DIR", str(tmp_path / "quickstart"))
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("PREFECT_API_URL", get_current_settings().api.url)
    monkeypatch.delenv("PREFECT_PROFILES_PATH", raising=False)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(PROJECT)}})
    client.execute()
    client_outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in client_outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in client_outputs if o.get("output_type") == "stream")
    assert "onnx-fp32" in text and "promoted" in text
    accuracy = float(text.rsplit("accuracy ", 1)[1].split()[0])
    assert accuracy >= 0.9
