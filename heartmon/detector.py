"""Health detection, pure: arrivals in, state transitions out, time as a parameter.

No asyncio, sockets, Textual or clock calls live here, so every rule is tested with
plain numbers (websockets' sans-I/O design, applied to failure detection). The hub and
the monitor run this same code, so the hub's pool of available workers and what the
monitor shows cannot disagree.

States: ``healthy``; ``late`` (silent past the late threshold); ``starved`` (silent past
the starvation threshold while there is evidence of life: the connection is open, the
local pid is alive and burning CPU, or the worker's own system vouches for it, as RQ
does for a worker busy in a job and a TCP port does by accepting a connection);
``busy`` (beats on time, main loop blocked past the busy threshold: only isolated
agents can say so); ``dead`` (connection closed,
process gone, or silent past ``dead_after`` with no evidence of life); ``unknown`` (the
source that reports the worker is unreachable: nothing is known, nothing is judged). A
worker with evidence of life is never declared dead for silence alone: a busy worker
called dead is the false alarm heartmon exists to prevent. Only a new hello (or its
source's snapshot) brings a worker back from ``dead`` or ``unknown``.

Detection runs on deadlines, not ticks: each tracker says when its silence will cross
its next threshold (:meth:`Tracker.next_deadline`), so the caller can sleep until the
earliest one instead of scanning every worker on a fixed period.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from heartmon.backoff import RECONNECT_MAX_S
from heartmon.native import would_show
from heartmon.stacks import Stack

State = Literal["healthy", "late", "starved", "busy", "dead", "unknown"]
STATES: tuple[State, ...] = ("dead", "starved", "late", "busy", "healthy", "unknown")
"""Every state, for counting; the monitor's sort order is its own (heartmon.tui.model)."""
AVAILABLE: frozenset[State] = frozenset({"healthy", "busy"})
SILENT: frozenset[State] = frozenset({"late", "starved"})
_LN10 = math.log(10)


class PhiSettings(BaseModel):
    """Akka's phi-accrual detector. Akka uses threshold 8, acceptable pause 3 s and a
    100 ms minimum deviation for 1 s heartbeats across a network; heartmon's workers
    beat faster on one machine, so the pause defaults to 0."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    threshold: float = Field(8.0, gt=0, description="phi at which a silent worker is suspected (starved or dead)")
    late_threshold: float = Field(1.0, gt=0, description="phi at which a silent worker is late")
    acceptable_pause_s: float = Field(0.0, ge=0, description="added to the mean gap before phi is computed")
    min_std_dev_ms: float = Field(100.0, gt=0, description="floor of the gaps' standard deviation")
    sample_window: int = Field(500, ge=2, le=100_000,
                               description="gaps kept per worker (4 bytes each): phi's mean and deviation, p99")


class Thresholds(BaseModel):
    """When silence becomes late, starved or dead, in multiples of each worker's interval.

    Every number is finite (as in :class:`PhiSettings`): an infinite threshold is a
    state that can never be reached, so a typo would silently turn detection off."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    rule: Literal["fixed", "phi"] = Field("fixed", description="'fixed' multiples of the interval, or 'phi' accrual")
    late_after: float = Field(2.0, gt=0, description="silent this many intervals: late (fixed rule)")
    starved_after: float = Field(5.0, gt=0,
                                 description="silent this many intervals: starved, or late with no evidence of life")
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
    and bounded memory whatever the run's length. Gaps are kept as 32-bit floats (a
    microsecond's precision up to minutes), half the memory of doubles; the running
    sums stay doubles."""

    __slots__ = ("_values", "_next", "count", "_sum", "_sumsq", "max")

    def __init__(self, capacity: int) -> None:
        self._values = array("f", bytes(4 * capacity))
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
        gap = values[index]  # as stored, so that the running sums subtract what they added
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


def phi_silence(threshold: float, mean_s: float, std_s: float) -> float:
    """The silence at which :func:`phi` reaches ``threshold``: the inverse, in closed form.
    phi is -log10 of the tail ``exp(k) / (1 + exp(k))`` with ``k = -y (a + b y²)``, so the
    tail fixes ``k`` and ``y`` is the one real root of ``b y³ + a y + k = 0`` (Cardano)."""
    tail = 10.0 ** -threshold
    k = math.log(tail / (1.0 - tail)) if tail < 1.0 else math.inf
    p, q = 1.5976 / 0.070566, k / 0.070566  # y³ + p y + q = 0, p > 0: one real root
    root = math.sqrt(q * q / 4 + p**3 / 27)
    y = math.cbrt(-q / 2 + root) + math.cbrt(-q / 2 - root)
    return mean_s + y * std_s


def phi(silence_s: float, mean_s: float, std_s: float) -> float:
    """Akka's phi: -log10 of the chance that a beat still comes after this silence,
    with the logistic approximation of the normal CDF, computed without overflow."""
    y = (silence_s - mean_s) / std_s
    k = -y * (1.5976 + 0.070566 * y * y)  # the CDF's tail is exp(k) / (1 + exp(k))
    if y > 0:
        return (-k + math.log1p(math.exp(k))) / _LN10
    return math.log1p(math.exp(-k)) / _LN10


@dataclass(frozen=True, slots=True)
class Episode:
    """A silence that ended: from the last beat before it to the beat that ended it."""

    started_at: float
    length_s: float
    missed: int
    probe: str | None
    main_blocked_ms: float | None


@dataclass(frozen=True, slots=True)
class Transition:
    at: float
    worker: str
    from_state: State
    to_state: State
    reason: str
    episode: Episode | None = None
    """Set when a late or starved worker speaks again: a recovery."""
    source: str = ""
    """The source that reports the worker: two sources may each have a ``worker-1``."""
    silence_s: float | None = None
    """For a silence-driven move (late, starved, dead for silence): the silence that
    crossed the threshold, as judged; how late the judgement came is measured from it."""
    native: str | None = None
    """What the worker's own system would show at that moment, where it has a rule
    (``Celery/Flower would show: offline``)."""
    stack: Stack | None = None
    """Where the main thread is (or was) stuck in the block this move is part of."""
    blocked_s: float | None = None
    """For a move that ends a block (a recovery, a busy loop free again): its length."""


Key = tuple[str, str]
"""A worker is (source, name) everywhere: two hubs with a ``worker-1`` are two workers."""


@dataclass(slots=True, eq=False)
class Tracker:
    """One worker's health, from its arrivals, its connection and evidence of life."""

    name: str
    interval_s: float
    thresholds: Thresholds
    joined_at: float
    source: str = ""
    isolation: str | None = None
    pid: int | None = None
    host: str | None = None
    connected: bool | None = None
    """Open connection (True), closed (False), or not known to this source (None)."""
    cpu_busy: bool | None = None
    """Local workers only: the pid exists and is burning CPU."""
    vouched: str | None = None
    """Evidence of life its source saw, in words ("RQ says busy in a job"), or None."""
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
    back_by: float | None = field(default=None, init=False)
    """An unknown worker its source no longer lists: dead if it has not joined by then."""
    due: float | None = field(default=None, init=False)
    """The deadline this tracker is scheduled at in its fleet's heap, if any."""
    stack: Stack | None = field(default=None, init=False)
    """The newest stack heard of, from this block or an earlier one."""
    stack_note: str | None = field(default=None, init=False)
    """Why no stack could be taken (py-spy may not read the pid, say)."""
    blocked_since: float | None = field(default=None, init=False)
    """When the current block began (silence or busy main loop); None while healthy."""

    def __post_init__(self) -> None:
        self.gaps = Gaps(self.thresholds.phi.sample_window)

    @property
    def key(self) -> Key:
        return (self.source, self.name)

    # --- what happened ----------------------------------------------------------

    def hello(self, now: float, interval_s: float, connected: bool | None,
              heard_at: float | None = None, seq: int | None = None) -> list[Transition]:
        """A (re)join: the only way out of ``dead`` and ``unknown``. ``heard_at`` and
        ``seq``: its last beat, when a hub's snapshot says so."""
        self.interval_s, self.connected, self.back_by = interval_s, connected, None
        if self.state == "unknown":  # its hello (now) or its source's snapshot says when it was last heard
            self.last_beat_at = now if heard_at is None else heard_at
            self.seq = seq if seq is not None else self.seq
            return self._move(now, "healthy", "its source is back")
        if self.state != "dead":
            return []
        self.joined_at, self.last_beat_at, self.seq = (now if heard_at is None else heard_at), None, seq
        return self._move(now, "healthy", "joined again")

    def beat(self, now: float, seq: int | None = None, main_blocked_ms: float | None = None,
             loop_lag_ms: float | None = None, latency_ms: float | None = None) -> list[Transition]:
        state = self.state
        if state == "dead" or state == "unknown":
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
            after: State = "busy" if blocked else "healthy"
            # A block that goes on, busy, ends (and is counted) when the loop is free again.
            return self._move(now, after, f"beat after {gap * 1000:.0f} ms", episode,
                              blocked_s=gap if after == "healthy" else None)
        if blocked and state != "busy":
            self.blocked_since = now - main_blocked_ms / 1000  # type: ignore[operator]  # blocked: not None
            return self._move(now, "busy", f"main loop blocked for {main_blocked_ms:.0f} ms")
        if not blocked and state == "busy":
            since = self.blocked_since if self.blocked_since is not None else now
            return self._move(now, "healthy", "main loop free again", blocked_s=now - since)
        return []

    def disconnected(self, now: float, reason: str) -> list[Transition]:
        self.connected = False
        return self._move(now, "dead", reason)

    def source_lost(self, now: float, source: str) -> list[Transition]:
        """The source that reports this worker is unreachable: its silence says nothing
        about the worker, so it is neither late nor dead until the source is back."""
        self.connected = None
        if self.state == "dead":
            return []
        return self._move(now, "unknown", f"{source} unreachable: state not known")

    def missing(self, now: float) -> None:
        """Its source is back and does not list it. A restarted hub knows no worker until
        it reconnects, so absence is not yet evidence: it has the agents' longest
        reconnect backoff, then ``dead_after`` intervals as for any silence."""
        if self.state == "unknown" and self.back_by is None:
            self.back_by = now + RECONNECT_MAX_S + self.thresholds.dead_after * self.interval_s

    def stacked(self, stack: Stack) -> bool:
        """A stack of this worker's main thread arrived. True when it is the first one of
        a block already under way (the move that announced the block could not name it)."""
        first = self.blocked_since is not None and self.current_stack() is None
        if self.stack is None or stack.taken_at >= self.stack.taken_at or self.current_stack() is None:
            self.stack, self.stack_note = stack, None
        return first and self.state in ("starved", "busy")

    def current_stack(self) -> Stack | None:
        """The newest stack if it belongs to the block under way (it arrived after the
        block began, on the monitor's clock: the worker's clock is not trusted)."""
        stack, since = self.stack, self.blocked_since
        return stack if stack is not None and since is not None and stack.received_at >= since else None

    def vouch(self, because: str | None) -> None:
        """The source's own evidence of life, or its absence. A pid that is gone still
        outranks it (:meth:`evidence`): RQ lists a SIGKILLed worker as busy until its key expires."""
        self.vouched = because

    def evidence(self, now: float, alive: bool, cpu_busy: bool) -> list[Transition]:
        """A local pid's reading. An open connection outranks it: a pid that looks gone
        (another pid namespace under the same hostname) does not kill a connected worker."""
        self.cpu_busy = alive and cpu_busy
        return [] if alive or self.connected else self._move(now, "dead", "process gone")

    # --- what it means ----------------------------------------------------------

    @property
    def has_evidence_of_life(self) -> bool:
        return bool(self.connected) or bool(self.cpu_busy) or self.vouched is not None

    def silence(self, now: float) -> float:
        last = self.last_beat_at
        return now - (last if last is not None else self.joined_at)

    def _limits(self) -> tuple[float, float, float]:
        """(late, suspected, dead) as silences in seconds, by the configured rule."""
        t = self.thresholds
        dead = t.dead_after * self.interval_s
        if t.rule == "phi" and self.gaps.count >= 2:
            p = t.phi
            mean, std = self.gaps.mean + p.acceptable_pause_s, max(self.gaps.std, p.min_std_dev_ms / 1000)
            return phi_silence(p.late_threshold, mean, std), phi_silence(p.threshold, mean, std), dead
        return t.late_after * self.interval_s, t.starved_after * self.interval_s, dead

    def next_deadline(self, now: float, excused_s: float = 0.0) -> float | None:
        """When, with no beat before it, :meth:`evaluate` has something new to say: the
        first threshold the silence has not crossed yet, on this tracker's clock (shifted
        by silence excused as the monitor's own). None: nothing silence can change.
        :meth:`evaluate` compares with the same limits; one microsecond is added so that
        the clock arithmetic's rounding puts the judgement past the limit, not a hair short."""
        if self.state == "unknown" and self.back_by is not None:
            return max(now, self.back_by)
        if self.state == "dead" or self.state == "unknown":
            return None
        silence = self.silence(now) - excused_s
        late, suspected, dead = self._limits()
        limits = (late, suspected) if self.has_evidence_of_life else (late, suspected, dead)
        ahead = [limit for limit in limits if limit > silence]
        return now + min(ahead) - silence + 1e-6 if ahead else None

    def evaluate(self, now: float, excused_s: float = 0.0) -> list[Transition]:
        """Silence-driven transitions. ``excused_s`` is silence that was the monitor's
        own fault (it stalled), which no worker is blamed for."""
        if self.state == "unknown" and self.back_by is not None and now >= self.back_by:
            return self._move(now, "dead", "not back since its source returned")
        if self.state == "dead" or self.state == "unknown":
            return []
        silence = max(0.0, self.silence(now) - excused_s)
        late_s, suspected_s, dead_s = self._limits()  # the limits next_deadline schedules by
        late, suspected = silence >= late_s, silence >= suspected_s
        if suspected and self.has_evidence_of_life:
            return self._move(now, "starved",
                              f"silent for {silence * 1000:.0f} ms, but alive ({self._alive_because()})",
                              silence_s=silence)
        if not self.has_evidence_of_life and silence >= dead_s:
            return self._move(now, "dead", f"silent for {silence * 1000:.0f} ms with no evidence of life",
                              silence_s=silence)
        if late or suspected:
            if self.state == "starved":
                return []  # evidence may flicker; starved stays until a beat or a death
            return self._move(now, "late", f"silent for {silence * 1000:.0f} ms", silence_s=silence)
        return []

    def _alive_because(self) -> str:
        if self.connected:
            return "connection open"
        return self.vouched if self.vouched is not None else "process burning CPU"

    def _move(self, now: float, to: State, reason: str, episode: Episode | None = None,
              silence_s: float | None = None, blocked_s: float | None = None) -> list[Transition]:
        if to == self.state and episode is None:
            return []
        before, self.state = self.state, to
        if to in SILENT and self.blocked_since is None:
            self.blocked_since = now - self.silence(now)
        native = would_show(self.isolation, self.silence(now), self.interval_s) if self.isolation else None
        stack = self.current_stack()
        if to == "healthy" or to == "busy" and before in SILENT:
            self.blocked_since = None if to == "healthy" else now - (self.main_blocked_ms or 0) / 1000
        return [Transition(now, self.name, before, to, reason, episode, self.source, silence_s, native, stack,
                           blocked_s)]
