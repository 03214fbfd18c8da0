"""Where a release came from: code version."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path


def code_version(repo: Path | None = None) -> str:
    """The git commit (with ``-dirty`` for uncommitted changes) or, outside git, the package version."""
    cwd = repo or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return f"git:{commit}{'-dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        try:
            return f"lepton-pipelines=={metadata.version('lepton-pipelines')}"
        except metadata.PackageNotFoundError:
            return "unknown"
