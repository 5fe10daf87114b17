"""Fleet state: every worker's tracker, counts by state, the available pool, a bounded
event log, probe history, and the monitor's own stalls. Pure like the detector: the
caller passes the time and decides about locks and threads.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from heartmon.detector import AVAILABLE, STATES, State, Thresholds, Tracker, Transition

STALL_WINDOWS = 64
PROBE_HISTORY = 20


@dataclass(frozen=True)
class MonitorStall:
    """The monitor itself could not run for a while: no worker is blamed for it."""

    at: float
    length_s: float


@dataclass
class ProbeRun:
    id: str
    probe: str
    duration_s: float
    started_at: float
    finished_at: float | None = None
    elapsed_s: float | None = None
    error: str | None = None


LogEntry = Transition | MonitorStall


class FleetState:
    def __init__(self, thresholds: Thresholds, log_size: int = 1000) -> None:
        self.thresholds = thresholds
        self.trackers: dict[str, Tracker] = {}
        self.log: deque[LogEntry] = deque(maxlen=log_size)
        self.stalls: deque[tuple[float, float]] = deque(maxlen=STALL_WINDOWS)
        self.probes: dict[str, deque[ProbeRun]] = {}
        self.unknown_beats = 0
        self.logged = 0
        """Entries ever logged: a reader that remembers it knows which entries are new."""

    # --- arrivals ---------------------------------------------------------------

    def join(self, now: float, name: str, interval_s: float, *, connected: bool | None,
             isolation: str | None = None, pid: int | None = None, host: str | None = None,
             heard_at: float | None = None, seq: int | None = None) -> list[Transition]:
        """A worker (re)appears. ``heard_at`` and ``seq``: its last beat, if a snapshot says so."""
        tracker = self.trackers.get(name)
        if tracker is None:
            joined = now if heard_at is None else heard_at
            tracker = self.trackers[name] = Tracker(name, interval_s, self.thresholds, joined, connected=connected,
                                                    seq=seq)
            self.probes[name] = deque(maxlen=PROBE_HISTORY)
            changes = []
        else:
            changes = tracker.hello(now, interval_s, connected, heard_at, seq)
        tracker.isolation, tracker.pid, tracker.host = isolation, pid, host
        return self._record(changes)

    def beat(self, now: float, name: str, **fields) -> list[Transition]:
        tracker = self.trackers.get(name)
        if tracker is None:
            self.unknown_beats += 1
            return []
        return self._record(tracker.beat(now, **fields))

    def left(self, now: float, name: str, reason: str) -> list[Transition]:
        tracker = self.trackers.get(name)
        return self._record(tracker.disconnected(now, reason)) if tracker else []

    def evidence(self, now: float, name: str, alive: bool, cpu_busy: bool) -> list[Transition]:
        tracker = self.trackers.get(name)
        return self._record(tracker.evidence(now, alive, cpu_busy)) if tracker else []

    def probe_started(self, now: float, name: str, id: str, probe: str, duration_s: float) -> None:
        if name in self.trackers:
            self.trackers[name].probe = probe
            self.probes[name].append(ProbeRun(id, probe, duration_s, now))

    def probe_finished(self, now: float, name: str, id: str, elapsed_s: float, error: str | None) -> None:
        if name not in self.trackers:
            return
        self.trackers[name].probe = None
        for run in reversed(self.probes[name]):
            if run.id == id:
                run.finished_at, run.elapsed_s, run.error = now, elapsed_s, error
                break

    def forget(self, name: str) -> None:
        self.trackers.pop(name, None)
        self.probes.pop(name, None)

    # --- the monitor's own health -------------------------------------------------

    def monitor_stalled(self, start: float, end: float) -> MonitorStall:
        self.stalls.append((start, end))
        stall = MonitorStall(end, end - start)
        self.log.append(stall)
        self.logged += 1
        return stall

    def excused(self, since: float, now: float) -> float:
        """How much of [since, now] the monitor itself was stalled. Stalls are kept in
        time order: the scan stops at the first one that ended before `since`."""
        total = 0.0
        for start, end in reversed(self.stalls):
            if end <= since:
                break
            total += max(0.0, min(end, now) - max(start, since))
        return total

    # --- judgement --------------------------------------------------------------

    def evaluate(self, now: float) -> list[Transition]:
        changes: list[Transition] = []
        for tracker in self.trackers.values():
            excused = self.excused(now - tracker.silence(now), now) if self.stalls else 0.0
            changes.extend(tracker.evaluate(now, excused))
        return self._record(changes)

    def counts(self) -> dict[State, int]:
        counted = Counter(t.state for t in self.trackers.values())
        return {state: counted.get(state, 0) for state in STATES}

    def available(self) -> list[str]:
        return [name for name, t in self.trackers.items() if t.state in AVAILABLE]

    def _record(self, changes: list[Transition]) -> list[Transition]:
        if changes:
            self.log.extend(changes)
            self.logged += len(changes)
        return changes

    def new_entries(self, seen: int) -> list[LogEntry]:
        """Entries logged after the first ``seen`` (as many as the log still holds)."""
        fresh = min(self.logged - seen, len(self.log))
        return list(self.log)[len(self.log) - fresh:] if fresh > 0 else []
