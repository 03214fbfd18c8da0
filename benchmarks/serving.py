"""Online serving side by side: the model server over HTTP vs the same served variant in process.

Usage:
    .venv/bin/python benchmarks/serving.py [--models digits resnet18] [--requests 2000] [--work DIR]

Per model, the release's served variant is first timed in this process (the ceiling: p50 of one
call at batch 1, rows per second at batch 64). Then ``python -m serve`` (its own process, request
logging on, as in production) is driven over loopback by closed-loop clients at concurrency 1, 8,
32 and 128, a fixed number of one-image requests each: throughput, p50/p99 latency, errors, and
the mean rows per model call the server made. Requests use the V2 binary tensor extension (what
Triton's and KServe's clients send); one JSON row at concurrency 1 and 32 shows what JSON costs.
Also: batching off (``--max-batch-size 1``) at concurrency 32, and a run at concurrency 32 during
which the production alias moves three times (promotion, rollback, promotion): every answer must
come back, from the version it names. ``HTTP`` is a health-check round trip at concurrency 1: the
floor of any call through the stack. Clients and server share this machine's cores.

Models:
  digits    the embedded default (two builds of it, seeds 0 and 1, for the swaps)
  resnet18  the resnet18@64 release of benchmarks/compression.py (built if ``--work`` has none)

Goals: 0 failed requests across swaps; p50 at concurrency 1 within 1 ms of the raw batch-1
latency plus HTTP; throughput at concurrency 32 >= 50 % of the raw batch-64 ceiling (resnet18);
batching >= 3x the unbatched throughput at concurrency 32. Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from flows.build import build  # noqa: E402 - Prefect reads the settings above at import
from flows.config import BuildConfig  # noqa: E402
from tasks.export.measure import measuring_host  # noqa: E402
from tasks.registry.aliases import move_alias, read_alias  # noqa: E402
from tasks.registry.release import list_versions  # noqa: E402
from tasks.registry.serving import fetch_production  # noqa: E402
from tasks.registry.store import open_store  # noqa: E402
from tasks.tables import text_table  # noqa: E402
from tests.serve_process import running_server  # noqa: E402

CONCURRENCY = (1, 8, 32, 128)


def digits_store(work: Path) -> tuple[BuildConfig, list[str]]:
    """Two releases of the embedded default (seeds 0 and 1); reused when ``work`` has them."""
    config = None
    for seed in (0, 1):
        config = BuildConfig.model_validate({
            "model_name": "bench-serving-digits", "work_dir": str(work / "digits" / "work"),
            "store": {"uri": f"file://{work / 'digits' / 'registry'}"}, "train": {"seed": seed},
        })
        store = open_store(config.store)
        if len(list_versions(store, config.model_name)) <= seed:
            print(f"building the default digits release, seed {seed} (a few minutes)", flush=True)
            build(config)
    versions = [m.version for m in list_versions(open_store(config.store), config.model_name)][:2]
    return config, versions


def resnet_store(work: Path) -> BuildConfig:
    from benchmarks.compression import model_config

    config = model_config("resnet18", work, repeats=50, threads=2, budget_pp=0.5)
    if read_alias(open_store(config.store), config.model_name)[0] is None:
        print("building the resnet18@64 release of benchmarks/compression.py (a few minutes)", flush=True)
        build(config)
    return config


def promote(store, model: str, version: str) -> None:  # noqa: ANN001 - ArtifactStore
    expected = read_alias(store, model)
    if expected[0] is None or expected[0].version != version:
        move_alias(store, model, version, "benchmark", expected, kind="rollback")


def raw_ceiling(config: BuildConfig, work: Path) -> dict[str, float]:
    """The served variant in this process: p50 at batch 1, rows/s at batch 64."""
    fetched = fetch_production(open_store(config.store), config.model_name, work / "raw")
    backend = fetched.open()
    shape = fetched.manifest.input.shape
    rng = np.random.default_rng(0)
    one, many = rng.random((1, *shape), dtype=np.float32), rng.random((64, *shape), dtype=np.float32)
    for _ in range(20):
        backend.predict(one)
    times = []
    for _ in range(300):
        start = time.perf_counter()
        backend.predict(one)
        times.append(time.perf_counter() - start)
    for _ in range(3):
        backend.predict(many)
    start, calls = time.perf_counter(), 30
    for _ in range(calls):
        backend.predict(many)
    seconds = time.perf_counter() - start
    return {"b1_p50_ms": statistics.median(times) * 1000, "b1_rows_s": 1 / statistics.mean(times),
            "b64_rows_s": 64 * calls / seconds, "variant": fetched.manifest.served.name}


def binary_body(row: np.ndarray) -> tuple[bytes, dict[str, str]]:
    head = json.dumps({
        "inputs": [{"name": "images", "shape": list(row.shape), "datatype": "FP32", "parameters": {"binary_data_size": row.nbytes}}],
        "outputs": [{"name": "logits"}],
    }).encode()
    return head + row.astype("<f4").tobytes(), {"Inference-Header-Content-Length": str(len(head)),
                                               "Content-Type": "application/octet-stream"}


def json_body(row: np.ndarray) -> tuple[bytes, dict[str, str]]:
    body = {"inputs": [{"name": "images", "shape": list(row.shape), "datatype": "FP32", "data": row.reshape(-1).tolist()}],
            "outputs": [{"name": "logits"}]}
    return json.dumps(body).encode(), {"Content-Type": "application/json"}


async def drive(
    url: str, path: str, body: bytes | None, headers: dict[str, str], concurrency: int, requests: int,
    until: threading.Event | None = None,
):
    """Closed loop: ``concurrency`` keep-alive connections, ``requests`` in all (and on until ``until`` is set).

    A minimal HTTP/1.1 client on asyncio streams (a request is prebuilt bytes; a response is its status line,
    headers and Content-Length body): a general-purpose Python client spends more CPU per request than
    the server does, and on a shared 2-core machine the benchmark would measure the client.
    Returns latencies (s), errors, answers by version, wall time.
    """
    from urllib.parse import urlsplit

    target = urlsplit(url)
    method = "GET" if body is None else "POST"
    lines = [f"{method} {path} HTTP/1.1", f"Host: {target.hostname}:{target.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()] + [f"Content-Length: {len(body or b'')}", "", ""]
    request = "\r\n".join(lines).encode() + (body or b"")
    latencies, errors, versions = [], [], {}
    left = requests

    async def client() -> None:
        nonlocal left
        reader, writer = await asyncio.open_connection(target.hostname, target.port)
        try:
            while left > 0 or (until is not None and not until.is_set()):
                left -= 1
                start = time.perf_counter()
                try:
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head[9:12])
                    fields = dict(
                        line.split(": ", 1) for line in head.decode("latin-1").lower().split("\r\n")[1:] if ": " in line
                    )
                    payload = await reader.readexactly(int(fields.get("content-length", 0)))
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    errors.append(repr(exc))
                    writer.close()
                    reader, writer = await asyncio.open_connection(target.hostname, target.port)
                    continue
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    errors.append(f"{status}: {payload[:200]!r}")
                    continue
                version = fields.get("x-model-version")
                if version:
                    split = int(fields.get("inference-header-content-length", len(payload)))
                    if json.loads(payload[:split])["model_version"] != version:
                        errors.append("header and body name different versions")
                    versions[version] = versions.get(version, 0) + 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, errors, versions, time.perf_counter() - start


def run_loop(coroutine):  # noqa: ANN001, ANN201
    """Run the clients on uvloop (as the server does): the event loop is most of a client's cost."""
    import uvloop

    return uvloop.run(coroutine)


def batches(server) -> tuple[float, float]:  # noqa: ANN001 - ServerProcess
    metrics = server.metrics()
    return metrics.get(("lepton_serve_batch_size_count", ()), 0.0), metrics.get(("lepton_serve_batch_size_sum", ()), 0.0)


def row(model: str, mode: str, concurrency: int | str, result, batch_delta=None) -> dict:  # noqa: ANN001
    latencies, errors, _, wall = result
    ms = np.asarray(latencies) * 1000
    calls, rows = batch_delta or (0, 0)
    return {
        "model": model, "mode": mode, "concurrency": concurrency, "requests": len(latencies) + len(errors),
        "req_per_s": f"{len(latencies) / wall:.0f}", "p50_ms": f"{np.percentile(ms, 50):.2f}", "p99_ms": f"{np.percentile(ms, 99):.2f}",
        "errors": len(errors), "rows_per_call": f"{rows / calls:.1f}" if calls else "",
    }


def measure(url: str, server, path: str, body, headers, concurrency: int, requests: int):  # noqa: ANN001
    before = batches(server)
    result = run_loop(drive(url, path, body, headers, concurrency, requests))
    after = batches(server)
    return result, (after[0] - before[0], after[1] - before[1])


def bench_model(name: str, config: BuildConfig, work: Path, requests: int, versions: list[str] | None) -> tuple[list, dict]:
    store = open_store(config.store)
    if versions:
        promote(store, config.model_name, versions[0])
    raw = raw_ceiling(config, work)
    shape = fetch_production(store, config.model_name, work / "raw").manifest.input.shape
    row_input = np.random.default_rng(1).random((1, *shape), dtype=np.float32)
    infer = f"/v2/models/{config.model_name}/infer"
    # --no-host-timing: the server serves the build's choice, the variant the "raw" rows time in this process.
    args = ["--model", config.model_name, "--store", config.store.uri, "--work-dir", str(work / "serve"), "--poll-seconds", "0.5",
            "--no-host-timing"]
    table = [
        {"model": name, "mode": f"raw b1 ({raw['variant']})", "concurrency": "-", "requests": 300,
         "req_per_s": f"{raw['b1_rows_s']:.0f}", "p50_ms": f"{raw['b1_p50_ms']:.3f}", "p99_ms": "", "errors": 0, "rows_per_call": "1"},
        {"model": name, "mode": "raw b64 (rows/s)", "concurrency": "-", "requests": 30, "req_per_s": f"{raw['b64_rows_s']:.0f}",
         "p50_ms": "", "p99_ms": "", "errors": 0, "rows_per_call": "64"},
    ]
    goals: dict = {"raw": raw}
    binary, binary_headers = binary_body(row_input)
    as_json, json_headers = json_body(row_input)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with running_server(args, logs) as server:
        measure(server.url, server, infer, binary, binary_headers, 8, 200)  # warm the connections and the allocator
        http, _ = measure(server.url, server, "/v2/health/live", None, {}, 1, 1000)
        table.append(row(name, "HTTP (health check)", 1, http))
        goals["http_p50_ms"] = float(np.percentile(np.asarray(http[0]) * 1000, 50))
        for concurrency in CONCURRENCY:
            result, delta = measure(server.url, server, infer, binary, binary_headers, concurrency, requests)
            table.append(row(name, "server, batching", concurrency, result, delta))
            goals[f"c{concurrency}"] = result
        for concurrency in (1, 32):
            result, delta = measure(server.url, server, infer, as_json, json_headers, concurrency, requests // 2)
            table.append(row(name, "server, batching, JSON", concurrency, result, delta))
        if versions:
            goals["swaps"] = swaps(server, store, config.model_name, versions, infer, binary, binary_headers, requests)
            table.append(row(name, "server, 3 alias moves", 32, goals["swaps"]))
    with running_server([*args, "--max-batch-size", "1"], logs) as server:
        measure(server.url, server, infer, binary, binary_headers, 8, 200)
        result, delta = measure(server.url, server, infer, binary, binary_headers, 32, requests)
        table.append(row(name, "server, batching off", 32, result, delta))
        goals["unbatched_c32"] = result
    return table, goals


def swaps(server, store, model: str, versions: list[str], path: str, body, headers, requests: int):  # noqa: ANN001
    """Concurrency 32 while the alias moves v2, v1, v2; the mover waits for each swap before the next."""
    moved, done = [], threading.Event()

    def mover() -> None:
        try:
            for version in (versions[1], versions[0], versions[1]):
                time.sleep(0.4)
                promote(store, model, version)
                server.wait_version(model, version)
                moved.append(version)
            time.sleep(0.4)
        finally:
            done.set()

    thread = threading.Thread(target=mover)
    thread.start()
    result = run_loop(drive(server.url, path, body, headers, 32, requests, until=done))
    thread.join()
    assert len(moved) == 3, f"the alias moved {len(moved)} of 3 times"
    promote(store, model, versions[0])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["digits", "resnet18"])
    parser.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder; releases in it are reused")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="lepton-serving-"))
    host = measuring_host()
    print(f"{host.cpu} ({host.logical_cpus} logical CPUs; {', '.join(host.flags) or 'no AVX2'}); clients and server "
          f"share them; {args.requests} one-image requests per level over loopback", flush=True)
    table, verdicts = [], []
    for name in args.models:
        if name == "digits":
            config, versions = digits_store(work)
        elif name == "resnet18":
            config, versions = resnet_store(work), None
        else:
            raise SystemExit(f"unknown model {name!r}; allowed: digits, resnet18")
        rows, goals = bench_model(name, config, work / f"serving-{name}", args.requests, versions)
        table += rows
        raw = goals["raw"]
        p50_c1 = float(np.percentile(np.asarray(goals["c1"][0]) * 1000, 50))
        bound = raw["b1_p50_ms"] + goals["http_p50_ms"] + 1.0
        verdicts.append(f"{name}: p50 at concurrency 1 {p50_c1:.2f} ms <= raw b1 {raw['b1_p50_ms']:.2f} + HTTP "
                        f"{goals['http_p50_ms']:.2f} + 1 ms = {bound:.2f}: {'met' if p50_c1 <= bound else 'MISSED'}")
        c32 = len(goals["c32"][0]) / goals["c32"][3]
        off = len(goals["unbatched_c32"][0]) / goals["unbatched_c32"][3]
        verdicts.append(f"{name}: batching {c32:.0f} vs unbatched {off:.0f} req/s at concurrency 32 = {c32 / off:.2f}x "
                        f"(goal >= 3x: {'met' if c32 >= 3 * off else 'MISSED'})")
        share = c32 / raw["b64_rows_s"]
        verdicts.append(f"{name}: concurrency 32 reaches {share:.0%} of the raw batch-64 ceiling ({raw['b64_rows_s']:.0f} rows/s)"
                        + (f" (goal >= 50 %: {'met' if share >= 0.5 else 'MISSED'})" if name == "resnet18" else ""))
        if "swaps" in goals:
            _, errors, seen, _ = goals["swaps"]
            verdicts.append(f"{name}: 3 alias moves under load: {len(errors)} failed requests, answers by version {seen} "
                            f"(goal 0 failed: {'met' if not errors else 'MISSED'})")
    print()
    print(text_table(table))
    print()
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
