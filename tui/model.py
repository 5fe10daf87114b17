"""How the screen says things: symbols, styles, columns and the formatting of a frozen
row. Plain functions of :class:`~heartmon.view.RowView` values: the table, the detail
screen and the tests share one way of saying "p99 gap" or "starved for 1.2 s", and
none of them computes anything about the fleet.
"""

from __future__ import annotations

from heartmon.detector import State, Transition
from heartmon.fleet_state import LogEntry, Notice, Stuck
from heartmon.view import SORTS, STRIP_SPAN_S, WORST_FIRST, RowView

__all__ = ["SORTS", "WORST_FIRST", "SYMBOL", "STATE_STYLE", "COLUMNS", "WIDTHS", "cells", "ms", "age",
           "entry_style"]

SYMBOL: dict[State, str] = {"healthy": "●", "busy": "◑", "late": "◌", "starved": "▲", "dead": "✕", "unknown": "?"}
"""A symbol beside every state word: the state is never told by colour alone."""

STATE_STYLE: dict[State, str] = {"healthy": "green", "busy": "bold blue", "late": "bold yellow",
                                 "starved": "bold red", "dead": "grey50", "unknown": "magenta"}

COLUMNS = ("worker", "isolation", "state", "last beat", "interval", "p99 gap", "max gap", "blocked", "missed",
           "episodes")
WIDTHS = (22, 9, 10, 9, 8, 8, 8, 8, 6, 8)
"""The worker's name is wide: Celery nodenames and Inngest app/instance ids are long."""
STATE_COLUMN = COLUMNS.index("state")
DROP_FIRST = ("interval", "p99 gap", "episodes", "max gap", "missed")
"""On a narrow terminal these columns give way, in this order, so that the strip stays."""
STRIP_MIN = 16
STRIP_TITLE = f"beats, last {STRIP_SPAN_S:g} s →"


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


def layout(table_width: int) -> tuple[int, ...]:
    """Which of the fixed columns fit beside a strip of at least STRIP_MIN columns."""
    shown = list(range(len(COLUMNS)))
    for name in DROP_FIRST:
        if fixed_width(tuple(shown)) + STRIP_MIN <= table_width:
            break
        shown.remove(COLUMNS.index(name))
    return tuple(shown)


def fixed_width(shown: tuple[int, ...]) -> int:
    """The shown columns before the strip, with a space after each."""
    return sum(WIDTHS[i] + 1 for i in shown)


def strip_width(table_width: int) -> int:
    """The strip takes whatever the fixed columns leave."""
    return max(STRIP_MIN, table_width - fixed_width(layout(table_width)))


def cells(row: RowView, name: str | None = None) -> tuple[str, ...]:
    """The fixed columns of a row; ``name`` replaces the worker's name (to add its source)."""
    return (
        name or row.name,
        row.isolation or "http",
        f"{SYMBOL[row.state]} {row.state}",
        age(row.silence_s),
        ms(row.interval_s),
        ms(row.p99_s),
        ms(row.max_s),
        f"{row.blocked_ms:.0f}ms" if row.blocked_ms is not None else "–",
        str(row.missed),
        str(row.episodes),
    )


def fit(values: tuple[str, ...], shown: tuple[int, ...]) -> list[str]:
    return [(elide(values[i], WIDTHS[i]) if i == 0 else values[i][:WIDTHS[i]]).ljust(WIDTHS[i]) for i in shown]


def elide(name: str, width: int) -> str:
    """A name too long for its column keeps its start and its end: ``fleet/host/name``
    over NATS, or a Celery ``worker@host``, differ as often at the end as at the start."""
    if len(name) <= width:
        return name
    head = width // 3
    return f"{name[:head]}…{name[-(width - head - 1):]}"


def entry_style(entry: LogEntry) -> str:
    """A log line's colour: a move in its new state's; where a worker is stuck in red, like
    the starvation it explains; what the monitor says about itself in yellow, its own
    stalls in magenta (no worker's colour: no worker is blamed)."""
    if isinstance(entry, Transition):
        return STATE_STYLE[entry.to_state]
    if isinstance(entry, Stuck):
        return "bold red"
    return "yellow" if isinstance(entry, Notice) else "magenta"
