"""Convert an ONNX model to OpenVINO IR (xml + bin), and its bf16 form where the CPU computes in bf16."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import openvino as ov


def export_openvino(onnx_path: Path, out_path: Path) -> Path:
    """Convert ``onnx_path`` to an OpenVINO IR at ``out_path`` (``.xml``, weights in ``.bin``).

    Weights stay FP32 (``compress_to_fp16=False``): the FP32 variant must be
    what its name says; the INT8 variant is made separately with NNCF.
    """
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(out_path), compress_to_fp16=False)
    return out_path


def save_bf16_ir(fp32_ir: Path, out_path: Path) -> Path:
    """The bf16 variant's IR: the FP32 graph with weights stored in 16 bits (half the size on disk).

    It computes in bf16 because it is opened with the bf16 inference precision (``precision="bf16"``).
    """
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Core().read_model(str(fp32_ir)), str(out_path), compress_to_fp16=True)
    return out_path


def cpu_capabilities() -> list[str]:
    """What OpenVINO's CPU plugin says this CPU computes natively (``FP32``, ``INT8``, ``BF16``, ...)."""
    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def bf16_unsupported(capabilities: Sequence[str] | None = None) -> str | None:
    """Why this CPU gets no bf16 variant, or None when it computes in bf16 natively.

    OpenVINO lists ``BF16`` only where the ISA has it (AVX-512 BF16, AMX). Elsewhere a bf16
    hint is quietly run in f32: a variant that would only repeat its FP32 twin.
    """
    found = list(capabilities) if capabilities is not None else cpu_capabilities()
    if "BF16" in found:
        return None
    return f"no bf16 variant: this CPU has no native bf16 (OpenVINO CPU capabilities: {', '.join(found) or 'none'})"
