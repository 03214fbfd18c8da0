"""The tabular modality's explanation report: one self-contained HTML file, and the weights as JSON.

On top, the mean absolute LIME weight of each column per class (over the rows explained for that
class): which columns the model leans on. Then per row: the prediction and the strongest column
contributions as bars, each with the row's value.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np

from tasks.data.table_schema import TabularInput
from tasks.explain.explanation import ExplainedInput

TOP_FEATURES = 8


def column_importance(items: list[ExplainedInput], classes: list[str], columns: list[str]) -> dict[str, list[float]]:
    """Per predicted class: the mean absolute weight of each column for that class, over the rows predicted as it."""
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for item in items:
        label = item.explanation.labels[0]
        vector = sums.setdefault(label, np.zeros(len(columns)))
        for feature, weight in item.explanation.weights[label].items():
            vector[feature] += abs(weight)
        counts[label] = counts.get(label, 0) + 1
    return {classes[label]: (sums[label] / counts[label]).tolist() for label in sorted(sums)}


def _value(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "(missing)"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _bar(weight: float, scale: float) -> str:
    width = 0 if scale <= 0 else min(100.0, 100.0 * abs(weight) / scale)
    colour = "#3a3" if weight > 0 else "#d33"
    return f"<div class='bar'><span style='width:{width:.1f}%;background:{colour}'></span></div>"


def render_html(title: str, subtitle: str, items: list[ExplainedInput], classes: list[str], contract: TabularInput) -> str:
    """The whole report: column importance per class, then one section per explained row."""
    columns = [c.name for c in contract.columns]
    css = (
        "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}section.explanation{border-top:1px solid #ddd;"
        "padding:1rem 0}table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;vertical-align:middle}"
        ".bar{width:180px;background:#f2f2f2;height:12px}.bar span{display:block;height:12px}.num{text-align:right}"
    )
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{css}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p>",
        "<p>Bars: LIME weights of a local linear model around each row. <span style='color:#3a3'>Green</span> pushes "
        "towards the class, <span style='color:#d33'>red</span> away from it. Numbers are tested by quartile bin, "
        "categories by equality, with the release's training statistics.</p>",
        "<h2>Which columns drive each class</h2><p>Per class, the mean absolute weight of each column over the explained "
        "rows predicted as that class.</p>",
    ]
    importance = column_importance(items, classes, columns)
    if importance:
        top = max((max(v) for v in importance.values()), default=0.0)
        order = np.argsort(-np.sum([importance[c] for c in importance], axis=0), kind="stable")
        head = "".join(f"<th colspan='2'>predicted {html.escape(name)} ({sum(classes[i.explanation.labels[0]] == name for i in items)} rows)</th>" for name in importance)
        rows = "".join(
            f"<tr><td>{html.escape(columns[j])}</td>"
            + "".join(f"<td>{_bar(importance[name][j], top)}</td><td class='num'>{importance[name][j]:.4f}</td>" for name in importance)
            + "</tr>"
            for j in order
        )
        parts.append(f"<table class='importance'><tr><th>column</th>{head}</tr>{rows}</table>")
    parts.append("<h2>Explained rows</h2>")
    for index, item in enumerate(items):
        exp = item.explanation
        values = contract.decode_rows(np.asarray([item.raw], dtype=np.float64)).iloc[0]
        probabilities = "".join(
            f"<tr><td>{html.escape(classes[label])}</td><td class='num'>{exp.probabilities[label]:.3f}</td></tr>"
            for label in exp.labels
        )
        label = exp.labels[0]
        ranked = sorted(exp.weights[label].items(), key=lambda kv: -abs(kv[1]))[:TOP_FEATURES]
        scale = max((abs(w) for _, w in ranked), default=0.0)
        names = exp.features or columns
        contributions = "".join(
            f"<tr><td>{html.escape(names[f])}</td><td>{html.escape(_value(values.iloc[f]))}</td>"
            f"<td>{_bar(w, scale)}</td><td class='num'>{w:+.4f}</td></tr>"
            for f, w in ranked
        )
        parts.append(
            f"<section class='explanation' id='row-{index}'><h3>{html.escape(item.name)}</h3>"
            f"<p>{html.escape(item.why)}; predicted <b>{html.escape(classes[int(np.argmax(exp.probabilities))])}</b></p>"
            f"<table><tr><th>class</th><th>probability</th></tr>{probabilities}</table>"
            f"<h4>Why {html.escape(classes[label])}</h4><table><tr><th>condition</th><th>value</th><th>weight</th><th></th></tr>"
            f"{contributions}</table></section>"
        )
    parts.append("</body></html>")
    return "".join(parts)


def write_report(
    out_dir: Path, title: str, subtitle: str, items: list[ExplainedInput], classes: list[str], *, contract: TabularInput
) -> tuple[Path, Path]:
    """``report.html`` and ``explanations.json`` (per row: values, probabilities, labels, weights per column)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / "report.html"
    report.write_text(render_html(title, subtitle, items, classes, contract))
    weights = out_dir / "explanations.json"
    columns = [c.name for c in contract.columns]
    rows = []
    for item in items:
        values = contract.decode_rows(np.asarray([item.raw], dtype=np.float64)).iloc[0]
        rows.append(
            {
                "name": item.name, "why": item.why,
                "values": {c: (None if _value(v) == "(missing)" else (v.item() if hasattr(v, "item") else v)) for c, v in zip(columns, values)},
                **item.explanation.model_dump(exclude={"model_calls", "segments"}),
            }
        )
    weights.write_text(json.dumps({"classes": classes, "columns": columns, "rows": rows}))
    return report, weights
