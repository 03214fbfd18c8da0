"""The online model server, run as users run it (``python -m serve``) and called over HTTP.

Two releases of one model are built once; each test starts its own server process on them.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from flows.build import build
from flows.config import MonitorConfig, ScoreConfig
from flows.monitor import monitor
from flows.score import score
from tasks.registry.aliases import move_alias, read_alias
from tasks.registry.release import read_manifest
from tasks.registry.serving import fetch_release
from tasks.registry.store import open_store
from tasks.score.inference import softmax
from tasks.score.logs import read_window
from tests.conftest import folder_build, write_class_images
from tests.serve_process import running_server

pytestmark = pytest.mark.integration

MODEL = "served"
TOKEN = "test-token-0123456789abcdef"


class Registry:
    """A file:// registry holding two versions of MODEL, and the images they were built from."""

    def __init__(self, root: Path, images: Path, uri: str, versions: list[str]) -> None:
        self.root, self.images, self.uri, self.versions = root, images, uri, versions
        self.store = open_store_uri(uri)

    def promote(self, version: str) -> None:
        """Point production at ``version`` (as a promotion or rollback does)."""
        expected = read_alias(self.store, MODEL)
        if expected[0] is None or expected[0].version != version:
            move_alias(self.store, MODEL, version, f"test: serve {version}", expected, kind="rollback")

    def args(self, work: Path, *extra: str, host_timing: bool = False) -> list[str]:
        """Server flags; without ``host_timing`` it serves the build's choice, so expected outputs are known up front."""
        timing = [] if host_timing else ["--no-host-timing"]
        return ["--model", MODEL, "--store", self.uri, "--work-dir", str(work), "--poll-seconds", "0.2", *timing, *extra]

    def files(self, count: int | None = None) -> list[Path]:
        return sorted(self.images.rglob("*.png"))[:count]


def open_store_uri(uri: str):  # noqa: ANN201 - ArtifactStore
    from tasks.registry.config import StoreConfig

    return open_store(StoreConfig(uri=uri))


@pytest.fixture(scope="module")
def registry(prefect_api, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("serve")
    images = write_class_images(root / "images", {"dark": 40, "mid": 40, "light": 40}, size=12)
    versions = []
    for seed in (0, 1):
        config = folder_build(root, images, MODEL, train={"max_epochs": 8, "batch_size": 16, "seed": seed})
        versions.append(build(config).version)
    assert versions[0] != versions[1]
    registry = Registry(root, images, config.store.uri, versions)
    registry.promote(versions[0])
    return registry


def model_info(metrics: dict) -> list[dict[str, str]]:
    """The labels of every ``lepton_serve_model_info`` series at 1: the version (and variant) in service."""
    return [dict(labels) for (name, labels), value in metrics.items() if name == "lepton_serve_model_info" and value == 1]


def tensor_request(rows: np.ndarray, **extra) -> dict:
    return {"inputs": [{"name": "images", "shape": list(rows.shape), "datatype": "FP32", "data": rows.reshape(-1).tolist()}], **extra}


def expected_logits(registry: Registry, version: str, rows: np.ndarray, work: Path, variant: str | None = None) -> np.ndarray:
    """What a version's ``variant`` (default: the build's choice) computes for ``rows``, through the registry's one way to open it."""
    fetched = fetch_release(registry.store, MODEL, version, work, monitoring=False, candidates=variant is not None)
    return fetched.open(variant).predict(rows)


def test_every_endpoint_of_the_protocol_answers_as_specified(registry: Registry, tmp_path: Path) -> None:
    registry.promote(registry.versions[0])
    version = registry.versions[0]
    with running_server(registry.args(tmp_path / "work"), tmp_path) as server:
        http = server.client
        assert http.get("/v2/health/live").json() == {"live": True}
        assert http.get("/v2/health/ready").json() == {"ready": True}
        assert http.get("/v2").json()["extensions"] == ["binary_tensor_data"]
        meta = http.get(f"/v2/models/{MODEL}")
        assert meta.status_code == 200 and meta.headers["x-model-version"] == version
        body = meta.json()
        assert body["name"] == MODEL and body["versions"] == [version] and body["platform"] in ("onnxruntime_onnx", "openvino_ir")
        assert body["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
        assert [(o["name"], o["datatype"], o["shape"]) for o in body["outputs"]] == [
            ("logits", "FP32", [-1, 3]), ("probabilities", "FP32", [-1, 3]), ("class", "BYTES", [-1])
        ]
        classes = body["parameters"]["classes"]
        assert sorted(classes) == ["dark", "light", "mid"]
        # Host timing off: the build's choice, and the answer says so.
        served = read_manifest(registry.store, MODEL, version).served.name
        assert body["parameters"]["variant"] == meta.headers["x-model-variant"] == served
        assert body["parameters"]["variant_reason"] == f"{served}: the build's choice (host timing is off)"
        assert http.get(f"/v2/models/{MODEL}/versions/{version}").json()["versions"] == [version]
        assert http.get(f"/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": True}
        assert http.get(f"/v2/models/{MODEL}/versions/{version}/ready").status_code == 200

        rows = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
        answer = http.post(f"/v2/models/{MODEL}/infer", json=tensor_request(rows, id="req-1"))
        assert answer.status_code == 200, answer.text
        out = answer.json()
        assert out["model_name"] == MODEL and out["model_version"] == version and out["id"] == "req-1"
        tensors = {o["name"]: o for o in out["outputs"]}
        assert tensors["logits"]["shape"] == [3, 3] and tensors["logits"]["datatype"] == "FP32"
        logits = np.asarray(tensors["logits"]["data"], dtype=np.float32).reshape(3, 3)
        np.testing.assert_allclose(logits, expected_logits(registry, version, rows, tmp_path / "ref"), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(tensors["probabilities"]["data"]).reshape(3, 3), softmax(logits), atol=1e-6)
        assert tensors["class"]["data"] == [classes[i] for i in logits.argmax(axis=1)] and tensors["class"]["datatype"] == "BYTES"
        nested = {"inputs": [{"name": "images", "shape": [3, 1, 8, 8], "datatype": "FP32", "data": rows.tolist()}],
                  "outputs": [{"name": "class"}]}
        only = http.post(f"/v2/models/{MODEL}/versions/{version}/infer", json=nested).json()["outputs"]
        assert [o["name"] for o in only] == ["class"] and only[0]["data"] == tensors["class"]["data"]

        # The binary tensor data extension, both ways (what Triton's and KServe's HTTP clients send by default).
        head = json.dumps({
            "inputs": [{"name": "images", "shape": [3, 1, 8, 8], "datatype": "FP32", "parameters": {"binary_data_size": rows.nbytes}}],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}, {"name": "class", "parameters": {"binary_data": True}}],
        }).encode()
        binary = http.post(f"/v2/models/{MODEL}/infer", content=head + rows.astype("<f4").tobytes(),
                           headers={"Inference-Header-Content-Length": str(len(head)), "content-type": "application/octet-stream"})
        assert binary.status_code == 200, binary.text
        split = int(binary.headers["inference-header-content-length"])
        described = json.loads(binary.content[:split])["outputs"]
        sizes = [o["parameters"]["binary_data_size"] for o in described]
        blob = binary.content[split:]
        assert len(blob) == sum(sizes) and sizes[0] == 3 * 3 * 4
        np.testing.assert_array_equal(np.frombuffer(blob[: sizes[0]], "<f4").reshape(3, 3), logits)
        names, offset = [], sizes[0]
        while offset < len(blob):
            length = int.from_bytes(blob[offset : offset + 4], "little")
            names.append(blob[offset + 4 : offset + 4 + length].decode())
            offset += 4 + length
        assert names == tensors["class"]["data"]

        def error(response: httpx.Response, status: int, *words: str) -> None:
            assert response.status_code == status, response.text
            message = response.json()["error"]
            assert all(w in message for w in words), message
            assert "Traceback" not in response.text

        infer = f"/v2/models/{MODEL}/infer"
        error(http.post(infer, json={"inputs": [{**tensor_request(rows)["inputs"][0], "datatype": "INT32"}]}), 400, "INT32", "FP32")
        error(http.post(infer, json=tensor_request(np.zeros((1, 3, 8, 8), np.float32))), 400, "[1, 3, 8, 8]", "[N, 1, 8, 8]")
        short = tensor_request(rows)
        short["inputs"][0]["data"] = short["inputs"][0]["data"][:-1]
        error(http.post(infer, json=short), 400, "191 values", "[3, 1, 8, 8]")
        error(http.post(infer, json={"inputs": [{**tensor_request(rows)["inputs"][0], "name": "x"}]}), 400, "'x'", "'images'")
        error(http.post(infer, json={"inputs": [{**tensor_request(rows)["inputs"][0], "data": ["a"] * 192}]}), 400, "numbers")
        error(http.post(infer, json={**tensor_request(rows), "outputs": [{"name": "scores"}]}), 400, "scores", "logits")
        error(http.post(infer, content=b"{not json", headers={"content-type": "application/json"}), 400, "not JSON")
        error(http.post(infer, json={"input": []}), 400, "inputs")
        error(http.post(infer, content=head + b"\0" * 8, headers={"Inference-Header-Content-Length": str(len(head))}),
              400, "binary_data_size", "768")
        error(http.post(infer, json=tensor_request(np.zeros((300, 1, 8, 8), np.float32))), 400, "300 rows", "256")
        error(http.post("/v2/models/other/infer", json=tensor_request(rows)), 404, "'other'", MODEL)
        error(http.get(f"/v2/models/{MODEL}/versions/nope"), 404, "nope", version)
        error(http.get("/v3/nothing"), 404, "/v3/nothing")
        error(http.get(infer), 405, "GET")


def test_predictions_equal_batch_scoring_for_the_same_files(registry: Registry, tmp_path: Path) -> None:
    registry.promote(registry.versions[0])
    files = registry.files(30)
    batch = tmp_path / "batch"
    batch.mkdir()
    for f in files:
        shutil.copy(f, batch / f.name)
    # Both serve the build's choice (the server with --no-host-timing): one variant, so equal answers.
    result = score(ScoreConfig(
        model_name=MODEL, store={"uri": registry.uri}, work_dir=tmp_path / "score", source=str(batch), variant_choice={"measure": False}
    ))
    assert result.scored == len(files) and result.variant == read_manifest(registry.store, MODEL, registry.versions[0]).served.name
    scored = pd.read_parquet(result.predictions_uri.removeprefix("file://")).set_index("file")
    with running_server(registry.args(tmp_path / "work", "--no-request-log"), tmp_path) as server:
        endpoint = f"/v1/models/{MODEL}:predict-image"
        multipart = server.client.post(endpoint, files=[("files", (f.name, f.read_bytes(), "image/png")) for f in files])
        assert multipart.status_code == 200, multipart.text
        body = multipart.json()
        assert body["model_version"] == registry.versions[0] == scored["release_version"].iloc[0]
        for prediction in body["predictions"]:
            row = scored.loc[prediction["file"]]
            assert prediction["class"] == row["predicted_class"]
            assert prediction["confidence"] == pytest.approx(row["confidence"], abs=1e-6)
            assert prediction["image_sha256"] == row["image_sha256"]
        as_json = server.client.post(endpoint, json={"images": [{"name": f.name, "b64": base64.b64encode(f.read_bytes()).decode()} for f in files]})
        assert as_json.json()["predictions"] == body["predictions"]
        raw = server.client.post(endpoint, content=files[0].read_bytes(), headers={"content-type": "image/png", "x-file-name": files[0].name})
        assert raw.json()["predictions"] == body["predictions"][:1]


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(registry: Registry, tmp_path: Path) -> None:
    registry.promote(registry.versions[0])
    rng = np.random.default_rng(1)
    inputs = [rng.random((int(rng.integers(1, 4)), 1, 8, 8), dtype=np.float32) for _ in range(48)]
    expected = [expected_logits(registry, registry.versions[0], x, tmp_path / "ref") for x in inputs]
    args = registry.args(tmp_path / "work", "--max-batch-size", "16", "--max-queue-delay-ms", "30", "--no-request-log")
    with running_server(args, tmp_path) as server:
        answers: list = [None] * len(inputs)
        start = threading.Barrier(len(inputs))

        def call(i: int) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                http.get("/v2/health/live")  # connected before the barrier: the posts leave together
                start.wait()
                answers[i] = http.post(f"/v2/models/{MODEL}/infer", json=tensor_request(inputs[i], outputs=[{"name": "logits"}]))

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for x, want, answer in zip(inputs, expected, answers):
            assert answer.status_code == 200, answer.text
            got = np.asarray(answer.json()["outputs"][0]["data"], dtype=np.float32).reshape(want.shape)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        metrics = server.metrics()
        calls = metrics[("lepton_serve_batch_size_count", ())]
        rows = metrics[("lepton_serve_batch_size_sum", ())]
        # Warm-up does not count; every row ran once, and concurrent requests shared calls.
        assert rows == sum(len(x) for x in inputs)
        assert calls < len(inputs)  # some calls ran rows of several requests


def test_versions_swap_under_load_without_an_error_and_every_answer_names_its_version(registry: Registry, tmp_path: Path) -> None:
    v1, v2 = registry.versions
    registry.promote(v1)
    rows = np.random.default_rng(2).random((2, 1, 8, 8), dtype=np.float32)
    expected = {v: expected_logits(registry, v, rows, tmp_path / "ref") for v in (v1, v2)}
    assert not np.allclose(expected[v1], expected[v2])
    with running_server(registry.args(tmp_path / "work"), tmp_path) as server:
        stop = threading.Event()
        outcomes: list[tuple[int, str | None, bool]] = []
        failures: list[str] = []

        def hammer(call, check) -> None:  # noqa: ANN001 - (client -> response), (body -> (version, consistent))
            with httpx.Client(base_url=server.url, timeout=30) as http:
                while not stop.is_set():
                    try:
                        answer = call(http)
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                        continue
                    if answer.status_code != 200:
                        failures.append(answer.text)
                        continue
                    version, consistent = check(answer.json())
                    outcomes.append((200, version, consistent and answer.headers["x-model-version"] == version))

        def tensor_answer(body: dict) -> tuple[str, bool]:
            got = np.asarray(body["outputs"][0]["data"], dtype=np.float32).reshape(2, -1)
            return body["model_version"], np.allclose(got, expected[body["model_version"]], atol=1e-5)

        image = registry.files(1)[0].read_bytes()
        confidence = {}
        for v in (v1, v2):
            pixels = read_manifest(registry.store, MODEL, v).input.decode(image)[0][None].astype(np.float32) / 255
            confidence[v] = float(softmax(expected_logits(registry, v, pixels, tmp_path / "ref")).max())

        def image_answer(body: dict) -> tuple[str, bool]:
            return body["model_version"], abs(body["predictions"][0]["confidence"] - confidence[body["model_version"]]) < 1e-5

        infer = (lambda http: http.post(f"/v2/models/{MODEL}/infer", json=tensor_request(rows, outputs=[{"name": "logits"}])), tensor_answer)
        # Decoding runs off the event loop between taking the version and batching: a swap can land there.
        predict = (lambda http: http.post(f"/v1/models/{MODEL}:predict-image", files=[("files", ("x.png", image, "image/png"))]),
                   image_answer)
        clients = [threading.Thread(target=hammer, args=infer) for _ in range(6)]
        clients += [threading.Thread(target=hammer, args=predict) for _ in range(2)]
        for c in clients:
            c.start()
        try:
            for version in (v2, v1, v2):  # a promotion, a rollback, a promotion again
                time.sleep(0.5)
                registry.promote(version)
                server.wait_version(MODEL, version)
            time.sleep(0.5)
        finally:
            stop.set()
            for c in clients:
                c.join()
        assert failures == []
        assert len(outcomes) > 100
        assert all(consistent for _, _, consistent in outcomes)
        seen = Counter(version for _, version, _ in outcomes)
        assert set(seen) == {v1, v2}
        metrics = server.metrics()
        assert metrics[("lepton_serve_model_swaps_total", (("model", MODEL),))] == 4
        assert [info["version"] for info in model_info(metrics)] == [v2]


def test_a_version_that_fails_verification_is_refused_and_the_old_one_keeps_serving(registry: Registry, tmp_path: Path) -> None:
    v1, v2 = registry.versions
    # A copy of the registry: this test breaks a file in it.
    copy = tmp_path / "registry"
    shutil.copytree(Path(registry.uri.removeprefix("file://")), copy)
    broken = Registry(registry.root, registry.images, f"file://{copy}", registry.versions)
    broken.promote(v2)
    rows = np.zeros((1, 1, 8, 8), np.float32)
    with running_server(broken.args(tmp_path / "work"), tmp_path) as server:
        served = read_manifest(broken.store, MODEL, v1).served.name
        for file in (copy / "models" / MODEL / v1 / served).rglob("*"):
            if file.is_file():
                file.write_bytes(file.read_bytes()[:-16] + b"\0" * 16)  # same size, other bytes
        broken.promote(v1)
        deadline = time.monotonic() + 30
        while server.metrics().get(("lepton_serve_model_load_failures_total", (("model", MODEL),)), 0) < 1:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        answer = server.client.post(f"/v2/models/{MODEL}/infer", json=tensor_request(rows))
        assert answer.status_code == 200 and answer.json()["model_version"] == v2
        assert server.client.get("/v2/health/ready").status_code == 200
        assert "refused" in server.log() and v1 in server.log() and "sha256" in server.log().lower()
        broken.promote(v2)  # a rollback to the serving version: nothing to load


def test_requests_need_the_bearer_token_and_health_stays_open(registry: Registry, tmp_path: Path) -> None:
    registry.promote(registry.versions[0])
    with running_server(registry.args(tmp_path / "work"), tmp_path, token=TOKEN) as server:
        anonymous = httpx.Client(base_url=server.url)
        assert anonymous.get("/v2/health/live").status_code == 200
        assert anonymous.get("/v2/health/ready").status_code == 200
        for path in (f"/v2/models/{MODEL}", "/metrics"):
            missing = anonymous.get(path)
            assert missing.status_code == 401 and "bearer" in missing.json()["error"] and "www-authenticate" in missing.headers
            wrong = anonymous.get(path, headers={"Authorization": f"Bearer {TOKEN[:-1]}x"})
            assert wrong.status_code == 401 and wrong.json()["error"] == "invalid bearer token"
        assert anonymous.post(f"/v2/models/{MODEL}/infer", json=tensor_request(np.zeros((1, 1, 8, 8), np.float32))).status_code == 401
        assert server.client.get(f"/v2/models/{MODEL}").status_code == 200
        assert server.client.post(f"/v2/models/{MODEL}/infer", json=tensor_request(np.zeros((1, 1, 8, 8), np.float32))).status_code == 200


def test_a_server_on_another_interface_refuses_to_start_without_a_token(registry: Registry, tmp_path: Path) -> None:
    with running_server(registry.args(tmp_path / "work", "--host", "0.0.0.0"), tmp_path, ready=False) as server:
        assert server.process.wait(60) == 2
        assert "LEPTON_SERVE_TOKEN" in server.log() and "0.0.0.0" in server.log() and "Traceback" not in server.log()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_oversized_bodies_images_and_batches_get_4xx_and_the_server_keeps_serving(registry: Registry, tmp_path: Path) -> None:
    registry.promote(registry.versions[0])
    with running_server(registry.args(tmp_path / "work", "--no-request-log"), tmp_path) as server:
        endpoint = f"/v1/models/{MODEL}:predict-image"
        # 50 MB announced: refused from the headers, before a byte of the body is read.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                f"POST {endpoint} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {50 * 1024 * 1024}\r\n\r\n".encode()
            )
            reply = b""
            while b"}" not in reply and (chunk := sock.recv(65536)):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 413") and b"at most 16777216" in reply
        # 20 MB streamed without a length: refused once the limit is passed.
        def chunks():
            for _ in range(20):
                yield b"\0" * (1024 * 1024)

        try:
            streamed = server.client.post(endpoint, content=chunks(), headers={"content-type": "image/png"})
            assert streamed.status_code == 413
        except httpx.TransportError:
            pass  # the server may close the connection while the client is still sending: refused either way
        # A decompression bomb: 25 million pixels in a 4 kB PNG (below Pillow's own limit), refused by the
        # server's limit from its header.
        bomb = _png(Image.new("1", (5_000, 5_000)))
        assert len(bomb) < 100_000
        answer = server.client.post(endpoint, files=[("files", ("bomb.png", bomb, "image/png"))])
        assert answer.status_code == 422 and "bomb.png" in answer.json()["error"] and "at most 16000000" in answer.json()["error"]
        corrupt = server.client.post(endpoint, files=[("files", ("half.png", _png(Image.new("L", (8, 8)))[:40], "image/png"))])
        assert corrupt.status_code == 422 and "half.png" in corrupt.json()["error"]
        many = [("files", (f"{i}.png", _png(Image.new("L", (8, 8))), "image/png")) for i in range(257)]
        assert server.client.post(endpoint, files=many).status_code in (400, 413)
        assert server.client.post(endpoint, content=b"hello", headers={"content-type": "text/plain"}).status_code == 415
        assert server.client.post(endpoint, json={"images": ["not base64!"]}).status_code == 400
        good = server.client.post(endpoint, files=[("files", ("ok.png", _png(Image.new("L", (8, 8), 120)), "image/png"))])
        assert good.status_code == 200, good.text
        assert server.process.poll() is None
        metrics = server.metrics()
        assert metrics[("lepton_serve_requests_total", (("endpoint", "/v1/models/{name}:predict-image"), ("status", "422")))] == 2
        assert metrics[("lepton_serve_requests_total", (("endpoint", "/v1/models/{name}:predict-image"), ("status", "200")))] == 1
        assert metrics[("lepton_serve_request_duration_seconds_count", (("endpoint", "/v1/models/{name}:predict-image"), ("status", "200")))] == 1
        assert [info["version"] for info in model_info(metrics)] == [registry.versions[0]]
        assert metrics[("lepton_serve_queue_depth", ())] == 0


def test_served_requests_become_monitoring_rows_the_monitor_flow_reads(registry: Registry, tmp_path: Path) -> None:
    registry.promote(registry.versions[0])
    copy = tmp_path / "registry"  # a registry of its own: the window holds this test's rows only
    shutil.copytree(Path(registry.uri.removeprefix("file://")), copy)
    for kind in ("monitoring", "predictions"):
        shutil.rmtree(copy / kind, ignore_errors=True)
    mine = Registry(registry.root, registry.images, f"file://{copy}", registry.versions)
    files = mine.files()
    manifest = read_manifest(mine.store, MODEL, mine.versions[0])
    # Host timing on (the default): the server times the release's candidates here and says which it serves.
    with running_server(mine.args(tmp_path / "work", host_timing=True), tmp_path) as server:
        meta = server.client.get(f"/v2/models/{MODEL}").json()["parameters"]
        variant = meta["variant"]
        assert variant in [v.name for v in manifest.host_candidates()] and manifest.variant(variant).in_budget
        assert "here" in meta["variant_reason"] and "batch 1" in meta["variant_reason"]  # latency_b1: timed at batch 1
        assert [(i["version"], i["variant"]) for i in model_info(server.metrics())] == [(mine.versions[0], variant)]
        assert f"as {variant}" in server.log()
        endpoint = f"/v1/models/{MODEL}:predict-image"
        for start in range(0, len(files), 50):
            part = files[start : start + 50]
            answer = server.client.post(endpoint, files=[("files", (f.name, f.read_bytes(), "image/png")) for f in part])
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-model-variant"] == variant
        tensors = np.random.default_rng(3).random((10, 1, 8, 8), dtype=np.float32)
        answer = server.client.post(f"/v2/models/{MODEL}/infer", json=tensor_request(tensors, id="t", outputs=[{"name": "logits"}]))
        assert answer.status_code == 200
        served = np.asarray(answer.json()["outputs"][0]["data"], dtype=np.float32).reshape(10, -1)
        expected = expected_logits(mine, mine.versions[0], tensors, tmp_path / "ref", variant)
        # Another thread count sums in another order: in bf16 that moves logits by its own rounding, not 1e-5.
        tolerance = 0.02 * np.abs(expected).max() if manifest.variant(variant).precision == "bf16" else 1e-5
        np.testing.assert_allclose(served, expected, rtol=1e-5, atol=tolerance)
        assert server.terminate() == 0  # SIGTERM: what is buffered is written before the process ends
    logged = read_window(mine.store, "monitoring", MODEL)
    assert len(logged) == len(files) + 10
    assert set(logged["release_version"]) == {mine.versions[0]} and set(logged["variant"]) == {variant}
    assert logged["file"].iloc[-10:].tolist() == [f"request:t/{i}" for i in range(10)]
    assert logged["original_width"].iloc[-10:].isna().all() and logged["original_width"].iloc[: len(files)].eq(12).all()
    predictions = read_window(mine.store, "predictions", MODEL)
    assert sorted(predictions["file"].iloc[: len(files)]) == sorted(f.name for f in files)
    report = monitor(MonitorConfig(model_name=MODEL, store={"uri": mine.uri}, work_dir=tmp_path / "monitor", drift={"min_rows": 50}))
    assert report.result.rows == len(files) + 10  # every row: they are all the served variant's, tested against its reference
    assert any("10 window rows do not measure" in q for q in report.result.quarantined)


def test_shutdown_finishes_a_request_in_flight(registry: Registry, tmp_path: Path) -> None:
    registry.promote(registry.versions[0])
    body = json.dumps(tensor_request(np.zeros((4, 1, 8, 8), np.float32))).encode()
    with running_server(registry.args(tmp_path / "work", "--no-request-log"), tmp_path) as server:
        sent_half = threading.Event()
        answers = []

        def slow_body():
            yield body[: len(body) // 2]
            sent_half.set()
            time.sleep(1.5)  # SIGTERM arrives while the rest of the body is on its way
            yield body[len(body) // 2 :]

        def call() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                answers.append(http.post(f"/v2/models/{MODEL}/infer", content=slow_body(), headers={"content-type": "application/json"}))

        caller = threading.Thread(target=call)
        caller.start()
        assert sent_half.wait(10)
        time.sleep(0.2)
        code = server.terminate()
        caller.join()
        assert code == 0
        assert len(answers) == 1 and answers[0].status_code == 200, answers
        assert answers[0].json()["model_version"] == registry.versions[0]


def test_a_failing_store_never_blocks_requests_and_their_rows_are_written_once_it_heals(
    registry: Registry, s3_server, tmp_path: Path
) -> None:
    import boto3

    from serve.config import RequestLogConfig, ServeConfig
    from serve.model import load_version
    from serve.requestlog import RequestLog, ServedRows
    from tasks.registry.config import StoreConfig

    loaded = load_version(registry.store, ServeConfig(model_name=MODEL, store={"uri": registry.uri}, work_dir=tmp_path), registry.versions[0])
    boto3.client("s3", endpoint_url=s3_server.url).create_bucket(Bucket="served-logs")
    store = open_store(StoreConfig(uri="s3://served-logs/lepton", endpoint_url=s3_server.url, max_attempts=1, timeout_s=5))
    log = RequestLog(store, MODEL, RequestLogConfig(flush_rows=5, flush_seconds=0.2, max_pending_rows=40))
    log.start()
    rng = np.random.default_rng(4)

    def served(tag: str, n: int) -> ServedRows:
        pixels = rng.integers(0, 256, size=(n, 1, 8, 8), dtype=np.uint8)
        logits, embeddings = loaded.run(pixels.astype(np.float32) / 255)
        return ServedRows(loaded, [f"{tag}/{i}" for i in range(n)], logits, embeddings, raw=pixels,
                          sizes=np.full((n, 2), 12.0), sha256=[f"{tag}{i}" for i in range(n)])

    s3_server.fail_from(len(s3_server.requests), "error")
    try:
        for tag in ("a", "b", "c"):
            start = time.perf_counter()
            log.record(served(tag, 10))
            assert time.perf_counter() - start < 0.5  # handed over, not written, while the store fails
        deadline = time.monotonic() + 30
        while log.counters.write_failures < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        log.record(served("d", 20))  # 30 rows wait; 20 more would pass the 40-row bound: dropped and counted
        assert log.counters.dropped_rows == 20
    finally:
        s3_server.heal()
    deadline = time.monotonic() + 60
    while log.counters.pending_rows:
        assert time.monotonic() < deadline, vars(log.counters)
        time.sleep(0.1)
    log.stop(10)
    predictions = read_window(store, "predictions", MODEL)
    monitoring = read_window(store, "monitoring", MODEL)
    expected = sorted(f"{tag}/{i}" for tag in "abc" for i in range(10))
    assert sorted(predictions["file"]) == expected and sorted(monitoring["file"]) == expected  # each row once
    assert set(monitoring["release_version"]) == {registry.versions[0]}
    assert log.counters.written_rows == 30 and log.counters.write_failures >= 1

    # Half an object: the predictions land, the monitoring rows fail. The retry completes it, writing neither twice.
    half = RequestLog(store, "half", RequestLogConfig())
    half.record(served("e", 7))
    s3_server.fail_from(len(s3_server.requests) + 1, "error")
    try:
        assert half.flush() is False
    finally:
        s3_server.heal()
    assert len(read_window(store, "predictions", "half")) == 7 and read_window(store, "monitoring", "half").empty
    assert half.flush() is True
    assert sorted(read_window(store, "predictions", "half")["file"]) == [f"e/{i}" for i in range(7)]
    assert sorted(read_window(store, "monitoring", "half")["file"]) == [f"e/{i}" for i in range(7)]


def test_a_server_without_a_production_release_is_live_but_not_ready_until_one_is_promoted(registry: Registry, tmp_path: Path) -> None:
    from tasks.registry.aliases import alias_key

    copy = tmp_path / "registry"
    shutil.copytree(Path(registry.uri.removeprefix("file://")), copy)
    (copy / alias_key(MODEL, "production")).unlink()
    empty = Registry(registry.root, registry.images, f"file://{copy}", registry.versions)
    with running_server(empty.args(tmp_path / "work"), tmp_path, ready=False) as server:
        deadline = time.monotonic() + 60
        while True:
            try:
                if server.client.get("/v2/health/live").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.1)
        time.sleep(0.5)  # a few polls of the missing alias
        ready = server.client.get("/v2/health/ready")
        assert ready.status_code == 503 and "no production release" in ready.json()["reason"]
        answer = server.client.post(f"/v2/models/{MODEL}/infer", json=tensor_request(np.zeros((1, 1, 8, 8), np.float32)))
        assert answer.status_code == 503 and "no production release" in answer.json()["error"]
        assert server.client.get(f"/v2/models/{MODEL}/ready").status_code == 503
        empty.promote(registry.versions[1])
        server.wait_ready()
        answer = server.client.post(f"/v2/models/{MODEL}/infer", json=tensor_request(np.zeros((1, 1, 8, 8), np.float32)))
        assert answer.status_code == 200 and answer.json()["model_version"] == registry.versions[1]
        assert server.log().count("no production release") == 1  # said once, not at every poll
