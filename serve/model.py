"""One served version: its verified files, its runtime session, its batcher, and the requests using it.

A version is loaded beside the one serving, warmed up, and only then swapped in; the old one
drains (every request that holds it finishes) before its session is closed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serve.batching import DynamicBatcher
from serve.config import ServeConfig
from tasks.data.contract import InputContract
from tasks.errors import LeptonError
from tasks.export.backends import Backend, NoEmbeddingOutput
from tasks.registry.hostchoice import HostCannotServe
from tasks.registry.manifest import ReleaseManifest
from tasks.registry.release import read_manifest
from tasks.registry.serving import fetch_release
from tasks.registry.store import ArtifactStore
from tasks.score.features import Projection, load_projection

# Runtimes the server may open: exported graphs only, never a training framework.
SERVABLE_RUNTIMES = ("onnxruntime", "openvino")


class VersionRefused(LeptonError):
    """A version that cannot be served (not servable, or its outputs do not match its manifest)."""


@dataclass
class LoadedVersion:
    """A release's served variant, open and warmed up, with what its monitoring rows need."""

    model: str
    version: str
    manifest: ReleaseManifest
    backend: Backend
    projection: Projection | None  # None: no monitoring rows (the release predates monitoring)
    release_dir: Path
    variant: str  # the released variant this host serves (timed here against the release's other candidates)
    variant_reason: str

    @property
    def contract(self) -> InputContract:
        return self.manifest.input

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    @property
    def runtime(self) -> str:
        return self.manifest.variant(self.variant).runtime

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits and (when monitored) embeddings of a float32 batch; called on the model's thread."""
        if self.projection is None:
            return self.backend.predict(batch), None
        return self.backend.embed(batch)


def load_version(store: ArtifactStore, config: ServeConfig, version: str) -> LoadedVersion:
    """Download (sha256-verified, through the registry's one path), choose the variant, open and warm it up.

    With ``config.variant_choice.measure`` the release's in-budget candidates are timed on this host at the
    batch the release's objective names (1 for ``latency_b1``, ``max_batch_size`` for ``latency_bn``)
    and the fastest is served; otherwise the build's choice. The warm-up runs a batch of one and a
    full batch and checks the outputs against the manifest, so a version that cannot answer is
    refused before it is swapped in.

    Raises:
        VersionRefused: no candidate in a servable runtime runs here, or outputs that do not fit the manifest.
        ObjectNotFound, IntegrityError: the version is incomplete or a file differs from its manifest.
    """
    manifest = read_manifest(store, config.model_name, version)
    fetched = fetch_release(
        store, config.model_name, version, config.work_dir, manifest=manifest, candidates=config.variant_choice.measure
    )
    batch_size = config.batching.max_batch_size if manifest.policy.objective == "latency_bn" else 1
    try:
        # spin=False: the event loop needs the cores between calls.
        choice, backend = fetched.open_here(
            config.variant_choice, batch_size, SERVABLE_RUNTIMES, threads=config.runtime_threads, spin=False
        )
    except HostCannotServe as exc:
        raise VersionRefused(str(exc)) from None
    variant, reason = choice.variant, choice.reason
    monitoring = manifest.monitoring_of(variant)
    projection = load_projection(fetched.release_dir / monitoring.projection) if monitoring else None
    loaded = LoadedVersion(config.model_name, version, manifest, backend, projection, fetched.release_dir, variant, reason)
    for rows in sorted({1, config.batching.max_batch_size}):
        batch = np.zeros((rows, *manifest.input.shape), dtype=np.float32)
        try:
            logits, embedding = loaded.run(batch)
        except NoEmbeddingOutput:
            loaded.projection = None  # served, but its requests cannot be monitored
            logits, embedding = loaded.run(batch)
        if logits.shape != (rows, len(manifest.classes)) or not np.isfinite(logits).all():
            raise VersionRefused(
                f"{config.model_name} {version}: warm-up gave logits of shape {logits.shape}"
                f"{'' if np.isfinite(logits).all() else ' with NaN/inf'}; the manifest lists {len(manifest.classes)} classes"
            )
    return loaded


class ServedModel:
    """A loaded version in service: its batcher and a count of the requests holding it."""

    def __init__(self, loaded: LoadedVersion, config: ServeConfig, arriving, on_batch) -> None:  # noqa: ANN001
        self.loaded = loaded
        self.version = loaded.version
        self.batcher = DynamicBatcher(
            loaded.run,
            max_batch_size=config.batching.max_batch_size,
            max_queue_delay=config.batching.max_queue_delay_ms / 1000.0,
            arriving=arriving,
            on_batch=on_batch,
        )
        self.holders = 0
        self._released = asyncio.Event()
        self._released.set()

    def hold(self) -> None:
        """Count a request using this version (synchronously, so a swap cannot slip in between)."""
        self.holders += 1
        self._released.clear()

    def release(self) -> None:
        self.holders -= 1
        if self.holders == 0:
            self._released.set()

    async def drain(self, timeout: float) -> bool:
        """Wait for every request holding this version, then stop its batcher; False if time ran out first."""
        drained = True
        if self.holders:
            try:
                await asyncio.wait_for(self._released.wait(), timeout)
            except TimeoutError:
                drained = False
        await self.batcher.stop()
        return drained
