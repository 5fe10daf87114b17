"""What a recording holds, pure: the schema, and the fleet state's inputs as rows.

The monitor's judgements come from one pure object, :class:`~heartmon.fleet_state.FleetState`,
whose every input carries its time. A recording is the list of those inputs, in the
order they were made (the journal): fed to a new fleet state in the same order, they
give the same trackers and the same transitions, because the same code judges them.
That is how a replay shows what the live monitor showed, to the microsecond, and not
a reconstruction. Beats, nearly every row, get columns of their own; the rare inputs
keep their arguments as JSON (never pickle: a recording is handed to other people).

The transitions the live monitor made are written beside the journal, so that a report
can read them without replaying, and a replay can be checked against them.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from heartmon.detector import Key, Transition
from heartmon.fleet_state import FleetState
from heartmon.protocol import Frame
from heartmon.stacks import Stack, where

OPS = (
    "evaluate_due", "beat", "join", "left", "source_lost", "missing", "evidence", "vouch", "doing", "stack",
    "notice", "stack_note", "probe_started", "probe_finished", "probe_running", "forget", "monitor_stalled",
    "evaluate",
)
"""The fleet state's inputs, by their number in ``journal.op``. The two most frequent are
0 and 1, which SQLite stores in no bytes at all. Append only: numbers never change."""
EVALUATE_DUE, BEAT = 0, 1
_PARAMS: dict[str, tuple[str, ...]] = {
    name: tuple(inspect.signature(getattr(FleetState, name)).parameters)[1:] for name in OPS
}
"""Each input's parameter names, ``self`` left out."""
_TIME = {"monitor_stalled": "end"}
"""The parameter that is the input's time, where it is not ``now``."""

class RecordingError(Exception):
    """A recording that cannot be written or read: one line, for the user."""


Row = tuple[float, int, int | None, int | None, float | None, float | None, float | None, str | None]
"""One journal row: t, op, worker, seq, a, b, c, args."""


def input_row(name: str, args: tuple[Any, ...], kwargs: dict[str, Any], worker_id: Callable[[Key], int],
              last_t: float) -> Row:
    """Any input but a beat or a judgement (the recorder writes those two rows itself,
    they are nearly every row). Its time is its own where it has one, else the last input's
    (``doing`` follows the beat it belongs to)."""
    bound = dict(zip(_PARAMS[name], args, strict=False))
    bound.update(kwargs)
    t = bound.pop(_TIME.get(name, "now"), last_t)
    key = bound.pop("key", None)
    worker = worker_id(key) if key is not None else None
    return (t, OPS.index(name), worker, None, None, None, None, json.dumps(bound, default=_encode) if bound else None)


def call_of(row: Row, key_of: Callable[[int], Key]) -> tuple[str, dict[str, Any]]:
    """The input a row of :func:`input_row` holds, as the method's name and its keyword
    arguments (:func:`apply` makes beats and judgements itself)."""
    t, op, worker, *_, args = row
    name = OPS[op]
    kwargs: dict[str, Any] = json.loads(args, object_hook=_decode) if args else {}
    params = _PARAMS[name]
    time_param = _TIME.get(name, "now")
    if time_param in params:
        kwargs[time_param] = t
    if worker is not None:
        kwargs["key"] = key_of(worker)
    return name, kwargs


def apply(fleet: FleetState, row: Row, key_of: Callable[[int], Key]) -> Any:
    """Makes the input a row holds. Beats and judgements, nearly every row, are called
    directly: a replay of an hour of a large fleet is millions of them."""
    t, op, worker, seq, a, b, c, _ = row
    if op == BEAT:
        assert worker is not None
        return fleet.beat(t, key_of(worker), seq, a, b, c)
    if op == EVALUATE_DUE:
        return fleet.evaluate_due(t)
    name, kwargs = call_of(row, key_of)
    return getattr(fleet, name)(**kwargs)


def _encode(value: object) -> object:
    if isinstance(value, Stack):
        return {"__stack__": stack_json(value)}
    raise TypeError(f"a recording cannot hold {type(value).__name__}")


def _decode(value: dict[str, Any]) -> object:
    if value.keys() == {"__stack__"}:
        return stack_of(value["__stack__"])
    return value


def stack_json(stack: Stack) -> dict[str, Any]:
    fields = asdict(stack)
    fields["frames"] = [frame.model_dump() for frame in stack.frames]
    return fields


def stack_of(fields: dict[str, Any]) -> Stack:
    """A stack read back; its frames are validated as the protocol's (a recording may
    come from anyone)."""
    frames = tuple(Frame.model_validate(frame) for frame in fields["frames"])
    return Stack(frames, fields["taken_at"], fields["blocked_ms"], fields["via"], fields["received_at"],
                 fields.get("more", 0))


def transition_row(change: Transition, worker: int) -> tuple[Any, ...]:
    episode = change.episode
    stack = change.stack
    return (change.at, worker, change.from_state, change.to_state, change.reason, change.silence_s,
            episode.started_at if episode else None, episode.length_s if episode else None,
            episode.missed if episode else None, episode.probe if episode else None,
            episode.main_blocked_ms if episode else None, change.blocked_s, change.native,
            where(stack.culprit) if stack is not None else None,
            json.dumps(stack_json(stack)) if stack is not None else None)
