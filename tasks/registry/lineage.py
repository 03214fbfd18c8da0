"""Where a release came from, for people: the code version, the model card, the versions table, the build summary."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

from tasks.export.evaluate import variant_table
from tasks.registry.manifest import ReleaseDraft, ReleaseManifest
from tasks.registry.release import Release
from tasks.tables import markdown_table, text_table


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


def version_rows(manifests: list[ReleaseManifest], production: str | None) -> list[dict[str, object]]:
    """One row per complete version (oldest first): where its data came from, how good it is, what it serves."""
    return [
        {
            "version": m.version,
            "created_at": f"{m.created_at:%Y-%m-%dT%H:%M:%S}",
            "dataset": m.dataset.version,
            "test_accuracy": m.metrics.test_accuracy_served,
            "served": m.served.name,
            "code": m.code_version,
            "production": m.version == production,
        }
        for m in manifests
    ]


def release_table(manifest: ReleaseDraft) -> list[dict[str, object]]:
    """The release's variant table as people read it (rounded, with ratios to PyTorch eager FP32)."""
    return variant_table(
        manifest.variants, manifest.served.name, manifest.policy.baseline_accuracy, manifest.latency.batch_n,
        manifest.policy.floor,
    )


def model_card(manifest: ReleaseDraft) -> str:
    """The release's model card: what it is, what it takes, how good it is, where it came from, its limits.

    Written from the manifest's content before the version exists (the version
    is the hash of the files, this card included), so it names the dataset and
    code versions but not its own.
    """
    data, train, metrics, served = manifest.dataset, manifest.training, manifest.metrics, manifest.served
    counts = {split: sum(per_class.values()) for split, per_class in data.counts.items()}
    parity = "\n".join(
        f"- {p.variant}: max |logit diff| {p.max_abs_diff:.2e} (tolerance {p.tolerance:.0e}), "
        f"top-1 agreement {p.top1_agreement:.4f}"
        for p in manifest.parity
    )
    host = manifest.latency.host
    measured_on = f"{host.cpu}, {host.logical_cpus} logical CPUs ({', '.join(host.flags) or 'no AVX2'})" if host else "unknown"
    val = f"{metrics.val_accuracy:.4f}" if metrics.val_accuracy is not None else "not measured"
    return f"""# Model card: {manifest.model}

## What it is
An {manifest.input.kind} classifier over {len(manifest.classes)} classes ({", ".join(manifest.classes)}), architecture
`{train.model}`, trained {train.epochs_run} epochs (best epoch {train.best_epoch}).
Served variant: `{served.name}` ({served.runtime}, {served.precision}), entrypoint `{served.entrypoint}`.
Why: {served.reason}.

## Input contract
{manifest.input.describe()}; input `{manifest.tensors.input}`, output `{manifest.tensors.logits}`
(logits, one per class in the order above). Every field is in `input` of `manifest.json`.

## Evaluation (held-out test split, {metrics.test_images} examples)
- test accuracy, FP32 reference: {metrics.test_accuracy_fp32:.4f}
- test accuracy, served variant: {metrics.test_accuracy_served:.4f}
- validation accuracy: {val}
- timed on: {measured_on}, {manifest.latency.threads} threads

{markdown_table(release_table(manifest))}
{_references_section(manifest)}
Export parity against PyTorch on the test split:
{parity or "- not measured"}

## Training data
- dataset version `{data.version}` from `{data.source}`
- examples per split: {", ".join(f"{k} {v}" for k, v in counts.items())}; quarantined at ingestion: {data.quarantined}
  (listed with reasons in `dataset/validation_report.json`)

{_monitoring_section(manifest)}## Lineage
- code: `{manifest.code_version}`
- full build configuration: `config` in `manifest.json`; per-epoch history: `training/history.json`

## Limitations
- Evaluated only on a held-out split of the same source; accuracy on other cameras, scanners or
  preprocessing is unknown until monitored.
- Inputs are reduced as the input contract says ({manifest.input.describe()}): what that removes, the model never sees.
- Quantized variants trade a bounded accuracy loss (see the table) for size and speed.
"""


def _references_section(manifest: ReleaseDraft) -> str:
    if not manifest.references:
        return ""
    served = manifest.variant(manifest.served.name)
    f1 = f"{served.macro_f1:.4f}" if served.macro_f1 is not None else "not measured"
    rows = [
        {
            "model": r.name, "library": r.library, "accuracy": round(r.accuracy, 4), "macro_f1": round(r.macro_f1, 4),
            "p50_ms_b1": round(r.p50_ms_b1, 3), f"p50_ms_b{manifest.latency.batch_n}": round(r.p50_ms_bn, 3),
            "fit_s": round(r.fit_seconds, 2),
        }
        for r in manifest.references
    ]
    return (
        "\nReference models of another family, fitted and tested on the same split (reported, not served); "
        f"the served variant: accuracy {served.accuracy:.4f}, macro-F1 {f1}:\n\n" + markdown_table(rows) + "\n"
    )


def _monitoring_section(manifest: ReleaseDraft) -> str:
    monitoring = manifest.monitoring
    if not monitoring:
        return ""
    return (
        "## Monitoring\n"
        f"- reference: `{monitoring.reference}`, {monitoring.rows} rows (test split and a train sample) "
        f"computed by `{monitoring.variant}`\n"
        f"- drift is tested on: {', '.join(monitoring.numerical_columns + monitoring.categorical_columns)}\n\n"
    )


def release_summary(manifest: ReleaseManifest, release: Release) -> str:
    """What a build prints when it is done: the variant table, where the release is, what it serves, the gate."""
    references = [
        f"reference:  {r.name}: accuracy {r.accuracy:.4f}, macro-F1 {r.macro_f1:.4f}, p50 {r.p50_ms_b1:.3f} ms at batch 1 "
        "(same split; reported, not served)"
        for r in manifest.references
    ]
    return "\n".join([
        text_table(release_table(manifest)),
        "",
        *references,
        f"release:    {release.model} {release.version}",
        f"location:   {release.uri}",
        f"manifest:   {release.manifest_uri}",
        f"serving:    {manifest.served.reason}",
        f"production: {'promoted' if release.promoted else 'not promoted'} ({release.gate_reason})",
    ])
