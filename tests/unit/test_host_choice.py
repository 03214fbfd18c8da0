"""A scoring or serving host times the release's candidates on its own CPU and serves the fastest it can run."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

from tasks.export.backends import INPUT_NAME, LOGITS_NAME, open_backend
from tasks.export.openvino import export_openvino, save_bf16_ir
from tasks.monitor.steps import variant_rows
from tasks.registry.hostchoice import HostCannotServe, choose_on_host
from tasks.registry.manifest import MonitoringSection, ReleasedVariant, ReleaseManifest, ServedVariant
from tasks.registry.serving import FetchedRelease
from tests.conftest import release_draft

TIMING = {"p50_ms_b1": 0.1, "p95_ms_b1": 0.2, "p50_ms_bn": 1.0, "p95_ms_bn": 2.0}
ENTRYPOINTS = {"onnxruntime": "model.onnx", "openvino": "model.xml"}


def _mlp(path: Path, widths: list[int], seed: int, side: int = 16) -> Path:
    """An ONNX MLP from 1 x ``side`` x ``side`` images (``release_draft``'s are 16) to 3 logits; ``widths`` set its MACs."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Flatten", [INPUT_NAME], ["x0"], axis=1)]
    weights, sizes = [], [side * side, *widths, 3]
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        weights.append(numpy_helper.from_array((rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32), f"w{i}"))
        out = LOGITS_NAME if i == len(sizes) - 2 else f"x{i + 1}"
        nodes.append(helper.make_node("MatMul", [f"x{i}", f"w{i}"], [out]))
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 1, side, side])],
        [helper.make_tensor_value_info(LOGITS_NAME, TensorProto.FLOAT, ["batch", 3])],
        initializer=weights,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Variant folders as a fetched release has them: a slow MLP (~9 MMAC/row) and a fast one (768 MAC/row)."""
    root = tmp_path_factory.mktemp("release")
    _mlp(root / "slow-onnx-fp32" / "model.onnx", [2048, 2048, 2048], seed=0)
    _mlp(root / "slow-onnx-int8" / "model.onnx", [2048, 2048, 2048], seed=0)  # the same graph: the same speed
    _mlp(root / "broken-onnx-fp32" / "model.onnx", [], seed=2, side=8)  # opens, then refuses 16x16 inputs
    fast = _mlp(root / "fast-onnx-fp32" / "model.onnx", [], seed=1)
    _mlp(root / "fast-onnx-int8" / "model.onnx", [], seed=1)
    fp32_ir = export_openvino(fast, root / "fast-openvino-fp32" / "model.xml")
    save_bf16_ir(fp32_ir, root / "fast-openvino-bf16" / "model.xml")
    return root


def _variant(name: str, accuracy: float = 1.0) -> ReleasedVariant:
    runtime = "openvino" if "openvino" in name else "onnxruntime"
    precision = name.rsplit("-", 1)[1]
    return ReleasedVariant(
        name=name, runtime=runtime, precision=precision, entrypoint=ENTRYPOINTS[runtime], accuracy=accuracy,
        in_budget=True, **TIMING,
    )


def _reference(variant: str) -> MonitoringSection:
    return MonitoringSection(
        reference=f"monitoring/{variant}/reference.parquet", projection=f"monitoring/{variant}/projection.json", rows=3,
        variant=variant, numerical_columns=["confidence"], categorical_columns=["predicted_class"],
    )


def manifest(served: str, alternatives: list[str], objective: str = "latency_b1") -> ReleaseManifest:
    """A release serving ``served`` that offers ``alternatives`` to its hosts."""
    variant = _variant(served)
    draft = release_draft(
        "hosted",
        served=served,
        variants=[variant, *(_variant(a) for a in alternatives)],
        monitoring=_reference(served),
        alternatives=[_reference(a) for a in alternatives],
    )
    draft = draft.model_copy(
        update={
            "served": ServedVariant(
                name=served, runtime=variant.runtime, precision=variant.precision, stage="trained",
                entrypoint=variant.entrypoint, reason="the build's choice",
            ),
            "policy": draft.policy.model_copy(update={"objective": objective}),
        }
    )
    return ReleaseManifest(**draft.model_dump(), version="v1", created_at=datetime.now(timezone.utc), files=[])


def opener(release: ReleaseManifest, root: Path):  # noqa: ANN201 - (name) -> Backend
    def open_named(name: str):  # noqa: ANN202
        v = release.variant(name)
        return open_backend(v.runtime, root / name / v.entrypoint, threads=1, precision=v.precision)

    return open_named


RUNTIMES = ("onnxruntime", "openvino")


@pytest.mark.parametrize("batch_size", [1, 32])
def test_the_faster_of_two_variants_is_chosen_whichever_the_build_chose(release_dir: Path, batch_size: int) -> None:
    slow_served = manifest("slow-onnx-fp32", ["fast-onnx-int8"])
    choice, backend = choose_on_host(slow_served, opener(slow_served, release_dir), batch_size, 0.3, RUNTIMES)
    timed = {t.variant: t for t in choice.timings}
    assert choice.variant == "fast-onnx-int8", choice.reason
    assert timed["fast-onnx-int8"].p50_ms < timed["slow-onnx-fp32"].p50_ms and timed["slow-onnx-fp32"].calls >= 3
    assert "fastest here" in choice.reason and "slow-onnx-fp32, the build's choice" in choice.reason
    assert choice.batch_size == batch_size and choice.host.cpu
    # The back end handed over is the chosen variant's: it computes the fast model's logits.
    rows = np.random.default_rng(0).standard_normal((4, 1, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(backend.predict(rows), opener(slow_served, release_dir)("fast-onnx-int8").predict(rows), rtol=1e-5)

    fast_served = manifest("fast-onnx-fp32", ["slow-onnx-fp32"])
    choice, _ = choose_on_host(fast_served, opener(fast_served, release_dir), batch_size, 0.3, RUNTIMES)
    assert choice.variant == "fast-onnx-fp32" and "also the fastest here" in choice.reason


def test_a_variant_this_cpu_cannot_run_is_never_chosen(release_dir: Path) -> None:
    release = manifest("slow-onnx-fp32", ["fast-openvino-bf16"])
    # OpenVINO's capability query as a CPU without native bf16 answers it.
    choice, _ = choose_on_host(release, opener(release, release_dir), 1, 0.2, RUNTIMES, capabilities=["FP32", "INT8"])
    bf16 = next(t for t in choice.timings if t.variant == "fast-openvino-bf16")
    assert choice.variant == "slow-onnx-fp32" and bf16.p50_ms is None and "no native bf16 here" in bf16.note
    assert "the only candidate this host can run" in choice.reason
    # With bf16 in the answer, the same (much faster) variant wins.
    choice, _ = choose_on_host(release, opener(release, release_dir), 1, 0.2, RUNTIMES, capabilities=["FP32", "INT8", "BF16"])
    assert choice.variant == "fast-openvino-bf16"
    # A runtime this host does not serve is passed over the same way; none at all is a clear refusal.
    choice, _ = choose_on_host(release, opener(release, release_dir), 1, 0.2, ["onnxruntime"], capabilities=["BF16"])
    assert choice.variant == "slow-onnx-fp32"
    with pytest.raises(HostCannotServe, match="no variant of hosted v1 can run on this host: slow-onnx-fp32: onnxruntime is not"):
        choose_on_host(release, opener(release, release_dir), 1, 0.2, ["torch"], capabilities=["FP32"])


def test_a_candidate_that_fails_to_open_or_run_is_noted_and_passed_over(release_dir: Path) -> None:
    release = manifest("slow-onnx-fp32", ["fast-onnx-int8", "fast-openvino-fp32", "broken-onnx-fp32"])
    release.variant("fast-onnx-int8").entrypoint = "missing.onnx"
    choice, _ = choose_on_host(release, opener(release, release_dir), 1, 0.2, RUNTIMES)
    notes = {t.variant: t.note for t in choice.timings}
    assert choice.variant == "fast-openvino-fp32"
    assert notes["fast-onnx-int8"].startswith("could not run here: NoSuchFile") or "could not run here" in notes["fast-onnx-int8"]
    assert "could not run here" in notes["broken-onnx-fp32"] and "INVALID_ARGUMENT" in notes["broken-onnx-fp32"]


def test_the_builds_choice_stays_unless_another_is_clearly_faster(release_dir: Path) -> None:
    # Two copies of one graph time within noise of each other: the build's choice is kept, every time.
    release = manifest("slow-onnx-fp32", ["slow-onnx-int8"])
    for _ in range(2):
        choice, _ = choose_on_host(release, opener(release, release_dir), 1, 1.0, RUNTIMES)
        assert choice.variant == "slow-onnx-fp32", choice.reason


def test_when_the_builds_choice_cannot_run_here_the_fastest_that_can_is_served(release_dir: Path) -> None:
    release = manifest("fast-openvino-fp32", ["slow-onnx-fp32", "fast-onnx-int8"])
    choice, _ = choose_on_host(release, opener(release, release_dir), 1, 0.2, ["onnxruntime"])
    assert choice.variant == "fast-onnx-int8"
    assert "the build's choice fast-openvino-fp32, not timed here (openvino is not a runtime this host serves" in choice.reason


def test_a_bf16_variant_without_native_bf16_is_served_only_when_nothing_else_runs(release_dir: Path) -> None:
    release = manifest("fast-openvino-bf16", [])
    choice, backend = choose_on_host(release, opener(release, release_dir), 1, 0.2, RUNTIMES, capabilities=["FP32"])
    assert choice.variant == "fast-openvino-bf16" and "no native bf16 here" in choice.reason
    assert backend.predict(np.zeros((1, 1, 16, 16), dtype=np.float32)).shape == (1, 3)


def test_a_size_objective_keeps_the_builds_choice_untimed(release_dir: Path) -> None:
    release = manifest("slow-onnx-fp32", ["fast-onnx-int8"], objective="size")
    choice, _ = choose_on_host(release, opener(release, release_dir), 1, 0.2, RUNTIMES)
    assert choice.variant == "slow-onnx-fp32" and "objective is size" in choice.reason
    assert all(t.p50_ms is None for t in choice.timings)


def test_a_hosts_choice_is_kept_for_the_next_run_on_the_same_host(release_dir: Path, tmp_path: Path) -> None:
    release = FetchedRelease(
        model="hosted", version="v1", release_dir=release_dir, manifest=manifest("slow-onnx-fp32", ["fast-onnx-int8"])
    )
    first, _ = release.open_on_host(1, 0.2, RUNTIMES, threads=1, cache_dir=tmp_path)
    again, backend = release.open_on_host(1, 0.2, RUNTIMES, threads=1, cache_dir=tmp_path)
    assert first.variant == again.variant == "fast-onnx-int8"
    assert again.measured_at == first.measured_at and "kept in" in again.reason and "kept in" not in first.reason
    # Another batch size is another question: timed afresh.
    other, _ = release.open_on_host(8, 0.2, RUNTIMES, threads=1, cache_dir=tmp_path)
    assert "kept in" not in other.reason and other.batch_size == 8


def test_a_choice_timed_while_other_processes_took_the_cpus_is_used_but_not_kept(release_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tasks.host import usable_cpus

    release = FetchedRelease(
        model="hosted", version="v1", release_dir=release_dir, manifest=manifest("slow-onnx-fp32", ["fast-onnx-int8"])
    )
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(usable_cpus())]
    try:
        busy, _ = release.open_on_host(1, 0.5, RUNTIMES, threads=1, cache_dir=tmp_path)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert "not kept: other processes used" in busy.reason
    assert not list((tmp_path / "host-choice").rglob("*.json"))
    quiet, _ = release.open_on_host(1, 0.5, RUNTIMES, threads=1, cache_dir=tmp_path)  # timed again, and kept
    assert "kept in" not in quiet.reason and "not kept" not in quiet.reason
    assert len(list((tmp_path / "host-choice").rglob("*.json"))) == 1


def test_the_monitor_tests_the_rows_of_the_variant_that_computed_most_of_the_window() -> None:
    window = pd.DataFrame({"variant": ["a"] * 3 + ["b"] * 6 + [None] * 2, "x": range(11)})
    variant, rows, others = variant_rows(window, served="a")
    assert variant == "b" and rows["x"].tolist() == [3, 4, 5, 6, 7, 8] and others == {"a": 5}
    # Rows logged before rows named their variant were the build's choice; a tie goes to it.
    variant, rows, others = variant_rows(pd.DataFrame({"x": range(4)}), served="a")
    assert variant == "a" and len(rows) == 4 and others == {}
    variant, _, others = variant_rows(pd.DataFrame({"variant": ["b", "b", "a", "a"]}), served="a")
    assert variant == "a" and others == {"b": 2}
