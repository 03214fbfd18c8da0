"""The release manifest is one typed contract: written as schema 3, schema 2 read as it is, schema 1 by upgrading, others refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.registry.manifest import ManifestError, ReleaseManifest
from tasks.registry.release import publish_release, read_manifest
from tasks.registry.store import FileStore
from tests.conftest import release_draft

# manifest.json of the default build as the code before the typed contract wrote it (schema 1).
V1 = Path(__file__).resolve().parents[1] / "data" / "manifest-v1.json"


def _store_with(tmp_path: Path, document: dict) -> FileStore:
    store = FileStore(tmp_path / "reg")
    store.put_bytes(f"models/{document.get('model', 'm')}/v1/manifest.json", json.dumps(document).encode())
    return store


def test_a_schema_1_manifest_is_read_with_every_fact_in_its_typed_place(tmp_path: Path) -> None:
    old = json.loads(V1.read_text())
    manifest = read_manifest(_store_with(tmp_path, old), old["model"], "v1")
    assert manifest.schema_version == 4 and manifest.version == old["version"] and manifest.alternatives == []
    assert (manifest.input.kind, manifest.input.channels, manifest.input.image_size) == ("image", 1, 16)
    assert (manifest.input.colour, manifest.input.resize, manifest.input.scale) == ("L", "bilinear", "pixel / 255")
    assert manifest.tensors.input == old["input"]["input_name"] and manifest.classes == old["dataset"]["classes"]
    assert manifest.served.name == old["served"]["name"] and manifest.served.reason == old["served"]["reason"]
    rows = {row["variant"]: row for row in old["variants"]}
    for variant in manifest.variants:
        row = rows[variant.name]
        assert variant.entrypoint == old["entrypoints"][variant.name]
        assert variant.p50_ms_bn == row["p50_ms_b64"] and variant.in_budget == row["in_budget"]
        assert round(variant.size_bytes / 1024, 1) == row["size_kb"]
    stages = {v.name: v.stage for v in manifest.variants}
    assert stages["torch-fp32"] == stages["onnx-int8"] == "trained"
    assert stages["distilled-pruned-openvino-int8"] == "distilled-pruned" and stages["distilled-onnx-fp32"] == "distilled"
    assert manifest.monitoring.reference == old["monitoring"]["reference"]
    assert [f.path for f in manifest.files] == [f["path"] for f in old["files"]]
    assert len(manifest.files_under("onnx-fp32")) == 2


@pytest.mark.parametrize("schema", [None, 0, 5, "2"])
def test_a_manifest_of_another_schema_is_refused_naming_what_is_read(tmp_path: Path, schema) -> None:
    document = json.loads(V1.read_text()) | {"schema_version": schema}
    with pytest.raises(ManifestError, match=r"manifest\.json is not a release manifest .*schema_version .* reads \(1, 2, 3, 4\)"):
        read_manifest(_store_with(tmp_path, document), document["model"], "v1")


def test_an_early_schema_1_manifest_is_refused_naming_what_it_lacks(tmp_path: Path) -> None:
    document = json.loads(V1.read_text())
    del document["entrypoints"]  # as manifests written before each variant's entrypoint was recorded
    with pytest.raises(ManifestError, match="a schema-1 manifest without 'entrypoints' .* rebuild the model"):
        read_manifest(_store_with(tmp_path, document), document["model"], "v1")


def test_a_damaged_manifest_is_refused_naming_the_field(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "reg")
    release = publish_release(store, {}, release_draft("m"))
    key = f"models/m/{release.version}/manifest.json"
    document = json.loads(store.get_bytes(key)[0])
    del document["served"]["entrypoint"]
    store.put_bytes(key, json.dumps(document).encode())
    with pytest.raises(ManifestError, match=r"served\.entrypoint: Field required"):
        read_manifest(store, "m", release.version)


def test_what_is_published_is_what_is_read(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "reg")
    draft = release_draft("m")
    release = publish_release(store, {}, draft)
    manifest = read_manifest(store, "m", release.version)
    assert manifest.model_dump(exclude={"version", "created_at", "files"}) == draft.model_dump()
    assert ReleaseManifest.model_validate_json(manifest.model_dump_json()) == manifest
    with pytest.raises(ManifestError, match="no variant 'tflite'; it has \\['onnx-fp32'\\]"):
        manifest.variant("tflite")


@pytest.mark.parametrize("schema", [2, 3])
def test_an_older_schema_is_read_as_a_release_without_the_newer_fields(tmp_path: Path, schema: int) -> None:
    store = FileStore(tmp_path / "reg")
    release = publish_release(store, {}, release_draft("m"))
    key = f"models/m/{release.version}/manifest.json"
    document = json.loads(store.get_bytes(key)[0])
    assert document["schema_version"] == 4 and document["alternatives"] == [] and document["references"] == []
    del document["references"]  # schema 4's
    for variant in document["variants"]:
        del variant["macro_f1"]
    if schema == 2:
        del document["alternatives"]  # schema 3's
    store.put_bytes(key, json.dumps(document | {"schema_version": schema}).encode())
    manifest = read_manifest(store, "m", release.version)
    assert manifest.schema_version == 4 and [v.name for v in manifest.host_candidates()] == ["onnx-fp32"]
    assert manifest.references == [] and manifest.variants[0].macro_f1 is None
    # An older reader meets fields it does not know in a newer schema: the number tells it first.
    with pytest.raises(ValueError, match="schema_version 5 is not one this code reads"):
        ReleaseManifest.model_validate(document | {"schema_version": 5})


def test_an_unmeasured_variant_cannot_be_released() -> None:
    draft = release_draft("m")
    row = draft.variants[0].model_dump() | {"p50_ms_b1": float("nan")}
    with pytest.raises(ValueError, match="onnx-fp32 has no measured p50_ms_b1"):
        type(draft.variants[0]).model_validate(row)
