"""Label feedback: true labels that arrive after scoring, joined to the logged predictions, and the realized accuracy.

Labels come as CSV or Parquet tables with a ``label`` column and one id column: ``image_sha256``
(or ``sha256``: the content hash the scoring stage logged), ``file`` (the name it logged), or, for
a table model with ``data.id_column``, that column (the id each scored row was logged with).
Every label that cannot be used is a problem entry naming the id and why (unknown class, two
different labels for one input, never scored, empty); nothing is dropped silently.

Degradation is a one-sided Fisher exact test of the labelled window's accuracy against the
release's test accuracy (both are samples: the test split's size counts), plus a minimum drop,
so a huge window does not raise the event for a difference nobody would act on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from tasks.errors import LeptonError
from tasks.monitor.config import LabelRow
from tasks.monitor.drift import prepend_to_body

ID_COLUMNS = ("image_sha256", "sha256", "file")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class LabelFileError(LeptonError):
    """A label table that cannot be read, or lacks the columns labels need."""


class LabelProblem(BaseModel):
    """A label that was not used, and why."""

    id: str
    origin: str
    reason: str


def read_label_tables(paths: list[Path], row_id_column: str | None = None) -> pd.DataFrame:
    """Every row of the CSV/Parquet label tables as ``id``, ``label``, ``origin`` (file and row), ``by``.

    ``by`` is ``row_id`` for labels keyed by ``row_id_column`` (a table model's id column), else ``input``.

    Raises:
        LabelFileError: a file that is neither CSV nor Parquet, cannot be parsed, or lacks
            ``label`` or an id column.
    """
    frames = []
    for path in paths:
        try:
            if path.suffix.lower() == ".csv":
                table = pd.read_csv(path, dtype=str, keep_default_na=False)
            elif path.suffix.lower() in (".parquet", ".pq"):
                table = pd.read_parquet(path)
            else:
                raise LabelFileError(f"{path.name}: labels must be .csv or .parquet files")
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise LabelFileError(f"{path.name}: cannot be read as a label table ({exc})") from exc
        allowed = [*ID_COLUMNS, *([row_id_column] if row_id_column else [])]
        id_column = next((c for c in allowed if c in table.columns), None)
        if "label" not in table.columns or id_column is None:
            raise LabelFileError(
                f"{path.name}: has columns {list(table.columns)}; a label table needs 'label' and one id column of {allowed}"
            )
        # Origins are 1-based data rows (a CSV's header is not counted), the same for both formats.
        frames.append(
            pd.DataFrame(
                {
                    "id": _text(table[id_column]),
                    "label": _text(table["label"]),
                    "origin": [f"{path.name}:row {i + 1}" for i in range(len(table))],
                    "by": "row_id" if id_column == row_id_column else "input",
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["id", "label", "origin", "by"])


def _text(column: pd.Series) -> pd.Series:
    """Ids or labels as text: missing values empty, whole numbers without '.0' (Parquet integer columns with nulls are floats)."""
    def one(value: object) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            return ""
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return str(int(value))
        return str(value).strip()

    return column.astype(object).map(one)


def label_rows(rows: list[LabelRow]) -> pd.DataFrame:
    """Inline labels as the same frame as :func:`read_label_tables`."""
    return pd.DataFrame(
        {"id": [r.id.strip() for r in rows], "label": [r.label.strip() for r in rows], "origin": [f"labels[{i}]" for i in range(len(rows))],
         "by": "input"}
    )


def clean_labels(labels: pd.DataFrame, classes: list[str]) -> tuple[pd.DataFrame, list[LabelProblem]]:
    """One label per id: empty, unknown-class and conflicting labels become problems; exact repeats count once.

    A sha256 id is compared in lower case, so one input given in both spellings is one id.
    """
    labels = labels.assign(id=[i.lower() if SHA256.match(i.lower()) else i for i in labels["id"]])
    problems = []
    empty = (labels["id"] == "") | (labels["label"] == "")
    for row in labels.loc[empty].itertuples():
        problems.append(LabelProblem(id=row.id, origin=row.origin, reason="empty id or label"))
    unknown = ~empty & ~labels["label"].isin(classes)
    for row in labels.loc[unknown].itertuples():
        problems.append(
            LabelProblem(id=row.id, origin=row.origin, reason=f"label {row.label!r} is not one of the release's classes {classes}")
        )
    usable = labels.loc[~empty & ~unknown]
    per_id = usable.groupby("id")["label"].nunique()
    conflicting = set(per_id[per_id > 1].index)
    for row in usable.loc[usable["id"].isin(conflicting)].itertuples():
        others = sorted(set(usable.loc[usable["id"] == row.id, "label"]))
        problems.append(LabelProblem(id=row.id, origin=row.origin, reason=f"conflicting labels for one input: {others}"))
    kept = usable.loc[~usable["id"].isin(conflicting)].drop_duplicates("id").reset_index(drop=True)
    return kept, problems


def join_labels(
    labels: pd.DataFrame, predictions: pd.DataFrame, identity: tuple[str, ...] = ("image_sha256",)
) -> tuple[pd.DataFrame, list[LabelProblem]]:
    """Logged predictions that have a label (by content hash, or by logged file name), and the labels that found none.

    ``identity`` are the logged columns that tell one input from another: an image is its content;
    a table row is its values and where it was (two rows of equal values are two inputs, and may
    rightly have two labels).

    A file name logged for more than one content (two batches with a ``0/img_1.png``) is
    ambiguous: its label is a problem, not a guess. An input whose hash label and name label
    disagree is a conflict: neither is used. An input scored in several batches keeps every
    prediction row (each is a logged prediction), marked by ``release_version``.
    """
    problems = []
    # A table model's logged row id: kept apart from the labels' own ``id``.
    predictions = predictions.rename(columns={"id": "row_id"})
    by_row_id = labels["by"].eq("row_id") if "by" in labels else pd.Series(False, index=labels.index)
    by_hash = labels["id"].str.fullmatch(SHA256.pattern) & ~by_row_id
    frames = []
    if len(predictions) and by_row_id.any() and "row_id" in predictions:
        keyed = labels.loc[by_row_id, ["id", "label", "origin"]]
        frames.append(predictions.merge(keyed, left_on="row_id", right_on="id"))
    labels_by_input = labels.loc[~by_row_id]
    if len(predictions):
        hashed = labels.loc[by_hash].assign(image_sha256=lambda f: f["id"])  # by_hash excludes row ids
        frames.append(predictions.merge(hashed[["image_sha256", "label", "id", "origin"]], on="image_sha256"))
        contents = predictions.groupby("file")["image_sha256"].nunique()
        ambiguous = set(contents[contents > 1].index)
        named = labels_by_input.loc[~by_hash[~by_row_id]]
        for row in named.loc[named["id"].isin(ambiguous)].itertuples():
            problems.append(
                LabelProblem(id=row.id, origin=row.origin, reason="ambiguous: this file name was logged for different contents; label it by image_sha256")
            )
        named = named.loc[~named["id"].isin(ambiguous)].rename(columns={"id": "file"})
        frames.append(predictions.merge(named[["file", "label", "origin"]], on="file").assign(id=lambda f: f["file"]))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*predictions.columns, "label", "id", "origin"])
    matched = set(frame["id"])
    if len(frame):
        key = frame[list(identity)].astype(str).agg("\x1f".join, axis=1)
        per_input = frame.groupby(key)["label"].nunique()
        conflicting = set(per_input[per_input > 1].index)
        clashing = key.isin(conflicting)
        for row, row_key in zip(frame.loc[clashing].itertuples(), key[clashing]):
            others = sorted(set(frame.loc[key == row_key, "label"]))
            problems.append(
                LabelProblem(id=row.id, origin=row.origin, reason=f"conflicting labels for one input (by hash and by name): {others}")
            )
        problems = list({(p.id, p.origin, p.reason): p for p in problems}.values())
        frame = frame.loc[~clashing]
        # The same prediction matched by its hash and by its name counts once.
        frame = frame.drop_duplicates(["scored_at", "image_sha256", "file"] if "scored_at" in frame else ["image_sha256", "file"])
    reported = {p.id for p in problems}
    for row in labels.itertuples():
        if row.id not in matched and row.id not in reported:
            problems.append(LabelProblem(id=row.id, origin=row.origin, reason="never scored: no logged prediction has this id"))
    return frame.drop(columns=["origin"]).reset_index(drop=True), problems


class RealizedPerformance(BaseModel):
    """The accuracy the served model really got on labelled production inputs, against its test accuracy."""

    status: Literal["degraded", "not degraded", "not enough labels"]
    release_version: str
    rows: int
    accuracy: float | None = None
    low: float | None = None
    high: float | None = None
    test_accuracy: float
    test_images: int
    drop_pp: float | None = None
    p_value: float | None = None
    significance: float
    min_drop_pp: float
    detail: str = ""

    @property
    def degraded(self) -> bool:
        return self.status == "degraded"


def realized_performance(
    correct: np.ndarray,
    release_version: str,
    test_accuracy: float,
    test_images: int,
    significance: float = 0.05,
    min_drop_pp: float = 1.0,
    min_rows: int = 30,
) -> RealizedPerformance:
    """Accuracy of the labelled rows (Clopper-Pearson 95 % interval) and whether it fell significantly below the test's."""
    from scipy.stats import binomtest, fisher_exact

    correct = np.asarray(correct, dtype=bool)
    base = dict(
        release_version=release_version, rows=int(correct.size), test_accuracy=test_accuracy, test_images=test_images,
        significance=significance, min_drop_pp=min_drop_pp,
    )
    if correct.size < min_rows:
        return RealizedPerformance(
            status="not enough labels", detail=f"{correct.size} labelled predictions; at least {min_rows} are needed", **base
        )
    hits = int(correct.sum())
    interval = binomtest(hits, correct.size).proportion_ci(method="exact")
    test_hits = int(round(test_accuracy * test_images))
    p_value = float(
        fisher_exact([[test_hits, test_images - test_hits], [hits, correct.size - hits]], alternative="greater").pvalue
    )
    accuracy_ = hits / correct.size
    drop = (test_accuracy - accuracy_) * 100.0
    degraded = p_value < significance and drop >= min_drop_pp
    return RealizedPerformance(
        status="degraded" if degraded else "not degraded",
        accuracy=accuracy_,
        low=float(interval.low),
        high=float(interval.high),
        drop_pp=drop,
        p_value=p_value,
        detail=(
            f"accuracy {accuracy_:.1%} on {correct.size} labelled predictions (95 % interval {interval.low:.1%}-{interval.high:.1%}) "
            f"vs {test_accuracy:.1%} on {test_images} test examples: {abs(drop):.1f} pp {'lost' if drop >= 0 else 'gained'}, "
            f"one-sided Fisher exact p = {p_value:.3g}"
        ),
        **base,
    )


def write_performance_report(
    joined: pd.DataFrame, classes: list[str], result: RealizedPerformance, problems: list[LabelProblem], title: str, html_path: Path
) -> Path:
    """Evidently's classification report of the labelled predictions, opened by the verdict and the label problems."""
    import html as html_escape
    import warnings

    from evidently import BinaryClassification, DataDefinition, Dataset, MulticlassClassification, Report
    from evidently.presets import ClassificationPreset

    e = html_escape.escape
    frame = joined[["label", "predicted_class"]].astype(str).reset_index(drop=True)
    seen = [c for c in classes if c in set(frame["label"]) | set(frame["predicted_class"])]
    # Evidently reports two seen classes as a binary task, whose positive class is 1 unless named:
    # class names are text, so the release's later one is named.
    task = (
        BinaryClassification(target="label", prediction_labels="predicted_class", pos_label=seen[-1])
        if len(seen) == 2
        else MulticlassClassification(target="label", prediction_labels="predicted_class")
    )
    definition = DataDefinition(classification=[task], categorical_columns=["label", "predicted_class"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report([ClassificationPreset()]).run(current_data=Dataset.from_pandas(frame, data_definition=definition))
    html_path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(html_path))
    colour = {"degraded": "#b00020", "not degraded": "#1b5e20"}.get(result.status, "#555")
    rows = "".join(f"<tr><td>{e(p.id)}</td><td>{e(p.origin)}</td><td>{e(p.reason)}</td></tr>" for p in problems[:200])
    header = (
        "<section id='lepton-verdict' style='font-family:sans-serif;margin:16px;padding:16px;"
        f"border:3px solid {colour}'><h1 style='color:{colour}'>{e(title)}: {e(result.status.upper())}</h1>"
        f"<p><b>{e(result.detail)}</b></p><p>Classes: {e(', '.join(classes))}</p>"
        + (
            f"<h2>{len(problems)} labels not used</h2><table border='1' cellpadding='4'><tr><th>id</th><th>where</th>"
            f"<th>why</th></tr>{rows}</table>" if problems else ""
        )
        + "<p style='color:#555'>Below: Evidently's classification report of the labelled predictions.</p></section>"
    )
    return prepend_to_body(html_path, header)
