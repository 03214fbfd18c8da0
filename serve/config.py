"""The model server's one validated config: which model, which store, how to batch, what to accept, where to log.

Every field has a default that serves the embedded demo's production release on 127.0.0.1:8080;
``python -m serve --help`` lists the command-line flags that override them.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.host import usable_cpus
from tasks.registry.config import HostChoiceConfig, StoreConfig, validate_name

TOKEN_ENV = "LEPTON_SERVE_TOKEN"


class BatchingConfig(BaseModel):
    """Dynamic batching: concurrent requests' rows run as one model call.

    A lone request never waits: the server holds a batch open (up to ``max_queue_delay_ms``)
    only while other requests are already being received.
    """

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(32, ge=1, le=1024, description="Most rows in one model call; 1 turns batching off")
    max_queue_delay_ms: float = Field(2.0, ge=0, le=1000, description="Longest a batch waits for more rows")


class LimitsConfig(BaseModel):
    """What one request may carry; beyond it the answer is 413 or 422, never a crash."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=1024**3, description="Largest request body")
    max_image_pixels: int = Field(
        16_000_000, ge=1, le=500_000_000, description="Largest image (width x height), checked before decoding"
    )
    max_rows: int = Field(256, ge=1, le=65_536, description="Most images or tensor rows in one request")


class RequestLogConfig(BaseModel):
    """Served requests logged as the monitoring rows batch scoring writes (whole Parquet objects)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    flush_rows: int = Field(2000, ge=1, le=1_000_000, description="Write an object once this many rows wait")
    flush_seconds: float = Field(60.0, gt=0, le=86_400, description="... or once the oldest waiting row is this old")
    max_pending_rows: int = Field(
        100_000, ge=1, le=10_000_000, description="Rows kept while the store is unreachable; beyond, they are dropped and counted"
    )
    max_pending_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, le=64 * 1024**3, description="... and at most this many bytes of them (inputs held in memory)"
    )
    shutdown_seconds: float = Field(10.0, ge=0, le=600, description="Longest the last write at shutdown may take")


class ServeConfig(BaseModel):
    """The model server: the ``production`` alias of ``model_name`` in ``store``, on ``host:port``."""

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field("digits-classifier", description="Registry name of the model to serve")
    store: StoreConfig = Field(default_factory=StoreConfig)
    work_dir: Path = Field(Path(".lepton/serve"), description="Verified downloads of served versions and their cache")
    host: str = Field("127.0.0.1", description="Interface to bind; anything but loopback needs a token")
    port: int = Field(8080, ge=0, le=65_535, description="TCP port (0: any free port)")
    poll_seconds: float = Field(5.0, gt=0, le=3600, description="How often the production alias is read")
    threads: int | None = Field(
        None, ge=1, le=256, description="Intra-op threads of the runtime; None: one less than this process's CPUs (the event loop keeps one)"
    )
    drain_seconds: float = Field(30.0, ge=0, le=600, description="Longest a shutdown or swap waits for in-flight requests")
    allow_unauthenticated: bool = Field(
        False, description=f"Serve a non-loopback interface without {TOKEN_ENV} (behind an authenticating proxy only)"
    )
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    variant_choice: HostChoiceConfig = Field(
        default_factory=HostChoiceConfig, description="Which released variant is served: the candidates timed on this host"
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    request_log: RequestLogConfig = Field(default_factory=RequestLogConfig)

    @field_validator("model_name")
    @classmethod
    def _model_name(cls, value: str) -> str:
        return validate_name("model_name", value)

    @property
    def runtime_threads(self) -> int:
        """The runtime's threads: ``threads``, or every CPU this process may use but one, left to the event loop.

        Measured with benchmarks/serving.py on 2 CPUs: one runtime thread served more requests at every
        concurrency than two (the runtime's default), and answered sooner at concurrency 1 (README).
        """
        if self.threads is not None:
            return self.threads
        return max(1, usable_cpus() - 1)

    @property
    def loopback(self) -> bool:
        """Whether the server is reachable from this machine only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class InsecureBinding(ValueError):
    """A non-loopback interface without a token: anyone on the network could call the model."""


def resolve_token(config: ServeConfig, environ: dict[str, str]) -> str | None:
    """The bearer token requests must carry, from ``LEPTON_SERVE_TOKEN``; None turns auth off.

    Raises:
        InsecureBinding: no token while binding a non-loopback interface, unless ``allow_unauthenticated``.
    """
    token = environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < 16:
        raise InsecureBinding(f"{TOKEN_ENV} is {len(token)} characters long; use at least 16 (e.g. `openssl rand -hex 24`)")
    if token is None and not config.loopback and not config.allow_unauthenticated:
        raise InsecureBinding(
            f"host {config.host} is reachable from other machines and {TOKEN_ENV} is not set: set it, bind 127.0.0.1, "
            "or pass --allow-unauthenticated behind an authenticating proxy"
        )
    return token
