"""Which released variant a host serves: the release's candidates, timed on this host, the fastest wins.

The build times every variant on the build machine, but which runtime and precision is fastest
depends on the CPU: INT8 gains with VNNI, bf16 needs AVX-512 BF16 or AMX, and ONNX Runtime and
OpenVINO rank differently per ISA. So a scoring or serving host times the release's candidates
(all within the accuracy budget, each with its own monitoring reference) at the batch size it
will run, for a few seconds, and serves the fastest. A candidate in a runtime the host does not
serve is never chosen; a bf16 variant on a CPU without native bf16 (OpenVINO would compute it in
f32) only when nothing else runs.
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
from tasks.export.openvino import bf16_unsupported, cpu_capabilities
from tasks.registry.manifest import ReleaseManifest, ReleasedVariant

# An alternative replaces the build's choice only when it is this much faster here. Two sessions of
# one and the same graph, timed for 0.3 s in this way on a 2-core EPYC, came out up to 14 % apart
# (0.92-1.14, 24 runs): a swap for less would be a coin toss.
MIN_GAIN = 0.15
MIN_ROUNDS = 3
MAX_ROUNDS = 100
BLOCK = 2  # timed calls per candidate and round, after one untimed


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


def cannot_run_here(variant: ReleasedVariant, runtimes: Sequence[str]) -> str | None:
    """Why this host cannot serve ``variant`` at all (None: it can)."""
    if variant.runtime not in runtimes:
        return f"{variant.runtime} is not a runtime this host serves ({', '.join(runtimes)})"
    return None


def slow_here(variant: ReleasedVariant, capabilities: Sequence[str] | None = None) -> str | None:
    """Why ``variant`` runs here only as a last resort (None: it runs as measured).

    A bf16 variant on a CPU without native bf16 is computed in f32 by OpenVINO: it answers, but
    is no faster than its FP32 twin and is not what was measured. ``capabilities`` are OpenVINO's
    CPU optimization capabilities (None: this CPU's).
    """
    if variant.precision == "bf16" and bf16_unsupported(capabilities) is not None:
        found = ", ".join(capabilities if capabilities is not None else cpu_capabilities()) or "none"
        return f"no native bf16 here (OpenVINO CPU capabilities: {found}); served only when nothing else runs"
    return None


def builds_choice(
    manifest: ReleaseManifest, open_variant: Callable[[str], Backend], batch_size: int, runtimes: Sequence[str]
) -> tuple[HostChoice, Backend]:
    """The build's choice, untimed (host timing is off), opened.

    Raises:
        HostCannotServe: its runtime is not one this host serves.
    """
    served = manifest.variant(manifest.served.name)
    why = cannot_run_here(served, runtimes)
    if why:
        raise HostCannotServe(f"{manifest.model} {manifest.version} serves {served.name}, which this host cannot: {why}")
    choice = HostChoice(
        variant=served.name, reason=f"{served.name}: the build's choice (host timing is off)", batch_size=batch_size,
        host=measuring_host(), timings=[], measured_at=datetime.now(timezone.utc),
    )
    return choice, open_variant(served.name)


def _build_p50(variant: ReleasedVariant, batch_size: int) -> float:
    return variant.p50_ms_b1 if batch_size == 1 else variant.p50_ms_bn


def _first_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"


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

    Candidates are timed in interleaved rounds (each round: per candidate one untimed call, then
    two timed; two warm-up calls first) so a change in the machine's load or clock hits all of
    them alike; rounds go on until
    ``seconds`` have passed, at least three (so ``seconds`` is a target: three rounds of the
    slowest candidate can take longer). The build's choice stays unless another candidate is at
    least 5 % faster here. A candidate that fails to open or to run here is noted and passed
    over. A release whose objective is size, or with one usable candidate, is served untimed.

    Raises:
        HostCannotServe: no candidate can run on this host.
    """
    host = measuring_host()
    served = manifest.served.name
    candidates = manifest.host_candidates()
    timings = {v.name: HostTiming(variant=v.name, runtime=v.runtime, precision=v.precision, build_p50_ms=_build_p50(v, batch_size))
               for v in candidates}

    def refusal(what: str) -> HostCannotServe:
        return HostCannotServe(
            f"no variant of {manifest.model} {manifest.version} {what} on this host: "
            + "; ".join(f"{t.variant}: {t.note}" for t in timings.values())
        )

    def chosen(variant: str, reason: str, backend: Backend) -> tuple[HostChoice, Backend]:
        choice = HostChoice(
            variant=variant, reason=reason, batch_size=batch_size, host=host, timings=list(timings.values()),
            measured_at=datetime.now(timezone.utc),
        )
        return choice, backend

    for variant in candidates:
        timings[variant.name].note = cannot_run_here(variant, runtimes) or ""
    runnable = [v for v in candidates if not timings[v.name].note]
    if not runnable:
        raise refusal("can run")
    last_resort = {v.name: why for v in runnable if (why := slow_here(v, capabilities))}
    usable = [v.name for v in runnable if v.name not in last_resort] or [v.name for v in runnable]
    for name, why in last_resort.items():
        if name not in usable:
            timings[name].note = why
    fallback = f" ({last_resort[usable[0]]})" if usable[0] in last_resort else ""
    if manifest.policy.objective == "size" or len(usable) == 1:
        if manifest.policy.objective == "size":
            why = "the release's objective is size, the same on every host"
        else:
            why = "the only candidate this host can run" if len(candidates) > 1 else "the release offers no alternative"
        reason = f"{usable[0]}: {why}{fallback} (the build chose {served}: {manifest.served.reason})"
        return chosen(usable[0], reason, open_variant(usable[0]))

    batch = np.random.default_rng(seed).standard_normal((batch_size, *manifest.input.shape)).astype(np.float32)
    backends: dict[str, Backend] = {}
    for name in usable:
        try:
            backend = open_variant(name)
            for _ in range(2):
                backend.predict(batch)
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot open or run here is noted and passed over
            timings[name].note = f"could not run here: {_first_line(exc)}"
        else:
            backends[name] = backend
    if not backends:
        raise refusal("opens and runs")
    times: dict[str, list[float]] = {name: [] for name in backends}
    start = time.perf_counter()
    for round_ in range(MAX_ROUNDS):
        if round_ >= MIN_ROUNDS and time.perf_counter() - start >= seconds:
            break
        for name, backend in backends.items():
            # The first call after another candidate's pays for its threads still spinning and its
            # weights leaving the caches: a steady server or scorer never pays that, so it is not timed.
            backend.predict(batch)
            for _ in range(BLOCK):
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
            else f"the build's choice {served}, not timed here ({timings[served].note})"
        )
        reason = f"{fastest}: fastest here, p50 {timings[fastest].p50_ms:.3f} ms vs {versus}; {where}{fallback if fastest in last_resort else ''}"
    chosen_backend = backends.pop(fastest)
    backends.clear()  # the others' sessions are freed with their last reference
    return chosen(fastest, reason, chosen_backend)
