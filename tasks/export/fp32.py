"""Export a trained model to ONNX and OpenVINO FP32, each checked against PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from tasks.export.backends import OnnxRuntimeBackend, OpenVinoBackend, TorchBackend
from tasks.export.onnx import export_onnx
from tasks.export.openvino import export_openvino
from tasks.export.parity import ParityResult, check_parity


def export_fp32_checked(
    model: nn.Module, test_inputs: np.ndarray, out_root: Path, tolerance: float, prefix: str = ""
) -> tuple[Path, Path, list[ParityResult]]:
    """Write ``out_root/{prefix}onnx-fp32/model.onnx`` and ``out_root/{prefix}openvino-fp32/model.xml``.

    Returns:
        The ONNX path, the IR path and both parity results on ``test_inputs``.

    Raises:
        ParityError: an export's logits differ from PyTorch's beyond ``tolerance``.
    """
    onnx_path = export_onnx(model, torch.from_numpy(test_inputs[:2]), out_root / f"{prefix}onnx-fp32" / "model.onnx")
    ir_path = export_openvino(onnx_path, out_root / f"{prefix}openvino-fp32" / "model.xml")
    reference = TorchBackend(model)
    parity = [
        check_parity(f"{prefix}onnx-fp32", reference, OnnxRuntimeBackend(onnx_path), test_inputs, tolerance),
        check_parity(f"{prefix}openvino-fp32", reference, OpenVinoBackend(ir_path), test_inputs, tolerance),
    ]
    return onnx_path, ir_path, parity
