"""Registry stage: artifact store, releases, aliases and the gate."""

from tasks.registry.config import GateConfig, StoreConfig
from tasks.registry.release import Release

__all__ = ["GateConfig", "Release", "StoreConfig"]
