"""Monitoring numerics: image statistics, embedding projection, production logs (drift statistics: test_drift_statistics)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tasks.data.images import image_statistics
from tasks.export.backends import NoEmbeddingOutput, OnnxRuntimeBackend
from tasks.export.embedding import WithEmbedding
from tasks.registry.store import FileStore
from tasks.score.features import fit_projection, monitoring_features, non_finite_rows
from tasks.score.logs import batch_logged, batch_logs, log_batch, read_window, scored_before, write_log


def test_image_statistics_measure_what_they_say() -> None:
    flat = np.full((1, 1, 8, 8), 128, np.uint8)
    checker = ((np.indices((8, 8)).sum(axis=0) % 2) * 255).astype(np.uint8)[None, None]
    blurred = np.full((1, 1, 8, 8), 100, np.uint8)
    blurred[..., 4:] = 150
    stats = image_statistics(np.concatenate([flat, checker, blurred]), np.array([[8, 8], [40, 20], [8, 8]]))
    assert stats["brightness"].round(3).tolist() == [round(128 / 255, 3), 0.5, round(125 / 255, 3)]
    assert stats.loc[0, "contrast"] == 0 and stats.loc[0, "sharpness"] == 0
    assert stats.loc[1, "sharpness"] > stats.loc[2, "sharpness"] > 0  # edges everywhere vs one soft edge
    assert stats["saturated_fraction"].tolist() == [0.0, 1.0, 0.0]
    assert stats.loc[1, ["original_width", "original_height", "aspect"]].tolist() == [40, 20, 2.0]
    with pytest.raises(ValueError, match="uint8"):
        image_statistics(flat.astype(np.float32), np.array([[8, 8]]))


def test_image_statistics_equal_the_float_formulas() -> None:
    """The integer sums give what the plain float64 formulas give, for sizes, channels and extreme levels."""

    def reference(images: np.ndarray) -> np.ndarray:
        grey = images.astype(np.float64).mean(axis=1) / 255.0
        padded = np.pad(grey, ((0, 0), (1, 1), (1, 1)), mode="edge")
        laplacian = padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:] - 4.0 * grey
        flat = images.reshape(len(images), -1).astype(np.float64)
        saturated = ((flat <= 2) | (flat >= 253)).mean(axis=1)
        return np.stack([flat.mean(axis=1) / 255, flat.std(axis=1) / 255, laplacian.reshape(len(images), -1).var(axis=1), saturated], 1)

    rng = np.random.default_rng(0)
    for shape in [(64, 3, 64, 64), (9, 1, 8, 8), (4, 3, 1, 1), (5, 1, 1, 9), (2, 3, 300, 200), (3, 40, 6, 5)]:
        batches = [
            rng.integers(0, 256, shape, dtype=np.uint8),
            np.full(shape, 255, np.uint8),
            np.clip(rng.normal(128, 2, shape), 0, 255).astype(np.uint8),
            rng.choice(np.array([0, 1, 2, 3, 252, 253, 254, 255], np.uint8), shape),
        ]
        for images in batches:
            stats = image_statistics(images, np.full((len(images), 2), 8))
            got = stats[["brightness", "contrast", "sharpness", "saturated_fraction"]].to_numpy()
            want = reference(images)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
            # Brightness and the saturated fraction bit for bit: one division of an exact sum, as numpy's mean does.
            assert np.array_equal(got[:, [0, 3]], want[:, [0, 3]])


def test_projection_is_deterministic_and_checks_its_input() -> None:
    embeddings = np.random.default_rng(0).normal(size=(200, 32))
    first, second = fit_projection(embeddings, 8), fit_projection(embeddings[::-1].copy(), 8)
    np.testing.assert_allclose(first.transform(embeddings), second.transform(embeddings), atol=1e-9)
    assert first.n_components == 8 and fit_projection(embeddings[:5], 8).n_components == 4
    with pytest.raises(ValueError, match="expects N x 32"):
        first.transform(np.zeros((3, 16)))


def test_features_flag_non_finite_rows() -> None:
    statistics = image_statistics(np.zeros((3, 1, 8, 8), np.uint8), np.full((3, 2), 8))
    embeddings = np.random.default_rng(1).normal(size=(3, 6))
    projection = fit_projection(np.random.default_rng(2).normal(size=(50, 6)), 3)
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [np.nan, 1.0]])
    frame = monitoring_features(statistics, logits, embeddings, projection, ["a", "b"])
    assert frame["predicted_class"].tolist()[:2] == ["a", "b"]
    assert frame.loc[0, "confidence"] == pytest.approx(np.exp(2) / (np.exp(2) + 1))
    assert non_finite_rows(frame, ["confidence", "embedding_0"]).tolist() == [False, False, True]


def test_logs_are_whole_objects_read_by_window(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "reg")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    for hours_ago, batch in ((30, "aaaaaaaaaaaa"), (2, "bbbbbbbbbbbb"), (1, "cccccccccccc")):
        frame = pd.DataFrame({"batch": [batch] * 3, "i": range(3)})
        write_log(store, "monitoring", "m", frame, now - timedelta(hours=hours_ago), batch)
    write_log(store, "monitoring", "m", pd.DataFrame({"batch": ["x"]}), now - timedelta(hours=1), "cccccccccccc")
    store.put_bytes("monitoring/m/notes.txt", b"hand-written, not a log")
    assert read_window(store, "monitoring", "m", since=now - timedelta(hours=24))["batch"].tolist() == ["bbbbbbbbbbbb"] * 3 + ["cccccccccccc"] * 3
    assert read_window(store, "monitoring", "m", last_rows=4)["batch"].tolist() == ["bbbbbbbbbbbb"] + ["cccccccccccc"] * 3
    assert len(read_window(store, "monitoring", "m")) == 9
    assert read_window(store, "monitoring", "other").empty
    assert batch_logged(store, "monitoring", "m", "bbbbbbbbbbbb") and not batch_logged(store, "monitoring", "m", "dddddddddddd")


def test_embedding_needs_a_final_linear_layer(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no Linear layer"):
        WithEmbedding(nn.Sequential(nn.Flatten(), nn.ReLU()))
    after = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Softmax(dim=1))
    with pytest.raises(ValueError, match="not its output layer"):
        WithEmbedding(after).check_split(after, torch.rand(2, 1, 2, 2))
    # A variant exported without the embedding output is servable but says why it cannot be monitored.
    plain = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    path = tmp_path / "plain.onnx"
    torch.onnx.export(plain, (torch.rand(2, 1, 2, 2),), str(path), input_names=["images"], output_names=["logits"], dynamo=True)
    backend = OnnxRuntimeBackend(path)
    assert backend.predict(np.zeros((2, 1, 2, 2), np.float32)).shape == (2, 3)
    with pytest.raises(NoEmbeddingOutput, match="no 'embedding'"):
        backend.embed(np.zeros((2, 1, 2, 2), np.float32))


class FailsOnce(FileStore):
    """A real FileStore whose first write under ``prefix`` fails, as a dropped connection would."""

    def __init__(self, root: Path, prefix: str) -> None:
        super().__init__(root)
        self.prefix, self.failed = prefix, False

    def put_bytes(self, key: str, data: bytes, **kwargs) -> str:
        if key.startswith(self.prefix) and not self.failed:
            self.failed = True
            raise ConnectionError(f"injected: {key} not written")
        return super().put_bytes(key, data, **kwargs)


def test_a_batch_logged_halfway_is_completed_by_the_retry_once(tmp_path: Path) -> None:
    import time

    store = FailsOnce(tmp_path / "reg", "monitoring/")
    predictions = pd.DataFrame({"file": ["a.png", "b.png"], "predicted_class": ["x", "y"]})
    monitoring = pd.DataFrame({"file": ["a.png", "b.png"], "brightness": [0.1, 0.2]})
    with pytest.raises(ConnectionError):
        log_batch(store, "m", "v1", "aaaaaaaaaaaa", predictions, monitoring, batch_logs(store, "m", "aaaaaaaaaaaa"))
    # Predictions landed, monitoring rows did not: the batch is not scored yet for a monitored release.
    logged = batch_logs(store, "m", "aaaaaaaaaaaa")
    assert scored_before(logged, monitored=True) is None
    assert scored_before(logged, monitored=False) is not None
    time.sleep(1.1)  # a retry a second later must still complete the first attempt's batch
    predictions_key, monitoring_key = log_batch(store, "m", "v1", "aaaaaaaaaaaa", predictions, monitoring, logged)
    assert scored_before(batch_logs(store, "m", "aaaaaaaaaaaa"), monitored=True) == predictions_key
    assert store.list_keys("predictions/") == [predictions_key] and store.list_keys("monitoring/") == [monitoring_key]
    assert predictions_key.rsplit("/", 1)[1] == monitoring_key.rsplit("/", 1)[1]  # one stamp for the batch
    window = read_window(store, "monitoring", "m")
    assert window["file"].tolist() == ["a.png", "b.png"] and set(window["release_version"]) == {"v1"}
    assert "scored_at" not in monitoring.columns  # the caller's frames are left as they were


def test_two_runs_logging_one_batch_at_once_leave_one_log(tmp_path: Path) -> None:
    import threading
    import time

    from tasks.registry.store import open_store
    from tasks.registry.config import StoreConfig

    store = open_store(StoreConfig(uri=f"file://{tmp_path / 'reg'}"))
    predictions = pd.DataFrame({"file": ["a.png"], "predicted_class": ["x"]})
    monitoring = pd.DataFrame({"file": ["a.png"], "brightness": [0.1]})
    both_listed = threading.Barrier(2)
    keys = []

    def run(delay: float) -> None:
        logged = batch_logs(store, "m", "bbbbbbbbbbbb")  # both see nothing logged yet
        both_listed.wait()
        time.sleep(delay)  # the second run writes a second and more later: another stamp, were it its own
        keys.append(log_batch(store, "m", "v1", "bbbbbbbbbbbb", predictions, monitoring, logged))

    threads = [threading.Thread(target=run, args=(delay,)) for delay in (0.0, 1.2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert keys[0] == keys[1]
    assert len(store.list_keys("predictions/")) == 1 and len(store.list_keys("monitoring/")) == 1
    assert len(read_window(store, "predictions", "m")) == 1


def test_a_claim_left_long_ago_by_a_failed_run_does_not_date_a_later_log(tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    from tasks.registry.config import StoreConfig
    from tasks.registry.store import open_store
    from tasks.score.logs import CLAIM_EXPIRES, STAMP_FORMAT

    store = open_store(StoreConfig(uri=f"file://{tmp_path / 'reg'}"))
    predictions = pd.DataFrame({"file": ["a.png"], "predicted_class": ["x"]})
    now = datetime.now(timezone.utc)
    # A run claimed these batches and died before logging: one two days ago, one a minute ago (maybe still running).
    claims = {batch: (now - age).strftime(STAMP_FORMAT) for batch, age in (("cccccccccccc", timedelta(days=2)), ("dddddddddddd", timedelta(minutes=1)))}
    for batch, stamp in claims.items():
        store.put_bytes(f"scored-batches/m/{batch}", stamp.encode(), if_absent=True)
    stale, _ = log_batch(store, "m", "v1", "cccccccccccc", predictions, None, batch_logs(store, "m", "cccccccccccc"))
    recent, _ = log_batch(store, "m", "v1", "dddddddddddd", predictions, None, batch_logs(store, "m", "dddddddddddd"))
    stamp_of = {key: key.rsplit("/", 1)[1].split("-")[0] for key in (stale, recent)}
    # The expired claim is taken over: that batch is logged under this run's time, and the claim says so.
    assert CLAIM_EXPIRES < timedelta(days=2)
    assert abs(datetime.strptime(stamp_of[stale], STAMP_FORMAT).replace(tzinfo=timezone.utc) - now) < timedelta(minutes=1)
    assert store.get_bytes("scored-batches/m/cccccccccccc")[0].decode() == stamp_of[stale]
    # The recent claim still settles the stamp: a run of the same batch may be logging it now.
    assert stamp_of[recent] == claims["dddddddddddd"]
