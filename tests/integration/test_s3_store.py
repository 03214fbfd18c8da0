"""The S3 back end against a real S3-compatible HTTP endpoint on 127.0.0.1 (moto's server)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3
import numpy as np
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.sorting import LogSort
from prefect.logging.handlers import APILogHandler

from flows.build import build
from flows.config import MonitorConfig, ScoreConfig
from flows.monitor import monitor
from flows.score import score
from tasks.data.contract import ImageInput
from tasks.export.onnx import export_onnx
from tasks.hashing import sha256_file
from tasks.registry.aliases import move_alias, promote_if_unchanged, read_alias
from tasks.registry.config import StoreConfig
from tasks.registry.release import IntegrityError, download_release, list_versions, publish_release, read_manifest
from tasks.registry.rollback import roll_back
from tasks.registry.store import ConditionalWriteFailed, S3Store, StoreUnavailable
from tasks.score.logs import read_window
from tasks.train.models import build_model
from tests.conftest import TEST_ACCESS_KEY, TEST_SECRET, folder_build, release_draft, write_class_images

GREY = ImageInput(channels=1, image_size=16)

pytestmark = pytest.mark.integration


@pytest.fixture
def s3_config(s3_endpoint: str) -> StoreConfig:
    bucket = f"lepton-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return StoreConfig(uri=f"s3://{bucket}/team/registry", endpoint_url=s3_endpoint, region="us-east-1", sse="AES256")


@pytest.fixture(scope="module")
def release_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real ONNX model with external weights, and a 9 MiB file that goes up as multipart."""
    import torch

    root = tmp_path_factory.mktemp("release")
    torch.manual_seed(0)
    onnx_path = export_onnx(build_model("small_cnn", 4, GREY), torch.rand(2, 1, 16, 16), root / "onnx-fp32" / "model.onnx")
    big = root / "blob" / "weights.bin"
    big.parent.mkdir()
    big.write_bytes(np.random.default_rng(0).bytes(9 * 1024 * 1024))
    files = {f"onnx-fp32/{p.name}": p for p in onnx_path.parent.iterdir()}
    files["blob/weights.bin"] = big
    return files


class FlakyS3Store(S3Store):
    """A real S3Store whose n-th upload fails, as a dropped connection would."""

    def __init__(self, config: StoreConfig, fail_at: int) -> None:
        super().__init__(config)
        self.calls = 0
        self.fail_at = fail_at

    def put_file(self, local: Path, key: str, sha256: str, **kwargs) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise ConnectionError("injected: connection dropped")
        super().put_file(local, key, sha256, **kwargs)


def test_whole_release_round_trips_with_sha256_and_sse(s3_config: StoreConfig, release_files, tmp_path: Path) -> None:
    store = S3Store(s3_config)
    release = publish_release(store, release_files, release_draft("digits", config={"acc": 0.99}))
    assert release.uri == f"{store.uri}/models/digits/{release.version}"
    manifest = download_release(store, "digits", release.version, tmp_path / "dl", tmp_path / "cache")
    for rel, local in release_files.items():
        assert sha256_file(tmp_path / "dl" / rel) == sha256_file(local)
    client = boto3.client("s3", endpoint_url=s3_config.endpoint_url)
    keys = store.list_keys(f"models/digits/{release.version}/")
    assert len(keys) == len(release_files) + 1 == len(manifest.files) + 1 and manifest.config == {"acc": 0.99}
    for key in keys:
        head = client.head_object(Bucket=store.bucket, Key=f"team/registry/{key}")
        assert head["ServerSideEncryption"] == "AES256", key
        if not key.endswith("manifest.json"):
            expected = next(f.sha256 for f in manifest.files if key.endswith(f.path))
            assert head["Metadata"]["sha256"] == expected


@pytest.mark.parametrize(
    "sse", [{"sse": "AES256"}, {"sse": "aws:kms", "kms_key_id": "arn:aws:kms:us-east-1:123456789012:key/lepton"}]
)
def test_every_object_carries_the_configured_encryption(s3_config: StoreConfig, release_files, sse: dict) -> None:
    config = s3_config.model_copy(update=sse)
    store = S3Store(config)
    release = publish_release(store, release_files, release_draft("digits"))
    move_alias(store, "digits", release.version, "first", read_alias(store, "digits"))
    client = boto3.client("s3", endpoint_url=config.endpoint_url)
    keys = store.list_keys("")
    assert len(keys) == len(release_files) + 2  # files, manifest, alias
    for key in keys:
        head = client.head_object(Bucket=store.bucket, Key=f"team/registry/{key}")
        assert head["ServerSideEncryption"] == sse["sse"], key
        assert head.get("SSEKMSKeyId") == sse.get("kms_key_id"), key


@pytest.mark.parametrize("name", ["../escape", "/etc", "a/../../b", "./here", "a\\..\\b"])
def test_unsafe_names_never_reach_the_bucket(s3_config: StoreConfig, release_files, name: str) -> None:
    store = S3Store(s3_config)
    with pytest.raises(ValueError, match="not allowed"):
        publish_release(store, release_files, release_draft(name))
    with pytest.raises(ValueError, match="not allowed"):
        read_alias(store, name)
    with pytest.raises(ValueError, match="not a relative path"):
        store.put_bytes(f"models/{name}/x.json", b"{}")
    assert store.list_keys("") == []


def test_rollback_round_trip(s3_config: StoreConfig, release_files, tmp_path: Path) -> None:
    store = S3Store(s3_config)
    versions = []
    for n in range(3):
        release_files["blob/weights.bin"] = tmp_path / f"w{n}.bin"
        release_files["blob/weights.bin"].write_bytes(bytes([n]) * 1024)
        version = publish_release(store, release_files, release_draft("digits")).version
        assert promote_if_unchanged(store, "digits", version, f"build {n}", versions[-1] if versions else None)[0]
        versions.append(version)
    back = roll_back(store, "digits", tmp_path / "work", reason="regression in build 2")
    assert (back.from_version, back.to_version) == (versions[2], versions[1])
    client = boto3.client("s3", endpoint_url=s3_config.endpoint_url)
    client.put_object(Bucket=store.bucket, Key=f"team/registry/models/digits/{versions[0]}/blob/weights.bin", Body=b"x")
    with pytest.raises(IntegrityError, match="blob/weights.bin"):
        roll_back(store, "digits", tmp_path / "work")
    assert roll_back(store, "digits", tmp_path / "work", to_version=versions[2]).to_version == versions[2]
    alias, _ = read_alias(store, "digits")
    assert [(m.kind, m.to_version) for m in alias.history] == [
        ("promote", versions[0]), ("promote", versions[1]), ("promote", versions[2]),
        ("rollback", versions[1]), ("pin", versions[2]),
    ]


def test_interrupted_upload_is_invisible_and_retry_completes(s3_config: StoreConfig, release_files) -> None:
    stored: list[tuple[int, int]] = []
    with pytest.raises(ConnectionError):
        publish_release(FlakyS3Store(s3_config, fail_at=2), release_files, release_draft("digits"),
                        on_file=lambda done, total: stored.append((done, total)))
    store = S3Store(s3_config)
    assert list_versions(store, "digits") == []
    total = len(release_files)
    # Progress counts files as they are stored: the one that failed is not.
    assert stored == [(1, total)]
    stored.clear()
    release = publish_release(store, release_files, release_draft("digits"),
                              on_file=lambda done, total: stored.append((done, total)))
    assert [m.version for m in list_versions(store, "digits")] == [release.version]
    # The retry reaches 100 %, counting the file already stored, not sent again.
    assert stored == [(n, total) for n in range(1, total + 1)] and release.files_reused == 1


def test_tampered_object_is_refused(s3_config: StoreConfig, release_files, tmp_path: Path) -> None:
    store = S3Store(s3_config)
    release = publish_release(store, release_files, release_draft("digits"))
    client = boto3.client("s3", endpoint_url=s3_config.endpoint_url)
    client.put_object(Bucket=store.bucket, Key=f"team/registry/models/digits/{release.version}/onnx-fp32/model.onnx", Body=b"x")
    with pytest.raises(IntegrityError, match="onnx-fp32/model.onnx"):
        download_release(store, "digits", release.version, tmp_path / "dl", tmp_path / "cache")


def test_alias_uses_conditional_writes(s3_config: StoreConfig, release_files) -> None:
    store = S3Store(s3_config)
    version = publish_release(store, release_files, release_draft("digits")).version
    never_set = read_alias(store, "digits")
    move_alias(store, "digits", version, "first", never_set)
    with pytest.raises(ConditionalWriteFailed):
        move_alias(store, "digits", version, "second writer also saw no alias", never_set)
    current = read_alias(store, "digits")
    move_alias(store, "digits", version, "re-point", current)
    with pytest.raises(ConditionalWriteFailed):
        move_alias(store, "digits", version, "stale etag", current)
    assert [h.reason for h in read_alias(store, "digits")[0].history] == ["first", "re-point"]


def _all_logs(client) -> str:  # noqa: ANN001 - a sync Prefect client
    """Every log line of the session, page by page (the API answers at most 200 at a time)."""
    # Logs reach the API from a background worker: send what is queued first. Pages in a fixed order.
    APILogHandler().flush()
    messages, offset = [], 0
    while page := client.read_logs(limit=200, offset=offset, sort=LogSort.TIMESTAMP_ASC):
        messages += [log.message for log in page]
        offset += len(page)
    return " ".join(messages)


def _every_artifact(client) -> list:  # noqa: ANN001 - a sync Prefect client
    """Every artifact of the session's API, page by page (one read stops at the server's default limit of 200)."""
    artifacts: list = []
    while page := client.read_artifacts(limit=200, offset=len(artifacts)):
        artifacts += page
    return artifacts


def _assert_credentials_only_in_presigned_links(artifacts: list) -> None:
    """The secret key is in no artifact; the access key id only inside presigned links, as in any presigned URL."""
    links = [a for a in artifacts if "X-Amz-Signature=" in str(a.data)]
    assert links  # the release (and, once monitored, the drift report) links its S3 object
    for artifact in artifacts:
        text = str(artifact.data) + str(artifact.description)
        assert TEST_SECRET not in text, artifact.key
        expected = text.count("X-Amz-Credential=") if artifact in links else 0
        assert text.count(TEST_ACCESS_KEY) == expected, artifact.key


def test_build_flow_releases_to_s3(prefect_api, s3_config: StoreConfig, tmp_path: Path) -> None:
    root = write_class_images(tmp_path / "imgs", {"dark": 30, "mid": 30, "light": 30}, seed=5)
    (root / "dark" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    config = folder_build(tmp_path, root, "brightness", store=s3_config.model_dump())
    release = build(config)
    store = S3Store(s3_config)
    assert release.promoted
    assert release.uri.startswith(f"s3://{store.bucket}/team/registry/models/brightness/")
    assert read_alias(store, "brightness")[0].version == release.version
    manifest = read_manifest(store, "brightness", release.version)
    assert manifest.classes == ["dark", "light", "mid"]
    assert manifest.config["store"]["uri"] == s3_config.uri
    # Credentials come from the AWS chain and appear in no manifest, artifact or log line.
    with get_client(sync_client=True) as client:
        logs = _all_logs(client)
        _assert_credentials_only_in_presigned_links(_every_artifact(client))
    for secret in (TEST_ACCESS_KEY, TEST_SECRET):
        assert secret not in manifest.model_dump_json() and secret not in logs
    assert "uploading" in logs  # the logs were read: progress lines are there
    assert manifest.dataset.quarantined == 1
    download_release(store, "brightness", release.version, tmp_path / "dl", tmp_path / "cache", only="dataset")
    report = json.loads((tmp_path / "dl" / "dataset" / "validation_report.json").read_text())
    assert [q["path"] for q in report["quarantined"]] == ["dark/broken.png"]

    # Score new images from an s3:// prefix with the S3 release; logs land in the S3 store.
    incoming = write_class_images(tmp_path / "incoming", {"dark": 20, "light": 20}, seed=9)
    client = boto3.client("s3", endpoint_url=s3_config.endpoint_url)
    for path in sorted(incoming.rglob("*.png")):
        client.upload_file(str(path), store.bucket, f"incoming/{path.relative_to(incoming).as_posix()}")
    client.put_object(Bucket=store.bucket, Key="incoming/readme.txt", Body=b"not an image")
    scored = score(
        ScoreConfig(model_name="brightness", source=f"s3://{store.bucket}/incoming", work_dir=tmp_path / "work", store=s3_config)
    )
    assert (scored.files, scored.scored) == (41, 40) and [f.name for f in scored.failed] == ["readme.txt"]
    assert scored.monitoring_uri.startswith(f"s3://{store.bucket}/team/registry/monitoring/brightness/")
    logged = read_window(store, "monitoring", "brightness")
    assert len(logged) == 40 and set(logged["release_version"]) == {release.version}
    drift = monitor(
        MonitorConfig(model_name="brightness", window_hours=1, drift={"min_rows": 10}, work_dir=tmp_path / "work", store=s3_config)
    )
    assert drift.result.rows == 40 and drift.result.status in ("drift", "no drift")
    assert drift.report_uri.startswith(f"s3://{store.bucket}/team/registry/reports/brightness/drift/")
    # The run links the report with a presigned URL a browser can follow; the secret appears nowhere, and the
    # key id only inside that link (as in any presigned URL).
    import httpx

    with get_client(sync_client=True) as client:
        artifacts = _every_artifact(client)
    (link,) = [a for a in artifacts if a.key == "drift-report" and store.bucket in a.data]  # other tests' are local
    url = link.data[link.data.index("](") + 2 : -1]  # a link artifact is stored as [text](url)
    assert httpx.get(url).text.lstrip().lower().startswith("<!doctype html>")
    _assert_credentials_only_in_presigned_links(artifacts)


def test_an_unreachable_endpoint_is_a_clear_error(s3_endpoint: str) -> None:  # s3_endpoint: test credentials
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = StoreConfig(uri="s3://lepton-gone/registry", endpoint_url=f"http://127.0.0.1:{port}", max_attempts=2, timeout_s=2)
    store = S3Store(config)
    with pytest.raises(StoreUnavailable, match=rf"s3://lepton-gone/registry: http://127.0.0.1:{port} did not answer after 2"):
        read_alias(store, "digits")
    with pytest.raises(StoreUnavailable):
        store.put_bytes("x.json", b"{}")


def test_a_report_link_opens_in_a_browser_for_a_while(s3_config: StoreConfig) -> None:
    import httpx

    store = S3Store(s3_config)
    store.put_bytes("reports/m/drift/r.html", b"<!doctype html><p>verdict</p>")
    link = store.browser_link("reports/m/drift/r.html", expires_s=600)
    # A presigned GET: no credentials needed to follow it, only the link, and it names its expiry.
    assert link.startswith(s3_config.endpoint_url) and "X-Amz-Expires=600" in link and "X-Amz-Signature=" in link
    answer = httpx.get(link)
    assert answer.status_code == 200 and answer.content == b"<!doctype html><p>verdict</p>"
    assert httpx.get(link.replace("r.html", "other.html")).status_code in (403, 404)  # the signature is for one object
