"""Log entries for people and for machines: one line of text, or one JSON object."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from heartmon.detector import Transition
from heartmon.fleet_state import LogEntry, Notice, Stuck
from heartmon.stacks import Stack, where

Wall = Callable[[float], float]
"""Turns the monitor's clock into seconds since the epoch."""


def describe(entry: LogEntry) -> str:
    if isinstance(entry, Notice):
        return entry.text
    if isinstance(entry, Stuck):
        return f"{entry.worker} stuck in {where(entry.stack.culprit)}{_blocked(entry.stack)}"
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
    if entry.stack:
        line += f" — {'was ' if entry.blocked_s is not None else ''}in {where(entry.stack.culprit)}"
    return line


def _blocked(stack: Stack) -> str:
    taken = f"blocked {stack.blocked_ms:.0f} ms" if stack.blocked_ms is not None else "blocked"
    return f" ({taken}, read by {stack.via})"


def as_json(entry: LogEntry, wall: Wall) -> dict[str, object]:
    ts = _iso(wall(entry.at))
    if isinstance(entry, Notice):
        return {"ts": ts, "event": "notice", "worker": None, "message": entry.text}
    if isinstance(entry, Stuck):
        return {"ts": ts, "event": "stuck", "worker": entry.worker, "source": entry.source,
                **stack_json(entry.stack, wall)}
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
    if entry.stack:
        record.update(stack_json(entry.stack, wall))
    return record


def stack_json(stack: Stack, wall: Wall) -> dict[str, object]:
    """``stack``: the frames, innermost first; ``culprit``: the one named in the text."""
    return {"stack": [frame.model_dump() for frame in stack.frames], "stack_more": stack.more,
            "stack_taken_at": _iso(wall(stack.taken_at)), "stack_blocked_ms": stack.blocked_ms,
            "stack_via": stack.via, "culprit": where(stack.culprit)}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def clock_time(t: float, wall: Wall) -> str:
    """The monitor's time `t` as local wall-clock time, to the millisecond."""
    return datetime.fromtimestamp(wall(t)).strftime("%H:%M:%S.%f")[:-3]
