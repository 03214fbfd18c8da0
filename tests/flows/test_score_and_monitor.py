"""Score and monitor flows on the default digits release: drift is found where it is, and only there."""

from __future__ import annotations

import shutil
from urllib.parse import unquote, urlparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from PIL import Image

from flows.config import MonitorConfig, ScoreConfig
from flows.monitor import monitor
from flows.score import score
from tasks.data.shift import write_shifted
from tasks.monitor.steps import NoReferenceData
from tasks.registry.aliases import move_alias, read_alias
from tasks.registry.manifest import ReleaseDraft
from tasks.registry.release import publish_release
from tasks.registry.serving import NoProductionRelease
from tasks.registry.store import open_store
from tasks.score.inputs import InputNotFound
from tasks.score.logs import read_window
from tests.flows.conftest import release_files_of, run_tags

pytestmark = pytest.mark.usefixtures("prefect_api")


def held_out_files(demo) -> list[Path]:
    return [f.path for f in release_files_of(demo, "test")]


def run_batch(demo, folder: Path) -> tuple:
    """Score ``folder``, then monitor exactly the rows of that batch."""
    config = demo[0]
    scored = score(ScoreConfig(source=str(folder), work_dir=config.work_dir, store=config.store))
    report = monitor(
        MonitorConfig(window_hours=None, window_rows=scored.scored, work_dir=config.work_dir, store=config.store)
    )
    return scored, report


def test_features_are_identical_at_build_and_at_scoring(demo, tmp_path: Path) -> None:
    config, release, manifest, downloaded = demo
    originals = tmp_path / "originals"
    originals.mkdir()
    for path in held_out_files(demo):
        shutil.copy(path, originals / f"{path.parent.name}-{path.name}")
    scored = score(ScoreConfig(source=str(originals), work_dir=config.work_dir, store=config.store))
    assert scored.scored == manifest.metrics.test_images and not scored.failed
    # The scorer timed the release's candidates here and says which it chose and why; never one out of budget.
    assert scored.variant in [v.name for v in manifest.host_candidates()] and manifest.variant(scored.variant).in_budget
    assert scored.variant_reason.startswith(f"{scored.variant}: ") and "batch 64" in scored.variant_reason
    with get_client(sync_client=True) as client:
        timed = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["host-choice"])))
    assert any(scored.variant in (a.description or "") for a in timed)
    logged = read_window(open_store(config.store), "monitoring", release.model)
    logged = logged[logged["scored_at"] == logged["scored_at"].max()]
    assert set(logged["variant"]) == {scored.variant}
    # Identical to the rows the build computed with the same variant for the release's reference.
    monitoring = manifest.monitoring_of(scored.variant)
    reference = pd.read_parquet(downloaded / monitoring.reference)
    reference = reference[reference["split"] == "test"]
    merged = reference.merge(logged, on="image_sha256", suffixes=("_build", "_score"))
    assert len(merged) == len(reference)
    for column in monitoring.numerical_columns:
        np.testing.assert_array_equal(merged[f"{column}_build"], merged[f"{column}_score"], err_msg=column)
    assert (merged["predicted_class_build"] == merged["predicted_class_score"]).all()


def test_a_clean_batch_does_not_drift(demo, tmp_path: Path) -> None:
    # A batch of the release's own held-out images: quiet, and the estimate near their accuracy.
    # Drawn from the validation and test splits alike, as the reference holds both: a batch of test
    # images only is not exchangeable with it (the splits' class mixes differ by chance), and with
    # some trained models that alone drifted. (These rows are in the reference; the false-alarm rate
    # on fresh data is measured in tests/unit/test_drift_statistics.py and benchmarks/drift_sensitivity.py.)
    clean = tmp_path / "clean"
    files = held_out_files(demo) + [f.path for f in release_files_of(demo, "val")]
    pick = np.random.default_rng(11).choice(len(files), size=200, replace=False)
    batch = [files[i] for i in sorted(pick)]
    write_shifted(batch, clean, "none")
    scored, report = run_batch(demo, clean)
    result = report.result
    assert result.status == "no drift", result.detail
    assert result.rows == scored.scored and report.event_id is None
    assert not result.drifted_columns and not result.embedding.drifted and result.false_alarm_rate == 0.01
    # Without labels, the estimate lands near the accuracy these very images get.
    assert abs(result.estimate.accuracy - true_accuracy(demo, batch, report)) < 0.05 and not result.harmful


def true_accuracy(demo, files: list, report) -> float:
    """The accuracy of the monitored window, from the labels of the images its files were copied from.

    ``files`` are the originals in the order ``write_shifted`` copied them (it names copy i ``{i:05d}-{stem}.png``).
    """
    config = demo[0]
    labels = {f.path: f.label for split in ("test", "val") for f in release_files_of(demo, split)}
    truth = {f"{i:05d}-{path.stem}.png": labels[path] for i, path in enumerate(files)}
    logged = read_window(open_store(config.store), "predictions", config.model_name, last_rows=report.result.rows)
    return float(np.mean([truth[name] == predicted for name, predicted in zip(logged["file"], logged["predicted_class"])]))


@pytest.mark.parametrize("shift", ["invert", "blur", "noise"])
def test_shifted_batches_drift_and_emit_the_event(demo, tmp_path: Path, shift: str) -> None:
    shifted = tmp_path / shift
    write_shifted(held_out_files(demo), shifted, shift, seed=3)
    _, report = run_batch(demo, shifted)
    result = report.result
    assert result.status == "drift", result.detail
    assert result.drifted_columns or result.embedding.drifted
    assert report.event_id is not None
    html = Path(report.report_uri.removeprefix("file://")).read_text()
    assert html.lstrip().lower().startswith("<!doctype html>")
    # The run's link artifact opens the same report (a file: URL locally; presigned on S3).
    with get_client(sync_client=True) as client:
        links = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["drift-report"])))
    urls = [a.data[a.data.index("](") + 2 : -1] for a in links]  # a link artifact is stored as [text](url)
    opened = [Path(unquote(urlparse(url).path)).read_text() for url in urls]
    assert html in opened
    body = html[html.index("<body") :]
    assert body.index("lepton-verdict") < body.lower().index("evidently")
    assert all(column in body[: body.lower().index("evidently")] for column in result.drifted_columns)
    print(shift, result.headline(), "true accuracy", true_accuracy(demo, held_out_files(demo), report))


def test_unreadable_and_odd_inputs_are_reported_per_file(demo, tmp_path: Path) -> None:
    config = demo[0]
    folder = tmp_path / "odd"
    folder.mkdir()
    shutil.copy(held_out_files(demo)[0], folder / "good.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    (folder / "cut.png").write_bytes((folder / "good.png").read_bytes()[:40])
    Image.fromarray(np.full((40, 30, 3), 200, np.uint8), "RGB").save(folder / "big-rgb.jpg")
    scored = score(ScoreConfig(source=str(folder), work_dir=config.work_dir, store=config.store))
    assert scored.scored == 2 and scored.unseen_sizes == 1  # the 30x40 photo; digits are all 8x8
    reasons = {f.name: f.reason for f in scored.failed}
    assert set(reasons) == {"notes.txt", "empty.png", "cut.png"}
    assert reasons["notes.txt"].startswith("not an image") and reasons["empty.png"] == "zero-byte file"
    assert reasons["cut.png"].startswith(("truncated", "corrupt", "not an image"))
    again = score(ScoreConfig(source=str(folder), work_dir=config.work_dir, store=config.store))
    assert again.scored == 0 and again.note.startswith("already scored")


def test_empty_or_missing_sources_and_small_windows(demo, tmp_path: Path) -> None:
    config = demo[0]
    (tmp_path / "empty").mkdir()
    state = score(ScoreConfig(source=str(tmp_path / "empty"), work_dir=config.work_dir, store=config.store), return_state=True)
    result = state.result()
    assert result.scored == 0 and "no files" in result.note
    # The run list shows it: a completed run named for what happened, with the reason as its message.
    assert state.is_completed() and state.name == "Nothing scored" and "no files" in state.message
    assert "nothing-scored" in run_tags(state)
    with pytest.raises(InputNotFound, match="not an existing folder"):
        score(ScoreConfig(source=str(tmp_path / "missing"), work_dir=config.work_dir, store=config.store))
    state = monitor(MonitorConfig(window_hours=None, window_rows=20, work_dir=config.work_dir, store=config.store),
                    return_state=True)
    report = state.result()
    assert report.result.status == "not enough data" and report.event_id is None
    assert "at least 100" in report.result.detail
    assert state.is_completed() and state.name == "Not enough data" and "at least 100" in state.message
    assert "not-enough-data" in run_tags(state)


def test_models_without_production_or_reference_are_refused(demo, tmp_path: Path) -> None:
    config, _, manifest, downloaded = demo
    with pytest.raises(NoProductionRelease, match="no production release"):
        monitor(MonitorConfig(model_name="never-built", work_dir=config.work_dir, store=config.store))
    # A release as built before monitoring existed: same files and manifest, no monitoring reference.
    store = open_store(config.store)
    files = {f.path: downloaded / f.path for f in manifest.files if not f.path.startswith("monitoring/")}
    older = manifest.model_dump(exclude={"version", "created_at", "files"}) | {"model": "older", "monitoring": None, "alternatives": []}
    version = publish_release(store, files, ReleaseDraft.model_validate(older)).version
    move_alias(store, "older", version, "before monitoring", read_alias(store, "older"))
    with pytest.raises(NoReferenceData, match="no monitoring reference"):
        monitor(MonitorConfig(model_name="older", work_dir=config.work_dir, store=config.store))
    images = tmp_path / "in"
    write_shifted(held_out_files(demo)[:5], images, "none")
    scored = score(ScoreConfig(model_name="older", source=str(images), work_dir=config.work_dir, store=config.store))
    assert scored.scored == 5 and scored.predictions_uri and scored.monitoring_uri is None


def test_an_inbox_is_emptied_once_scored_so_each_file_is_scored_once(demo, tmp_path: Path) -> None:
    config = demo[0]
    inbox, processed = tmp_path / "inbox", tmp_path / "processed"
    (inbox / "sub").mkdir(parents=True)
    files = held_out_files(demo)
    shutil.copy(files[0], inbox / "a.png")
    shutil.copy(files[1], inbox / "sub" / "b.png")
    (inbox / "broken.png").write_bytes(b"not a png")
    inbox_config = ScoreConfig(source=str(inbox), processed=str(processed), work_dir=config.work_dir, store=config.store)
    first = score(inbox_config)
    assert first.scored == 2 and [f.name for f in first.failed] == ["broken.png"]
    assert sorted(p.relative_to(inbox).as_posix() for p in inbox.rglob("*") if p.is_file()) == []
    (day,) = processed.iterdir()
    kept = sorted(p.relative_to(day).as_posix() for p in day.rglob("*") if p.is_file())
    assert kept == ["a.png", "rejected/broken.png", "rejected/reasons.csv", "sub/b.png"]
    assert "broken.png" in (day / "rejected" / "reasons.csv").read_text()
    # The next run sees only what arrived since: one new file is scored once, the old ones not again.
    shutil.copy(files[2], inbox / "c.png")
    second = score(inbox_config)
    assert second.scored == 1 and second.files == 1
    shutil.copy(files[0], inbox / "a.png")  # the same name again the same day: kept beside the first
    score(inbox_config)
    assert len(list(day.glob("a*.png"))) == 2
    with pytest.raises(ValueError, match="s3:// source"):
        ScoreConfig(source="s3://bucket/inbox", processed=str(processed))
