"""The variant policy and the release gate."""

from __future__ import annotations

import pytest

from tasks.export.config import ServingPolicy
from tasks.export.evaluate import split_for_pages, variant_table
from tasks.export.policy import NoServableVariant, choose_variant, host_alternatives
from tasks.export.variants import Variant
from tasks.tables import text_table


def _v(name: str, runtime: str, acc: float, b1: float, bn: float, size: int, stage: str = "trained", precision: str = "int8") -> Variant:
    return Variant(
        name=name, runtime=runtime, precision=precision, stage=stage, accuracy=acc,
        p50_ms_b1=b1, p95_ms_b1=b1 * 1.2, p50_ms_bn=bn, p95_ms_bn=bn * 1.2, size_bytes=size,
    )


VARIANTS = [
    _v("torch-fp32", "torch", 0.98, 0.05, 2.0, 1000, precision="fp32"),  # fastest at batch 1, but not servable
    _v("onnx-fp32", "onnxruntime", 0.98, 0.30, 3.0, 900, precision="fp32"),
    _v("openvino-fp32", "openvino", 0.98, 0.35, 2.5, 950, precision="fp32"),
    _v("onnx-int8", "onnxruntime", 0.975, 0.10, 4.0, 300),  # fastest in-budget at batch 1
    _v("openvino-int8", "openvino", 0.975, 0.20, 1.0, 350),  # fastest in-budget at batch N
    _v("pruned-onnx-int8", "onnxruntime", 0.95, 0.08, 0.5, 100, stage="pruned"),  # best at everything, 3 pp below
]


@pytest.mark.parametrize(
    ("objective", "served"), [("latency_b1", "onnx-int8"), ("latency_bn", "openvino-int8"), ("size", "onnx-int8")]
)
def test_each_objective_picks_its_best_within_budget(objective: str, served: str) -> None:
    choice = choose_variant(VARIANTS, 0.98, ServingPolicy(objective=objective, accuracy_budget_pp=1.0))
    assert choice.served == served and choice.objective == objective
    assert served in choice.reason and objective in choice.reason
    assert [m.variant for m in choice.out_of_budget] == ["pruned-onnx-int8"]
    assert choice.out_of_budget[0].drop_pp == pytest.approx(3.0) and choice.out_of_budget[0].over_budget_pp == pytest.approx(2.0)
    assert "pruned-onnx-int8 drops 3.00 pp (2.00 pp over)" in choice.reason


@pytest.mark.parametrize("budget", [0.0, 0.4, 0.5, 1.0, 2.9, 3.0, 5.0])
@pytest.mark.parametrize("objective", ["latency_b1", "latency_bn", "size"])
def test_the_served_variant_is_never_out_of_budget(objective: str, budget: float) -> None:
    choice = choose_variant(VARIANTS, 0.98, ServingPolicy(objective=objective, accuracy_budget_pp=budget))
    served = next(v for v in VARIANTS if v.name == choice.served)
    assert served.accuracy >= 0.98 - budget / 100 - 1e-9
    assert served.runtime != "torch"
    refused = {m.variant for m in choice.out_of_budget}
    assert refused == {v.name for v in VARIANTS if v.runtime != "torch" and v.accuracy < 0.98 - budget / 100 - 1e-9}


def test_a_wider_budget_admits_the_faster_variant() -> None:
    assert choose_variant(VARIANTS, 0.98, ServingPolicy(accuracy_budget_pp=5.0)).served == "pruned-onnx-int8"


def test_servable_runtimes_restrict_the_choice() -> None:
    policy = ServingPolicy(accuracy_budget_pp=1.0, objective="latency_bn", servable_runtimes=["onnxruntime"])
    assert choose_variant(VARIANTS, 0.98, policy).served == "onnx-fp32"  # openvino-int8 would be faster


def test_with_nothing_in_budget_the_fp32_model_is_served_and_the_reason_says_why() -> None:
    # The FP32 exports themselves sit 0.4 pp under this baseline (e.g. float noise on one image).
    choice = choose_variant(VARIANTS, 0.984, ServingPolicy(accuracy_budget_pp=0.1))
    assert choice.served == "onnx-fp32"  # the faster of the two servable FP32 exports at batch 1
    assert "no variant within 0.1 pp" in choice.reason and "uncompressed FP32 model is served as onnx-fp32" in choice.reason
    assert {m.variant for m in choice.out_of_budget} == {v.name for v in VARIANTS if v.runtime != "torch"}
    by_size = choose_variant(VARIANTS, 0.984, ServingPolicy(accuracy_budget_pp=0.1, objective="size"))
    assert by_size.served == "onnx-fp32"
    by_bn = choose_variant(VARIANTS, 0.984, ServingPolicy(accuracy_budget_pp=0.1, objective="latency_bn"))
    assert by_bn.served == "openvino-fp32"


def test_no_servable_fp32_to_fall_back_on_is_an_error() -> None:
    compressed_only = [v for v in VARIANTS if v.precision == "int8"]
    with pytest.raises(NoServableVariant, match="no FP32 export to fall back on"):
        choose_variant(compressed_only, 0.999, ServingPolicy(accuracy_budget_pp=0.1))


def test_table_compares_with_torch_eager_and_marks_budget_and_served() -> None:
    choice = choose_variant(VARIANTS, 0.98, ServingPolicy(accuracy_budget_pp=1.0))
    rows = variant_table(VARIANTS, choice.served, 0.98, 64, choice.floor)
    by_name = {r["variant"]: r for r in rows}
    assert [r["served"] for r in rows].count(True) == 1 and by_name["onnx-int8"]["served"]
    assert by_name["onnx-int8"]["speedup_b1"] == 0.5 and by_name["openvino-int8"]["speedup_b64"] == 2.0
    assert by_name["pruned-onnx-int8"]["smaller_x"] == 10.0 and by_name["pruned-onnx-int8"]["delta_pp"] == -3.0
    assert by_name["pruned-onnx-int8"]["in_budget"] is False and by_name["onnx-int8"]["in_budget"] is True
    assert {"p50_ms_b1", "p95_ms_b1", "p50_ms_b64", "p95_ms_b64"} <= set(rows[0])
    assert "pruned-onnx-int8" in text_table(rows)


def test_the_artifact_tables_fit_a_page_and_together_hold_every_column() -> None:
    choice = choose_variant(VARIANTS, 0.98, ServingPolicy(accuracy_budget_pp=1.0))
    rows = variant_table(VARIANTS, choice.served, 0.98, 64, choice.floor)
    deciding, details = split_for_pages(rows, "latency_b1", 64)
    # The served mark and the numbers that chose it come first, in a table of a few columns.
    assert list(deciding[0])[:2] == ["variant", "served"] and len(deciding[0]) <= 7 and "p50_ms_b1" in deciding[0]
    # Served for batch latency, the batch column is among the deciding ones.
    assert "p50_ms_b64" in split_for_pages(rows, "latency_bn", 64)[0][0]
    assert len(details[0]) <= 11
    assert [d["variant"] for d in details] == [r["variant"] for r in rows]
    for row, left, right in zip(rows, deciding, details):
        assert {**left, **right} == row


def test_host_alternatives_are_the_best_in_budget_variant_of_each_other_runtime_and_precision() -> None:
    variants = VARIANTS + [
        _v("distilled-onnx-int8", "onnxruntime", 0.976, 0.09, 3.5, 200, stage="distilled"),  # beats onnx-int8 at batch 1
        _v("openvino-bf16", "openvino", 0.979, 0.15, 1.2, 500, precision="bf16"),
    ]
    policy = ServingPolicy(objective="latency_b1", accuracy_budget_pp=1.0)
    choice = choose_variant(variants, 0.98, policy)
    alternatives = [v.name for v in host_alternatives(variants, choice, policy)]
    assert choice.served == "distilled-onnx-int8"
    # Best first; one per runtime x precision; never the served one's group, torch, or anything out of budget.
    assert alternatives == ["openvino-bf16", "openvino-int8", "onnx-fp32", "openvino-fp32"]
    assert all(next(v for v in variants if v.name == a).accuracy >= choice.floor for a in alternatives)
    fewer = host_alternatives(variants, choice, policy.model_copy(update={"host_alternatives": 2}))
    assert [v.name for v in fewer] == alternatives[:2]
    assert host_alternatives(variants, choice, policy.model_copy(update={"host_alternatives": 0})) == []


def test_a_fallback_release_offers_hosts_no_alternative() -> None:
    policy = ServingPolicy(objective="latency_b1", accuracy_budget_pp=0.0)
    low = [_v("onnx-fp32", "onnxruntime", 0.97, 0.3, 3.0, 900, precision="fp32"), _v("openvino-int8", "openvino", 0.96, 0.2, 1.0, 300)]
    choice = choose_variant(low, 0.98, policy)
    assert "no variant within" in choice.reason and host_alternatives(low, choice, policy) == []
