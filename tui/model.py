"""What the screen shows, computed from the fleet state: rows, order, summaries.

Plain functions of a tracker and the time, so the table, the detail screen and the
tests share one way of saying "p99 gap" or "starved for 1.2 s".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from heartmon.detector import State, Tracker
from heartmon.fleet_state import FleetState

SYMBOL: dict[State, str] = {"healthy": "●", "busy": "◑", "late": "◌", "starved": "▲", "dead": "✕"}
"""A symbol beside every state word: the state is never told by colour alone."""

WORST_FIRST: dict[State, int] = {"starved": 0, "late": 1, "dead": 2, "busy": 3, "healthy": 4}
"""What is going wrong now, then what is gone, then what is fine."""

STATE_STYLE: dict[State, str] = {"healthy": "green", "busy": "bold blue", "late": "bold yellow",
                                 "starved": "bold red", "dead": "grey50"}

SORTS = ("worst first", "name", "max gap", "missed")
"""p99 is shown, not sorted by: a percentile of every worker on every tick costs too much."""
SPARK = "▁▂▃▄▅▆▇█"
SPARK_GAPS = 12

COLUMNS = ("worker", "isolation", "state", "last beat", "interval", "p99 gap", "max gap", "blocked", "missed",
           "episodes", "recent gaps")
WIDTHS = (14, 9, 10, 9, 8, 8, 8, 8, 6, 8, SPARK_GAPS)


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    value = seconds * 1000
    return f"{value:.0f}ms" if value < 10_000 else f"{seconds:.0f}s"


def age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(0.0, seconds)
    return f"{seconds:.1f}s" if seconds < 100 else f"{seconds / 60:.0f}m"


def sparkline(gaps: list[float], ceiling: float) -> str:
    """Recent gaps as bars scaled to `ceiling` (the starvation threshold): a full bar is
    a silence long enough to starve."""
    return "".join(SPARK[min(len(SPARK) - 1, int(g / ceiling * (len(SPARK) - 1)))] for g in gaps[-SPARK_GAPS:])


@dataclass(frozen=True)
class Row:
    key: str
    state: State
    cells: tuple[str, ...]


def row(t: Tracker, now: float) -> Row:
    silence = t.silence(now) if t.state != "dead" else None
    blocked = f"{t.main_blocked_ms:.0f}ms" if t.main_blocked_ms is not None else "–"
    starve_s = t.thresholds.starved_after * t.interval_s
    gaps = t.gaps
    return Row(t.name, t.state, (
        t.name,
        t.isolation or "http",
        f"{SYMBOL[t.state]} {t.state}",
        age(silence),
        ms(t.interval_s),
        ms(gaps.percentile(0.99)) if gaps.count else "–",
        ms(gaps.max) if gaps.count else "–",
        blocked,
        str(t.missed),
        str(t.episodes),
        sparkline(gaps.last(SPARK_GAPS), starve_s),
    ))


def order(trackers: Iterable[Tracker], sort: str, text: str) -> list[Tracker]:
    """Filtered by a substring of name, isolation or state; sorted as asked."""
    needle = text.lower().strip()
    chosen = [t for t in trackers if not needle or needle in f"{t.name} {t.isolation or 'http'} {t.state}".lower()]
    keys = {
        "worst first": lambda t: (WORST_FIRST[t.state], t.name),
        "name": lambda t: t.name,
        "max gap": lambda t: (-t.gaps.max, t.name),
        "missed": lambda t: (-t.missed, t.name),
    }
    return sorted(chosen, key=keys[sort])


@dataclass(frozen=True)
class Summary:
    counts: dict[State, int]
    available: int
    total: int

    @property
    def no_available_worker(self) -> bool:
        return self.total > 0 and self.available == 0


def summarize(fleet: FleetState) -> Summary:
    """The fleet state's own counts and pool: the screen adds nothing to them."""
    return Summary(fleet.counts(), len(fleet.available()), len(fleet.trackers))
