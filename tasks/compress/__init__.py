"""Compression stage: distillation, structured pruning and INT8 post-training quantization."""

from tasks.compress.config import CompressConfig, QuantizeConfig

__all__ = ["CompressConfig", "QuantizeConfig"]
