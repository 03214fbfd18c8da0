"""A simulated cluster: a Prefect server on PostgreSQL, an S3-compatible endpoint, two process workers on their own
network namespaces, and score runs of several shards spread over both workers, each shard logged exactly once.

SQLite is what prints ``database is locked`` when runs report concurrently; production servers run on
PostgreSQL, and so does this one. The only state the nodes share is the API and the S3 store: the
shards are read from S3 and their rows land in the store (tests/cluster.py says what runs where).
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import pandas as pd
import pytest

from flows.config import ScoreConfig
from tasks.hashing import sha256_file
from tasks.registry.aliases import read_alias
from tasks.registry.config import StoreConfig
from tasks.registry.store import open_store
from tests.cluster import Network, Worker, node_network, postgres, prefect_server, process_workers, s3_endpoint
from tests.conftest import TEST_ACCESS_KEY, TEST_SECRET, folder_build, write_class_images
from tests.integration.conftest import PROJECT, PrefectServer

pytestmark = pytest.mark.integration

MODEL = "cluster-model"
POOL = "lepton-process"  # the pool prefect.yaml names
SHARDS = 6
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class Cluster:
    """The running cluster and the release its workers score with."""

    server: PrefectServer
    database_url: str
    network: Network
    workers: list[Worker]
    store: StoreConfig
    bucket: str
    root: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """PostgreSQL, a Prefect server on it, S3, the score deployment, a released model, two workers; all stopped after."""
    root = tmp_path_factory.mktemp("cluster")
    with ExitStack() as stack, pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY)
        env.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET)
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        database_url = stack.enter_context(postgres())
        network = stack.enter_context(node_network(2))
        if not network.isolated:
            warnings.warn(f"cluster test: {network.reason}", stacklevel=1)
        endpoint = s3_endpoint(network.host)
        endpoint.start()
        stack.callback(endpoint.stop)
        bucket = f"lepton-cluster-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint.url).create_bucket(Bucket=bucket)
        store = StoreConfig(uri=f"s3://{bucket}/registry", endpoint_url=endpoint.url, region="us-east-1")
        server = stack.enter_context(prefect_server(database_url, network.host, root / "server", dict(os.environ)))

        # The model the workers score with: built and released to S3 once, by a build run on this server,
        # while the pool, the deployment and the workers come up.
        images = write_class_images(root / "train", {"dark": 40, "light": 40}, seed=7)
        config = folder_build(
            root, images, MODEL, store=store.model_dump(mode="json"), compress={"plan": []},
            evaluate={"policy": {"accuracy_budget_pp": 50}},
        )
        (root / "build.json").write_text(config.model_dump_json())
        build_log = open(root / "build.log", "w")
        stack.callback(build_log.close)
        build = subprocess.Popen(
            [sys.executable, "-m", "flows.build", "--config", str(root / "build.json")],
            cwd=PROJECT, env=server.env, stdout=build_log, stderr=subprocess.STDOUT,
        )
        stack.callback(lambda: build.poll() is None and build.kill())
        server.cli("work-pool", "create", POOL, "--type", "process", "--overwrite")
        server.cli("deploy", "--name", "score")
        workers = stack.enter_context(process_workers(server, network, POOL, root / "nodes", count=2))
        assert build.wait(timeout=600) == 0, (root / "build.log").read_text()[-4000:]
        yield Cluster(server, database_url, network, workers, store, bucket, root)


def write_shards(cluster: Cluster) -> dict[str, set[str]]:
    """SHARDS folders of distinct images uploaded under ``incoming/shard-N/``; returns each shard's content hashes."""
    client = boto3.client("s3", endpoint_url=cluster.store.endpoint_url)
    shards = {}
    for index in range(SHARDS):
        name = f"shard-{index}"
        folder = write_class_images(cluster.root / "shards" / name, {"dark": 4, "light": 4}, seed=100 + index)
        files = sorted(folder.rglob("*.png"))
        for path in files:
            client.upload_file(str(path), cluster.bucket, f"incoming/{name}/{path.relative_to(folder).as_posix()}")
        shards[name] = {sha256_file(path) for path in files}
    return shards


def start_score_runs(cluster: Cluster, shards: list[str]) -> dict[str, str]:
    """One run of the score deployment per shard, as the UI or an API client starts them; returns run id by shard."""
    api = cluster.server.api_url
    deployment = httpx.get(f"{api}/deployments/name/score/score").json()
    runs = {}
    for shard in shards:
        config = ScoreConfig(
            model_name=MODEL, source=f"s3://{cluster.bucket}/incoming/{shard}", store=cluster.store,
            # Each run's own scratch; the build's choice of variant, not timed again on every run.
            work_dir=cluster.root / "scratch" / uuid.uuid4().hex[:8], variant_choice={"measure": False},
        )
        response = httpx.post(
            f"{api}/deployments/{deployment['id']}/create_flow_run",
            json={"parameters": {"config": config.model_dump(mode="json")}, "tags": [shard]},
        )
        assert response.status_code == 201, response.text
        runs[shard] = response.json()["id"]
    return runs


def wait_for(cluster: Cluster, runs: dict[str, str], timeout: float = 240) -> dict[str, dict]:
    """Each run as the API has it once all of them are finished; fails with the logs of any that did not complete."""
    api = cluster.server.api_url
    deadline = time.monotonic() + timeout
    while True:
        found = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"id": {"any_": list(runs.values())}}}).json()
        by_id = {run["id"]: run for run in found}
        if all(by_id.get(i, {}).get("state_type") in TERMINAL for i in runs.values()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    states = {shard: by_id.get(i, {}).get("state_type") for shard, i in runs.items()}
    bad = {shard: state for shard, state in states.items() if state != "COMPLETED"}
    if bad:
        details = []
        for shard, state in bad.items():
            logs = httpx.post(f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [runs[shard]]}}}).json()
            details.append(f"{shard}: {state}\n" + "\n".join(entry["message"] for entry in logs)[-3000:])
        consoles = "\n".join(f"--- {w.name}\n{w.console()[-2000:]}" for w in cluster.workers)
        pytest.fail("runs did not complete:\n" + "\n".join(details) + "\n" + consoles)
    return {shard: by_id[i] for shard, i in runs.items()}


def executed_by(cluster: Cluster, runs: dict[str, str], timeout: float = 60) -> dict[str, list[str]]:
    """For each run, the workers that report having executed it (their ``prefect.worker.executed-flow-run`` events)."""
    api = cluster.server.api_url
    deadline = time.monotonic() + timeout
    while True:  # events reach the database in batches, a few seconds after they happen
        page = httpx.post(
            f"{api}/events/filter",
            json={"filter": {"event": {"name": ["prefect.worker.executed-flow-run"]}}, "limit": 50},
        ).json()
        executed: dict[str, list[str]] = {run_id: [] for run_id in runs.values()}
        for event in page["events"]:
            for related in event["related"]:
                run_id = related["prefect.resource.id"].removeprefix("prefect.flow-run.")
                if related.get("prefect.resource.role") == "flow-run" and run_id in executed:
                    executed[run_id].append(event["resource"]["prefect.resource.name"])
        if all(executed.values()) or time.monotonic() > deadline:
            return {shard: executed[run_id] for shard, run_id in runs.items()}
        time.sleep(1)


def logged_rows(cluster: Cluster, kind: str) -> dict[str, list[pd.DataFrame]]:
    """Every ``kind`` log object of the model in the store, by the batch id in its name."""
    store = open_store(cluster.store)
    batches: dict[str, list[pd.DataFrame]] = {}
    for key in store.list_keys(f"{kind}/{MODEL}/"):
        batch = key.rsplit("-", 1)[-1].removesuffix(".parquet")
        data, _ = store.get_bytes(key)
        batches.setdefault(batch, []).append(pd.read_parquet(io.BytesIO(data)))
    return batches


def flow_runs_in_postgres(database_url: str, ids: list[str]) -> int:
    """How many of the runs are rows of the server's PostgreSQL database."""
    import asyncpg

    async def count() -> int:
        connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return await connection.fetchval("SELECT count(*) FROM flow_run WHERE id = ANY($1::uuid[])", ids)
        finally:
            await connection.close()

    return asyncio.run(count())


def test_score_shards_spread_over_two_workers_land_once_each(cluster: Cluster) -> None:
    release = read_alias(open_store(cluster.store), MODEL)[0]
    assert release is not None, "the build released no production version"
    shards = write_shards(cluster)
    runs = start_score_runs(cluster, sorted(shards))
    finished = wait_for(cluster, runs)
    assert {shard: run["state_name"] for shard, run in finished.items()} == {shard: "Completed" for shard in shards}
    assert flow_runs_in_postgres(cluster.database_url, list(runs.values())) == SHARDS

    # Both workers ran shards, and every run was executed by exactly one of them, by the server's account
    # (the workers' events) and by each worker's own console. Both may pick up the same run: the server
    # lets one move it to Pending and tells the other to abort its submission.
    executed = executed_by(cluster, runs)
    assert all(len(names) == 1 for names in executed.values()), executed
    assert set(Counter(names[0] for names in executed.values())) == {w.name for w in cluster.workers}, executed
    raced = set()
    for worker in cluster.workers:
        console = worker.console()
        submitted = {s for s, i in runs.items() if f"submitting flow run '{i}'" in console}
        aborted = {s for s, i in runs.items() if f"Aborted submission of flow run '{i}'" in console}
        assert submitted - aborted == {s for s, names in executed.items() if names == [worker.name]}, worker.name
        raced |= aborted

    # Each shard's rows landed in the store exactly once: one predictions and one monitoring object per
    # shard, holding each of its images once, scored by the production release.
    for kind in ("predictions", "monitoring"):
        batches = logged_rows(cluster, kind)
        assert len(batches) == SHARDS and all(len(frames) == 1 for frames in batches.values()), (kind, batches.keys())
        landed = sorted(tuple(sorted(frames[0]["image_sha256"])) for frames in batches.values())
        assert landed == sorted(tuple(sorted(hashes)) for hashes in shards.values()), kind
        assert all(set(frames[0]["release_version"]) == {release.version} for frames in batches.values())

    # A shard submitted again, wherever it runs, is recognised as scored: nothing lands twice.
    again = wait_for(cluster, start_score_runs(cluster, ["shard-0", "shard-1"]))
    assert {run["state_name"] for run in again.values()} == {"Nothing scored"}
    assert all(len(frames) == 1 for frames in logged_rows(cluster, "predictions").values())

    server_log = (cluster.root / "server" / "server.log").read_text()
    assert "database is locked" not in server_log
    assert [line for line in server_log.splitlines() if "ERROR" in line or "Traceback" in line] == []
    print(f"cluster: {cluster.network.host}, isolated={cluster.network.isolated} {cluster.network.reason}; "
          f"runs by worker: {dict(Counter(n[0] for n in executed.values()))}; picked up by both: {sorted(raced)}")
