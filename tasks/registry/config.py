"""Configuration of the artifact store and the release gate."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from tasks.forms import FormModel

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def validate_name(kind: str, value: str) -> str:
    """A model name or version usable as one path segment in file:// and s3:// keys.

    Raises:
        ValueError: characters outside ``a-z 0-9 . _ -``, a leading symbol, ``..``, or over 63 characters.
    """
    if not NAME_PATTERN.match(value) or ".." in value:
        raise ValueError(
            f"{kind} {value!r} is not allowed: use 1-63 characters from a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit, without '..'"
        )
    return value


class StoreConfig(FormModel):
    """Where releases live: ``file://path`` (a folder) or ``s3://bucket/prefix``.

    Credentials for S3 come from the standard AWS chain (environment, profile,
    instance role); they are never part of this config.
    """

    uri: str = Field("file://.lepton/registry", description="file://path or s3://bucket/prefix")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto); None for AWS")
    region: str | None = Field(None, description="S3 region; None uses the AWS chain's")
    sse: Literal["none", "AES256", "aws:kms"] = Field("none", description="Server-side encryption for every object")
    kms_key_id: str | None = Field(None, description="KMS key id, with sse='aws:kms'")
    max_attempts: int = Field(5, ge=1, le=20, description="Attempts per S3 request (boto3 standard retries)")
    timeout_s: float = Field(30.0, gt=0, le=600, description="Connect and read timeout of one S3 request")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint_url {value!r} is not allowed: use http(s)://host[:port]")
        if parts.username or parts.password:
            # Configs are stored in release manifests; credentials come from the AWS chain only.
            raise ValueError("endpoint_url must not carry credentials; use the AWS credential chain")
        return value

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        if value.startswith("file://"):
            if not value.removeprefix("file://"):
                raise ValueError("uri file:// needs a path, e.g. file://.lepton/registry")
            return value
        if value.startswith("s3://"):
            bucket = value.removeprefix("s3://").split("/", 1)[0]
            if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
                raise ValueError(f"uri {value!r}: {bucket!r} is not a valid S3 bucket name")
            if ".." in value:
                raise ValueError(f"uri {value!r} must not contain '..'")
            return value
        raise ValueError(f"uri {value!r} is not allowed: use file://path or s3://bucket/prefix")

    @model_validator(mode="after")
    def _kms(self) -> "StoreConfig":
        if self.sse == "aws:kms" and not self.kms_key_id:
            raise ValueError("kms_key_id is required when sse is 'aws:kms'")
        if self.sse != "aws:kms" and self.kms_key_id:
            raise ValueError("kms_key_id is only allowed with sse='aws:kms'")
        return self


class GateConfig(FormModel):
    """When a new release may replace production."""

    tolerance_pp: float = Field(
        0.5, ge=0.0, le=100.0, description="Candidate may be this many percentage points below production"
    )
    promote_if_incomparable: bool = Field(
        False, description="Promote when production takes another input shape and cannot be scored on this split"
    )
    min_accuracy: float = Field(0.5, ge=0.0, le=1.0, description="Absolute floor: a candidate below this test accuracy is refused")
    significance: float = Field(
        0.05, gt=0.0, lt=0.5, description="Significance of the baseline test; the paired interval is at 1 - significance"
    )
    seed: int = Field(0, description="Seed of the paired bootstrap")


class HostChoiceConfig(FormModel):
    """Whether a scoring or serving host times the release's candidate variants on its own CPU and serves the fastest."""

    measure: bool = Field(
        True,
        description="Time the release's in-budget candidates here and serve the fastest; off: serve the build's choice",
    )
    seconds: float = Field(3.0, gt=0, le=120, description="How long the candidates are timed (interleaved, 3 rounds at least)")
