"""Numerics stay free of orchestration: importing them pulls in neither Prefect nor boto3."""

from __future__ import annotations

import subprocess
import sys

PURE_MODULES = [
    "tasks.data.snapshot",
    "tasks.data.digits",
    "tasks.train.fit",
    "tasks.export.onnx",
    "tasks.export.openvino",
    "tasks.export.parity",
    "tasks.export.fp32",
    "tasks.export.evaluate",
    "tasks.compress.onnx_int8",
    "tasks.compress.openvino_int8",
    "tasks.registry.release",
    "tasks.registry.gate",
    "tasks.monitor.features",
    "tasks.monitor.drift",
    "tasks.monitor.reference",
    "tasks.monitor.scoring",
    "tasks.monitor.logs",
    "tasks.data.shift",
    "tasks.explain.lime_images",
    "tasks.explain.report",
    "tasks.compress.prune",
    "tasks.compress.distill",
    "tasks.compress.config",
]


def test_pure_modules_import_neither_prefect_nor_boto3() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {PURE_MODULES!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in ('prefect', 'boto3', 'botocore') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
