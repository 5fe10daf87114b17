"""The recording's pure parts: every fleet-state input survives the journal as it was
made, and pruning keeps the default directory within its age and size."""

from __future__ import annotations

import os
import time
from pathlib import Path

from heartmon.detector import Key
from heartmon.recording import files
from heartmon.recording.journal import OPS, call_of, input_row
from heartmon.stacks import Stack
from tests.tui.scripted import GIL_HOLD

KEY: Key = ("ws://hub:8787", "worker/1 ünïcode")
IDS = {KEY: 7}


def _round_trip(name: str, args: tuple, kwargs: dict, last_t: float = 5.0) -> tuple[str, dict]:
    row = input_row(name, args, kwargs, IDS.__getitem__, last_t)
    assert row[1] == OPS.index(name)
    return call_of(row, {7: KEY}.__getitem__)


def test_an_input_comes_back_with_its_time_its_worker_and_every_argument() -> None:
    name, kwargs = _round_trip("join", (12.5, KEY, 0.1), {"connected": None, "isolation": "process", "pid": 42,
                                                          "host": "h", "heard_at": 12.25, "seq": 3})
    assert name == "join"
    assert kwargs == {"now": 12.5, "key": KEY, "interval_s": 0.1, "connected": None, "isolation": "process",
                      "pid": 42, "host": "h", "heard_at": 12.25, "seq": 3}


def test_a_stack_comes_back_equal_and_its_frames_validated() -> None:
    stack = Stack(GIL_HOLD, 10.125, 700.0, "signal", 10.25, 2)
    _, kwargs = _round_trip("stack", (10.25, KEY, stack), {})
    assert kwargs["stack"] == stack


def test_inputs_without_a_now_take_theirs_or_the_last_inputs_time() -> None:
    _, stalled = _round_trip("monitor_stalled", (3.0, 3.5), {})
    assert stalled == {"start": 3.0, "end": 3.5}
    row = input_row("doing", (KEY, "2 active tasks"), {}, IDS.__getitem__, 9.75)
    assert row[0] == 9.75  # after the beat it belongs to
    assert call_of(row, {7: KEY}.__getitem__) == ("doing", {"key": KEY, "activity": "2 active tasks"})


def test_prune_deletes_what_is_too_old_then_the_oldest_until_the_rest_fit(tmp_path: Path) -> None:
    now = time.time()
    made = {}
    for age_days, name in ((10, "a"), (3, "b"), (2, "c"), (1, "d")):
        path = made[name] = tmp_path / f"{name}{files.SUFFIX}"
        path.write_bytes(b"x" * 1000)
        (tmp_path / f"{name}{files.SUFFIX}-wal").write_bytes(b"w" * 500)
        os.utime(path, (now - age_days * 86400,) * 2)
    (tmp_path / "notes.txt").write_text("not a recording")
    deleted = files.prune(tmp_path, max_bytes=3000, max_age_s=7 * 86400, keep=made["b"], now=now)
    assert sorted(p.name for p in deleted) == ["a.sqlite", "c.sqlite"]  # a: too old; c: oldest that is not b
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.sqlite", "b.sqlite-wal", "d.sqlite", "d.sqlite-wal",
                                                          "notes.txt"]
    assert files.newest(tmp_path) == made["d"]
