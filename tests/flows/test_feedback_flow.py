"""Label feedback end to end: labels arrive for a shifted batch, the realized accuracy drops, the event fires,
bad labels are listed with reasons, and the next build trains on the labelled inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from flows.build import build
from flows.cli import run
from flows.config import BuildConfig, FeedbackConfig, ScoreConfig
from flows.feedback import feedback
from flows.score import score
from tasks.monitor.feedback import LabelFileError
from tasks.monitor.steps import NoLabels
from tasks.registry.release import list_versions, read_manifest
from tasks.registry.store import open_store
from tests.conftest import folder_build, write_class_images

pytestmark = pytest.mark.usefixtures("prefect_api")


def brightened(source: Path, dest: Path, offset: int) -> dict[str, str]:
    """Flat copies of every image with ``offset`` added to each pixel; returns file name -> true class."""
    dest.mkdir(parents=True)
    truth = {}
    for path in sorted(source.rglob("*.png")):
        pixels = np.asarray(Image.open(path), dtype=np.int16) + offset
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L").save(dest / path.name)
        truth[path.name] = path.parent.name
    return truth


def test_labels_measure_the_harm_fire_the_event_and_feed_the_next_build(tmp_path: Path, capsys) -> None:
    images = write_class_images(tmp_path / "imgs", {"dark": 40, "mid": 40, "light": 40}, seed=5)
    config = folder_build(tmp_path, images, "fed")
    first = build(config)
    assert first.promoted
    # A brighter camera: dark images now look like mid ones.
    truth = brightened(write_class_images(tmp_path / "new", {"dark": 30, "mid": 30, "light": 30}, seed=6), tmp_path / "batch", 60)
    target = dict(model_name="fed", work_dir=config.work_dir, store=config.store)
    scored = score(ScoreConfig(source=str(tmp_path / "batch"), **target))
    assert scored.scored == 90

    names = sorted(truth)
    labels = pd.DataFrame({"file": names, "label": [truth[n] for n in names]})
    bad = pd.DataFrame(
        {
            "file": [names[0], "never-scored.png", names[1]],
            "label": ["mid" if truth[names[0]] != "mid" else "dark", "dark", "purple"],
        }
    )
    pd.concat([labels, bad]).to_csv(tmp_path / "labels.csv", index=False)
    report = feedback(FeedbackConfig(source=str(tmp_path / "labels.csv"), **target))

    result = report.result
    predicted = pd.read_parquet(Path(report.labels_uri.removeprefix("file://")))
    usable = predicted[predicted["file"] != names[0]]  # its two labels conflict: not used
    expected = float((usable["label"] == usable["predicted_class"]).mean())
    assert result.rows == len(names) - 1 and result.accuracy == pytest.approx(expected)
    assert result.status == "degraded" and result.drop_pp > 10 and report.event_id is not None
    reasons = sorted((p.id, p.reason.split(":")[0].split(" '")[0]) for p in report.problems)
    assert reasons == sorted(
        [(names[0], "conflicting labels for one input")] * 2
        + [(names[1], "label"), ("never-scored.png", "never scored")]
    )
    html = Path(report.report_uri.removeprefix("file://")).read_text()
    body = html[html.index("<body") :]
    assert body.index("lepton-verdict") < body.lower().index("evidently") and "DEGRADED" in body and "purple" in body
    assert report.kept_for_training == len(names) - 1

    # The retrain the event starts (parameters as the trigger templates them) includes the labelled
    # production inputs: it learns the brighter camera.
    triggered = config.model_copy(
        update={
            "include_feedback": True, "cooldown_hours": 1.0,
            "reason": f"event lepton.model.performance.degraded {report.event_id} on release {first.version}; report {report.report_uri}",
        }
    )
    second = build(triggered)
    manifest = read_manifest(open_store(config.store), "fed", second.version)
    first_counts = read_manifest(open_store(config.store), "fed", first.version).dataset.counts
    total = lambda counts: sum(sum(c.values()) for c in counts.values())  # noqa: E731
    assert total(manifest.dataset.counts) == total(first_counts) + len(names) - 1
    assert manifest.config["reason"].startswith("event lepton.model.performance.degraded ")
    # A second event within the cool-down: that run ends Cancelled, saying why, and releases nothing.
    state = build(triggered, return_state=True)
    assert state.is_cancelled() and "cool-down" in state.message and report.event_id in state.message
    # The command line says so and exits 0: skipping is not a failure.
    (tmp_path / "triggered.json").write_text(triggered.model_dump_json())
    assert run(build, BuildConfig, ["--config", str(tmp_path / "triggered.json")]) == 0
    assert "build skipped:" in capsys.readouterr().out
    assert len(list_versions(open_store(config.store), "fed")) == 2


def test_feedback_refuses_missing_or_unreadable_labels(tmp_path: Path, demo) -> None:
    config = demo[0]
    target = dict(work_dir=config.work_dir, store=config.store)
    with pytest.raises(NoLabels, match="set source or labels"):
        feedback(FeedbackConfig(**target))
    (tmp_path / "labels.csv").write_text("name,class\nx,1\n")
    with pytest.raises(LabelFileError, match="labels.csv: has columns"):
        feedback(FeedbackConfig(source=str(tmp_path / "labels.csv"), **target))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoLabels, match="holds no .csv/.parquet label table"):
        feedback(FeedbackConfig(source=str(empty), **target))
