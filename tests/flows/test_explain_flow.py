"""The explain flow on the default digits release: a report of what production serves, in the store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from pydantic import ValidationError

from flows.config import ExplainConfig, ScoreConfig
from flows.explain import explain
from flows.score import score
from tasks.explain.config import LimeConfig
from tests.flows.conftest import release_files_of

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_explains_the_test_split_with_the_served_artifact(demo) -> None:
    config, release, manifest, _ = demo
    result = explain(
        ExplainConfig(num_images=4, lime=LimeConfig(num_samples=200), work_dir=config.work_dir, store=config.store)
    )
    assert result.version == release.version and len(result.explained) == 4
    assert result.explained[0]["why"] == "least confident"
    report = Path(result.report_uri.removeprefix("file://")).read_text()
    assert report.count("<section class='explanation'") == 4 and manifest.served.name in report
    weights = json.loads(Path(result.weights_uri.removeprefix("file://")).read_text())
    assert [i["name"] for i in weights["images"]] == [e["image"] for e in result.explained]
    assert weights["classes"] == manifest.classes
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["explain-report"])))
    assert any(result.report_uri in str(a.data) for a in artifacts)


def test_explains_the_latest_scored_batch_and_reports_bad_files(demo, tmp_path: Path) -> None:
    config = demo[0]
    folder = tmp_path / "batch"
    folder.mkdir()
    for f in release_files_of(demo, "val")[:5]:
        shutil.copy(f.path, folder / f.path.name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk")
    score(ScoreConfig(source=str(folder), work_dir=config.work_dir, store=config.store))
    result = explain(
        ExplainConfig(source="latest-batch", num_images=3, lime=LimeConfig(num_samples=100), work_dir=config.work_dir, store=config.store)
    )
    assert {e["image"] for e in result.explained} <= {p.name for p in folder.iterdir()} - {"broken.png"}
    result = explain(ExplainConfig(source=str(folder), num_images=2, lime=LimeConfig(num_samples=100), work_dir=config.work_dir, store=config.store))
    assert [f.name for f in result.failed] == ["broken.png"]


def test_parameters_are_validated() -> None:
    for bad in ({"num_images": 0}, {"lime": {"num_samples": 10}}, {"source": "http://x"}, {"lime": {"segmentation": "voronoi"}}):
        with pytest.raises(ValidationError):
            ExplainConfig.model_validate(bad)
