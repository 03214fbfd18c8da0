"""Export a model to ONNX and OpenVINO FP32, each checked against PyTorch, as the variants of one stage."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tasks.data.snapshot import DatasetSnapshot
from tasks.export.backends import OnnxRuntimeBackend, OpenVinoBackend, TorchBackend
from tasks.export.onnx import export_onnx
from tasks.export.openvino import export_openvino
from tasks.export.parity import ParityResult, check_parity
from tasks.export.variants import Exported, Variant, variant_prefix
from tasks.train.models import count_macs_params


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


def export_model(
    model: nn.Module,
    stage: str,
    snapshot: DatasetSnapshot,
    root: Path,
    tolerance: float,
    log: Callable[[str], None] | None = None,
) -> Exported:
    """ONNX (dynamic batch) and OpenVINO IR of ``model`` under ``root``, both checked against PyTorch on the test split.

    ``log`` receives one line per parity check.

    Raises:
        ParityError: an export's logits differ beyond ``tolerance``.
    """
    prefix = variant_prefix(stage)
    for runtime in ("onnx", "openvino"):
        shutil.rmtree(root / f"{prefix}{runtime}-fp32", ignore_errors=True)
    inputs, _ = snapshot.model_inputs("test")
    onnx_path, ir_path, parity = export_fp32_checked(model, inputs, root, tolerance, prefix)
    for result in parity:
        if log:
            log(
                f"parity {result.variant}: max |diff| {result.max_abs_diff:.2e} (tolerance {result.tolerance:.0e}), "
                f"top-1 agreement {result.top1_agreement * 100:.1f}%"
            )
    macs, params = count_macs_params(model, torch.from_numpy(inputs[:1]))
    common = {"precision": "fp32", "stage": stage, "macs": macs, "params": params}
    return Exported(
        stage=stage,
        variants=[
            Variant(name=f"{prefix}onnx-fp32", runtime="onnxruntime", directory=onnx_path.parent, entrypoint=onnx_path.name, **common),
            Variant(name=f"{prefix}openvino-fp32", runtime="openvino", directory=ir_path.parent, entrypoint=ir_path.name, **common),
        ],
        parity=parity,
    )
