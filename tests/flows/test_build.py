"""The build flow end to end on the embedded digits, under the Prefect test harness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.build import build
from flows.config import BuildConfig
from flows.versions import main as versions_cli
from tasks.compress.config import CompressConfig
from tasks.data.config import DataConfig
from tasks.data.snapshot import DataValidationError
from tasks.export.backends import load_backend
from tasks.export.config import EvaluateConfig
from tasks.export.evaluate import accuracy
from tasks.registry.aliases import read_alias
from tasks.registry.config import StoreConfig
from tasks.registry.production import open_variant
from tasks.registry.release import download_release, list_versions
from tasks.registry.store import open_store
from tasks.train.config import TrainConfig
from tasks.train.models import build_model
from tests.conftest import write_class_images

pytestmark = pytest.mark.usefixtures("prefect_api")


def _test_split_from_release(manifest_dir: Path, work_dir: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-read the test images named in the release's dataset manifest, with plain PIL."""
    dataset = json.loads((manifest_dir / "dataset" / "manifest.json").read_text())
    classes = dataset["classes"]
    rows = [f for f in dataset["files"] if f["split"] == "test"]
    folder = work_dir / "datasets" / "digits"
    images = np.stack(
        [
            np.asarray(Image.open(folder / f["path"]).convert("L").resize((size, size), Image.Resampling.BILINEAR))
            for f in rows
        ]
    )
    labels = np.array([classes.index(f["label"]) for f in rows])
    return (images[:, None].astype(np.float32) / 255.0), labels


def test_demo_release_is_promoted(demo) -> None:
    config, release, manifest, _ = demo
    alias, _ = read_alias(open_store(config.store), release.model)
    assert release.promoted and alias.version == release.version
    assert manifest["served"]["name"] == release.served_variant
    # The default plan distill -> prune -> int8: every model of it in both runtimes, FP32 and INT8.
    assert [row["variant"] for row in manifest["variants"]] == ["torch-fp32"] + [
        f"{stage}{runtime}-{precision}"
        for precision in ("fp32", "int8")
        for stage in ("", "distilled-", "distilled-pruned-")
        for runtime in ("onnx", "openvino")
    ]


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
    assert [row["variant"] for row in variants] == [row["variant"] for row in manifest["variants"]]
    assert found["variant-table"].type == "table" and found["training-epochs"].type == "table"
    epochs = found["training-epochs"].data
    epochs = json.loads(epochs) if isinstance(epochs, str) else epochs
    assert len(epochs) == manifest["training"]["epochs_run"]


def test_released_onnx_fp32_reaches_97_percent_with_plain_onnxruntime(demo) -> None:
    config, _, manifest, downloaded = demo
    inputs, labels = _test_split_from_release(downloaded, config.work_dir, manifest["input"]["image_size"])
    assert len(labels) == manifest["metrics"]["test_images"]
    session = ort.InferenceSession(str(downloaded / "onnx-fp32" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: inputs})[0]
    assert float(np.mean(logits.argmax(axis=1) == labels)) >= 0.97


def test_manifest_numbers_match_a_fresh_evaluation(demo) -> None:
    config, _, manifest, downloaded = demo
    inputs, labels = _test_split_from_release(downloaded, config.work_dir, manifest["input"]["image_size"])
    for row in manifest["variants"]:
        directory = downloaded / row["variant"]
        if row["runtime"] == "torch":
            model = build_model(manifest["training"]["model"], len(manifest["dataset"]["classes"]), 1)
            model.load_state_dict(torch.load(directory / "model_state.pt", weights_only=True))
            with torch.no_grad():
                fresh = float(np.mean(model.eval()(torch.from_numpy(inputs)).numpy().argmax(1) == labels))
        else:
            entry = "model.onnx" if row["runtime"] == "onnxruntime" else "model.xml"
            fresh = accuracy(load_backend(row["runtime"], directory / entry), inputs, labels)
        assert round(fresh, 4) == row["accuracy"], row["variant"]
        size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
        assert round(size / 1024, 1) == row["size_kb"], row["variant"]
    served = next(r for r in manifest["variants"] if r["served"])
    assert served["accuracy"] >= manifest["metrics"]["test_accuracy_fp32"] - 0.01


def test_every_released_variant_opens_from_the_download(demo) -> None:
    config, _, manifest, downloaded = demo
    inputs, labels = _test_split_from_release(downloaded, config.work_dir, manifest["input"]["image_size"])
    for row in manifest["variants"]:
        assert round(accuracy(open_variant(manifest, downloaded, row["variant"]), inputs, labels), 4) == row["accuracy"]
    with pytest.raises(ValueError, match="no variant 'tflite'"):
        open_variant(manifest, downloaded, "tflite")


def test_int8_variants_stay_within_the_accuracy_budget(demo) -> None:
    config, _, manifest, _ = demo
    floor = manifest["metrics"]["test_accuracy_fp32"] - config.evaluate.policy.accuracy_budget_pp / 100
    rows = {r["variant"]: r for r in manifest["variants"]}
    for name in ("onnx-int8", "openvino-int8"):  # INT8 of the trained model
        assert rows[name]["accuracy"] >= floor, f"{name}: {rows[name]['accuracy']} below {floor:.4f}"
        assert rows[name]["size_kb"] < rows["onnx-fp32"]["size_kb"] / 2


def test_the_served_variant_is_in_budget_and_the_manifest_says_why(demo) -> None:
    config, _, manifest, _ = demo
    policy = manifest["policy"]
    assert policy["objective"] == config.evaluate.policy.objective
    assert policy["floor"] == pytest.approx(policy["baseline_accuracy"] - config.evaluate.policy.accuracy_budget_pp / 100)
    rows = {r["variant"]: r for r in manifest["variants"]}
    served = rows[manifest["served"]["name"]]
    assert served["in_budget"] and served["runtime"] != "torch"
    assert manifest["served"]["reason"].startswith(f"{served['variant']}: best latency_b1")
    for row in rows.values():
        assert row["in_budget"] is (row["accuracy"] >= round(policy["floor"], 4) - 1e-4) or row["runtime"] == "torch"
        if row["in_budget"] and row["runtime"] != "torch":
            assert served["p50_ms_b1"] <= row["p50_ms_b1"], row["variant"]
    refused = {m["variant"]: m for m in policy["out_of_budget"]}
    assert set(refused) == {n for n, r in rows.items() if not r["in_budget"]}
    for name, miss in refused.items():
        assert f"{name} drops {miss['drop_pp']:.2f} pp" in manifest["served"]["reason"]
    # Compression did what it says: the pruned student needs a fraction of the trained model's compute.
    assert rows["distilled-pruned-onnx-fp32"]["mmacs"] < rows["distilled-onnx-fp32"]["mmacs"] < rows["onnx-fp32"]["mmacs"]
    assert rows["distilled-pruned-onnx-int8"]["size_kb"] < rows["onnx-fp32"]["size_kb"] / 4
    assert manifest["latency"]["threads"] == config.evaluate.latency.threads


def test_a_worse_candidate_is_kept_but_not_promoted(demo) -> None:
    config, first, _, _ = demo
    weak = config.model_copy(
        update={"train": TrainConfig(max_epochs=1, limit_train_batches=1, learning_rate=1e-4), "reason": "weak"}
    )
    second = build(weak)
    store = open_store(config.store)
    alias, _ = read_alias(store, config.model_name)
    assert not second.promoted
    assert "beyond" in second.gate_reason and first.version in second.gate_reason
    assert alias.version == first.version
    assert second.version in [m["version"] for m in list_versions(store, config.model_name)]
    with get_client(sync_client=True) as client:
        verdicts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["release-gate"])))
    assert f"{config.model_name} {second.version}: keep production" in [a.description for a in verdicts]


def test_a_prune_only_plan_quantizes_the_last_model_and_serves_the_smallest_in_budget(demo) -> None:
    config, _, _, _ = demo
    small = config.model_copy(
        update={
            "model_name": "digits-pruned",
            "train": TrainConfig(max_epochs=4),
            "compress": CompressConfig(plan=["prune", "int8"], prune={"finetune_epochs": 2}, int8={"models": "last"}),
            "evaluate": EvaluateConfig(latency={"repeats": 3}, policy={"objective": "size", "accuracy_budget_pp": 2.0}),
        }
    )
    release = build(small)
    manifest = download_release(open_store(config.store), release.model, release.version, config.work_dir / "dl", config.work_dir / "cache")
    rows = {r["variant"]: r for r in manifest["variants"]}
    assert list(rows) == [
        "torch-fp32", "onnx-fp32", "openvino-fp32", "pruned-onnx-fp32", "pruned-openvino-fp32",
        "pruned-onnx-int8", "pruned-openvino-int8",
    ]
    assert rows["pruned-onnx-fp32"]["mmacs"] <= rows["onnx-fp32"]["mmacs"] * 0.5 * 1.05
    in_budget = [r for r in rows.values() if r["in_budget"] and r["runtime"] != "torch"]
    assert manifest["served"]["name"] == min(in_budget, key=lambda r: r["size_kb"])["variant"]
    assert manifest["policy"]["objective"] == "size" and "best size" in manifest["served"]["reason"]


def test_release_carries_a_model_card_and_lineage(demo, capsys) -> None:
    config, release, manifest, downloaded = demo
    card = (downloaded / manifest["model_card"]).read_text()
    assert card.startswith(f"# Model card: {release.model}")
    for fact in [
        ", ".join(manifest["dataset"]["classes"]),
        f"{manifest['metrics']['test_accuracy_served']:.4f}",
        manifest["dataset"]["version"],
        manifest["code_version"],
        f"`{manifest['served']['name']}`",
        "## Monitoring",
        manifest["monitoring"]["reference"],
    ]:
        assert fact in card
    assert card.count("\n| ") == len(manifest["variants"]) + 1  # header and one row per variant
    alias, _ = read_alias(open_store(config.store), release.model)
    assert alias.history[0].kind == "promote" and "flow run" in alias.history[0].by
    assert versions_cli(["--model", release.model, "--store-uri", config.store.uri]) == 0
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if line.startswith(release.version))
    assert manifest["dataset"]["version"] in row and manifest["served"]["name"] in row and row.rstrip().endswith("True")
    assert "production history" in printed


def test_bad_dataset_fails_the_flow_with_a_clear_message(tmp_path: Path) -> None:
    root = write_class_images(tmp_path / "imgs", {"only": 8})
    config = BuildConfig(
        work_dir=tmp_path / "work",
        data=DataConfig(source=str(root)),
        store=StoreConfig(uri=f"file://{tmp_path / 'registry'}"),
    )
    with pytest.raises(DataValidationError, match="at least 2 classes"):
        build(config)
    assert not (tmp_path / "registry").exists()
