"""Compression stage: INT8 post-training quantization (distillation and pruning build on it)."""

from tasks.compress.config import QuantizeConfig

__all__ = ["QuantizeConfig"]
