"""Health detection, pure: arrivals in, state transitions out, time as a parameter.

No asyncio, sockets, Textual or clock calls live here, so every rule is tested with
plain numbers (websockets' sans-I/O design, applied to failure detection). The hub and
the monitor run this same code, so the hub's pool of available workers and what the
monitor shows cannot disagree.

States (DESIGN.md): ``healthy``; ``late`` (silent past the late threshold); ``starved``
(silent past the starvation threshold while there is evidence of life: the connection
is open, or the local pid is alive and burning CPU); ``busy`` (beats on time, main loop
blocked past the busy threshold: only isolated agents can say so); ``dead`` (connection
closed, process gone, or silent past ``dead_after`` with no evidence of life). A worker
with evidence of life is never declared dead for silence alone: that is the incident
heartmon exists to prevent. Only a new hello brings a worker back from ``dead``.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

State = Literal["healthy", "late", "starved", "busy", "dead"]
STATES: tuple[State, ...] = ("dead", "starved", "late", "busy", "healthy")
"""Every state, for counting; the monitor's sort order is its own (heartmon.tui.model)."""
AVAILABLE: frozenset[State] = frozenset({"healthy", "busy"})
SILENT: frozenset[State] = frozenset({"late", "starved"})
_LN10 = math.log(10)


class PhiSettings(BaseModel):
    """Akka's phi-accrual detector. Akka uses threshold 8, acceptable pause 3 s and a
    100 ms minimum deviation for 1 s heartbeats across a network; heartmon's workers
    beat faster on one machine, so the pause defaults to 0."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    threshold: float = Field(8.0, gt=0, description="phi at which a silent worker is suspected (starved or dead)")
    late_threshold: float = Field(1.0, gt=0, description="phi at which a silent worker is late")
    acceptable_pause_s: float = Field(0.0, ge=0, description="added to the mean gap before phi is computed")
    min_std_dev_ms: float = Field(100.0, gt=0, description="floor of the gaps' standard deviation")
    sample_window: int = Field(1000, ge=2, le=100_000, description="gaps kept per worker")


class Thresholds(BaseModel):
    """When silence becomes late, starved or dead, in multiples of each worker's interval."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rule: Literal["fixed", "phi"] = Field("fixed", description="'fixed' multiples of the interval, or 'phi' accrual")
    late_after: float = Field(2.0, gt=0, description="silent this many intervals: late (fixed rule)")
    starved_after: float = Field(5.0, gt=0, description="silent this many intervals: starved, or late with no evidence of life")
    dead_after: float = Field(10.0, gt=0, description="silent this many intervals with no evidence of life: dead")
    busy_after: float = Field(2.0, gt=0, description="main loop blocked this many intervals while beats arrive: busy")
    phi: PhiSettings = PhiSettings()

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if not self.late_after <= self.starved_after <= self.dead_after:
            raise ValueError("thresholds must satisfy late_after <= starved_after <= dead_after")
        if self.phi.late_threshold > self.phi.threshold:
            raise ValueError("phi.late_threshold must not exceed phi.threshold")
        return self


class Gaps:
    """The last N gaps between beats in a fixed array, with running sums: O(1) per beat
    and bounded memory whatever the run's length."""

    __slots__ = ("_values", "_next", "count", "_sum", "_sumsq", "max")

    def __init__(self, capacity: int) -> None:
        self._values = array("d", bytes(8 * capacity))
        self._next = 0
        self.count = 0
        self._sum = 0.0
        self._sumsq = 0.0
        self.max = 0.0

    def push(self, gap: float) -> None:
        values = self._values
        index = self._next
        if self.count == len(values):
            old = values[index]
            self._sum -= old
            self._sumsq -= old * old
        else:
            self.count += 1
        values[index] = gap
        self._next = index + 1 if index + 1 < len(values) else 0
        self._sum += gap
        self._sumsq += gap * gap
        if gap > self.max:
            self.max = gap
        if self._next == 0:  # running sums drift; refresh them once per lap
            self._sum, self._sumsq = math.fsum(values), math.fsum(g * g for g in values)

    def recent(self) -> list[float]:
        """Oldest first."""
        if self.count < len(self._values):
            return list(self._values[: self.count])
        return list(self._values[self._next :]) + list(self._values[: self._next])

    def last(self, n: int) -> list[float]:
        """The newest `n` gaps, oldest first, without copying the whole window."""
        n = min(n, self.count)
        if n <= self._next:
            return list(self._values[self._next - n : self._next])
        return list(self._values[len(self._values) - (n - self._next) :]) + list(self._values[: self._next])

    @property
    def mean(self) -> float:
        return self._sum / self.count if self.count else 0.0

    @property
    def std(self) -> float:
        if self.count < 2:
            return 0.0
        return math.sqrt(max(0.0, self._sumsq / self.count - self.mean**2))

    def percentile(self, q: float) -> float:
        values = sorted(self.recent())
        if not values:
            return 0.0
        return values[min(len(values) - 1, int(q * len(values)))]


def phi(silence_s: float, mean_s: float, std_s: float) -> float:
    """Akka's phi: -log10 of the chance that a beat still comes after this silence,
    with the logistic approximation of the normal CDF, computed without overflow."""
    y = (silence_s - mean_s) / std_s
    k = -y * (1.5976 + 0.070566 * y * y)  # the CDF's tail is exp(k) / (1 + exp(k))
    if y > 0:
        return (-k + math.log1p(math.exp(k))) / _LN10
    return math.log1p(math.exp(-k)) / _LN10


@dataclass(frozen=True)
class Episode:
    """A silence that ended: from the last beat before it to the beat that ended it."""

    started_at: float
    length_s: float
    missed: int
    probe: str | None
    main_blocked_ms: float | None


@dataclass(frozen=True)
class Transition:
    at: float
    worker: str
    from_state: State
    to_state: State
    reason: str
    episode: Episode | None = None
    """Set when a late or starved worker speaks again: a recovery."""


@dataclass
class Tracker:
    """One worker's health, from its arrivals, its connection and evidence of life."""

    name: str
    interval_s: float
    thresholds: Thresholds
    joined_at: float
    isolation: str | None = None
    pid: int | None = None
    host: str | None = None
    connected: bool | None = None
    """Open connection (True), closed (False), or not known to this source (None)."""
    cpu_busy: bool | None = None
    """Local workers only: the pid exists and is burning CPU."""
    state: State = "healthy"
    last_beat_at: float | None = None
    seq: int | None = None
    main_blocked_ms: float | None = None
    loop_lag_ms: float | None = None
    latency_ms: float | None = None
    probe: str | None = None
    beats: int = 0
    missed: int = 0
    episodes: int = 0
    gaps: Gaps = field(init=False)

    def __post_init__(self) -> None:
        self.gaps = Gaps(self.thresholds.phi.sample_window)

    # --- what happened ----------------------------------------------------------

    def hello(self, now: float, interval_s: float, connected: bool | None,
              heard_at: float | None = None, seq: int | None = None) -> list[Transition]:
        """A (re)join: the only way out of ``dead``. ``heard_at`` and ``seq``: its last
        beat, when a hub's snapshot says so."""
        self.interval_s, self.connected = interval_s, connected
        if self.state != "dead":
            return []
        self.joined_at, self.last_beat_at, self.seq = (now if heard_at is None else heard_at), None, seq
        return self._move(now, "healthy", "joined again")

    def beat(self, now: float, seq: int | None = None, main_blocked_ms: float | None = None,
             loop_lag_ms: float | None = None, latency_ms: float | None = None) -> list[Transition]:
        state = self.state
        if state == "dead":
            return []  # a beat in flight when the connection closed; only a hello revives
        last = self.last_beat_at
        gap = now - (last if last is not None else self.joined_at)
        if last is not None:
            self.gaps.push(gap)
        missed = seq - self.seq - 1 if seq is not None and self.seq is not None and seq > self.seq + 1 else 0
        self.missed += missed
        self.last_beat_at, self.seq, self.beats = now, seq, self.beats + 1
        self.main_blocked_ms, self.loop_lag_ms, self.latency_ms = main_blocked_ms, loop_lag_ms, latency_ms
        blocked = main_blocked_ms is not None and main_blocked_ms >= self.thresholds.busy_after * self.interval_s * 1000
        if state in SILENT:
            self.episodes += 1
            episode = Episode(now - gap, gap, missed, self.probe, main_blocked_ms)
            after = "busy" if blocked else "healthy"
            return self._move(now, after, f"beat after {gap * 1000:.0f} ms", episode)
        if blocked and state != "busy":
            return self._move(now, "busy", f"main loop blocked for {main_blocked_ms:.0f} ms")
        if not blocked and state == "busy":
            return self._move(now, "healthy", "main loop free again")
        return []

    def disconnected(self, now: float, reason: str) -> list[Transition]:
        self.connected = False
        return self._move(now, "dead", reason)

    def evidence(self, now: float, alive: bool, cpu_busy: bool) -> list[Transition]:
        """A local pid's reading. An open connection outranks it: a pid that looks gone
        (another pid namespace under the same hostname) does not kill a connected worker."""
        self.cpu_busy = alive and cpu_busy
        return [] if alive or self.connected else self._move(now, "dead", "process gone")

    # --- what it means ----------------------------------------------------------

    @property
    def has_evidence_of_life(self) -> bool:
        return bool(self.connected) or bool(self.cpu_busy)

    def silence(self, now: float) -> float:
        last = self.last_beat_at  # read once: another thread may be reviving the worker
        return now - (last if last is not None else self.joined_at)

    def suspicion(self, silence_s: float) -> tuple[bool, bool]:
        """(late, suspected) by the configured rule."""
        t = self.thresholds
        if t.rule == "phi" and self.gaps.count >= 2:
            p = t.phi
            value = phi(silence_s, self.gaps.mean + p.acceptable_pause_s, max(self.gaps.std, p.min_std_dev_ms / 1000))
            return value >= p.late_threshold, value >= p.threshold
        return silence_s >= t.late_after * self.interval_s, silence_s >= t.starved_after * self.interval_s

    def evaluate(self, now: float, excused_s: float = 0.0) -> list[Transition]:
        """Silence-driven transitions. ``excused_s`` is silence that was the monitor's
        own fault (it stalled), which no worker is blamed for."""
        if self.state == "dead":
            return []
        silence = max(0.0, self.silence(now) - excused_s)
        late, suspected = self.suspicion(silence)
        if suspected and self.has_evidence_of_life:
            return self._move(now, "starved", f"silent for {silence * 1000:.0f} ms, but alive ({self._alive_because()})")
        if not self.has_evidence_of_life and silence >= self.thresholds.dead_after * self.interval_s:
            return self._move(now, "dead", f"silent for {silence * 1000:.0f} ms with no evidence of life")
        if late or suspected:
            if self.state == "starved":
                return []  # evidence may flicker; starved stays until a beat or a death
            return self._move(now, "late", f"silent for {silence * 1000:.0f} ms")
        return []

    def _alive_because(self) -> str:
        return "connection open" if self.connected else "process burning CPU"

    def _move(self, now: float, to: State, reason: str, episode: Episode | None = None) -> list[Transition]:
        if to == self.state and episode is None:
            return []
        before, self.state = self.state, to
        return [Transition(now, self.name, before, to, reason, episode)]
