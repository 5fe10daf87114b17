"""The frozen view: what a screen or a script may know about the fleet, computed where
the fleet lives and handed over as plain values.

The UI never reads a tracker. It sends a :class:`ViewRequest` (sort, filter, which
rows are on screen, which worker is under the cursor, which worker's details are
open, how many log entries it has seen) and gets back a :class:`FleetView`: the rows
on screen already sorted and formatted down to numbers, the counts, the new log
entries, the sources' links. Its cost to the UI depends on the screen's height, not
on the fleet's size. Everything here is pure: the fleet state and the time come in,
values go out, so the same view is built in the monitor's child process, in-process
for ``events`` and ``check``, and from a scripted fleet in tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from heartmon.detector import AVAILABLE, STATES, Key, State, Tracker, Transition
from heartmon.fleet_state import Culprit, FleetState, LogEntry, ProbeRun
from heartmon.native import would_show
from heartmon.protocol import Frame
from heartmon.stacks import Stack

SORTS = ("worst first", "name", "max gap", "missed")
"""p99 is shown, not sorted by: a percentile of every worker on every view costs too much."""

WORST_FIRST: dict[State, int] = {"starved": 0, "late": 1, "dead": 2, "unknown": 3, "busy": 4, "healthy": 5}
"""What is going wrong now, then what is gone or unknown, then what is fine."""

STRIP_SPAN_S = 10.0
"""The heartbeat strip shows the last this many seconds, on one time axis for every row."""
BEAT, QUIET, WAITING, SILENT_MARK = "┃", " ", "╌", "━"
"""Strip marks: a beat; a column with none; the current silence before and after the
worker's late threshold (an unknown worker's silence is its source's, so it stays dashed)."""
DETAIL_GAPS = 200
DETAIL_ENTRIES = 12
BUCKETS = ((0.5, "< 0.5×"), (1.0, "0.5–1×"), (1.5, "1–1.5×"), (2.0, "1.5–2×"), (5.0, "2–5× late"),
           (float("inf"), "≥ 5× starved"))
"""The detail screen's gap distribution, in multiples of the worker's interval."""


@dataclass(frozen=True, slots=True)
class ViewRequest:
    sort: str = "worst first"
    filter: str = ""
    offset: int = 0
    """Index of the first row wanted in the sorted, filtered order."""
    height: int = 50
    """How many rows from ``offset``; the view may add a margin around them."""
    cursor: Key | None = None
    """The worker under the cursor: the view says where it now stands in the order."""
    cursor_index: int = 0
    """Where the cursor was, for when its worker is gone or filtered out."""
    detail: Key | None = None
    seen: int = 0
    """Log entries the reader already has (``FleetView.logged`` of its last view)."""
    strip_width: int = 0
    """Columns of the heartbeat strip; 0 for none."""
    culprits: bool = False
    """Whether the view should carry the fleet's culprits (the culprits screen is open)."""
    spy: Key | None = None
    """A worker whose stack the user asks to read now (py-spy), whatever was read before."""


@dataclass(frozen=True, slots=True)
class RowView:
    key: Key
    state: State
    isolation: str | None
    silence_s: float | None
    """Since the last beat, when the view was taken; None for a dead worker."""
    interval_s: float
    p99_s: float | None
    max_s: float | None
    blocked_ms: float | None
    missed: int
    episodes: int
    strip: str = ""
    strip_tail: int = 0
    """How many columns at the strip's right edge are the current silence."""

    @property
    def name(self) -> str:
        return self.key[1]

    @property
    def source(self) -> str:
        return self.key[0]


@dataclass(frozen=True, slots=True)
class DetailView:
    row: RowView
    pid: int | None
    host: str | None
    p50_s: float | None
    jitter_s: float
    loop_lag_ms: float | None
    latency_ms: float | None
    late_s: float
    starved_s: float
    gaps: tuple[float, ...]
    """The newest gaps, oldest first, for the plot."""
    distribution: tuple[int, ...]
    """Gaps of the whole window per :data:`BUCKETS` bucket."""
    window: int
    entries: tuple[LogEntry, ...]
    """This worker's recent problems and recoveries."""
    probes: tuple[ProbeRun, ...]
    doing: str | None = None
    """What the worker says it is doing: a running probe, or a foreign system's activity."""
    vouched: str | None = None
    """Evidence of life its source sees besides beats ("RQ says busy in a job")."""
    native: str | None = None
    """What the worker's own system shows now, where it has a rule."""
    stack: Stack | None = None
    """The newest stack of its main thread, taken while its loop was blocked."""
    stuck_now: bool = False
    """Whether that stack belongs to a block still under way (else to the last one)."""
    stack_note: str | None = None
    """Why no stack could be taken, if that was tried and failed."""


@dataclass(frozen=True, slots=True)
class CulpritView:
    frame: Frame
    workers: tuple[str, ...]
    """Sorted names (with their source, where more than one source is watched)."""
    blocks: int
    total_s: float
    last_at: float


@dataclass(frozen=True, slots=True)
class SourceView:
    label: str
    kind: str
    """"hub" (commands can be sent to it), or the kind's name: "http", "celery", …"""
    link: str
    detail: str = ""
    refused: int = 0
    """Inputs the source dropped because it could not understand them."""
    last_refused: str = ""


@dataclass(frozen=True, slots=True)
class FleetView:
    at: float
    """The monitor's clock when the view was taken."""
    wall_offset: float
    """Add to a time of the monitor's clock for seconds since the epoch."""
    sources: tuple[SourceView, ...] = ()
    ingest_lag_ms: float = 0.0
    crashed: str | None = None
    """Why ingest stopped, if it did: shown in one line, nothing else is true then."""
    recording: str = ""
    """Where the monitor records to, or why it does not."""
    counts: dict[State, int] = field(default_factory=lambda: {state: 0 for state in STATES})
    available: int = 0
    total: int = 0
    matching: int = 0
    """Workers that pass the filter: the table's length."""
    offset: int = 0
    rows: tuple[RowView, ...] = ()
    cursor: int = 0
    """Where the requested cursor worker stands in the order now (or the clamped index)."""
    logged: int = 0
    entries: tuple[LogEntry, ...] = ()
    """Log entries after the request's ``seen``."""
    detail: DetailView | None = None
    culprits: tuple[CulpritView, ...] = ()
    """Most time blocked first, when the request asks for them."""

    @property
    def no_available_worker(self) -> bool:
        """Every worker whose state is known is out of the pool."""
        return self.total - self.counts.get("unknown", 0) > 0 and self.available == 0

    def wall(self, t: float) -> float:
        return t + self.wall_offset

    def row_at(self, index: int) -> RowView | None:
        position = index - self.offset
        return self.rows[position] if 0 <= position < len(self.rows) else None


def matches(tracker: Tracker, needle: str) -> bool:
    return needle in f"{tracker.name} {tracker.isolation or 'http'} {tracker.state} {tracker.source}".lower()


_KEYS: dict[str, Callable[[Tracker], tuple[float | str, ...]]] = {
    "worst first": lambda t: (WORST_FIRST[t.state], t.name, t.source),
    "name": lambda t: (t.name, t.source),
    "max gap": lambda t: (-t.gaps.max, t.name, t.source),
    "missed": lambda t: (-t.missed, t.name, t.source),
}
_STABLE = frozenset({"worst first", "name"})
"""Orders that change only when a worker appears, goes or changes state."""


class Viewer:
    """Builds views from one fleet state, keeping the last order while it still holds:
    sorting ten thousand workers four times a second is work worth skipping."""

    def __init__(self, fleet: FleetState) -> None:
        self.fleet = fleet
        self._order: list[Tracker] = []
        self._order_key: tuple[int, str, str] | None = None

    def order(self, sort: str, text: str) -> list[Tracker]:
        key = (self.fleet.version, sort, text)
        if key != self._order_key or sort not in _STABLE:
            needle = text.lower().strip()
            chosen = [t for t in self.fleet.trackers.values() if not needle or matches(t, needle)]
            self._order = sorted(chosen, key=_KEYS.get(sort, _KEYS["worst first"]))
            self._order_key = key
        return self._order

    def view(self, request: ViewRequest, now: float, wall_offset: float, **status) -> FleetView:
        fleet = self.fleet
        order = self.order(request.sort, request.filter)
        cursor = min(request.cursor_index, max(0, len(order) - 1))
        if request.cursor is not None:
            for index, tracker in enumerate(order):
                if tracker.key == request.cursor:
                    cursor = index
                    break
        start = max(0, request.offset)
        rows = tuple(row(t, now, request.strip_width) for t in order[start:start + max(0, request.height)])
        detail = None
        if request.detail is not None and (shown := fleet.trackers.get(request.detail)) is not None:
            detail = detail_of(fleet, shown, now, request.strip_width)
        counts = fleet.counts()
        culprits = culprits_of(fleet.culprits.values()) if request.culprits else ()
        return FleetView(
            at=now, wall_offset=wall_offset, counts=counts,
            available=sum(counts[state] for state in AVAILABLE), total=len(fleet.trackers),
            matching=len(order), offset=start, rows=rows, cursor=cursor,
            logged=fleet.logged, entries=tuple(fleet.new_entries(request.seen)), detail=detail, culprits=culprits,
            **status,
        )


def row(t: Tracker, now: float, strip_width: int = 0) -> RowView:
    gaps = t.gaps
    strip, tail = beat_strip(t, now, strip_width) if strip_width > 0 else ("", 0)
    return RowView(
        key=t.key, state=t.state, isolation=t.isolation,
        silence_s=None if t.state == "dead" else max(0.0, t.silence(now)),
        interval_s=t.interval_s,
        p99_s=gaps.percentile(0.99) if gaps.count else None,
        max_s=gaps.max if gaps.count else None,
        blocked_ms=t.main_blocked_ms, missed=t.missed, episodes=t.episodes, strip=strip, strip_tail=tail,
    )


def beat_strip(t: Tracker, now: float, width: int, span_s: float = STRIP_SPAN_S) -> tuple[str, int]:
    """The last ``span_s`` seconds in ``width`` columns, oldest left: a mark where a beat
    arrived, and the current silence growing at the right edge. Beat times are the last
    beat minus the gaps before it: the window of gaps is the history, nothing more is kept."""
    column_s = span_s / width
    marks = [QUIET] * width
    last = t.last_beat_at
    tail = width
    if last is not None:
        at = last
        gaps = t.gaps.last(min(t.gaps.count, int(span_s / max(t.interval_s, 1e-3) * 2) + 2))
        index = len(gaps)
        while True:
            age = now - at
            if age >= span_s:
                break
            column = width - 1 - int(max(0.0, age) / column_s)
            marks[column] = BEAT
            tail = min(tail, width - 1 - column)
            if index == 0:
                break
            index -= 1
            at -= gaps[index]
    if t.state == "dead":
        return "".join(marks), 0
    late_columns = t.thresholds.late_after * t.interval_s / column_s if t.state != "unknown" else math.inf
    for k in range(tail):
        marks[width - tail + k] = SILENT_MARK if k + 1 >= late_columns else WAITING
    return "".join(marks), tail


def detail_of(fleet: FleetState, t: Tracker, now: float, strip_width: int = 0) -> DetailView:
    window = t.gaps.recent()
    distribution = [0] * len(BUCKETS)
    for gap in window:
        ratio = gap / t.interval_s
        distribution[next(i for i, (upper, _) in enumerate(BUCKETS) if ratio < upper)] += 1
    entries = [e for e in fleet.log if isinstance(e, Transition) and e.worker == t.name and e.source == t.source
               and (e.episode or e.to_state in ("late", "starved", "dead", "unknown"))]
    return DetailView(
        row=row(t, now, strip_width), pid=t.pid, host=t.host,
        p50_s=t.gaps.percentile(0.5) if t.gaps.count else None, jitter_s=t.gaps.std,
        loop_lag_ms=t.loop_lag_ms, latency_ms=t.latency_ms,
        late_s=t.thresholds.late_after * t.interval_s, starved_s=t.thresholds.starved_after * t.interval_s,
        gaps=tuple(t.gaps.last(DETAIL_GAPS)), distribution=tuple(distribution), window=len(window),
        entries=tuple(entries[-DETAIL_ENTRIES:]), probes=tuple(fleet.probes.get(t.key, ())),
        doing=t.probe, vouched=t.vouched,
        native=would_show(t.isolation, t.silence(now), t.interval_s),
        stack=t.stack, stuck_now=t.current_stack() is not None, stack_note=t.stack_note,
    )


def culprits_of(culprits: Iterable[Culprit]) -> tuple[CulpritView, ...]:
    ranked = sorted(culprits, key=lambda c: (-c.total_s, -c.blocks, c.frame.file, c.frame.function))
    sources = {source for c in ranked for source, _ in c.workers}
    return tuple(CulpritView(c.frame, tuple(sorted(name if len(sources) < 2 else f"{name} ({source})"
                                                   for source, name in c.workers)),
                             c.blocks, c.total_s, c.last_at) for c in ranked)
