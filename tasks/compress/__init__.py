"""Compression stage: distillation, structured pruning and INT8 post-training quantization."""
