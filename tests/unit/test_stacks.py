"""Stacks: faulthandler's text parsed, frames classified and qualified, the culprit
chosen; the capture itself in this process, under a real block that holds the GIL,
beside an app's own faulthandler timer, and its fallback to a sampling thread."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import signal
import sysconfig
import threading
import time
from multiprocessing.sharedctypes import RawArray
from pathlib import Path

import psutil
import pytest

from heartmon import py_spy
from heartmon.agent import watch_main_loop
from heartmon.capture import SLOTS, STAMP, Sampler, StackReader, Watchdog, stack_pipe, start_capture
from heartmon.probes.builtin import BusyPython, GilHold
from heartmon.protocol import Frame, StackReport
from heartmon.stacks import classify, culprit, parse_dump, qualname, split_dumps, where

STDLIB = sysconfig.get_paths()["stdlib"]


def _dump(*frames: tuple[str, int, str], header: str = "Stack (most recent call first):") -> str:
    return header + "\n" + "".join(f'  File "{f}", line {n} in {name}\n' for f, n, name in frames)


def test_a_dump_is_whole_once_another_starts_or_it_reaches_a_thread_s_first_frame():
    first = _dump(("/srv/app/a.py", 3, "f"), ("/srv/app/main.py", 9, "<module>"))
    cut = _dump(("/srv/app/a.py", 4, "f"))  # its handler may still be writing
    dumps, rest = split_dumps(first + cut, complete=False)
    assert [body for _, body in dumps] == [first.split("\n", 1)[1]]
    assert rest == cut
    dumps, rest = split_dumps(rest, complete=True)  # read on the thread that writes: never half written
    assert len(dumps) == 1 and rest == ""
    sampled = _dump(("/srv/app/a.py", 3, "f"), header="Stack sampled at 12.5 (most recent call first):")
    assert split_dumps(sampled, complete=True)[0][0][0] == 12.5


def test_frames_come_innermost_first_with_their_kind_qualified_name_and_source_line(tmp_path):
    app = tmp_path / "jobs.py"
    app.write_text("class Report:\n    def render(self):\n        total = sum(range(10**9))\n")
    body = _dump((str(app), 3, "render"), (f"{STDLIB}/asyncio/events.py", 80, "_run"),
                 ("<frozen runpy>", 88, "_run_code")).split("\n", 1)[1] + "  ...\n"
    frames, more = parse_dump(body)
    assert [(f.function, f.kind) for f in frames] == [("Report.render", "app"), ("_run", "python"),
                                                      ("_run_code", "python")]
    assert frames[0].code == "total = sum(range(10**9))" and frames[2].code is None
    assert more == 1  # faulthandler's "..." past its own depth limit
    assert qualname(str(app), 3, "missing") == "missing"


def test_control_characters_in_a_path_or_a_source_line_are_shown_not_refused(tmp_path):
    tabby = tmp_path / "tabby.py"
    tabby.write_text("def f():\n    x = 1\t# a tab\n")
    (frame,), _ = parse_dump(_dump((str(tabby), 2, "f")).split("\n", 1)[1])
    assert frame.code == "x = 1 # a tab"
    (newline,), _ = parse_dump(_dump((str(tmp_path / "a\\x0ab.py"), 3, "g")).split("\n", 1)[1])
    assert newline.file == str(tmp_path / "a?b.py")


async def test_a_py_spy_cancelled_is_killed_and_the_cancel_goes_on(tmp_path):
    slow = tmp_path / "slow-py-spy"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    dumping = asyncio.create_task(py_spy.dump(str(slow), 1, 20))
    await asyncio.sleep(0.3)
    (child,) = psutil.Process().children()
    dumping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dumping
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_a_path_faulthandler_escaped_is_read_back(tmp_path):
    folder = tmp_path / "my dir"
    folder.mkdir()
    app = folder / 'café "q".py'
    app.write_text("class Menu:\n    def price(self):\n        return sum(range(10**9))\n")
    escaped = str(app).replace("é", "\\xe9")  # as faulthandler writes it
    (frame,), _ = parse_dump(_dump((escaped, 3, "price")).split("\n", 1)[1])
    assert (frame.file, frame.function, frame.code) == (str(app), "Menu.price", "return sum(range(10**9))")


@pytest.mark.parametrize(("path", "kind"), [
    (f"{STDLIB}/asyncio/base_events.py", "python"),
    ("/opt/other/lib/python3.9/json/decoder.py", "python"),  # another interpreter, read by py-spy
    ("/venv/lib/python3.11/site-packages/urllib3/connectionpool.py", "library"),
    ("/venv/lib/python3.11/site-packages/heartmon/agent.py", "heartmon"),
    ("/venv/lib/python3.11/site-packages/heartmon/probes/builtin.py", "app"),  # the load, named
    (str(Path(__import__("heartmon.agent").agent.__file__)), "heartmon"),
    (str(Path(GilHold.run.__code__.co_filename)), "app"),
    ("/srv/app/handlers.py", "app"),
])
def test_whose_code_a_frame_is(path, kind):
    assert classify(path) == kind


def _frame(function: str, kind: str) -> Frame:
    return Frame(file=f"/x/{function}.py", line=1, function=function, kind=kind)


def test_the_culprit_is_the_innermost_app_frame_else_library_else_the_innermost():
    assert culprit([_frame("lib", "library"), _frame("mine", "app"), _frame("outer", "app")]).function == "mine"
    assert culprit([_frame("loop", "python"), _frame("plugin", "library")]).function == "plugin"
    assert culprit([_frame("select", "python"), _frame("run", "heartmon")]).function == "select"
    assert where(_frame("mine", "app")) == "x/mine.py:1 mine"


async def _capture(mode: str, block, seconds: float) -> list[StackReport]:
    """A real loop with heartmon's stamp and capture, blocked on its own thread."""
    shared = RawArray("d", SLOTS)
    shared[STAMP] = time.monotonic()
    pipe, dumps = stack_pipe()
    capture = start_capture(dumps.fileno(), shared, 0.1, mode)
    assert capture is not None
    reports: list[StackReport] = []
    reader = StackReader(pipe, shared, 0.1, reports.append, on_blocked_thread=True)
    reader.start()
    stamper = asyncio.create_task(watch_main_loop(shared, capture.arm, 0.1))
    try:
        await asyncio.sleep(0.05)
        block().run(seconds)
        await asyncio.sleep(0.1)
    finally:
        stamper.cancel()
        capture.close()
        reader.close()
        dumps.close()
    return reports


async def test_a_block_that_holds_the_gil_is_read_while_it_lasts():
    reports = await _capture("auto", GilHold, 0.5)
    assert [r.blocked_ms for r in reports] == [100.0, 200.0, 400.0]  # × 1, 2, 4 of the threshold
    assert {r.frames[0].function for r in reports} == {"GilHold.run"}
    assert all(r.via == "signal" for r in reports)


async def test_an_app_s_own_faulthandler_timer_keeps_working_beside_the_capture(tmp_path):
    """heartmon does not use faulthandler's timer (one per process): an app that does,
    as pytest's faulthandler_timeout does, loses nothing, and neither does heartmon."""
    with open(tmp_path / "app-watchdog.txt", "w+") as theirs:
        faulthandler.dump_traceback_later(0.15, repeat=True, file=theirs)
        try:
            reports = await _capture("auto", GilHold, 0.4)
        finally:
            faulthandler.cancel_dump_traceback_later()
        theirs.seek(0)
        assert "Timeout (0:00:00.150000)!" in theirs.read()
    assert reports and reports[0].frames[0].function == "GilHold.run" and reports[0].via == "signal"


async def test_with_no_signal_free_the_capture_says_so_once_and_samples_with_a_thread(caplog):
    taken = {s: signal.getsignal(s) for s in range(signal.SIGRTMIN, signal.SIGRTMAX + 1)}
    try:
        for s in taken:
            signal.signal(s, lambda *_: None)  # every real-time signal has a handler: none to use
        with caplog.at_level(logging.WARNING, logger="heartmon.agent"):
            reports = await _capture("auto", BusyPython, 0.4)
    finally:
        for s, handler in taken.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "every real-time signal already has a handler" in warnings[0]
    assert reports and {r.via for r in reports} == {"sampler"}
    assert reports[0].frames[0].function == "BusyPython.run"


def test_the_watchdog_takes_a_signal_nobody_else_handles():
    pipe, dumps = stack_pipe()
    used = signal.SIGRTMAX
    signal.signal(used, lambda *_: None)
    try:
        first = Watchdog(dumps.fileno(), 0.1, threading.get_native_id())
        second = Watchdog(dumps.fileno(), 0.1, threading.get_native_id())  # a second agent in the same process
        assert used not in (first.signum, second.signum) and first.signum != second.signum
        first.close()
        second.close()
    finally:
        signal.signal(used, signal.SIG_DFL)
        pipe.close()
        dumps.close()


def test_the_sampler_is_what_capture_sampler_starts():
    pipe, dumps = stack_pipe()
    shared = RawArray("d", SLOTS)
    capture = start_capture(dumps.fileno(), shared, 0.1, "sampler")
    assert isinstance(capture, Sampler)
    capture.close()
    assert start_capture(dumps.fileno(), shared, 0.1, "off") is None
    pipe.close()
    dumps.close()
