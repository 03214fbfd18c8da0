"""The image modality's explanation report: one self-contained HTML file (images embedded), and the weights as JSON."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.explain.explanation import ExplainedInput, Explanation

DISPLAY_PX = 160


def png_data_uri(rgb: np.ndarray) -> str:
    """An H x W x 3 uint8 array as an inline PNG, enlarged with square pixels for display."""
    image = Image.fromarray(rgb.astype(np.uint8), mode="RGB")
    scale = max(1, DISPLAY_PX // max(image.size))
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def as_rgb(pixels: np.ndarray) -> np.ndarray:
    """C x H x W uint8 -> H x W x 3."""
    return np.repeat(pixels, 3, axis=0).transpose(1, 2, 0) if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)


def overlay(pixels: np.ndarray, explanation: Explanation, label: int, k: int = 5) -> np.ndarray:
    """The image with its ``k`` strongest positive superpixels for ``label`` in green, negative in red."""
    rgb = as_rgb(pixels).astype(np.float64)
    segments = np.asarray(explanation.segments)
    tint = np.zeros_like(rgb)
    mask = np.zeros(segments.shape, dtype=bool)
    for feature in explanation.top_features(label, k, positive=True):
        tint[segments == feature] = (0, 200, 0)
        mask |= segments == feature
    for feature in explanation.top_features(label, k, positive=False):
        tint[segments == feature] = (220, 0, 0)
        mask |= segments == feature
    rgb[mask] = 0.45 * rgb[mask] + 0.55 * tint[mask]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def weight_map(explanation: Explanation, label: int) -> np.ndarray:
    """Per-pixel LIME weight of ``label`` (each pixel gets its superpixel's weight)."""
    segments = np.asarray(explanation.segments)
    weights = explanation.weights[label]
    return np.vectorize(lambda s: weights.get(int(s), 0.0))(segments).astype(np.float64)


def heat_rgb(values: np.ndarray) -> np.ndarray:
    """Positive weights green, negative red, scaled to the largest magnitude."""
    top = float(np.abs(values).max()) or 1.0
    rgb = np.zeros((*values.shape, 3))
    rgb[..., 1] = np.clip(values, 0, None) / top * 255
    rgb[..., 0] = np.clip(-values, 0, None) / top * 255
    return rgb.astype(np.uint8)


def class_summary(items: list[ExplainedInput], classes: list[str]) -> dict[str, np.ndarray]:
    """For each predicted class, the mean weight map of its own label over the images predicted as it."""
    maps: dict[str, list[np.ndarray]] = {}
    for item in items:
        label = item.explanation.labels[0]
        maps.setdefault(classes[label], []).append(weight_map(item.explanation, label))
    return {name: np.mean(stack, axis=0) for name, stack in sorted(maps.items())}


def render_html(title: str, subtitle: str, items: list[ExplainedInput], classes: list[str]) -> str:
    """The whole report: summary by class, then one section per explained image."""
    css = (
        "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}img{image-rendering:pixelated;border:1px solid #ccc}"
        "section.explanation{border-top:1px solid #ddd;padding:1rem 0}figure{display:inline-block;margin:0 1rem 0 0;"
        "text-align:center}table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left}.legend span{padding:0 6px}"
    )
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{css}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p>",
        "<p class='legend'><span style='background:#3c3'>green</span> superpixels push towards the class, "
        "<span style='background:#e33;color:#fff'>red</span> ones away from it (LIME weights of a local linear model).</p>",
        "<h2>Which regions drive each class</h2><div class='summary'>",
    ]
    for name, values in class_summary(items, classes).items():
        parts.append(
            f"<figure><img alt='mean weights for {html.escape(name)}' src='{png_data_uri(heat_rgb(values))}'>"
            f"<figcaption>class {html.escape(name)}</figcaption></figure>"
        )
    parts.append("</div><h2>Explained images</h2>")
    for index, item in enumerate(items):
        pixels = np.asarray(item.raw, dtype=np.uint8)
        exp = item.explanation
        rows = "".join(
            f"<tr><td>{html.escape(classes[label])}</td><td>{exp.probabilities[label]:.3f}</td></tr>"
            for label in exp.labels
        )
        figures = "".join(
            f"<figure><img alt='LIME for {html.escape(classes[label])}' src='{png_data_uri(overlay(pixels, exp, label))}'>"
            f"<figcaption>why {html.escape(classes[label])}</figcaption></figure>"
            for label in exp.labels
        )
        parts.append(
            f"<section class='explanation' id='image-{index}'><h3>{html.escape(item.name)}</h3>"
            f"<p>{html.escape(item.why)}</p>"
            f"<figure><img alt='input' src='{png_data_uri(as_rgb(pixels))}'><figcaption>input</figcaption></figure>"
            f"{figures}<table><tr><th>class</th><th>probability</th></tr>{rows}</table></section>"
        )
    parts.append("</body></html>")
    return "".join(parts)


def write_report(out_dir: Path, title: str, subtitle: str, items: list[ExplainedInput], classes: list[str]) -> tuple[Path, Path]:
    """``report.html`` and ``explanations.json`` (per image: probabilities, labels, weights, superpixels)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / "report.html"
    report.write_text(render_html(title, subtitle, items, classes))
    weights = out_dir / "explanations.json"
    weights.write_text(
        json.dumps(
            {
                "classes": classes,
                "images": [
                    {"name": i.name, "why": i.why, **i.explanation.model_dump(exclude={"model_calls"})} for i in items
                ],
            }
        )
    )
    return report, weights
