"""Log entries for people and for machines: one line of text, or one JSON object."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from heartmon.detector import Transition
from heartmon.fleet_state import LogEntry

Wall = Callable[[float], float]
"""Turns the monitor's clock into seconds since the epoch."""


def describe(entry: LogEntry) -> str:
    if not isinstance(entry, Transition):
        return f"monitor stalled for {entry.length_s * 1000:.0f} ms: silence in that window is not blamed on workers"
    line = f"{entry.worker} {entry.from_state} → {entry.to_state}: {entry.reason}"
    if entry.episode:
        e = entry.episode
        line += f"; recovered after {e.length_s:.2f} s, {e.missed} beats missed"
        if e.probe:
            line += f", during {e.probe}"
    if entry.native:
        line += f" ({entry.native})"
    return line


def as_json(entry: LogEntry, wall: Wall) -> dict[str, object]:
    ts = datetime.fromtimestamp(wall(entry.at), UTC).isoformat(timespec="milliseconds")
    if not isinstance(entry, Transition):
        return {"ts": ts, "event": "monitor_stalled", "worker": None, "stall_ms": round(entry.length_s * 1000, 1)}
    record: dict[str, object] = {
        "ts": ts, "event": "recovered" if entry.episode else "transition", "worker": entry.worker,
        "source": entry.source, "from": entry.from_state, "to": entry.to_state, "reason": entry.reason,
    }
    if entry.native:
        record["native"] = entry.native
    if entry.episode:
        e = entry.episode
        record.update(episode_ms=round(e.length_s * 1000, 1), missed=e.missed, probe=e.probe,
                      main_blocked_ms=e.main_blocked_ms)
    return record


def clock_time(t: float, wall: Wall) -> str:
    """The monitor's time `t` as local wall-clock time, to the millisecond."""
    return datetime.fromtimestamp(wall(t)).strftime("%H:%M:%S.%f")[:-3]
