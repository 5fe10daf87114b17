"""What happened in a recording, as numbers: the input of an incident report, pure.

Everything here is read from what the live monitor wrote: its states are the
``transitions`` table's (never judged again), its gaps are the journal's beats as they
arrived. A worker exists from its first ``join`` (healthy, as a tracker starts) until it
is forgotten; each transition moves it to its next state. The whole recording is read,
and only then cut to the window asked for, so that a window starting in the middle of
an episode still knows the worker's state and the episode's start.
"""

from __future__ import annotations

import math
from array import array
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime

from heartmon.detector import AVAILABLE, Key, Thresholds
from heartmon.recording.journal import BEAT, OPS, call_of
from heartmon.recording.reading import RecordedTransition, Recording
from heartmon.recording.replay import TROUBLE, starts_episode

JOIN, FORGET = OPS.index("join"), OPS.index("forget")
PROBE_STARTED, PROBE_FINISHED = OPS.index("probe_started"), OPS.index("probe_finished")
SEVERITY = {"late": 1, "starved": 2, "dead": 3}
"""An episode is as bad as the worst state it reached."""


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of one worker's time in one state."""

    start: float
    end: float
    state: str


@dataclass(frozen=True, slots=True)
class EpisodeRow:
    """A worker out of the pool for late, starved or dead, from its last beat before the
    silence (or the moment it moved, when no silence led there) to how it ended."""

    key: Key
    start: float
    length_s: float
    worst: str
    outcome: str
    """``recovered``; ``died (REASON)``, then maybe ``, joined again``; ``unknown (REASON)``
    (its source was lost); or ``still STATE at the end``."""
    missed: int | None
    probe: str | None
    culprit: str | None


@dataclass(slots=True)
class WorkerReport:
    key: Key
    label: str
    spans: list[Span]
    """Cut to the report's window."""
    times: array = field(default_factory=lambda: array("d"))
    gaps: array = field(default_factory=lambda: array("d"))
    """Each beat in the window's arrival time and the gap before it, in seconds."""
    intervals: list[tuple[float, float]] = field(default_factory=list)
    """(since when, interval in seconds): the first is in force at the window's start."""

    @property
    def beats(self) -> int:
        return len(self.gaps)

    @property
    def max_gap(self) -> float | None:
        return max(self.gaps) if self.gaps else None

    @property
    def p99_gap(self) -> float | None:
        """Nearest rank: a gap that really happened."""
        if not self.gaps:
            return None
        ranked = sorted(self.gaps)
        return ranked[math.ceil(0.99 * len(ranked)) - 1]

    def time_in(self, state: str) -> float:
        return sum(s.end - s.start for s in self.spans if s.state == state)

    def peaks(self, start: float, end: float, bins: int) -> list[tuple[float, float]]:
        """The gaps to draw: all of them if there are few, else the longest of each of
        ``bins`` slices of time (a plot's width holds no more, and the peaks are what
        an incident is about)."""
        if len(self.gaps) <= 2 * bins:
            return list(zip(self.times, self.gaps, strict=True))
        width = (end - start) / bins or 1.0
        best: dict[int, tuple[float, float]] = {}
        for t, gap in zip(self.times, self.gaps, strict=True):
            slot = int((t - start) / width)
            if slot not in best or gap > best[slot][1]:
                best[slot] = (t, gap)
        return [best[slot] for slot in sorted(best)]


@dataclass(slots=True)
class Report:
    name: str
    host: str
    sources: list[str]
    thresholds: Thresholds
    wall_offset: float
    since: float
    until: float
    """The window, on the monitor's clock."""
    workers: list[WorkerReport]
    episodes: list[EpisodeRow]
    empty_pool: list[tuple[float, float]]
    """When every worker whose state was known was out of the pool (none healthy or busy)."""

    def wall(self, t: float) -> datetime:
        """Local time, with its offset."""
        return datetime.fromtimestamp(t + self.wall_offset).astimezone()

    def label(self, key: Key) -> str:
        return next((w.label for w in self.workers if w.key == key), key[1])

    @property
    def starved_workers(self) -> int:
        return sum(1 for w in self.workers if w.time_in("starved") > 0)

    @property
    def starved_s(self) -> float:
        return sum(w.time_in("starved") for w in self.workers)

    @property
    def died(self) -> int:
        """Workers that moved to dead in the window."""
        return sum(1 for w in self.workers if any(s.state == "dead" and s.start > self.since for s in w.spans))

    @property
    def empty_s(self) -> float:
        return sum(end - start for start, end in self.empty_pool)


def gather(recording: Recording, since: float | None = None, until: float | None = None) -> Report:
    """The report of ``recording`` between ``since`` and ``until`` (monitor clock; by
    default its whole length)."""
    since = recording.start if since is None else since
    until = recording.end if until is None else until
    marks = recording.transitions()
    journal = _read_journal(recording, since, until)
    presence, intervals, beats = journal.presence, journal.intervals, journal.beats
    keys = sorted(presence)
    two_sources = len({source for source, _ in keys}) > 1
    spans = {key: _spans(presence[key], [m for m in marks if m.key == key], recording.end) for key in keys}
    workers = []
    for key in keys:
        times, gaps = beats.get(key, (array("d"), array("d")))
        workers.append(WorkerReport(key, f"{key[1]}@{_short(key[0])}" if two_sources else key[1],
                                    _cut(spans[key], since, until), times, gaps, _in_force(intervals[key], since)))
    episodes = [_with_probe(e, journal.probes[e.key]) for e in _episodes(marks, recording.end)
                if e.start <= until and e.start + e.length_s >= since]
    return Report(recording.path.name, recording.meta.get("hostname", "?"),
                  [s["label"] for s in recording.sources], recording.thresholds, recording.wall_offset, since, until,
                  workers, episodes, _cut_periods(empty_pool(spans), since, until))


@dataclass(slots=True)
class _Journal:
    presence: dict[Key, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    intervals: dict[Key, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    beats: dict[Key, tuple[array, array]] = field(default_factory=dict)
    probes: dict[Key, list[list]] = field(default_factory=lambda: defaultdict(list))
    """Each probe run: [started, finished or None, name]."""


def _read_journal(recording: Recording, since: float, until: float) -> _Journal:
    """From the journal: when each worker joined and was forgotten, its interval over
    time, the probes it ran, and each beat in the window with the gap before it. The gap is counted from
    the worker's previous beat, or from when a snapshot said it last beat; a worker that
    joins anew (first time, or back from dead) starts without one."""
    journal = _Journal()
    presence, intervals, beats, probes = journal.presence, journal.intervals, journal.beats, journal.probes
    last_beat: dict[Key, float | None] = {}
    key_of = recording.key_of
    for _, row in recording.rows():
        t, op, worker, *_ = row
        if worker is None:
            continue
        key = key_of(worker)
        if op == BEAT:
            previous = last_beat.get(key)
            last_beat[key] = t
            if previous is not None and since <= t <= until:
                times, gaps = beats.setdefault(key, (array("d"), array("d")))
                times.append(t)
                gaps.append(t - previous)
        elif op == JOIN:
            fields = call_of(row, key_of)[1]
            if not presence[key] or presence[key][-1][1] == "forgotten":
                presence[key].append((t, "joined"))
                last_beat[key] = fields.get("heard_at")
            if not intervals[key] or intervals[key][-1][1] != fields["interval_s"]:
                intervals[key].append((t, fields["interval_s"]))
        elif op == FORGET and presence[key]:
            presence[key].append((t, "forgotten"))
            last_beat[key] = None
        elif op == PROBE_STARTED:
            probes[key].append([t, None, call_of(row, key_of)[1].get("probe", "?")])
        elif op == PROBE_FINISHED and probes[key] and probes[key][-1][1] is None:
            probes[key][-1][1] = t
    return journal


def _spans(presence: list[tuple[float, str]], marks: list[RecordedTransition], end: float) -> list[Span]:
    """A worker's states over the whole recording: healthy from each join (a new
    tracker), then as the live monitor's transitions say, until it is forgotten."""
    events = sorted([(t, 0 if what == "joined" else 2, what) for t, what in presence] +
                    [(m.t, 1, m.to_state) for m in marks])
    spans: list[Span] = []
    state: str | None = None
    started = 0.0
    for t, _, what in events:
        if state is not None and t > started:
            spans.append(Span(started, t, state))
        if what == "joined":
            state = "healthy"
        elif what == "forgotten":
            state = None
        elif state is not None:
            state = what
        started = t
    if state is not None and end > started:
        spans.append(Span(started, end, state))
    return spans


def _cut(spans: list[Span], since: float, until: float) -> list[Span]:
    return [Span(max(s.start, since), min(s.end, until), s.state) for s in spans if s.end > since and s.start < until]


def _cut_periods(periods: list[tuple[float, float]], since: float, until: float) -> list[tuple[float, float]]:
    return [(max(a, since), min(b, until)) for a, b in periods if b > since and a < until]


def _in_force(changes: list[tuple[float, float]], since: float) -> list[tuple[float, float]]:
    """The interval changes from the one in force at ``since`` on."""
    before = [c for c in changes if c[0] <= since]
    return ([(since, before[-1][1])] if before else []) + [c for c in changes if c[0] > since]


def _episodes(marks: list[RecordedTransition], end: float) -> list[EpisodeRow]:
    """Each departure from the pool (healthy or busy to late, starved or dead), until
    the worker is back in it, its source is lost, or the recording ends. A dead worker's
    episode goes on until it joins again: it was out of the pool all that time."""
    open_: dict[Key, dict] = {}
    rows: list[EpisodeRow] = []
    for m in marks:
        episode = open_.get(m.key)
        if episode is None:
            if starts_episode(m):
                open_[m.key] = {"start": m.t - (m.silence_s or 0.0), "worst": m.to_state, "culprit": m.culprit,
                                "died": m.reason if m.to_state == "dead" else None}
            continue
        episode["culprit"] = m.culprit or episode["culprit"]
        if m.to_state in TROUBLE and SEVERITY[m.to_state] > SEVERITY[episode["worst"]]:
            episode["worst"] = m.to_state
        if m.to_state == "dead":
            episode["died"] = m.reason
        elif m.episode_s is not None and m.episode_start is not None:
            rows.append(EpisodeRow(m.key, m.episode_start, m.episode_s, episode["worst"], "recovered", m.missed,
                                   m.probe, episode["culprit"]))
            del open_[m.key]
        elif m.to_state == "unknown" or m.to_state in AVAILABLE:
            outcome = (f"unknown ({m.reason})" if m.to_state == "unknown" else
                       "recovered" if episode["died"] is None else f"died ({episode['died']}), joined again")
            rows.append(_ended(m.key, episode, m.t, outcome))
            del open_[m.key]
    rows.extend(_ended(key, e, end, f"died ({e['died']})" if e["died"] else f"still {e['worst']} at the end")
                for key, e in open_.items())
    return sorted(rows, key=lambda r: (r.start, r.key))


def _with_probe(episode: EpisodeRow, runs: list[list]) -> EpisodeRow:
    """The probe that ran during the episode, where the live monitor did not name one
    (it names the probe still running at the recovery, and a probe can end, freeing
    the worker, a beat before the worker speaks again)."""
    if episode.probe is not None:
        return episode
    end = episode.start + episode.length_s
    name = next((name for started, finished, name in reversed(runs)
                 if started <= end and (finished is None or finished >= episode.start)), None)
    return replace(episode, probe=name)


def _ended(key: Key, episode: dict, at: float, outcome: str) -> EpisodeRow:
    return EpisodeRow(key, episode["start"], at - episode["start"], episode["worst"], outcome, None, None,
                      episode["culprit"])


def empty_pool(spans: dict[Key, list[Span]]) -> list[tuple[float, float]]:
    """The periods when at least one worker's state was known and none was healthy or
    busy. Unknown workers count neither way: nothing is known of them."""
    changes: dict[float, list[tuple[Key, str | None]]] = defaultdict(list)
    for key, worker_spans in spans.items():
        for i, span in enumerate(worker_spans):
            changes[span.start].append((key, span.state))
            if i + 1 == len(worker_spans) or worker_spans[i + 1].start != span.end:
                changes[span.end].append((key, None))
    state: dict[Key, str] = {}
    periods: list[tuple[float, float]] = []
    empty_since: float | None = None
    for t in sorted(changes):
        for key, to in sorted(changes[t], key=lambda c: c[1] is not None):  # departures first, then arrivals
            if to is None:
                state.pop(key, None)
            else:
                state[key] = to
        known = [s for s in state.values() if s != "unknown"]
        empty = bool(known) and not any(s in AVAILABLE for s in known)
        if empty and empty_since is None:
            empty_since = t
        elif not empty and empty_since is not None:
            periods.append((empty_since, t))
            empty_since = None
    return periods


def _short(source: str) -> str:
    """A source's label without its scheme, as the monitor names it beside a worker."""
    return source.split("://", 1)[-1]
