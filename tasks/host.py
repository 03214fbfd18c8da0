"""This machine's CPU as /proc/cpuinfo describes it: shared by the stages that choose by instruction set."""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


@contextmanager
def others_cpu_share(stat: Path = Path("/proc/stat")) -> Iterator[Callable[[], float | None]]:
    """How much of this machine's CPU time processes other than this one used during the block, 0 to 1 (a
    virtual machine's stolen time counts as theirs): call what it yields after the block. None where the
    machine does not say (no ``/proc/stat``)."""
    before, own_before = _cpu_seconds(stat), time.process_time()
    share: list[float | None] = [None]
    try:
        yield lambda: share[0]
    finally:
        after, own = _cpu_seconds(stat), time.process_time() - own_before
        if before is not None and after is not None and after[1] > before[1]:
            busy = after[0] - before[0]
            share[0] = min(1.0, max(0.0, (busy - own) / (after[1] - before[1])))


def _cpu_seconds(stat: Path) -> tuple[float, float] | None:
    """The machine's busy and total CPU seconds so far (every CPU), from the first line of ``/proc/stat``."""
    try:
        fields = [int(v) for v in stat.read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    ticks = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / ticks, sum(fields) / ticks
