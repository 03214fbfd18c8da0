"""Convert an ONNX model to OpenVINO IR (xml + bin)."""

from __future__ import annotations

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
