"""Fleet state: every worker's tracker, counts by state, the available pool, a bounded
event log, probe history, the monitor's own stalls, and the deadlines at which silent
workers must be judged. Pure like the detector: the caller passes the time and decides
about locks and threads.

Judgement runs on deadlines: each tracker is in a heap at most once, at the time its
silence crosses its next threshold. A beat does not touch the heap (it only moves the
tracker's real deadline later); when an entry falls due, the tracker is judged and
scheduled again at its new deadline. A fleet whose workers all beat on time costs one
heap pop and push per worker per late threshold, instead of a scan of every worker on
every tick, and a silence is judged when it crosses the line, not on the next tick.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from dataclasses import dataclass, replace

from heartmon.detector import AVAILABLE, STATES, Key, State, Thresholds, Tracker, Transition
from heartmon.protocol import Frame
from heartmon.stacks import Stack

STALL_WINDOWS = 64
PROBE_HISTORY = 20
MAX_CULPRITS = 500
"""Functions remembered as culprits; past it the one blamed longest ago is forgotten."""


@dataclass(frozen=True, slots=True)
class MonitorStall:
    """The monitor itself could not run for a while: no worker is blamed for it."""

    at: float
    length_s: float


@dataclass(frozen=True, slots=True)
class ProbeRun:
    id: str
    probe: str
    duration_s: float
    started_at: float
    finished_at: float | None = None
    elapsed_s: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Stuck:
    """The first stack of a block that was announced before any stack came: where a
    starved or busy worker is stuck, as soon as it is known."""

    at: float
    worker: str
    source: str
    stack: Stack


@dataclass(slots=True)
class Culprit:
    """A function that blocked main loops: in how many blocks, of which workers, for how
    long in all. Counted when a block ends with a stack taken during it."""

    frame: Frame
    """The latest block's culprit frame (its line may differ between blocks)."""
    workers: set[Key]
    blocks: int = 0
    total_s: float = 0.0
    last_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the monitor says once about itself (py-spy may not read pids, say)."""

    at: float
    text: str


LogEntry = Transition | MonitorStall | Stuck | Notice


class FleetState:
    def __init__(self, thresholds: Thresholds, log_size: int = 1000) -> None:
        self.thresholds = thresholds
        self.trackers: dict[Key, Tracker] = {}
        self.log: deque[LogEntry] = deque(maxlen=log_size)
        self.stalls: deque[tuple[float, float]] = deque(maxlen=STALL_WINDOWS)
        self.probes: dict[Key, deque[ProbeRun]] = {}
        self.logged = 0
        """Entries ever logged: a reader that remembers it knows which entries are new."""
        self.version = 0
        """Bumped whenever a worker appears, goes or changes state: whoever keeps an
        order of the workers knows when it must sort again."""
        self._due: list[tuple[float, int, Key]] = []
        self._pushes = 0
        self.culprits: dict[tuple[str, str], Culprit] = {}
        """By (file, function) of each block's culprit frame."""

    # --- arrivals ---------------------------------------------------------------

    def join(self, now: float, key: Key, interval_s: float, *, connected: bool | None,
             isolation: str | None = None, pid: int | None = None, host: str | None = None,
             heard_at: float | None = None, seq: int | None = None) -> list[Transition]:
        """A worker (re)appears, or a live one says hello again with a new interval or pid
        (a shorter interval brings its deadline forward). ``heard_at`` and ``seq``: its last
        beat, if a snapshot says so."""
        tracker = self.trackers.get(key)
        if tracker is None:
            joined = now if heard_at is None else heard_at
            tracker = self.trackers[key] = Tracker(key[1], interval_s, self.thresholds, joined, source=key[0],
                                                   connected=connected, seq=seq)
            self.probes[key] = deque(maxlen=PROBE_HISTORY)
            self.version += 1
            changes = []
        else:
            changes = tracker.hello(now, interval_s, connected, heard_at, seq)
        tracker.isolation, tracker.pid, tracker.host = isolation, pid, host
        self._schedule(tracker, now)
        return self._record(changes)

    def beat(self, now: float, key: Key, seq: int | None = None, main_blocked_ms: float | None = None,
             loop_lag_ms: float | None = None, latency_ms: float | None = None) -> list[Transition]:
        """A beat from a worker that never said hello is dropped: without its interval
        there is nothing to judge it by, and its hello comes first on every source."""
        tracker = self.trackers.get(key)
        if tracker is None:
            return []
        changes = tracker.beat(now, seq, main_blocked_ms, loop_lag_ms, latency_ms)
        if changes:
            self._schedule(tracker, now)
        return self._record(changes)

    def left(self, now: float, key: Key, reason: str) -> list[Transition]:
        tracker = self.trackers.get(key)
        return self._record(tracker.disconnected(now, reason)) if tracker else []

    def source_lost(self, now: float, source: str) -> list[Transition]:
        """Every worker of an unreachable source becomes ``unknown`` until it is back."""
        changes = []
        for tracker in self.trackers.values():
            if tracker.source == source:
                changes.extend(tracker.source_lost(now, source))
        return self._record(changes)

    def missing(self, now: float, key: Key, reason: str) -> list[Transition]:
        """The source's list lacks this worker: dead at once if its state was known (it
        left), given time to come back if the source itself had been lost."""
        tracker = self.trackers.get(key)
        if tracker is None:
            return []
        if tracker.state != "unknown":
            return self._record(tracker.disconnected(now, reason))
        tracker.missing(now)
        self._schedule(tracker, now)
        return []

    def state_of(self, key: Key) -> State | None:
        tracker = self.trackers.get(key)
        return tracker.state if tracker is not None else None

    def evidence(self, now: float, key: Key, alive: bool, cpu_busy: bool) -> list[Transition]:
        tracker = self.trackers.get(key)
        if tracker is None:
            return []
        changes = tracker.evidence(now, alive, cpu_busy)
        if tracker.state != "dead":  # evidence changes which thresholds apply: judge at once
            changes += tracker.evaluate(now, self._excused(tracker, now))
            self._schedule(tracker, now)
        return self._record(changes)

    def vouch(self, now: float, key: Key, because: str | None) -> list[Transition]:
        """The source's own evidence of life (or its end): it changes which thresholds
        apply, so the worker is judged again at once."""
        tracker = self.trackers.get(key)
        if tracker is None or tracker.vouched == because:
            return []
        tracker.vouch(because)
        changes = tracker.evaluate(now, self._excused(tracker, now))
        self._schedule(tracker, now)
        return self._record(changes)

    def doing(self, key: Key, activity: str | None) -> None:
        """What a worker heartmon did not write says it is doing ("2 active tasks"),
        kept where a probe's name would be: an episode then says what ran during it."""
        tracker = self.trackers.get(key)
        if tracker is not None:
            tracker.probe = activity

    def stack(self, now: float, key: Key, stack: Stack) -> list[Stuck]:
        """A stack of a worker's main thread. Its time, read off the worker's clock, is
        kept within its block: not before the block began plus how long it had lasted."""
        tracker = self.trackers.get(key)
        if tracker is None:
            return []
        since = tracker.blocked_since
        if since is not None and stack.blocked_ms is not None and stack.taken_at < since + stack.blocked_ms / 1000:
            stack = replace(stack, taken_at=min(now, since + stack.blocked_ms / 1000))
        if not tracker.stacked(stack):
            return []
        entry = Stuck(now, tracker.name, tracker.source, stack)
        self._log(entry)
        return [entry]

    def notice(self, now: float, text: str) -> None:
        self._log(Notice(now, text))

    def _log(self, entry: LogEntry) -> None:
        """An entry that is not a move: no worker's state changed, so no order is stale."""
        self.log.append(entry)
        self.logged += 1

    def stack_note(self, key: Key, note: str) -> None:
        """Why no stack could be taken of this worker: shown where its stack would be."""
        tracker = self.trackers.get(key)
        if tracker is not None:
            tracker.stack_note = note

    def probe_started(self, now: float, key: Key, id: str, probe: str, duration_s: float) -> None:
        if key in self.trackers:
            self.trackers[key].probe = probe
            self.probes[key].append(ProbeRun(id, probe, duration_s, now))

    def probe_finished(self, now: float, key: Key, id: str, elapsed_s: float, error: str | None) -> None:
        if key not in self.trackers:
            return
        self.trackers[key].probe = None
        runs = self.probes[key]
        for index in range(len(runs) - 1, -1, -1):
            run = runs[index]
            if run.id == id:
                runs[index] = ProbeRun(run.id, run.probe, run.duration_s, run.started_at, now, elapsed_s, error)
                break

    def probe_running(self, key: Key, probe: str) -> None:
        """A snapshot says a probe runs that this state never saw start."""
        tracker = self.trackers.get(key)
        if tracker is not None and tracker.probe is None:
            tracker.probe = probe

    def forget(self, key: Key) -> None:
        if self.trackers.pop(key, None) is not None:
            self.version += 1
        self.probes.pop(key, None)

    # --- the monitor's own health -------------------------------------------------

    def monitor_stalled(self, start: float, end: float) -> MonitorStall:
        self.stalls.append((start, end))
        stall = MonitorStall(end, end - start)
        self._log(stall)
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

    def _excused(self, tracker: Tracker, now: float) -> float:
        return self.excused(now - tracker.silence(now), now) if self.stalls else 0.0

    # --- judgement --------------------------------------------------------------

    def next_due(self) -> float | None:
        """The earliest deadline in the heap: when :meth:`evaluate_due` has work."""
        return self._due[0][0] if self._due else None

    def evaluate_due(self, now: float) -> list[Transition]:
        """Judges the trackers whose deadline has come, and schedules their next one.
        Each tracker is judged at most once per call, so a deadline that rounding puts
        at ``now`` again waits for the next call instead of spinning."""
        due, changes, judged = self._due, [], []
        while due and due[0][0] <= now:
            when, _, key = heapq.heappop(due)
            tracker = self.trackers.get(key)
            if tracker is None or tracker.due != when:
                continue  # forgotten, or rescheduled since
            tracker.due = None
            changes.extend(tracker.evaluate(now, self._excused(tracker, now)))
            judged.append(tracker)
        for tracker in judged:
            self._schedule(tracker, now)
        return self._record(changes)

    def evaluate(self, now: float) -> list[Transition]:
        """Judges every worker now: after a snapshot, whose ages must be judged at once."""
        changes: list[Transition] = []
        for tracker in self.trackers.values():
            changes.extend(tracker.evaluate(now, self._excused(tracker, now)))
            self._schedule(tracker, now)
        return self._record(changes)

    def _schedule(self, tracker: Tracker, now: float) -> None:
        """Puts the tracker in the heap at its next deadline, unless an earlier entry is
        already there (it will reschedule itself when it falls due)."""
        deadline = tracker.next_deadline(now, self._excused(tracker, now))
        if deadline is None or (tracker.due is not None and tracker.due <= deadline):
            return
        tracker.due = deadline
        self._pushes += 1
        heapq.heappush(self._due, (deadline, self._pushes, tracker.key))
        if len(self._due) > 4 * len(self.trackers) + 64:  # entries made stale by rescheduling
            self._due = [entry for entry in self._due
                         if (t := self.trackers.get(entry[2])) is not None and t.due == entry[0]]
            heapq.heapify(self._due)

    def counts(self) -> dict[State, int]:
        counted = Counter(t.state for t in self.trackers.values())
        return {state: counted.get(state, 0) for state in STATES}

    def available(self) -> list[Key]:
        return [key for key, t in self.trackers.items() if t.state in AVAILABLE]

    def _record(self, changes: list[Transition]) -> list[Transition]:
        if changes:
            self.log.extend(changes)
            self.logged += len(changes)
            self.version += 1
            for change in changes:
                if change.stack is not None and change.blocked_s is not None:
                    self._blame(change.stack, (change.source, change.worker), change.blocked_s, change.at)
        return changes

    def _blame(self, stack: Stack, key: Key, length_s: float, at: float) -> None:
        """Only code of the app or of a library is a culprit: a stack that is all
        interpreter and heartmon is a loop waiting for work (its silence was the
        machine's or the network's), or heartmon's own machinery."""
        frame = stack.culprit
        if frame.kind not in ("app", "library"):
            return
        culprit = self.culprits.get((frame.file, frame.function))
        if culprit is None:
            if len(self.culprits) >= MAX_CULPRITS:
                del self.culprits[min(self.culprits, key=lambda k: self.culprits[k].last_at)]
            culprit = self.culprits[(frame.file, frame.function)] = Culprit(frame, set())
        culprit.frame = frame
        culprit.workers.add(key)
        culprit.blocks += 1
        culprit.total_s += length_s
        culprit.last_at = at

    def new_entries(self, seen: int) -> list[LogEntry]:
        """Entries logged after the first ``seen`` (as many as the log still holds)."""
        fresh = min(self.logged - seen, len(self.log))
        return list(self.log)[len(self.log) - fresh:] if fresh > 0 else []
