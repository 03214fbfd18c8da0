"""Where a release came from: code version."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path


def code_version(repo: Path | None = None) -> str:
    """The git commit (with ``-dirty`` for uncommitted changes) or, outside git, the package version."""
    cwd = repo or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return f"git:{commit}{'-dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        try:
            return f"lepton-pipelines=={metadata.version('lepton-pipelines')}"
        except metadata.PackageNotFoundError:
            return "unknown"


def version_rows(manifests: list[dict], production: str | None) -> list[dict[str, object]]:
    """One row per complete version (oldest first): where its data came from, how good it is, what it serves."""
    return [
        {
            "version": m["version"],
            "created_at": m["created_at"][:19],
            "dataset": m.get("dataset", {}).get("version", "-"),
            "test_accuracy": m.get("metrics", {}).get("test_accuracy_served", "-"),
            "served": m.get("served", {}).get("name", "-"),
            "code": m.get("code_version", "-"),
            "production": m["version"] == production,
        }
        for m in manifests
    ]


def markdown_table(rows: list[dict[str, object]]) -> str:
    """``rows`` as a GitHub-flavoured markdown table."""
    if not rows:
        return "_none_"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def model_card(model: str, manifest: dict) -> str:
    """The release's model card: what it is, what it takes, how good it is, where it came from, its limits.

    Written from the manifest's content before the version exists (the version
    is the hash of the files, this card included), so it names the dataset and
    code versions but not its own.
    """
    data, train, metrics, contract = manifest["dataset"], manifest["training"], manifest["metrics"], manifest["input"]
    counts = {split: sum(per_class.values()) for split, per_class in data["counts"].items()}
    parity = "\n".join(
        f"- {p['variant']}: max |logit diff| {p['max_abs_diff']:.2e} (tolerance {p['tolerance']:.0e}), "
        f"top-1 agreement {p['top1_agreement']:.4f}"
        for p in manifest.get("parity", [])
    )
    served = manifest["served"]
    return f"""# Model card: {model}

## What it is
An image classifier over {len(data['classes'])} classes ({", ".join(data['classes'])}), architecture
`{train['model']}`, trained {train['epochs_run']} epochs (best epoch {train['best_epoch']}).
Served variant: `{served['name']}` ({served['runtime']}, {served['precision']}), entrypoint `{served['entrypoint']}`.
Why: {served.get('reason', 'fastest variant within the accuracy budget')}.

## Input contract
{contract['channels']} channel(s), {contract['image_size']}x{contract['image_size']} pixels, {contract['layout']}
{contract['dtype']}, scaled as {contract['scale']}; input `{contract['input_name']}`, output `{contract['output_name']}`
(logits, one per class in the order above).

## Evaluation (held-out test split, {metrics['test_images']} images)
- test accuracy, FP32 reference: {metrics['test_accuracy_fp32']:.4f}
- test accuracy, served variant: {metrics['test_accuracy_served']:.4f}
- validation accuracy: {metrics['val_accuracy']:.4f}

{markdown_table(manifest['variants'])}

Export parity against PyTorch on the test split:
{parity or "- not measured"}

## Training data
- dataset version `{data['version']}` from `{data['source']}`
- images per split: {", ".join(f"{k} {v}" for k, v in counts.items())}; quarantined at ingestion: {data['quarantined']}
  (listed with reasons in `dataset/validation_report.json`)

{_monitoring_section(manifest)}## Lineage
- code: `{manifest['code_version']}`
- full build configuration: `config` in `manifest.json`; per-epoch history: `training/history.json`

## Limitations
- Evaluated only on a held-out split of the same source; accuracy on other cameras, scanners or
  preprocessing is unknown until monitored.
- Every input is resized to {contract['image_size']}x{contract['image_size']}: detail finer than that is not seen.
- Quantized variants trade a bounded accuracy loss (see the table) for size and speed.
"""


def _monitoring_section(manifest: dict) -> str:
    monitoring = manifest.get("monitoring")
    if not monitoring:
        return ""
    return (
        "## Monitoring\n"
        f"- reference: `{monitoring['reference']}`, {monitoring['rows']} rows (test split and a train sample) "
        f"computed by `{monitoring['variant']}`\n"
        f"- drift is tested on: {', '.join(monitoring['numerical_columns'] + monitoring['categorical_columns'])}\n\n"
    )
