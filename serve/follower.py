"""Follow the ``production`` alias: load a new version beside the serving one, swap atomically, drain the old.

A version that fails to download, verify, open or warm up is refused: the old one keeps serving,
the failure is logged and counted, and the version is tried again after a growing pause (the
store may have been briefly unreachable; a file that fails its sha256 fails again, quietly).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from serve.config import ServeConfig
from serve.model import LoadedVersion, ServedModel, load_version
from tasks.registry.aliases import read_alias
from tasks.registry.store import ArtifactStore

log = logging.getLogger("lepton.serve")

# Longest pause before a refused version is tried again.
MAX_RETRY_S = 600.0


@dataclass
class Refusal:
    reason: str
    attempts: int
    retry_at: float


class ModelHost:
    """The version in service and the loop that follows the alias.

    Args:
        arriving: requests being received (for the batcher's wait).
        on_batch, on_load_failure, on_swap: metric hooks.
    """

    def __init__(
        self,
        store: ArtifactStore,
        config: ServeConfig,
        arriving: Callable[[], int],
        on_batch: Callable[[int], None] = lambda rows: None,
        on_load_failure: Callable[[str, str], None] = lambda version, reason: None,
        on_swap: Callable[[LoadedVersion | None, LoadedVersion], None] = lambda old, new: None,
    ) -> None:
        self.store = store
        self.config = config
        self.current: ServedModel | None = None
        self.refused: dict[str, Refusal] = {}
        self.alias_version: str | None = None
        self._arriving = arriving
        self._on_batch = on_batch
        self._on_load_failure = on_load_failure
        self._on_swap = on_swap
        self._draining: set[asyncio.Task] = set()

    def acquire(self) -> ServedModel | None:
        """The serving version, held for one request (release it when the response is ready)."""
        model = self.current
        if model is not None:
            model.hold()
        return model

    async def follow(self) -> None:
        """Read the alias every ``poll_seconds`` and swap when it moves (runs until cancelled)."""
        waiting_said = False
        while True:
            try:
                alias, _ = await asyncio.to_thread(read_alias, self.store, self.config.model_name)
            except Exception as exc:  # noqa: BLE001 - the store is unreachable: keep serving, try again
                log.warning("cannot read the production alias of %s in %s: %s", self.config.model_name, self.store.uri, exc)
                await asyncio.sleep(self.config.poll_seconds)
                continue
            self.alias_version = alias.version if alias else None
            if alias is None and not waiting_said:
                log.warning(
                    "%s has no production release in %s yet; not ready until one is promoted (run `make demo`)",
                    self.config.model_name, self.store.uri,
                )
                waiting_said = True
            if alias is not None and (self.current is None or alias.version != self.current.version):
                await self._try_load(alias.version)
            await asyncio.sleep(self.config.poll_seconds)

    async def _try_load(self, version: str) -> None:
        refusal = self.refused.get(version)
        if refusal and time.monotonic() < refusal.retry_at:
            return
        log.info("loading %s %s beside %s", self.config.model_name, version, self.current.version if self.current else "nothing")
        try:
            loaded = await asyncio.to_thread(load_version, self.store, self.config, version)
        except Exception as exc:  # noqa: BLE001 - any failure to load refuses the version; the old one serves on
            attempts = refusal.attempts + 1 if refusal else 1
            pause = min(MAX_RETRY_S, self.config.poll_seconds * 2**attempts)
            reason = f"{type(exc).__name__}: {exc}"
            self.refused[version] = Refusal(reason, attempts, time.monotonic() + pause)
            self._on_load_failure(version, reason)
            serving = f"{self.current.version} keeps serving" if self.current else "nothing is served"
            log.warning("refused %s %s (%s); %s; next try in %.0f s", self.config.model_name, version, reason, serving, pause)
            return
        self.refused.pop(version, None)
        self.swap(loaded)

    def swap(self, loaded: LoadedVersion) -> None:
        """Put a warmed-up version in service; the old one drains in the background."""
        new = ServedModel(loaded, self.config, self._arriving, self._on_batch)
        new.batcher.start()
        old, self.current = self.current, new  # one assignment on the event loop: requests see old or new, never neither
        self._on_swap(old.loaded if old else None, new.loaded)
        log.info(
            "serving %s %s as %s%s; %s", self.config.model_name, new.version, loaded.variant,
            f" (was {old.version})" if old else "", loaded.variant_reason,
        )
        if old is not None:
            task = asyncio.get_running_loop().create_task(self._retire(old))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)

    async def _retire(self, old: ServedModel) -> None:
        if not await old.drain(self.config.drain_seconds):
            log.warning("%s %s still had %d requests after %.0f s of draining", old.loaded.model, old.version, old.holders,
                        self.config.drain_seconds)

    async def close(self) -> None:
        """Drain the serving version and any still draining."""
        if self.current is not None:
            await self.current.drain(self.config.drain_seconds)
        if self._draining:
            await asyncio.gather(*self._draining, return_exceptions=True)
