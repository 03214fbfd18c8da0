"""The release manifest: one typed, versioned contract, written by the registry and read by everyone.

``manifest.json`` says how to prepare an input (the input contract) and read the outputs
(tensor names, classes), which variant is served and why, what every variant measured and on
which host, which files the release holds with their sha256, the monitoring reference, and
where it all came from. An independent client can use a release from it alone.

Schema 4 is written: schema 3 plus tabular input contracts (``input.kind: tabular``, the
table's schema), ``references`` (models of another family measured on the same split) and each
variant's ``macro_f1``; code that reads schema 3 refuses it by its number, not by a field it
does not know. Schema 3 (``alternatives``, the variants a serving host may time and serve
instead) and schema 2 (without them: every host serves ``served``) are read as they are. Schema 1 (written before this module) is read by upgrading it, from its
final layout (with the serving policy, latency settings and entrypoints): its variant rows kept
rounded display values, so upgraded sizes, MACs and timings carry that rounding. An earlier
schema-1 layout, or any other schema, is refused with a message saying what this code reads.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.data.contract import InputContract
from tasks.errors import LeptonError
from tasks.export.backends import EMBEDDING_NAME, INPUT_NAME, LOGITS_NAME
from tasks.export.config import LatencyConfig
from tasks.export.measure import Host
from tasks.export.parity import ParityResult
from tasks.export.policy import OutOfBudget
from tasks.export.reference_models import ReferenceModel
from tasks.export.variants import TRAINED_STAGE, VariantMetrics

SCHEMA_VERSION = 4
READABLE_SCHEMAS = (1, 2, 3, 4)


class ManifestError(LeptonError):
    """A manifest this code cannot read: another schema, or not a release manifest at all."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorNames(_Section):
    """Names of the exported graph's input and outputs."""

    input: str = INPUT_NAME
    logits: str = Field(LOGITS_NAME, description="First output: one logit per class, in the order of ``classes``")
    embedding: str = Field(EMBEDDING_NAME, description="Second output: the input of the last Linear layer")


class ServedVariant(_Section):
    """The variant production serves, and why the policy chose it."""

    name: str
    runtime: str
    precision: str
    stage: str
    entrypoint: str
    reason: str


class PolicyRecord(_Section):
    """The serving policy as it was applied."""

    objective: str
    accuracy_budget_pp: float
    baseline_accuracy: float
    floor: float
    out_of_budget: list[OutOfBudget]


class LatencyRecord(LatencyConfig):
    """How the variants were timed, and on which host (timings compare only within one host)."""

    host: Host | None = None


class Metrics(_Section):
    """Accuracy on the held-out splits."""

    test_accuracy_fp32: float
    test_accuracy_served: float
    val_accuracy: float | None
    test_images: int


class ReleasedVariant(VariantMetrics):
    """A variant in the release (files under ``{name}/``), its measurements and the policy's verdict."""

    model_config = ConfigDict(extra="forbid")

    entrypoint: str
    in_budget: bool

    @model_validator(mode="after")
    def _measured(self) -> ReleasedVariant:
        unmeasured = [f for f in ("accuracy", "p50_ms_b1", "p95_ms_b1", "p50_ms_bn", "p95_ms_bn") if not math.isfinite(getattr(self, f))]
        if unmeasured:
            raise ValueError(f"variant {self.name} has no measured {', '.join(unmeasured)}: a release holds measured variants only")
        return self


class DatasetLineage(_Section):
    """The dataset snapshot the model was trained and tested on (its files: ``dataset/manifest.json``)."""

    version: str
    source: str
    counts: dict[str, dict[str, int]]
    quarantined: int


class TrainingLineage(_Section):
    """How the served model's ancestor was trained."""

    model: str
    best_epoch: int
    epochs_run: int


class AccuracyCalibration(_Section):
    """How the served variant's confidence maps to accuracy, fitted on held-out labelled rows.

    Average thresholded confidence (Garg et al., ICLR 2022): ``threshold`` is the confidence above
    which the share of held-out rows equals their accuracy; on a window without labels the share of
    rows above it estimates the accuracy. ``bootstrap_thresholds`` are refits on resamples of the
    held-out rows: they carry the calibration's own uncertainty into the estimate's interval.
    """

    threshold: float
    bootstrap_thresholds: list[float]
    accuracy: float
    rows: int
    bin_edges: list[float] = []
    bin_accuracy: list[float] = []
    bootstrap_bin_accuracy: list[list[float]] = []


class MonitoringSection(_Section):
    """The monitoring reference in the release, and the columns drift is tested on.

    ``reference_splits`` name the rows of the reference file that drift is tested against: rows
    the model never trained on: older releases also kept a train sample, which production data
    cannot match (the model is surer of what it trained on), so for them only their test rows are
    used. ``calibration`` is None for releases built before label-free estimation.
    """

    reference: str
    projection: str
    rows: int
    variant: str
    numerical_columns: list[str]
    categorical_columns: list[str]
    reference_splits: list[str] = ["test"]
    calibration: AccuracyCalibration | None = None


class MonitoringReference(BaseModel):
    """A monitoring reference ready to release: its manifest section and its local files by release path.

    ``section`` is the served variant's; ``alternatives`` are those of the other host candidates.
    """

    section: MonitoringSection
    files: dict[str, Path]
    alternatives: list[MonitoringSection] = []


class ReleaseFile(_Section):
    """One file of a release."""

    path: str
    sha256: str
    size: int


class ReleaseDraft(_Section):
    """Everything a release says about itself except what publishing adds (version, time, file list)."""

    schema_version: Literal[4] = SCHEMA_VERSION
    model: str
    input: InputContract
    tensors: TensorNames = Field(default_factory=TensorNames)
    classes: list[str]
    served: ServedVariant
    policy: PolicyRecord
    latency: LatencyRecord
    metrics: Metrics
    variants: list[ReleasedVariant]
    parity: list[ParityResult]
    dataset: DatasetLineage
    training: TrainingLineage
    monitoring: MonitoringSection | None = None
    alternatives: list[MonitoringSection] = Field(
        default_factory=list,
        description=(
            "Variants a serving host may measure and serve instead of ``served`` (in budget, in a servable runtime), "
            "each with its own monitoring reference: its embeddings and confidences are its own. Empty for releases "
            "built before host choice: every host serves ``served``."
        ),
    )
    references: list[ReferenceModel] = Field(
        default_factory=list,
        description="Models of another family fitted and measured on the same split (tables: gradient-boosted trees)",
    )
    config: dict[str, Any]
    code_version: str
    model_card: str

    def variant(self, name: str) -> ReleasedVariant:
        """The variant called ``name``.

        Raises:
            ManifestError: the release has no such variant (the message lists those it has).
        """
        found = next((v for v in self.variants if v.name == name), None)
        if found is None:
            raise ManifestError(f"release of {self.model} has no variant {name!r}; it has {[v.name for v in self.variants]}")
        return found

    def host_candidates(self) -> list[ReleasedVariant]:
        """The variants a serving host may choose between: ``served`` first, then the alternatives."""
        return [self.variant(self.served.name)] + [self.variant(m.variant) for m in self.alternatives]

    def monitoring_of(self, variant: str) -> MonitoringSection | None:
        """The monitoring reference of rows computed by ``variant`` (None: the release has none for it)."""
        if self.monitoring is not None and variant == self.monitoring.variant:
            return self.monitoring
        return next((m for m in self.alternatives if m.variant == variant), None)


class ReleaseManifest(ReleaseDraft):
    """``manifest.json`` of a complete version."""

    version: str
    created_at: datetime
    files: list[ReleaseFile]

    @model_validator(mode="before")
    @classmethod
    def _readable_schema(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        schema = data.get("schema_version")
        if schema == 1:
            try:
                return _upgrade_v1(data)
            except (KeyError, TypeError) as exc:
                # Schema 1 grew over its life; only its final layout carries every fact schema 2 needs.
                raise ValueError(
                    f"a schema-1 manifest without {exc} (written before the serving policy, latency settings and "
                    "entrypoints were recorded) cannot be read; rebuild the model to release it again"
                ) from None
        if schema in (2, 3):
            return {**data, "schema_version": SCHEMA_VERSION}  # the same contract without the newer fields
        if schema != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {schema!r} is not one this code reads ({', '.join(map(str, READABLE_SCHEMAS))}); "
                "a newer schema needs a newer lepton-pipelines"
            )
        return data

    def files_under(self, folder: str) -> list[ReleaseFile]:
        """The files under one release-relative folder (a variant, ``dataset``, ``monitoring``)."""
        prefix = folder.rstrip("/") + "/"
        return [f for f in self.files if f.path.startswith(prefix)]


def _stage_of(name: str, runtime: str, precision: str) -> str:
    """A schema-1 variant's stage, from its name: ``distilled-pruned-onnx-int8`` -> ``distilled-pruned``."""
    runtime_in_name = "onnx" if runtime == "onnxruntime" else runtime
    return name.removesuffix(f"{runtime_in_name}-{precision}").rstrip("-") or TRAINED_STAGE


def _upgrade_v1(old: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 manifest as schema 2: the same facts, moved to their typed places."""
    contract, latency = old["input"], old["latency"]
    batch_n, entrypoints = latency["batch_n"], old["entrypoints"]

    def scaled(value: float | None, factor: float) -> int | None:
        return None if value is None else round(value * factor)

    variants = [
        {
            "name": row["variant"],
            "runtime": row["runtime"],
            "precision": row["precision"],
            "stage": _stage_of(row["variant"], row["runtime"], row["precision"]),
            "entrypoint": entrypoints[row["variant"]],
            "macs": scaled(row.get("mmacs"), 1e6),
            "params": scaled(row.get("kparams"), 1e3),
            "accuracy": row["accuracy"],
            "size_bytes": scaled(row["size_kb"], 1024),
            "p50_ms_b1": row["p50_ms_b1"],
            "p95_ms_b1": row["p95_ms_b1"],
            "p50_ms_bn": row[f"p50_ms_b{batch_n}"],
            "p95_ms_bn": row[f"p95_ms_b{batch_n}"],
            "in_budget": bool(row.get("in_budget", True)),
        }
        for row in old["variants"]
    ]
    dataset = old["dataset"]
    return {
        "schema_version": SCHEMA_VERSION,
        "model": old["model"],
        "input": {"kind": "image", "channels": contract["channels"], "image_size": contract["image_size"]},
        "tensors": {
            "input": contract.get("input_name", INPUT_NAME),
            "logits": contract.get("output_name", LOGITS_NAME),
            "embedding": contract.get("embedding_output", EMBEDDING_NAME),
        },
        "classes": dataset["classes"],
        "served": old["served"],
        "policy": old["policy"],
        "latency": latency,
        "metrics": old["metrics"],
        "variants": variants,
        "parity": old.get("parity", []),
        "dataset": {k: dataset[k] for k in ("version", "source", "counts", "quarantined")},
        "training": old["training"],
        "monitoring": old.get("monitoring"),
        "config": old.get("config", {}),
        "code_version": old.get("code_version", "unknown"),
        "model_card": old.get("model_card", "MODEL_CARD.md"),
        "version": old["version"],
        "created_at": old["created_at"],
        "files": old["files"],
    }
