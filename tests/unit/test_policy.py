"""The variant policy and the release gate."""

from __future__ import annotations

import pytest

from tasks.export.evaluate import NoServableVariant, Variant, VariantPolicy, choose_variant, format_table, variant_table
from tasks.registry.gate import decide


def _v(name: str, runtime: str, acc: float, b1: float, size: int = 100) -> Variant:
    return Variant(name=name, runtime=runtime, precision="x", accuracy=acc, latency_ms_b1=b1, latency_ms_b64=b1 * 10, size_bytes=size)


VARIANTS = [
    _v("torch-fp32", "torch", 0.98, 0.05),  # fastest, but not servable
    _v("onnx-fp32", "onnxruntime", 0.98, 0.30),
    _v("onnx-int8", "onnxruntime", 0.975, 0.10),
    _v("openvino-int8", "openvino", 0.95, 0.08),  # fastest servable, but 3 pp below
]


def test_fastest_within_budget_is_served() -> None:
    assert choose_variant(VARIANTS, 0.98, VariantPolicy(accuracy_budget_pp=1.0)).name == "onnx-int8"


def test_a_wider_budget_admits_the_faster_variant() -> None:
    assert choose_variant(VARIANTS, 0.98, VariantPolicy(accuracy_budget_pp=5.0)).name == "openvino-int8"


def test_zero_budget_keeps_full_accuracy() -> None:
    assert choose_variant(VARIANTS, 0.98, VariantPolicy(accuracy_budget_pp=0.0)).name == "onnx-fp32"


def test_servable_runtimes_restrict_the_choice() -> None:
    policy = VariantPolicy(accuracy_budget_pp=5.0, servable_runtimes=["onnxruntime"])
    assert choose_variant(VARIANTS, 0.98, policy).name == "onnx-int8"


def test_no_variant_within_budget_is_an_error_listing_each() -> None:
    with pytest.raises(NoServableVariant, match="onnx-int8 0.9750"):
        choose_variant(VARIANTS, 0.999, VariantPolicy(accuracy_budget_pp=0.1))


def test_table_marks_served_and_speedup() -> None:
    rows = variant_table(VARIANTS, "onnx-int8")
    assert [r["served"] for r in rows] == [False, False, True, False]
    assert rows[2]["speedup_b1_vs_torch"] == 0.5
    assert "onnx-int8" in format_table(rows)


def test_gate_promotes_first_release() -> None:
    decision = decide(0.9, None, 0.5)
    assert decision.promote and "no production" in decision.reason


@pytest.mark.parametrize(
    ("candidate", "production", "tolerance", "promote"),
    [(0.97, 0.97, 0.0, True), (0.98, 0.97, 0.0, True), (0.966, 0.97, 0.5, True), (0.96, 0.97, 0.5, False)],
)
def test_gate_compares_on_the_same_split_with_tolerance(candidate, production, tolerance, promote) -> None:
    decision = decide(candidate, production, tolerance, production_version="abc")
    assert decision.promote is promote
    assert ("beyond" in decision.reason) is (not promote)
