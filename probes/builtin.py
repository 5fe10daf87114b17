"""The five built-in probes: one for each way a main thread can silence a heartbeat.

Each lasts the requested duration (within a few percent: those that can watch the
clock do, the others are calibrated on the machine they run on and fill the rest).
None of them sleeps to pretend: the load is real, and which isolation survives it
is decided by the interpreter, not by heartmon.
"""

from __future__ import annotations

import gc
import math
import re
import time
from functools import cache
from itertools import repeat, starmap

from heartmon.probes.base import Probe


class BusyPython(Probe):
    name = "busy-python"
    description = "A pure-Python loop: bytecode runs without a break for the whole duration."
    demonstrates = "Starves a heartbeat on the loop; a thread survives, since the GIL switches every 5 ms."

    def run(self, duration_s: float, **params: object) -> None:
        deadline = time.monotonic() + duration_s
        spins = 0
        while time.monotonic() < deadline:
            spins += 1


class GilHold(Probe):
    name = "gil-hold"
    description = "One long C call that never releases the GIL (like sum(range(n)))."
    demonstrates = "Starves the loop and every thread of the process; only a separate process survives."

    def run(self, duration_s: float, **params: object) -> None:
        # A single call of any() that runs entirely in C: it pulls clock readings
        # from starmap and compares them with the deadline, never executing a
        # bytecode, so the interpreter never gets the chance to hand over the GIL.
        deadline = time.monotonic() + duration_s
        any(map(deadline.__lt__, starmap(time.monotonic, repeat(()))))


_BACKTRACK = re.compile(r"(a|aa)+$")
_GROWTH = (1 + 5**0.5) / 2
"""Each extra 'a' multiplies the work by the golden ratio (the ways to split a run into
ones and twos are Fibonacci numbers): fine enough steps to hit a duration."""
_CALIBRATION_N = 22


@cache
def _backtrack_seconds_per_step() -> float:
    """Seconds per _GROWTH**n of the catastrophic pattern on this machine."""
    start = time.perf_counter()
    _BACKTRACK.match("a" * _CALIBRATION_N + "!")
    return (time.perf_counter() - start) / _GROWTH**_CALIBRATION_N


class RegexBacktrack(Probe):
    name = "regex-backtrack"
    description = "Catastrophic backtracking in re: (a|aa)+$ against 'aaa…a!'."
    demonstrates = "The re engine holds the GIL while it backtracks: a thread starves too; a process does not."

    def run(self, duration_s: float, **params: object) -> None:
        # Each match is sized to at most 80% of the time left (so at least half of
        # it: one step of the golden ratio below), and each one measured re-sizes the
        # next, so a machine that gets busier meanwhile does not make it overshoot.
        step = _backtrack_seconds_per_step()
        deadline = time.monotonic() + duration_s
        while (remaining := deadline - time.monotonic()) > 0.001:
            n = max(1, math.floor(math.log(max(0.8 * remaining / step, 1.0), _GROWTH)))
            start = time.perf_counter()
            _BACKTRACK.match("a" * n + "!")
            step = max(step, (time.perf_counter() - start) / _GROWTH**n) if n >= _CALIBRATION_N else step


class SyncSleep(Probe):
    name = "sync-sleep"
    description = "A blocking call that releases the GIL (time.sleep), like blocking I/O."
    demonstrates = "Starves a heartbeat on the loop; a thread survives, since the GIL is free."

    def run(self, duration_s: float, **params: object) -> None:
        time.sleep(duration_s)


_GC_CYCLE_MAX_S = 1.0
"""One collection at most this long, which bounds the heap a probe builds (~270 MB)."""
_GC_CALIBRATION_SHARE = 0.2
"""The first pass is sized, on a guess, to a fifth of the duration; what it measures
sizes the next pass, which fills the rest, so most of the time is one long pause."""
_GC_GUESS_S = 600e-9


def _collect_garbage(objects: int) -> float:
    """Build and collect `objects` of cyclic garbage; returns seconds per object."""
    start = time.perf_counter()
    was_enabled = gc.isenabled()
    gc.disable()  # no automatic passes while building: one pass, of a known size
    try:
        # A cycle of fresh containers built in C (no bytecode runs, so the GIL is
        # not handed over); then a full collection finds, clears and frees them
        # all while it holds the GIL.
        heap: list[object] = list(map(list, repeat((), objects)))
        heap.append(heap)
        del heap
        gc.collect()
    finally:
        if was_enabled:
            gc.enable()
    return (time.perf_counter() - start) / objects


class GcPause(Probe):
    name = "gc-pause"
    description = "Full garbage collections of a large heap of cyclic garbage."
    demonstrates = "The collector holds the GIL for a whole pass: a thread starves too; a process does not."

    def run(self, duration_s: float, **params: object) -> None:
        deadline = time.monotonic() + duration_s
        per_object = _collect_garbage(max(1_000, int(duration_s * _GC_CALIBRATION_SHARE / _GC_GUESS_S)))
        while (remaining := deadline - time.monotonic()) > 0.001:
            # Aim a little short: the cost per object grows with the heap's size.
            objects = max(1_000, int(min(remaining * 0.9, _GC_CYCLE_MAX_S) / per_object))
            per_object = _collect_garbage(objects)
