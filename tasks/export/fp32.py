"""Export a model to ONNX and OpenVINO FP32, each checked against PyTorch, as the variants of one stage.

On a CPU that computes in bf16, the stage also gets an OpenVINO bf16 variant, checked at bf16's tolerance.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tasks.data.snapshot import DatasetSnapshot
from tasks.export.backends import OnnxRuntimeBackend, OpenVinoBackend, TorchBackend, predict_batched
from tasks.export.onnx import export_onnx
from tasks.export.openvino import bf16_unsupported, export_openvino, save_bf16_ir
from tasks.export.parity import BF16_MIN_TOP1_AGREEMENT, BF16_RELATIVE_TOLERANCE, ParityResult, check_bf16_parity, check_parity
from tasks.export.variants import Exported, Variant, variant_prefix
from tasks.train.models import count_macs_params


def export_fp32_checked(
    model: nn.Module,
    test_inputs: np.ndarray,
    out_root: Path,
    tolerance: float,
    prefix: str = "",
    expected: np.ndarray | None = None,
) -> tuple[Path, Path, list[ParityResult]]:
    """Write ``out_root/{prefix}onnx-fp32/model.onnx`` and ``out_root/{prefix}openvino-fp32/model.xml``.

    ``expected`` are the model's logits on ``test_inputs`` when the caller has them (else computed here, once).

    Returns:
        The ONNX path, the IR path and both parity results on ``test_inputs``.

    Raises:
        ParityError: an export's logits differ from PyTorch's beyond ``tolerance``.
    """
    onnx_path = export_onnx(model, torch.from_numpy(test_inputs[:2]), out_root / f"{prefix}onnx-fp32" / "model.onnx")
    ir_path = export_openvino(onnx_path, out_root / f"{prefix}openvino-fp32" / "model.xml")
    reference = predict_batched(TorchBackend(model), test_inputs) if expected is None else expected
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
    capabilities: Sequence[str] | None = None,
) -> Exported:
    """ONNX (dynamic batch) and OpenVINO IR of ``model`` under ``root``, both checked against PyTorch on the test split.

    ``log`` receives one line per parity check. ``capabilities`` are OpenVINO's CPU capabilities (None: this
    CPU's); with ``BF16`` among them an ``openvino-bf16`` variant is added when it passes the bf16 parity,
    and otherwise the reason is in ``skipped``.

    Raises:
        ParityError: an export's logits differ beyond ``tolerance``.
    """
    prefix = variant_prefix(stage)
    for name in ("onnx-fp32", "openvino-fp32", "openvino-bf16"):
        shutil.rmtree(root / f"{prefix}{name}", ignore_errors=True)
    inputs, _ = snapshot.model_inputs("test")
    expected = predict_batched(TorchBackend(model), inputs)  # once, for every parity check of the stage
    onnx_path, ir_path, parity = export_fp32_checked(model, inputs, root, tolerance, prefix, expected)
    for result in parity:
        if log:
            log(
                f"parity {result.variant}: max |diff| {result.max_abs_diff:.2e} (tolerance {result.tolerance:.0e}), "
                f"top-1 agreement {result.top1_agreement * 100:.1f}%"
            )
    macs, params = count_macs_params(model, torch.from_numpy(inputs[:1]))
    common = {"precision": "fp32", "stage": stage, "macs": macs, "params": params}
    variants = [
        Variant(name=f"{prefix}onnx-fp32", runtime="onnxruntime", directory=onnx_path.parent, entrypoint=onnx_path.name, **common),
        Variant(name=f"{prefix}openvino-fp32", runtime="openvino", directory=ir_path.parent, entrypoint=ir_path.name, **common),
    ]
    name = f"{prefix}openvino-bf16"
    why_not = bf16_unsupported(capabilities)
    if why_not is None:
        bf16_ir = save_bf16_ir(ir_path, root / name / "model.xml")
        result = check_bf16_parity(name, expected, OpenVinoBackend(bf16_ir, precision="bf16"), inputs)
        if log:
            log(
                f"parity {name}: max |diff| {result.max_abs_diff:.2e} (tolerance {result.tolerance:.2e}: "
                f"{BF16_RELATIVE_TOLERANCE:.0%} of the largest logit), top-1 agreement {result.top1_agreement * 100:.1f}%"
            )
        if result.passed:
            variants.append(Variant(name=name, runtime="openvino", directory=bf16_ir.parent, entrypoint=bf16_ir.name,
                                    **{**common, "precision": "bf16"}))
            parity.append(result)
        else:
            shutil.rmtree(bf16_ir.parent, ignore_errors=True)
            why_not = (
                f"left out: logits differ by {result.max_abs_diff:.3g} (bf16 tolerance {result.tolerance:.3g}), top-1 "
                f"agreement {result.top1_agreement:.1%} (at least {BF16_MIN_TOP1_AGREEMENT:.0%} needed)"
            )
    skipped = [] if why_not is None else [f"{name}: {why_not}"]
    return Exported(stage=stage, variants=variants, parity=parity, skipped=skipped)
