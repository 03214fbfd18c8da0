"""Which released variant a host serves: the release's candidates, timed on this host, the fastest wins.

The build times every variant on the build machine, but which runtime and precision is fastest
depends on the CPU: INT8 gains with VNNI, bf16 needs AVX-512 BF16 or AMX, and ONNX Runtime and
OpenVINO rank differently per ISA. So a scoring or serving host times the release's candidates
(all within the accuracy budget, each with its own monitoring reference) at the batch size it
will run, for a bounded time, and serves the fastest. A candidate this host cannot run (a bf16
variant without native bf16, a runtime it does not serve) is never chosen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import numpy as np
from pydantic import BaseModel

from tasks.errors import LeptonError
from tasks.export.backends import Backend
from tasks.export.measure import Host, measuring_host
from tasks.export.openvino import bf16_unsupported
from tasks.registry.manifest import ReleaseManifest, ReleasedVariant

# An alternative replaces the build's choice only when it is this much faster here: a few seconds of
# timing on a shared machine scatter by a few percent, and a swap for less is a coin toss.
MIN_GAIN = 0.05
MIN_ROUNDS = 3
MAX_ROUNDS = 200


class HostCannotServe(LeptonError):
    """No candidate variant of a release can run on this host."""


class HostTiming(BaseModel):
    """One candidate as timed on this host (``p50_ms`` None: not run here, ``note`` says why)."""

    variant: str
    runtime: str
    precision: str
    build_p50_ms: float
    p50_ms: float | None = None
    calls: int = 0
    note: str = ""


class HostChoice(BaseModel):
    """The variant this host serves, why, and every candidate's timing here."""

    variant: str
    reason: str
    batch_size: int
    host: Host
    timings: list[HostTiming]
    measured_at: datetime

    def table(self) -> list[dict[str, object]]:
        """One row per candidate: the artifact and log table."""
        return [
            {
                "variant": t.variant,
                "chosen": "yes" if t.variant == self.variant else "",
                f"p50 ms here (batch {self.batch_size})": None if t.p50_ms is None else round(t.p50_ms, 4),
                "p50 ms at build": round(t.build_p50_ms, 4),
                "timed calls": t.calls,
                "note": t.note,
            }
            for t in self.timings
        ]


def cannot_run_here(variant: ReleasedVariant, runtimes: Sequence[str], capabilities: Sequence[str] | None = None) -> str | None:
    """Why this host cannot serve ``variant`` (None: it can).

    ``capabilities`` are OpenVINO's CPU optimization capabilities (None: this CPU's).
    """
    if variant.runtime not in runtimes:
        return f"{variant.runtime} is not a runtime this host serves ({', '.join(runtimes)})"
    if variant.precision == "bf16":
        return bf16_unsupported(capabilities)
    return None


def _build_p50(variant: ReleasedVariant, batch_size: int) -> float:
    return variant.p50_ms_b1 if batch_size == 1 else variant.p50_ms_bn


def choose_on_host(
    manifest: ReleaseManifest,
    open_variant: Callable[[str], Backend],
    batch_size: int,
    seconds: float,
    runtimes: Sequence[str],
    capabilities: Sequence[str] | None = None,
    seed: int = 0,
) -> tuple[HostChoice, Backend]:
    """Time the release's host candidates here at ``batch_size`` and open the fastest.

    Candidates are timed in interleaved rounds (one call each per round, after two warm-up calls)
    so a change in the machine's load or clock hits all of them alike; rounds go on until
    ``seconds`` have passed (at least three). The build's choice stays unless another candidate
    is at least 5 % faster here. A release whose objective is size, or with no alternatives, is
    served as the build chose, untimed.

    Raises:
        HostCannotServe: no candidate can run on this host.
    """
    host = measuring_host()
    served = manifest.served.name
    timings = {v.name: HostTiming(variant=v.name, runtime=v.runtime, precision=v.precision, build_p50_ms=_build_p50(v, batch_size))
               for v in manifest.host_candidates()}
    for variant in manifest.host_candidates():
        timings[variant.name].note = cannot_run_here(variant, runtimes, capabilities) or ""
    runnable = [name for name, t in timings.items() if not t.note]

    def chosen(variant: str, reason: str, backend: Backend) -> tuple[HostChoice, Backend]:
        choice = HostChoice(
            variant=variant, reason=reason, batch_size=batch_size, host=host, timings=list(timings.values()),
            measured_at=datetime.now(timezone.utc),
        )
        return choice, backend

    if not runnable:
        raise HostCannotServe(
            f"no variant of {manifest.model} {manifest.version} can run on this host: "
            + "; ".join(f"{t.variant}: {t.note}" for t in timings.values())
        )
    if manifest.policy.objective == "size" or len(runnable) == 1:
        why = (
            "the release's objective is size, the same on every host"
            if manifest.policy.objective == "size"
            else "the only candidate this host can run" if len(timings) > 1 else "the release offers no alternative"
        )
        return chosen(runnable[0], f"{runnable[0]}: {why} (the build chose {served}: {manifest.served.reason})", open_variant(runnable[0]))

    backends: dict[str, Backend] = {}
    for name in runnable:
        try:
            backends[name] = open_variant(name)
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot open here is noted and passed over
            timings[name].note = f"could not open here: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    if not backends:
        raise HostCannotServe(
            f"no variant of {manifest.model} {manifest.version} opens on this host: "
            + "; ".join(f"{t.variant}: {t.note}" for t in timings.values())
        )
    batch = np.random.default_rng(seed).standard_normal((batch_size, *manifest.input.shape)).astype(np.float32)
    for backend in backends.values():
        for _ in range(2):
            backend.predict(batch)
    times: dict[str, list[float]] = {name: [] for name in backends}
    start = time.perf_counter()
    for round_ in range(MAX_ROUNDS):
        if round_ >= MIN_ROUNDS and time.perf_counter() - start >= seconds:
            break
        for name, backend in backends.items():
            t0 = time.perf_counter()
            backend.predict(batch)
            times[name].append((time.perf_counter() - t0) * 1000.0)
    for name, measured in times.items():
        timings[name].p50_ms, timings[name].calls = float(np.median(measured)), len(measured)
    fastest = min(times, key=lambda name: timings[name].p50_ms)
    spent = time.perf_counter() - start
    where = f"batch {batch_size}, {len(backends)} candidates timed for {spent:.1f} s on {host.cpu} ({', '.join(host.flags) or 'no AVX2'})"
    if served in backends and fastest != served and timings[fastest].p50_ms > timings[served].p50_ms * (1 - MIN_GAIN):
        fastest_line = f"{fastest} is within {MIN_GAIN:.0%} ({timings[fastest].p50_ms:.3f} ms)"
        reason = f"{served}: the build's choice, p50 {timings[served].p50_ms:.3f} ms here; {fastest_line}, so no swap; {where}"
        fastest = served
    elif fastest == served:
        reason = f"{served}: the build's choice is also the fastest here, p50 {timings[served].p50_ms:.3f} ms; {where}"
    else:
        versus = (
            f"{timings[served].p50_ms:.3f} ms for {served}, the build's choice"
            if served in backends
            else f"the build's choice {served} cannot run here ({timings[served].note})"
        )
        reason = f"{fastest}: fastest here, p50 {timings[fastest].p50_ms:.3f} ms vs {versus}; {where}"
    chosen_backend = backends.pop(fastest)
    backends.clear()  # the others' sessions are freed with their last reference
    return chosen(fastest, reason, chosen_backend)
