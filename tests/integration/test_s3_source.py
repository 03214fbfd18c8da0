"""An s3:// data source against a real S3-compatible endpoint (moto's server on 127.0.0.1)."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import boto3
import pytest

from flows.build import build
from tasks.data.config import DataConfig
from tasks.data.imagefolder import ingest_imagefolder
from tasks.data.remote import RemoteSourceError, download_prefix
from tests.conftest import shrunken_build, write_class_images
from tests.flows.test_tabular import planted

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket(s3_server) -> tuple[object, str]:  # noqa: ANN001
    client = boto3.client("s3", endpoint_url=s3_server.url)
    name = f"data-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=name)
    return client, name


def gets(s3_server, start: int) -> int:  # noqa: ANN001
    """Object downloads (GETs of a key, not listings) the endpoint answered since request ``start``."""
    return sum(1 for r in s3_server.requests[start:] if r.method == "GET" and "list-type" not in r.query and not r.failed)


def test_a_prefix_is_downloaded_once_and_kept_in_step_with_the_bucket(s3_server, bucket, tmp_path: Path) -> None:
    client, name = bucket
    for key, body in {"tables/a.csv": b"x,label\n1,a\n", "tables/sub/b.csv": b"x,label\n2,b\n", "tables/.hidden": b"no",
                      "tables-old/c.csv": b"x,label\n3,c\n"}.items():
        client.put_object(Bucket=name, Key=key, Body=body)
    uri = f"s3://{name}/tables"
    start = len(s3_server.requests)
    folder = download_prefix(uri, tmp_path / "cache", s3_server.url)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.csv")) == ["a.csv", "sub/b.csv"]
    assert gets(s3_server, start) == 2
    start = len(s3_server.requests)
    assert download_prefix(uri, tmp_path / "cache", s3_server.url) == folder and gets(s3_server, start) == 0
    client.put_object(Bucket=name, Key="tables/a.csv", Body=b"x,label\n1,a\n5,b\n")
    client.delete_object(Bucket=name, Key="tables/sub/b.csv")
    start = len(s3_server.requests)
    download_prefix(uri, tmp_path / "cache", s3_server.url)
    assert gets(s3_server, start) == 1 and (folder / "a.csv").read_text().endswith("5,b\n")
    assert not (folder / "sub" / "b.csv").exists()
    single = download_prefix(f"s3://{name}/tables/a.csv", tmp_path / "cache", s3_server.url)
    assert single.is_file() and single.name == "a.csv"


def test_a_failing_endpoint_is_retried_and_a_missing_prefix_named(s3_server, bucket, tmp_path: Path) -> None:
    client, name = bucket
    client.put_object(Bucket=name, Key="t/a.csv", Body=b"x,label\n1,a\n")
    s3_server.fail_from(len(s3_server.requests), "error")  # the listing itself fails, until healed
    healer = threading.Timer(1.5, s3_server.heal)
    healer.start()
    try:
        folder = download_prefix(f"s3://{name}/t", tmp_path / "cache", s3_server.url)
    finally:
        healer.join()
    assert (folder / "a.csv").read_bytes() == b"x,label\n1,a\n"
    assert any(r.failed for r in s3_server.requests)
    with pytest.raises(RemoteSourceError, match=rf"s3://{name}/nothing holds no objects"):
        download_prefix(f"s3://{name}/nothing", tmp_path / "cache", s3_server.url)
    with pytest.raises(RemoteSourceError, match="cannot list s3://no-such-bucket-here/t"):
        download_prefix("s3://no-such-bucket-here/t", tmp_path / "cache", s3_server.url)


def test_an_image_prefix_survives_a_fault_mid_listing_and_is_ingested_like_a_local_folder(
    s3_server, bucket, tmp_path: Path
) -> None:
    client, name = bucket
    local = write_class_images(tmp_path / "local", {"a": 9, "b": 9}, size=12)
    (local / "a" / "broken.png").write_bytes(b"not an image")
    (local / "b" / "copy.png").write_bytes((local / "b" / "b_000.png").read_bytes())  # a duplicate: quarantined
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        client.put_object(Bucket=name, Key=f"images/{path.relative_to(local).as_posix()}", Body=path.read_bytes())

    def later_page(request) -> bool:  # noqa: ANN001 - tests.s3_endpoint.Request
        return "list-type" in request.query and "continuation-token" in request.query

    # Pages of 4 keys: 20 objects are 5 pages; the second page's listing fails twice, then answers.
    s3_server.fail_matching(later_page, times=2)
    start = len(s3_server.requests)
    folder = download_prefix(f"s3://{name}/images", tmp_path / "cache", s3_server.url, page_size=4)
    listings = [r for r in s3_server.requests[start:] if "list-type" in r.query]
    assert sum(r.failed for r in listings) == 2 and len(listings) == 5 + 2
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png")) == sorted(
        p.relative_to(local).as_posix() for p in local.rglob("*.png")
    )
    config = DataConfig(image_size=8, workers=2)
    remote = ingest_imagefolder(folder, config, tmp_path / "snaps-remote")
    same = ingest_imagefolder(local, config, tmp_path / "snaps-local")
    assert remote.version == same.version and remote.counts == same.counts
    assert [(q.path, q.reason) for q in remote.quarantined] == [(q.path, q.reason) for q in same.quarantined]
    assert {q.path for q in remote.quarantined} == {"a/broken.png", "b/copy.png"}

    # A listing that keeps failing past the retries names the prefix; the cache keeps what it had.
    s3_server.fail_matching(later_page, times=100)
    try:
        with pytest.raises(RemoteSourceError, match=rf"cannot list s3://{name}/images"):
            download_prefix(f"s3://{name}/images", tmp_path / "cache", s3_server.url, page_size=4)
    finally:
        s3_server.heal()
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png")) == sorted(
        p.relative_to(local).as_posix() for p in local.rglob("*.png")
    )


def test_a_table_build_reads_its_source_from_s3(prefect_api, s3_server, bucket, tmp_path: Path) -> None:
    client, name = bucket
    rows = planted(600, seed=3)
    for part, frame in enumerate((rows.iloc[:300], rows.iloc[300:])):
        client.put_object(Bucket=name, Key=f"planted/part-{part}.csv", Body=frame.to_csv(index=False).encode())
    config = shrunken_build(
        tmp_path, model_name="from-s3", compress={"plan": []},
        data={"source": f"s3://{name}/planted", "label_column": "outcome", "endpoint_url": s3_server.url},
    )
    release = build(config)
    assert release.promoted
    from tasks.registry.release import read_manifest
    from tasks.registry.store import open_store

    manifest = read_manifest(open_store(config.store), "from-s3", release.version)
    assert manifest.input.kind == "tabular" and sum(sum(c.values()) for c in manifest.dataset.counts.values()) == 600
