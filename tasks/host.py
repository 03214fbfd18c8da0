"""This machine's CPU as /proc/cpuinfo describes it: shared by the stages that choose by instruction set."""

from __future__ import annotations

import os
import platform
import threading
import time
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


def exit_with_parent(parent: int | None = None, poll_seconds: float = 0.5) -> None:
    """End this process when ``parent`` (by default the process that started it) is gone (killed, even with
    SIGKILL), so that a worker never outlives its run: forked siblings hold each other's pipes open, so none
    would see its parent go. Given ``parent``, a process whose parent died before this call ends at once."""
    parent = os.getppid() if parent is None else parent

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
