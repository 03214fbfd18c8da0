"""Faults injected into a real S3 endpoint mid-release: no reader ever sees a torn version.

Each trial releases new content and promotes it while the endpoint (moto's server over HTTP on
127.0.0.1) fails from one request onward, by answering 500 or by going away. The faulted
request is drawn, seeded, from one of four phases of a release: before any file, mid-files
(multipart parts included), the manifest, the alias. After each fault the endpoint is healed
and every reader's view is checked, then the release is retried and must complete without
sending again a file that had already landed.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from pathlib import Path

import boto3
import pytest

from tasks.registry.aliases import promote_if_unchanged, read_alias
from tasks.registry.config import StoreConfig
from tasks.registry.release import (
    MANIFEST,
    Release,
    content_version,
    download_release,
    list_versions,
    publish_release,
    read_manifest,
)
from tasks.registry.store import ObjectNotFound, S3Store
from tests.conftest import release_draft
from tests.s3_endpoint import S3Endpoint

pytestmark = pytest.mark.integration

TRIALS = 20
PHASES = ("before files", "mid-files", "before manifest", "before alias")
BIG = 9 * 2**20  # above boto3's 8 MiB multipart threshold: two parts


@pytest.fixture
def endpoint(s3_server: S3Endpoint):
    yield s3_server
    s3_server.heal()  # whatever a failed test left broken


def new_store(endpoint: S3Endpoint) -> StoreConfig:
    bucket = f"faults-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint.url).create_bucket(Bucket=bucket)
    # Two attempts a request: boto3 retries, then gives up on an endpoint that stays down.
    return StoreConfig(
        uri=f"s3://{bucket}/registry", endpoint_url=endpoint.url, region="us-east-1", sse="AES256",
        max_attempts=2, timeout_s=5,
    )


def release_files(root: Path, seed: int) -> dict[str, Path]:
    """Four files of a release; the 9 MiB one goes up as a multipart upload."""
    rng = random.Random(seed)
    files = {
        "dataset/manifest.json": f'{{"seed": {seed}}}'.encode(),
        "onnx-fp32/model.onnx": rng.randbytes(4096),
        "openvino-fp32/model.bin": rng.randbytes(BIG),
        "training/history.json": b"[]",
    }
    paths = {}
    for rel, data in files.items():
        path = root / str(seed) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths[rel] = path
    return paths


def release_and_promote(config: StoreConfig, files: dict[str, Path], gated_against: str | None) -> Release:
    """What the build flow's publish and promote tasks do, without the model training around them."""
    store = S3Store(config)
    release = publish_release(store, files, release_draft("digits"))
    promoted, why = promote_if_unchanged(store, "digits", release.version, "trial", gated_against)
    assert promoted, why
    return release


def phase_of(requests, version: str) -> list[str]:
    """The release phase of each request of a clean run, by what it touched."""
    phases, seen_upload = [], False
    for request in requests:
        if "/aliases/" in request.path or (request.method == "HEAD" and request.path.endswith(MANIFEST) and seen_upload):
            phases.append("before alias")
        elif request.path.endswith(f"{version}/{MANIFEST}") and request.method == "PUT":
            phases.append("before manifest")
        elif request.is_upload or request.method == "POST":
            phases.append("mid-files" if seen_upload else "before files")
            seen_upload = True
        else:
            phases.append("before files" if not seen_upload else "mid-files")
    return phases


def verify_readers(config: StoreConfig, work: Path) -> tuple[int, int]:
    """(torn versions, alias on an incomplete version) as every reader sees the store now."""
    store = S3Store(config)
    torn = 0
    for manifest in list_versions(store, "digits"):
        try:
            download_release(store, "digits", manifest.version, work / "dl" / manifest.version, work / "cache")
        except Exception:  # noqa: BLE001 - any failure to read a listed version makes it torn
            torn += 1
    alias, _ = read_alias(store, "digits")
    alias_bad = 0
    if alias is not None:
        try:
            download_release(store, "digits", alias.version, work / "alias" / alias.version, work / "cache")
        except Exception:  # noqa: BLE001
            alias_bad = 1
    return torn, alias_bad


def test_seeded_faults_never_tear_a_release(endpoint: S3Endpoint, tmp_path: Path) -> None:
    rng = random.Random(20261128)
    # A clean run measures how many requests each phase of a release takes.
    clean = new_store(endpoint)
    first = release_and_promote(clean, release_files(tmp_path / "files", 0), None)
    clean_files = release_files(tmp_path / "files", 1)
    clean_version, _ = content_version(clean_files)
    start = len(endpoint.requests)
    release_and_promote(clean, clean_files, first.version)
    phases = phase_of(endpoint.requests[start:], clean_version)
    by_phase = {p: [i for i, q in enumerate(phases) if q == p] for p in PHASES}
    assert all(by_phase.values()), by_phase

    tally: Counter[str] = Counter()
    for trial in range(TRIALS):
        phase = PHASES[trial % len(PHASES)]
        offset = rng.choice(by_phase[phase])
        mode = rng.choice(["error", "stop"])
        config = new_store(endpoint)
        # Half the trials start from an existing production (If-Match), half from none (If-None-Match).
        production = None
        if trial % 2:
            production = release_and_promote(config, release_files(tmp_path / "files", 1000 + trial), None).version
        files = release_files(tmp_path / "files", 2000 + trial)
        version, _ = content_version(files)
        fault_at = len(endpoint.requests) + offset
        endpoint.fail_from(fault_at, mode)
        with pytest.raises(Exception):  # noqa: B017 - whatever boto3 raises for a dead endpoint
            release_and_promote(config, files, production)
        endpoint.heal()
        # Objects that became whole before the fault: plain PUTs, and completed multipart uploads.
        landed = {
            q.path.split(f"/{version}/", 1)[1]
            for q in endpoint.requests[fault_at - offset : fault_at]
            if f"/{version}/" in q.path
            and ((q.method == "PUT" and "partNumber" not in q.query) or (q.method == "POST" and "uploadId" in q.query))
        }

        work = tmp_path / f"trial-{trial}"
        torn, alias_bad = verify_readers(config, work)
        tally["trials"] += 1
        tally["torn releases"] += torn
        tally["alias on incomplete"] += alias_bad
        store = S3Store(config)
        listed = [m.version for m in list_versions(store, "digits")]
        assert (version in listed) == (MANIFEST in landed), (trial, phase, mode, landed)
        if MANIFEST not in landed:
            with pytest.raises(ObjectNotFound):
                read_manifest(store, "digits", version)
        alias, _ = read_alias(store, "digits")
        assert (alias.version if alias else None) == production, (trial, phase, mode)

        # The retry completes the release and moves the alias, sending only what had not landed.
        retry_start = len(endpoint.requests)
        release = release_and_promote(config, files, production)
        sent_again = {
            q.path.split(f"/{version}/", 1)[1]
            for q in endpoint.requests[retry_start:]
            if q.method in ("PUT", "POST") and f"/{version}/" in q.path
        }
        assert not (sent_again & (landed - {MANIFEST})), (trial, phase, mode, landed, sent_again)
        assert release.version == version and read_alias(store, "digits")[0].version == version
        assert verify_readers(config, work / "after") == (0, 0)
        tally[f"{phase}/{mode}"] += 1

    print("\nfault trials:", dict(tally))
    assert tally["trials"] == TRIALS
    assert tally["torn releases"] == 0 and tally["alias on incomplete"] == 0
    assert all(tally[f"{p}/error"] + tally[f"{p}/stop"] >= 5 for p in PHASES)


def test_racing_releases_have_exactly_one_winner(endpoint: S3Endpoint, tmp_path: Path) -> None:
    for round_ in range(4):
        config = new_store(endpoint)
        store = S3Store(config)
        production = None
        if round_ % 2:  # race from an existing production (If-Match) and from none (If-None-Match)
            production = release_and_promote(config, release_files(tmp_path / "base", round_), None).version
        candidates = [
            publish_release(store, release_files(tmp_path / f"r{round_}", 10 * round_ + i), release_draft("digits")).version
            for i in range(4)
        ]
        barrier = threading.Barrier(len(candidates))
        outcomes: dict[str, tuple[bool, str]] = {}

        def promote(version: str) -> None:
            barrier.wait()
            outcomes[version] = promote_if_unchanged(S3Store(config), "digits", version, "race", production)

        threads = [threading.Thread(target=promote, args=(v,)) for v in candidates]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [v for v, (won, _) in outcomes.items() if won]
        assert len(winners) == 1, outcomes
        alias, _ = read_alias(store, "digits")
        assert alias.version == winners[0]
        assert [m.to_version for m in alias.history] == [*([production] if production else []), winners[0]]
        for version, (won, why) in outcomes.items():
            if not won:
                assert "moved" in why
                assert version in [m.version for m in list_versions(store, "digits")]  # the loser stays intact
