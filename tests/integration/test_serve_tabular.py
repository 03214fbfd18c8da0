"""The online server on a table model: rows as V2 named columns, V1 instances or the prepared tensor, over HTTP.

The same rows give the same logits as the build computed with the released artifact (no train/serve
skew), bad rows get 4xx answers that say what is allowed, and served rows are logged as scoring logs them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.build import build
from tasks.registry.serving import fetch_release
from tasks.registry.store import open_store
from tasks.score.logs import read_window
from tests.conftest import shrunken_build
from tests.flows.test_tabular import planted
from tests.serve_process import running_server

pytestmark = pytest.mark.integration

MODEL = "rows"


@pytest.fixture(scope="module")
def release(prefect_api, tmp_path_factory: pytest.TempPathFactory):
    """A table model (INT8 plan) and the cells of rows it never saw, as a client would send them."""
    root = tmp_path_factory.mktemp("serve-tabular")
    source = root / "planted.csv"
    planted(800, seed=0).to_csv(source, index=False)
    config = shrunken_build(
        root, model_name=MODEL, data={"source": str(source), "label_column": "outcome"}, compress={"plan": ["int8"]}
    )
    built = build(config)
    return config, built, planted(6, seed=42).drop(columns=["outcome"])


def args(config, work: Path) -> list[str]:  # noqa: ANN001
    return ["--model", MODEL, "--store", config.store.uri, "--work-dir", str(work), "--no-host-timing", "--allow-unauthenticated"]


def columns_request(rows: pd.DataFrame) -> dict:
    """A V2 request with one input per column: numbers as FP64, text as BYTES."""
    inputs = []
    for name in rows.columns:
        numeric = pd.api.types.is_numeric_dtype(rows[name])
        inputs.append({"name": name, "datatype": "FP64" if numeric else "BYTES", "shape": [len(rows)], "data": rows[name].tolist()})
    return {"inputs": inputs, "outputs": [{"name": "logits"}]}


def logits_of(answer) -> np.ndarray:  # noqa: ANN001
    assert answer.status_code == 200, answer.text
    (logits,) = [o for o in answer.json()["outputs"] if o["name"] == "logits"]
    return np.asarray(logits["data"], dtype=np.float32).reshape(logits["shape"])


def test_rows_in_every_form_give_the_builds_logits(release, tmp_path: Path) -> None:
    config, built, rows = release
    fetched = fetch_release(open_store(config.store), MODEL, built.version, tmp_path / "ref", monitoring=False)
    contract = fetched.manifest.input
    prepared = contract.to_model_input(contract.encode(rows.astype(str)).raw)  # the cells as a CSV holds them
    expected = fetched.open().predict(prepared)
    with running_server(args(config, tmp_path / "work"), tmp_path) as server:
        http = server.client
        meta = http.get(f"/v2/models/{MODEL}").json()
        assert meta["inputs"] == [
            {"name": "signal", "datatype": "FP64", "shape": [-1]}, {"name": "level", "datatype": "FP64", "shape": [-1]},
            {"name": "spread", "datatype": "FP64", "shape": [-1]}, {"name": "shade", "datatype": "BYTES", "shape": [-1]},
            {"name": "member", "datatype": "FP64", "shape": [-1]},
        ]
        assert meta["parameters"]["prepared_input"]["shape"] == [-1, contract.shape[0]]
        by_columns = logits_of(http.post(f"/v2/models/{MODEL}/infer", json=columns_request(rows)))
        tensor = {"inputs": [{"name": meta["parameters"]["prepared_input"]["name"], "datatype": "FP32",
                              "shape": list(prepared.shape), "data": prepared.reshape(-1).tolist()}],
                  "outputs": [{"name": "logits"}]}
        by_tensor = logits_of(http.post(f"/v2/models/{MODEL}/infer", json=tensor))
        v1 = http.post(f"/v1/models/{MODEL}:predict", json={"instances": rows.to_dict(orient="records")})
        assert v1.status_code == 200, v1.text
        predictions = v1.json()["predictions"]
        for served in (by_columns, by_tensor):
            np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
        probabilities = np.exp(expected) / np.exp(expected).sum(axis=1, keepdims=True)
        np.testing.assert_allclose([p["probabilities"]["up"] for p in predictions], probabilities[:, 1], atol=1e-5)
        assert [p["class"] for p in predictions] == [fetched.manifest.classes[i] for i in expected.argmax(axis=1)]


def test_bad_rows_get_answers_that_say_what_is_allowed(release, tmp_path: Path) -> None:
    config, _, rows = release
    records = rows.to_dict(orient="records")
    with running_server(args(config, tmp_path / "work"), tmp_path) as server:
        http = server.client
        infer, predict = f"/v2/models/{MODEL}/infer", f"/v1/models/{MODEL}:predict"
        cases = [
            (predict, {"instances": [{**records[0], "zip": 1}]}, 400, "columns ['zip'] are not in the model's schema"),
            (predict, {"instances": [{k: v for k, v in records[0].items() if k != "signal"}]}, 400, "columns ['signal'] are required"),
            (predict, {"instances": [records[0], {**records[1], "level": "high"}]}, 422, "row 1: column 'level': 'high' is not a number"),
            (predict, {"rows": records}, 400, 'the body must be {"instances"'),
            (infer, {"inputs": [{"name": "signal", "datatype": "BOOL", "shape": [1], "data": [True]}]}, 400, "the numeric column takes"),
            (infer, {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}, 400, "has shape [1, 3]"),
        ]
        for path, body, status, message in cases:
            answer = http.post(path, json=body)
            assert answer.status_code == status and message in answer.json()["error"], (body, answer.text)
        # A category the model never saw is served, and said.
        novel = http.post(predict, json={"instances": [{**records[0], "shade": "violet"}, records[1]]})
        assert novel.status_code == 200
        assert novel.json()["predictions"][0]["schema_problems"] == "column 'shade': new category 'violet'"
        assert "schema_problems" not in novel.json()["predictions"][1]
        assert server.terminate() == 0  # flushes the request log
    logged = read_window(open_store(config.store), "monitoring", MODEL)
    assert logged["schema_problems"].iloc[-2:].tolist() == ["column 'shade': new category 'violet'", ""]
    assert logged["input.shade"].iloc[-2:].tolist() == ["(new)", records[1]["shade"]]
