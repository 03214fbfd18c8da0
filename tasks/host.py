"""This machine's CPU as /proc/cpuinfo describes it: shared by the stages that choose by instruction set."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# Instruction sets with native bfloat16 maths: without them bf16 is emulated, slower than f32.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_model_and_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, set[str]]:
    """The CPU's model name and its instruction-set flags (empty where /proc/cpuinfo is not there)."""
    model, flags = platform.processor() or platform.machine(), set()
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    return model, flags


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, as a container's cpuset limits it; macOS has none: all of them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
