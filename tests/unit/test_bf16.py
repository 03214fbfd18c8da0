"""bf16 variants: made where the CPU computes in bf16, checked at bf16's tolerance, and skipped elsewhere with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.export.backends import OpenVinoBackend, open_backend
from tasks.export.fp32 import export_model
from tasks.export.openvino import bf16_unsupported, cpu_capabilities
from tasks.export.parity import BF16_MIN_TOP1_AGREEMENT, BF16_RELATIVE_TOLERANCE
from tasks.train.config import TrainConfig
from tasks.train.fit import fit_classifier


@pytest.fixture(scope="module")
def trained(digits_snapshot, tmp_path_factory: pytest.TempPathFactory):
    return fit_classifier(digits_snapshot, TrainConfig(max_epochs=4, seed=0), tmp_path_factory.mktemp("bf16-train"))


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_capabilities_decide_and_the_reason_names_them() -> None:
    assert bf16_unsupported(["BF16", "FP32", "INT8"]) is None
    reason = bf16_unsupported(["FP32", "INT8"])
    assert reason is not None and "no native bf16" in reason and "FP32, INT8" in reason


def test_a_cpu_without_bf16_gets_no_bf16_variant_and_the_table_says_why(trained, digits_snapshot, tmp_path: Path) -> None:
    # What OpenVINO reports on an AVX2 machine without AVX-512 BF16 or AMX.
    exported = export_model(trained.load(), "trained", digits_snapshot, tmp_path, 1e-3, capabilities=["FP32", "INT8", "BIN"])
    assert [v.name for v in exported.variants] == ["onnx-fp32", "openvino-fp32"]
    assert len(exported.skipped) == 1 and exported.skipped[0].startswith("openvino-bf16: no bf16 variant")
    assert not (tmp_path / "openvino-bf16").exists()


def test_this_cpus_bf16_variant_computes_in_bf16_within_its_stated_tolerance(trained, digits_snapshot, tmp_path: Path) -> None:
    capabilities = cpu_capabilities()
    exported = export_model(trained.load(), "trained", digits_snapshot, tmp_path, 1e-3, capabilities=capabilities)
    by_name = {v.name: v for v in exported.variants}
    if "BF16" not in capabilities:
        # This host cannot run bf16 natively: the variant is skipped with the reason (the other test covers it too).
        assert "openvino-bf16" not in by_name and exported.skipped
        return
    bf16, fp32 = by_name["openvino-bf16"], by_name["openvino-fp32"]
    assert bf16.precision == "bf16" and bf16.runtime == "openvino" and exported.skipped == []
    parity = next(p for p in exported.parity if p.variant == "openvino-bf16")
    inputs, _ = digits_snapshot.model_inputs("test")
    reference = trained.load()
    import torch

    with torch.inference_mode():
        logits = reference(torch.from_numpy(inputs[:])).numpy()
    assert parity.passed and parity.tolerance == pytest.approx(BF16_RELATIVE_TOLERANCE * np.abs(logits).max())
    assert parity.top1_agreement >= BF16_MIN_TOP1_AGREEMENT
    # Weights stored in 16 bits: about half the FP32 IR on disk.
    assert _size(bf16.directory) < 0.6 * _size(fp32.directory)
    # Opened as a variant, it really computes in bf16: its logits are not the f32 ones, its decisions are.
    backend = bf16.open(trained)
    assert isinstance(backend, OpenVinoBackend)
    assert "bfloat16" in str(backend.compiled.get_property("INFERENCE_PRECISION_HINT"))
    as_bf16 = backend.predict(inputs)
    as_f32 = fp32.open(trained).predict(inputs)
    assert np.abs(as_bf16 - as_f32).max() > 0
    assert np.mean(as_bf16.argmax(1) == as_f32.argmax(1)) >= BF16_MIN_TOP1_AGREEMENT


def test_bf16_is_an_openvino_precision_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bf16 variant runs on openvino only"):
        open_backend("onnxruntime", tmp_path / "model.onnx", precision="bf16")
