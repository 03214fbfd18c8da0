"""The tabular modality end to end with the same flows as images: build, score, monitor, explain, gate, rollback.

The table is synthetic with a planted feature: only ``signal`` carries the label (``signal > 0``);
``level`` and ``spread`` are noise, ``shade`` a category and ``member`` a yes/no, both noise too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.build import build
from flows.config import ExplainConfig, FeedbackConfig, MonitorConfig, RollbackConfig, ScoreConfig
from flows.explain import explain
from flows.feedback import feedback
from flows.monitor import monitor
from flows.rollback import rollback
from flows.score import score
from tasks.explain.config import LimeConfig
from tasks.monitor.config import DriftConfig, LabelRow
from tasks.monitor.drift import detect_drift, reference_rows
from tasks.registry.aliases import read_alias
from tasks.registry.release import download_release
from tasks.registry.serving import fetch_production
from tasks.registry.store import open_store
from tasks.score.features import load_projection
from tasks.score.inputs import InputFile
from tasks.score.logs import read_window
from tasks.score.scoring import score_files
from tests.conftest import shrunken_build

pytestmark = pytest.mark.usefixtures("prefect_api")


def planted(rows: int, seed: int, level_shift: float = 0.0) -> pd.DataFrame:
    """Rows of the planted table; ``level_shift`` moves the noise column ``level`` (in its standard deviations)."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(0.0, 1.0, rows)
    return pd.DataFrame(
        {
            "signal": np.round(signal, 4),
            "level": np.round(rng.normal(50.0, 8.0, rows) + 8.0 * level_shift, 3),
            "spread": np.round(rng.uniform(0, 100, rows), 3),
            "shade": rng.choice(["amber", "blue", "coral", "dune"], rows),
            "member": rng.choice(["yes", "no"], rows),
            "outcome": np.where(signal > 0, "up", "down"),
        }
    )


@pytest.fixture(scope="module")
def tabular(tmp_path_factory: pytest.TempPathFactory):
    """A build of the planted table (the default plan), and the release downloaded and verified."""
    root = tmp_path_factory.mktemp("tabular")
    source = root / "source" / "planted.csv"
    source.parent.mkdir()
    planted(1500, seed=0).to_csv(source, index=False)
    config = shrunken_build(
        root, model_name="planted", data={"source": str(source), "label_column": "outcome"}, train={"max_epochs": 20}
    )
    release = build(config)
    manifest = download_release(open_store(config.store), release.model, release.version, root / "download", root / "cache")
    return config, release, manifest, root


def test_the_build_releases_the_schema_the_mlp_and_a_tree_reference(tabular) -> None:
    config, release, manifest, root = tabular
    assert release.promoted and manifest.input.kind == "tabular" and manifest.classes == ["down", "up"]
    assert [(c.name, c.type) for c in manifest.input.columns] == [
        ("signal", "numeric"), ("level", "numeric"), ("spread", "numeric"), ("shade", "categorical"), ("member", "boolean"),
    ]
    assert manifest.training.model == "tabular_mlp" and manifest.input.label_column == "outcome"
    served = manifest.variant(manifest.served.name)
    (trees,) = manifest.references
    assert trees.name == "HistGradientBoostingClassifier" and trees.accuracy > 0.9 and served.accuracy > 0.9
    assert served.macro_f1 is not None and abs(served.macro_f1 - trees.macro_f1) < 0.1
    card = (root / "download" / "MODEL_CARD.md").read_text()
    assert "HistGradientBoostingClassifier" in card and "table rows of 5 columns" in card
    assert {v.runtime for v in manifest.variants} >= {"onnxruntime", "openvino"}
    assert any(v.precision == "int8" for v in manifest.variants)


def test_scoring_rows_gives_the_builds_own_monitoring_rows(tabular, tmp_path: Path) -> None:
    config, release, manifest, root = tabular
    # The test split's rows, read again from the source file: the very rows the build's reference holds.
    source = pd.read_csv(config.data.source, dtype=str, keep_default_na=False)
    dataset = json.loads((root / "download" / "dataset" / "manifest.json").read_text())
    lines = [int(f["path"].rsplit(":", 1)[1]) for f in dataset["files"] if f["split"] == "test"]
    batch = tmp_path / "batch"
    batch.mkdir()
    source.iloc[[line - 2 for line in lines]].drop(columns=["outcome"]).to_csv(batch / "rows.csv", index=False)
    scored = score(ScoreConfig(source=str(batch), model_name=config.model_name, work_dir=config.work_dir, store=config.store))
    assert scored.scored == len(lines) == manifest.metrics.test_images and not scored.failed
    logged = read_window(open_store(config.store), "monitoring", release.model)
    logged = logged[logged["scored_at"] == logged["scored_at"].max()]
    monitoring = manifest.monitoring_of(scored.variant)
    reference = pd.read_parquet(root / "download" / monitoring.reference)
    reference = reference[reference["split"] == "test"].reset_index(drop=True)
    # No skew: every monitoring column of every row as the build computed it (the rows keep their order).
    for column in monitoring.numerical_columns:
        np.testing.assert_allclose(logged[column].to_numpy(float), reference[column].to_numpy(float), rtol=1e-6, atol=1e-6, err_msg=column)
    for column in monitoring.categorical_columns:
        assert logged[column].tolist() == reference[column].tolist(), column
    predictions = read_window(open_store(config.store), "predictions", release.model, last_rows=scored.scored)
    assert predictions["file"].tolist()[:2] == ["rows.csv:2", "rows.csv:3"]
    # Labels that arrive later join the logged rows by name (file:line) or by the row's hash, as for images.
    truth = source.iloc[[line - 2 for line in lines]]["outcome"].tolist()
    labels = [LabelRow(id=name, label=label) for name, label in zip(predictions["file"], truth)]
    labels[0] = LabelRow(id=predictions["image_sha256"].iloc[0], label=truth[0])
    report = feedback(FeedbackConfig(labels=labels, model_name=config.model_name, work_dir=config.work_dir, store=config.store))
    assert report.labelled_rows == len(lines) and not report.problems and report.kept_for_training == 0
    assert report.result.accuracy == pytest.approx(np.mean(predictions["predicted_class"].to_numpy() == np.array(truth)))


def test_off_schema_cells_are_scored_reported_and_counted(tabular, tmp_path: Path) -> None:
    config = tabular[0]
    rows = planted(120, seed=5).drop(columns=["outcome"]).astype(object)
    rows.loc[0, "shade"] = "emerald"
    rows.loc[1, "level"] = "n/a"
    rows.loc[2, "spread"] = "lots"
    rows = rows.drop(columns=["member"]).assign(extra=1)
    batch = tmp_path / "odd"
    batch.mkdir()
    rows.to_csv(batch / "odd.csv", index=False)
    (batch / "notes.json").write_text('{"not": "a table"}')
    scored = score(ScoreConfig(source=str(batch), model_name=config.model_name, work_dir=config.work_dir, store=config.store))
    assert scored.scored == 120 and [f.name for f in scored.failed] == ["notes.json"]
    assert "not a table: it holds JSON" in scored.failed[0].reason
    report = monitor(MonitorConfig(window_hours=None, window_rows=120, model_name=config.model_name, work_dir=config.work_dir, store=config.store))
    # Every row misses 'member' (a whole column gone; the extra one is ignored); three also hold a new category,
    # a missing and a wrong cell.
    assert report.result.off_schema_rows == 120 and report.result.status != "not enough data"
    joined = " ".join(report.result.notes)
    assert "new category 'emerald' (1)" in joined and "'lots' is not a number (1)" in joined


def test_drift_is_quiet_on_fresh_rows_and_loud_on_a_shifted_column(tabular) -> None:
    config, release, manifest, _ = tabular
    production = fetch_production(open_store(config.store), release.model, config.work_dir)
    monitoring = manifest.monitoring
    reference = reference_rows(pd.read_parquet(production.release_dir / monitoring.reference), monitoring.reference_splits)
    projection = load_projection(production.release_dir / monitoring.projection)
    backend = production.open()
    drift = DriftConfig()

    def verdict(rows: pd.DataFrame, path: Path) -> bool:
        rows.drop(columns=["outcome"]).to_csv(path, index=False)
        scored = score_files([InputFile(name=path.name, path=path, sha256="-")], lambda _: backend, manifest.input, manifest.classes, projection)
        result = detect_drift(
            reference, scored.features, monitoring.numerical_columns, monitoring.categorical_columns, drift,
            monitoring.calibration, num_classes=2, optional=manifest.input.optional_statistics,
        )
        return result.drift

    folder = config.work_dir / "windows"
    folder.mkdir(parents=True, exist_ok=True)
    # 20 windows of fresh rows from the same generator, and 20 with the noise column 'level' moved by one
    # standard deviation: at the configured 1 % false-alarm rate, 4 or more false alarms of 20 has p < 0.001.
    alarms = sum(verdict(planted(200, seed=100 + k), folder / f"clean-{k}.csv") for k in range(20))
    found = sum(verdict(planted(200, seed=200 + k, level_shift=1.0), folder / f"shifted-{k}.csv") for k in range(20))
    print(f"false alarms {alarms}/20, detected {found}/20")
    assert alarms <= 3, f"{alarms} false alarms in 20 clean windows"
    assert found >= 19, f"{found} of 20 shifted windows detected"


def test_lime_finds_the_planted_column_from_the_release_alone(tabular) -> None:
    config, release, manifest, _ = tabular
    result = explain(
        ExplainConfig(num_images=8, lime=LimeConfig(num_samples=1000), model_name=config.model_name, work_dir=config.work_dir, store=config.store)
    )
    weights = json.loads(Path(result.weights_uri.removeprefix("file://")).read_text())
    assert weights["columns"] == ["signal", "level", "spread", "shade", "member"]
    top = []
    for row in weights["rows"]:
        label = str(row["labels"][0])
        ranked = sorted(row["weights"][label].items(), key=lambda kv: -abs(kv[1]))
        top.append(weights["columns"][int(ranked[0][0])])
    assert top.count("signal") >= 7, top
    html = Path(result.report_uri.removeprefix("file://")).read_text()
    assert html.count("<section class='explanation'") == 8 and "Which columns drive each class" in html


def test_a_rebuild_is_gated_against_production_and_rolls_back(tabular, tmp_path: Path) -> None:
    config, first, _, _ = tabular
    # The table grew: other rows fit other statistics, so production's raw codes differ; it is still compared.
    grown = tmp_path / "grown.csv"
    pd.concat([planted(1500, seed=0), planted(300, seed=9)]).to_csv(grown, index=False)
    state = build(config.model_copy(update={"data": config.data.model_copy(update={"source": str(grown)})}), return_state=True)
    second = state.result()
    # Compared on the same test rows (a paired comparison), not waved through as incomparable.
    assert second.promoted or "on the same" in second.gate_reason, second.gate_reason
    if second.promoted:
        back = rollback(RollbackConfig(model_name="planted", work_dir=config.work_dir, store=config.store))
        assert (back.from_version, back.to_version) == (second.version, first.version)
    alias, _ = read_alias(open_store(config.store), "planted")
    assert alias.version == first.version
