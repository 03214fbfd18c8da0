"""The build flow end to end on the embedded digits, under the Prefect test harness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey, ArtifactFilterType, FlowRunFilter, FlowRunFilterId,
    FlowRunFilterTags,
)

from flows.build import build
from flows.versions import main as versions_cli
from tasks.data.snapshot import DataValidationError
from tasks.export.backends import open_backend
from tasks.export.measure import accuracy
from tasks.export.openvino import bf16_unsupported
from tasks.registry.aliases import read_alias
from tasks.registry.lineage import release_table
from tasks.registry.manifest import ManifestError
from tasks.registry.release import download_release, list_versions
from tasks.registry.serving import open_variant
from tasks.registry.store import open_store
from tasks.train.models import build_model
from tests.conftest import write_class_images
from tests.flows.conftest import release_files_of, run_tags

pytestmark = pytest.mark.usefixtures("prefect_api")


def _test_split_as_an_independent_client(demo) -> tuple[np.ndarray, np.ndarray]:
    """The release's test images prepared from the manifest's input contract alone, with plain PIL and numpy."""
    manifest = demo[2]
    contract = manifest.input
    files = release_files_of(demo, "test")
    size = (contract.image_size, contract.image_size)
    pixels = [np.asarray(Image.open(f.path).convert(contract.colour).resize(size, Image.Resampling.BILINEAR)) for f in files]
    assert contract.layout == "NCHW" and contract.scale == "pixel / 255" and contract.channels == 1
    images = np.stack(pixels)[:, None].astype(np.float32) / 255.0
    return images, np.array([manifest.classes.index(f.label) for f in files])


def test_demo_release_is_promoted(demo) -> None:
    config, release, manifest, _ = demo
    alias, _ = read_alias(open_store(config.store), release.model)
    assert release.promoted and alias.version == release.version
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["promoted"])))
    # The run list can be filtered to the builds that changed production.
    (run,) = [r for r in runs if r.parameters["config"]["work_dir"] == str(config.work_dir)]
    with get_client(sync_client=True) as client:
        progress = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]), type=ArtifactFilterType(any_=["progress"])
        ))
    # Long work shows progress, and each ends at 100 %: training, INT8 of each of the three models, the upload.
    assert sorted(p.description.split(":")[0] for p in progress if p.data == 100.0) == sorted(
        [f"{config.model_name} {release.version}", f"trained {manifest.training.model}"]
        + [f"INT8 of {stage}" for stage in ("distilled", "distilled-pruned", "trained")]
    )
    assert manifest.served.name == release.served_variant
    # The default plan distill -> prune -> int8: every model of it in both runtimes, FP32 and INT8, and in
    # OpenVINO bf16 where this CPU computes in bf16.
    bf16 = ["openvino-bf16"] if bf16_unsupported() is None else []
    stages = ("", "distilled-", "distilled-pruned-")
    assert [v.name for v in manifest.variants] == ["torch-fp32"] + [
        f"{stage}{name}" for stage in stages for name in ["onnx-fp32", "openvino-fp32", *bf16]
    ] + [f"{stage}{runtime}-int8" for stage in stages for runtime in ("onnx", "openvino")]
    assert all(v.precision == "bf16" for v in manifest.variants if v.name.endswith("-bf16"))


def test_variant_and_epoch_tables_are_prefect_artifacts(demo) -> None:
    _, release, manifest, _ = demo
    with get_client(sync_client=True) as client:
        found = {
            a.key: a
            for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["variant-table", "training-epochs"]))
            )
        }
    variants = found["variant-table"].data
    variants = json.loads(variants) if isinstance(variants, str) else variants
    assert [row["variant"] for row in variants] == [v.name for v in manifest.variants]
    assert found["variant-table"].type == "table" and found["training-epochs"].type == "table"
    epochs = found["training-epochs"].data
    epochs = json.loads(epochs) if isinstance(epochs, str) else epochs
    assert len(epochs) == manifest.training.epochs_run


def test_a_build_whose_steps_are_all_reused_still_reports_its_dataset_epochs_and_variants(demo, tmp_path: Path) -> None:
    config, _, _, _ = demo
    # The same work dir (every cached step is reused), another store (so the demo's production is left alone).
    state = build(config.model_copy(update={"store": config.store.model_copy(update={"uri": f"file://{tmp_path / 'store'}"})}), return_state=True)
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        steps = {t.name.rsplit("-", 1)[0]: t.state_name for t in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))}
        keys = {a.key for a in client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))}
    assert {steps[name] for name in ("ingest", "train", "evaluate_variants")} == {"Cached"}, steps
    assert {"dataset-validation", "training-epochs", "variant-table", "variant-details"} <= keys


def test_released_onnx_fp32_reaches_97_percent_with_plain_onnxruntime(demo) -> None:
    _, _, manifest, downloaded = demo
    inputs, labels = _test_split_as_an_independent_client(demo)
    assert len(labels) == manifest.metrics.test_images
    session = ort.InferenceSession(str(downloaded / "onnx-fp32" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run([manifest.tensors.logits], {manifest.tensors.input: inputs})[0]
    assert logits.shape == (len(labels), len(manifest.classes))
    assert float(np.mean(logits.argmax(axis=1) == labels)) >= 0.97


def test_manifest_numbers_match_a_fresh_evaluation(demo) -> None:
    _, _, manifest, downloaded = demo
    inputs, labels = _test_split_as_an_independent_client(demo)
    for variant in manifest.variants:
        directory = downloaded / variant.name
        if variant.runtime == "torch":
            model = build_model(manifest.training.model, len(manifest.classes), manifest.input)
            model.load_state_dict(torch.load(directory / variant.entrypoint, weights_only=True))
            with torch.no_grad():
                fresh = float(np.mean(model.eval()(torch.from_numpy(inputs)).numpy().argmax(1) == labels))
        else:
            # The manifest says how to open it: a bf16 variant computes in bf16.
            backend = open_backend(variant.runtime, directory / variant.entrypoint, precision=variant.precision)
            fresh = accuracy(backend, inputs, labels)
        assert fresh == variant.accuracy, variant.name
        assert sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) == variant.size_bytes, variant.name
    served = manifest.variant(manifest.served.name)
    assert served.accuracy >= manifest.metrics.test_accuracy_fp32 - 0.01


def test_every_released_variant_opens_from_the_download(demo) -> None:
    _, _, manifest, downloaded = demo
    inputs, labels = _test_split_as_an_independent_client(demo)
    for variant in manifest.variants:
        assert accuracy(open_variant(manifest, downloaded, variant.name), inputs, labels) == variant.accuracy
    with pytest.raises(ManifestError, match="no variant 'tflite'"):
        open_variant(manifest, downloaded, "tflite")


def test_int8_variants_stay_within_the_accuracy_budget(demo) -> None:
    config, _, manifest, _ = demo
    floor = manifest.metrics.test_accuracy_fp32 - config.evaluate.policy.accuracy_budget_pp / 100
    for name in ("onnx-int8", "openvino-int8"):  # INT8 of the trained model
        variant = manifest.variant(name)
        assert variant.accuracy >= floor, f"{name}: {variant.accuracy} below {floor:.4f}"
        assert variant.size_bytes < manifest.variant("onnx-fp32").size_bytes / 2


def test_the_served_variant_is_in_budget_and_the_manifest_says_why(demo) -> None:
    config, _, manifest, _ = demo
    policy = manifest.policy
    assert policy.objective == config.evaluate.policy.objective
    assert policy.floor == pytest.approx(policy.baseline_accuracy - config.evaluate.policy.accuracy_budget_pp / 100)
    variants = {v.name: v for v in manifest.variants}
    served = variants[manifest.served.name]
    assert served.in_budget and served.runtime != "torch" and served.entrypoint == manifest.served.entrypoint
    assert manifest.served.reason.startswith(f"{served.name}: best latency_b1")
    for variant in variants.values():
        assert variant.in_budget is (variant.accuracy >= policy.floor - 1e-9)
        if variant.in_budget and variant.runtime != "torch":
            assert served.p50_ms_b1 <= variant.p50_ms_b1, variant.name
    refused = {m.variant: m for m in policy.out_of_budget}
    assert set(refused) == {n for n, v in variants.items() if not v.in_budget}
    for name, miss in refused.items():
        assert f"{name} drops {miss.drop_pp:.2f} pp" in manifest.served.reason
    # Compression did what it says: the pruned student needs a fraction of the trained model's compute.
    assert variants["distilled-pruned-onnx-fp32"].macs < variants["distilled-onnx-fp32"].macs < variants["onnx-fp32"].macs
    assert variants["distilled-pruned-onnx-int8"].size_bytes < variants["onnx-fp32"].size_bytes / 4
    assert manifest.latency.threads == config.evaluate.latency.threads
    assert manifest.latency.host.logical_cpus >= 1 and manifest.latency.host.cpu


def test_the_release_offers_hosts_in_budget_alternatives_each_with_its_own_reference(demo) -> None:
    config, _, manifest, downloaded = demo
    # The CPU the build measured on, as /proc/cpuinfo names it: timings compare only within one host.
    cpuinfo = Path("/proc/cpuinfo").read_text()
    flags = set(next(line for line in cpuinfo.splitlines() if line.startswith("flags")).split(":", 1)[1].split())
    assert set(manifest.latency.host.flags) == flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}
    assert manifest.latency.host.cpu in cpuinfo
    candidates = manifest.host_candidates()
    groups = [(v.runtime, v.precision) for v in candidates]
    assert candidates[0].name == manifest.served.name and len(set(groups)) == len(groups)
    assert 1 <= len(manifest.alternatives) <= config.evaluate.policy.host_alternatives
    assert all(v.in_budget and v.runtime in config.evaluate.policy.servable_runtimes for v in candidates)
    files = {f.path for f in manifest.files}
    served_reference = pd.read_parquet(downloaded / manifest.monitoring.reference)
    for section in manifest.alternatives:
        assert section.reference == f"monitoring/{section.variant}/reference.parquet"
        assert {section.reference, section.projection} <= files
        rows = pd.read_parquet(downloaded / section.reference)
        # The same inputs, described by another artifact: identical statistics, its own confidences.
        assert rows["image_sha256"].tolist() == served_reference["image_sha256"].tolist()
        assert (rows["brightness"] == served_reference["brightness"]).all()
        assert section.calibration is not None and section.rows == len(rows)


def test_a_worse_candidate_is_kept_but_not_promoted(demo) -> None:
    config, first, _, _ = demo
    weak = config.model_copy(
        update={"train": config.train.model_copy(update={"max_epochs": 1, "max_batches_per_epoch": 1, "learning_rate": 1e-4}),
                "compress": config.compress.model_copy(update={"plan": []}), "reason": "weak"}
    )
    state = build(weak, return_state=True)
    second = state.result()
    # Impossible to miss in the run list: the completed run is named for it, the reason is its message.
    assert state.is_completed() and state.name == "Kept production"
    assert state.message == f"kept production: {second.gate_reason}"
    assert "kept-production" in run_tags(state) and "promoted" not in run_tags(state)
    store = open_store(config.store)
    alias, _ = read_alias(store, config.model_name)
    assert not second.promoted
    # Refused by the floor, the majority-class baseline or the paired comparison; the reason names production.
    assert ("beyond" in second.gate_reason or "min_accuracy" in second.gate_reason or "baseline" in second.gate_reason)
    assert first.version in second.gate_reason
    assert alias.version == first.version
    assert second.version in [m.version for m in list_versions(store, config.model_name)]
    with get_client(sync_client=True) as client:
        verdicts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["release-gate"])))
    refused = [a for a in verdicts if a.description == f"{config.model_name} {second.version}: keep production"]
    assert len(refused) == 1
    assert refused[0].data.splitlines()[0] == f"# Kept production: {config.model_name} {second.version}"
    with get_client(sync_client=True) as client:
        progress = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]), type=ArtifactFilterType(any_=["progress"])
        ))
    # Training showed its progress epoch by epoch, and ends at 100 % whether or not it stopped early; so does
    # storing the release (the plan has no INT8 step here).
    assert sorted((p.data, p.description.split(":")[0]) for p in progress) == [
        (100.0, f"{config.model_name} {second.version}"), (100.0, "trained small_cnn")  # what train.model "auto" is for images
    ]
    # Why it ran: for a triggered build, the event's name and id (the trigger templates them into the reason).
    assert "- why this build ran: weak" in refused[0].data.splitlines()


def test_a_prune_only_plan_quantizes_the_last_model_and_serves_the_smallest_in_budget(demo, quick_build, tmp_path: Path) -> None:
    config = quick_build(
        tmp_path,
        model_name="digits-pruned",
        train={"max_epochs": 4},
        compress={"plan": ["prune", "int8"], "prune": {"finetune_epochs": 2}, "int8": {"models": "last"}},
        evaluate={"policy": {"objective": "size", "accuracy_budget_pp": 2.0}},
    )
    release = build(config)
    manifest = download_release(open_store(config.store), release.model, release.version, tmp_path / "dl", tmp_path / "cache")
    variants = {v.name: v for v in manifest.variants}
    bf16 = ["openvino-bf16"] if bf16_unsupported() is None else []  # where this CPU computes in bf16
    assert list(variants) == [
        "torch-fp32", "onnx-fp32", "openvino-fp32", *bf16, "pruned-onnx-fp32", "pruned-openvino-fp32",
        *[f"pruned-{name}" for name in bf16], "pruned-onnx-int8", "pruned-openvino-int8",
    ]
    assert variants["pruned-onnx-fp32"].macs <= variants["onnx-fp32"].macs * 0.5 * 1.05
    assert variants["pruned-openvino-int8"].stage == "pruned"
    in_budget = [v for v in variants.values() if v.in_budget and v.runtime != "torch"]
    assert manifest.served.name == min(in_budget, key=lambda v: v.size_bytes).name
    assert manifest.policy.objective == "size" and "best size" in manifest.served.reason


def test_release_carries_a_model_card_and_lineage(demo, capsys) -> None:
    config, release, manifest, downloaded = demo
    card = (downloaded / manifest.model_card).read_text()
    assert card.startswith(f"# Model card: {release.model}")
    for fact in [
        ", ".join(manifest.classes),
        f"{manifest.metrics.test_accuracy_served:.4f}",
        manifest.dataset.version,
        manifest.code_version,
        f"`{manifest.served.name}`",
        manifest.input.describe(),
        "## Monitoring",
        manifest.monitoring.reference,
    ]:
        assert fact in card
    assert card.count("\n| ") == len(manifest.variants) + 1  # header and one row per variant
    assert [row["variant"] for row in release_table(manifest)] == [v.name for v in manifest.variants]
    alias, _ = read_alias(open_store(config.store), release.model)
    assert alias.history[0].kind == "promote" and "flow run" in alias.history[0].by
    assert versions_cli(["--set", f"model_name={release.model}", "--set", f"store.uri={config.store.uri}"]) == 0
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if line.startswith(release.version))
    assert manifest.dataset.version in row and manifest.served.name in row and row.rstrip().endswith("True")
    assert "production history" in printed


def test_bad_dataset_fails_the_flow_with_a_clear_message(quick_build, tmp_path: Path) -> None:
    root = write_class_images(tmp_path / "imgs", {"only": 8})
    with pytest.raises(DataValidationError, match="at least 2 classes"):
        build(quick_build(tmp_path, data={"source": str(root)}))
    assert not (tmp_path / "registry").exists()
