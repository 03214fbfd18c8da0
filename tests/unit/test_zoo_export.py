"""The torchvision architectures train, export with parity, and quantize like the default CNN."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.compress.onnx_int8 import quantize_onnx_int8
from tasks.compress.openvino_int8 import quantize_openvino_int8
from tasks.data.config import DataConfig
from tasks.data.imagefolder import ingest_imagefolder
from tasks.export.backends import OnnxRuntimeBackend, OpenVinoBackend, TorchBackend
from tasks.export.fp32 import export_fp32_checked
from tasks.export.measure import accuracy
from tasks.train.config import TrainConfig
from tasks.train.fit import fit_classifier

pytestmark = pytest.mark.slow


# MobileNetV3 needs more epochs before its activations settle enough for INT8 to hold accuracy.
@pytest.mark.parametrize(("model", "epochs"), [("resnet18", 3), ("mobilenet_v3_small", 8)])
def test_zoo_model_trains_exports_and_quantizes(model: str, epochs: int, digits_folder: Path, tmp_path: Path) -> None:
    snapshot = ingest_imagefolder(digits_folder, DataConfig(image_size=32, channels=3), tmp_path / "snaps")
    trained = fit_classifier(snapshot, TrainConfig(model=model, max_epochs=epochs, batch_size=64), tmp_path / "run")
    assert trained.test_acc > 0.7  # a few epochs from random init: clearly learning, not converged
    net = trained.load()
    inputs, labels = snapshot.model_inputs("test")
    onnx_path, ir_path, parity = export_fp32_checked(net, inputs, tmp_path, tolerance=1e-3)
    assert all(p.passed for p in parity)
    reference = TorchBackend(net)
    calibration = snapshot.model_inputs("train")[0][:128]
    fp32 = accuracy(reference, inputs, labels)
    onnx_int8 = quantize_onnx_int8(onnx_path, calibration, tmp_path / "q" / "model.onnx")
    ov_int8 = quantize_openvino_int8(ir_path, calibration, tmp_path / "qov" / "model.xml")
    assert accuracy(OnnxRuntimeBackend(onnx_int8), inputs, labels) > fp32 - 0.05
    assert accuracy(OpenVinoBackend(ov_int8), inputs, labels) > fp32 - 0.05
