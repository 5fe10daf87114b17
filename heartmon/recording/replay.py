"""A recording played back: the fleet as it was at a time cursor, as frozen views.

The journal's inputs are fed, in their order, to a new
:class:`~heartmon.fleet_state.FleetState`, up to the cursor: the same code that judged
the live fleet judges it again, so every state, gap and transition is the live
monitor's own. Moving the cursor forward feeds more; moving it back starts again from
the first input (a fleet state cannot be unwound), which costs about a microsecond per
recorded input.

:class:`Replay` has the monitor's read API (``subscribe`` and ``request``), so the
TUI's screens show a recording exactly as they show a live fleet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from heartmon.detector import AVAILABLE, Transition
from heartmon.fleet_state import FleetState
from heartmon.recording.journal import Row, apply
from heartmon.recording.reading import RecordedTransition, Recording
from heartmon.view import FleetView, SourceView, Viewer, ViewRequest

SPEEDS = (1, 2, 5, 10, 20, 50, 100)
TROUBLE = frozenset({"late", "starved", "dead"})
"""An episode begins when a worker moves into one of these from the available pool."""


@dataclass(frozen=True, slots=True)
class Mismatch:
    """Where a replay's judgement differs from the live monitor's (none, if the recording is whole)."""

    index: int
    live: tuple | None
    replayed: tuple | None


class Replay:
    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        self.at = recording.start
        self.playing = False
        self.speed = 1
        self._subscribers: list[Callable[[FleetView], None]] = []
        self._sources = tuple(SourceView(s["label"], s["kind"], "recorded") for s in recording.sources)
        self._marks = recording.transitions()
        self._reset()

    def _reset(self) -> None:
        self.fleet = FleetState(self.recording.thresholds, self.recording.log_size)
        self._viewer = Viewer(self.fleet)
        self._rows: Iterator[tuple[int, Row]] = self.recording.rows()
        self._next: Row | None = None
        self._fed_to = float("-inf")

    # --- moving the cursor ----------------------------------------------------------

    def seek(self, t: float) -> bool:
        """Puts the cursor at ``t`` (within the recording). True if the fleet was built
        again from the start (the cursor went back): the log shown so far is no longer it."""
        t = min(max(t, self.recording.start), self.recording.end)
        rebuilt = t < self._fed_to
        if rebuilt:
            self._reset()
        self._feed(t)
        self.at = t
        if t >= self.recording.end:
            self.playing = False
        return rebuilt

    def _feed(self, until: float) -> list[Transition]:
        changes: list[Transition] = []
        key_of, fleet = self.recording.key_of, self.fleet
        while True:
            if self._next is None:
                self._next = next(self._rows, (None, None))[1]
                if self._next is None:
                    break
            if self._next[0] > until:
                break
            result = apply(fleet, self._next, key_of)
            if isinstance(result, list):
                changes.extend(c for c in result if isinstance(c, Transition))
            self._next = None
        self._fed_to = until
        return changes

    def step(self, seconds: float) -> bool:
        return self.seek(self.at + seconds)

    def advance(self, real_s: float) -> bool:
        """Playing: the cursor moves ``real_s`` seconds times the speed."""
        return self.step(real_s * self.speed) if self.playing else False

    def next_mark(self, forward: bool, episodes: bool) -> float | None:
        """The time of the next (or previous) transition, or of the next start of an
        episode: a worker leaving the pool for late, starved or dead."""
        marks = [m.t for m in self._marks if not episodes or starts_episode(m)]
        if forward:
            return next((t for t in marks if t > self.at), None)
        return next((t for t in reversed(marks) if t < self.at), None)

    def faster(self, up: bool) -> None:
        index = SPEEDS.index(self.speed) + (1 if up else -1)
        self.speed = SPEEDS[min(max(index, 0), len(SPEEDS) - 1)]

    # --- the monitor's read API -------------------------------------------------------

    def subscribe(self, callback: Callable[[FleetView], None]) -> None:
        self._subscribers.append(callback)

    def request(self, request: ViewRequest) -> None:
        view = self.view(request)
        for callback in self._subscribers:
            callback(view)

    def view(self, request: ViewRequest = ViewRequest()) -> FleetView:
        return self._viewer.view(request, self.at, self.recording.wall_offset, sources=self._sources,
                                 recording=f"replay of {self.recording.path}")

    # --- checking a recording -----------------------------------------------------------

    def verify(self) -> list[Mismatch]:
        """Replays the whole recording and compares every transition with the live
        monitor's: a recording that is whole and unchanged gives none."""
        self._reset()
        replayed = [_essence(c.at, (c.source, c.worker), c.from_state, c.to_state, c.reason)
                    for c in self._feed(float("inf"))]
        self.seek(self.at)
        live = [_essence(m.t, m.key, m.from_state, m.to_state, m.reason) for m in self._marks]
        mismatches = [Mismatch(i, a, b) for i, (a, b) in enumerate(zip(live, replayed, strict=False)) if a != b]
        if len(live) != len(replayed):
            longer = live if len(live) > len(replayed) else replayed
            index = min(len(live), len(replayed))
            mismatches.append(Mismatch(index, *((longer[index], None) if longer is live else (None, longer[index]))))
        return mismatches


def _essence(t: float, key: tuple[str, str], from_state: str, to_state: str, reason: str) -> tuple:
    return (t, key, from_state, to_state, reason)


def starts_episode(mark: RecordedTransition) -> bool:
    """A worker leaves the pool for late, starved or dead."""
    return mark.from_state in AVAILABLE and mark.to_state in TROUBLE
