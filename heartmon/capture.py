"""The worker side of stack capture: the main thread's stack, taken while its loop is
blocked, by something that does not need the GIL the blocking code may hold.

The main loop re-arms a POSIX timer on every stamp (one ``timer_settime`` call, about
a microsecond). While the loop runs, the timer never expires; once the loop has been
blocked for ``after``, the kernel sends a real-time signal to the loop's thread, and
faulthandler's C handler for it writes that thread's Python stack to a pipe, with
no GIL and no bytecode run, whatever the thread is doing; again every ``after`` while
the block lasts. faulthandler's own timer (``dump_traceback_later``) is not used: it
is one per process, so an app that uses it would lose it, and re-arming it costs a
thread each time (about 100 µs: 1 % of a core at a 10 ms stamp).

The signal interrupts the blocked thread, and only while it is blocked past ``after``:
Python retries its own calls (``time.sleep``, ``select``, socket and pipe reads), but a
C library that sleeps or waits without retrying on EINTR (``usleep``, ``nanosleep``)
returns early there. ``capture="sampler"`` or ``"off"`` avoids it.

Where that is not possible (no POSIX timers through ctypes, or no real-time signal
free), a thread samples ``sys._current_frames()`` instead and says so once: it needs
the GIL, so it sees pure-Python load, not a C call that holds the GIL.

The heartbeat side (the loop itself, the heartbeat thread, or the heartbeat child)
reads the pipe with :class:`StackReader` and sends what it reads as stack reports.
"""

from __future__ import annotations

import asyncio
import ctypes
import faulthandler
import fcntl
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from multiprocessing.connection import Connection

from heartmon.protocol import StackReport
from heartmon.stacks import format_frames, parse_dump, split_dumps

log = logging.getLogger("heartmon.agent")

STAMP, LAG, BLOCK_FROM = 0, 1, 2
"""Slots of the array the main loop shares with its heartbeat: its last stamp (monotonic
s), its worst lag since the last beat (ms), and the stamp before its last long block."""
SLOTS = 3
MAX_SAMPLES = 8
"""Samples reported per block: at ``after`` × 1, 2, 4 … 128, so a long block is followed
to its end at a cost that grows with its logarithm."""
PIPE_BYTES = 1024 * 1024
"""The pipe holds the dumps of a block until they are read (after the block, when the
loop reads them itself): about a hundred deep stacks, enough for 25 s at 0.2 s."""
PARTIAL_WAIT_S = 0.02
"""A dump read while its handler may still be writing is taken after this much quiet."""
_CLOCK_MONOTONIC = 1
_SIGEV_THREAD_ID = 4
_taken_signals: set[int] = set()
"""Real-time signals this process's watchdogs hold (one per agent)."""


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _Sigevent(ctypes.Structure):
    """Linux's struct sigevent on 64-bit: the value, the signal, how to notify, and a
    union whose first int is the thread id for SIGEV_THREAD_ID (64 bytes in all)."""

    _fields_ = [("sigev_value", ctypes.c_void_p), ("sigev_signo", ctypes.c_int), ("sigev_notify", ctypes.c_int),
                ("tid", ctypes.c_int), ("_pad", ctypes.c_int * 11)]


def _timespec(seconds: float) -> _Timespec:
    return _Timespec(int(seconds), int(seconds % 1 * 1e9))


class CaptureUnavailable(Exception):
    """Why the signal watchdog cannot run here: the sampler stands in."""


class Watchdog:
    """Dumps the loop thread's stack once it has not been re-armed for ``after_s``."""

    def __init__(self, fd: int, after_s: float, thread_id: int) -> None:
        if sys.platform != "linux" or ctypes.sizeof(ctypes.c_void_p) != 8:
            raise CaptureUnavailable("POSIX timers aimed at a thread are used on 64-bit Linux only")
        libc = ctypes.CDLL(None, use_errno=True)
        self.signum = _free_signal(libc)
        event = _Sigevent(sigev_signo=self.signum, sigev_notify=_SIGEV_THREAD_ID, tid=thread_id)
        self._timer = ctypes.c_void_p()
        if libc.timer_create(_CLOCK_MONOTONIC, ctypes.byref(event), ctypes.byref(self._timer)) != 0:
            raise CaptureUnavailable(f"timer_create failed: errno {ctypes.get_errno()}")
        _taken_signals.add(self.signum)
        faulthandler.register(self.signum, file=fd, all_threads=False, chain=False)
        self._libc = libc
        self._settime = libc.timer_settime
        self._settime.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        spec = _Itimerspec(it_interval=_timespec(after_s), it_value=_timespec(after_s))
        self._armed = ctypes.byref(spec)
        self._spec = spec  # byref does not keep it alive
        self._off = _Itimerspec()

    def arm(self) -> None:
        """Called on every stamp of the loop: the dump comes ``after_s`` from now, unless
        the loop stamps again first."""
        self._settime(self._timer, 0, self._armed, None)

    def close(self) -> None:
        self._settime(self._timer, 0, ctypes.byref(self._off), None)
        self._libc.timer_delete(self._timer)
        faulthandler.unregister(self.signum)
        _taken_signals.discard(self.signum)


def _free_signal(libc: ctypes.CDLL) -> int:
    """A real-time signal with no handler at the C level (Python's or anyone's), from the
    top down: libraries that use one (glibc's threads, profilers) take them from the bottom."""
    disposition = ctypes.create_string_buffer(256)  # larger than any struct sigaction
    for signum in range(signal.SIGRTMAX, signal.SIGRTMIN + 3, -1):
        if signum in _taken_signals:
            continue
        if libc.sigaction(signum, None, disposition) == 0 and not ctypes.c_void_p.from_buffer(disposition).value:
            return signum
    raise CaptureUnavailable("every real-time signal already has a handler in this process")


class Sampler:
    """Stands in for the watchdog: a thread that reads the loop thread's frame when the
    loop has been blocked for ``after_s``, and writes it in faulthandler's format (with
    the time it was taken). It needs the GIL to run."""

    def __init__(self, fd: int, shared, after_s: float, thread_id: int) -> None:
        self.fd, self.shared, self.after_s, self.thread_id = fd, shared, after_s, thread_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartmon-stack-sampler", daemon=True)
        self._thread.start()

    def arm(self) -> None:
        """The loop stamps: nothing to do, the sampler reads the stamp."""

    def _run(self) -> None:
        taken = 0
        stamp = self.shared[STAMP]
        while not self._stop.wait(self.after_s / 4):
            now = time.monotonic()
            if self.shared[STAMP] != stamp:
                stamp, taken = self.shared[STAMP], 0
            if now - stamp < self.after_s * (taken + 1):
                continue
            frame = sys._current_frames().get(self.thread_id)
            stack = []
            while frame is not None:
                stack.append((frame.f_code.co_filename, frame.f_lineno or 0, frame.f_code.co_qualname))
                frame = frame.f_back
            with suppress(OSError):
                os.write(self.fd, format_frames(stack, now).encode())
            taken += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)


def start_capture(fd: int, shared, after_s: float, mode: str) -> Watchdog | Sampler | None:
    """On the loop's own thread: its stack goes to ``fd`` while it is blocked."""
    if mode == "off":
        return None
    thread = threading.current_thread()
    if mode == "auto":
        try:
            return Watchdog(fd, after_s, threading.get_native_id())
        except (CaptureUnavailable, OSError, AttributeError, RuntimeError) as exc:
            log.warning("stack capture: %s; sampling with a thread instead (it sees only code that "
                        "lets the GIL go)", exc)
    assert thread.ident is not None
    return Sampler(fd, shared, after_s, thread.ident)


def stack_pipe() -> tuple[Connection, Connection]:
    """(read end, write end) of a pipe: a pipe packs faulthandler's many small writes
    into pages, where a socket would spend a buffer per write. The read end can be
    handed to a spawned heartbeat child. The write end never blocks: a dump that does
    not fit while nobody reads is cut short. A reader on another thread or process drops
    it; the loop's own reader (isolation none) sends its innermost frames, which fit."""
    reader, writer = multiprocessing.Pipe(duplex=False)
    with suppress(OSError, AttributeError):  # Linux only; elsewhere the default size
        fcntl.fcntl(writer.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    os.set_blocking(writer.fileno(), False)
    return reader, writer


class StackReader:
    """On the heartbeat's loop: reads the dumps, times them, picks the samples to report
    (at ``after`` × 1, 2, 4 …), and hands each to ``send`` as a stack report.

    A dump carries no time. The watchdog writes dump ``k`` of a block at ``start + after
    × (k + 1)``, where ``start`` is the block's first stamp: the loop's current stamp
    while the block lasts, or the one it saved in BLOCK_FROM after it ended."""

    def __init__(self, pipe: Connection, shared, after_s: float, send: Callable[[StackReport], None],
                 *, on_blocked_thread: bool) -> None:
        self.pipe, self.shared, self.after_s, self.send = pipe, shared, after_s, send
        self.on_blocked_thread = on_blocked_thread
        """The reader runs on the thread the handler writes on (isolation none): no dump
        it reads can be half written."""
        self._text = ""
        self._block = -1.0
        self._index = 0
        self._partial: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        os.set_blocking(self.pipe.fileno(), False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.pipe.fileno(), self.collect)

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.pipe.fileno())
        if self._partial is not None:
            self._partial.cancel()
        self.pipe.close()

    def collect(self, *, wait_for_partial: bool = True) -> None:
        """Reads what is there and reports every whole dump; the heartbeat calls it before
        each beat too, so that a stack taken during a block reaches the hub before the
        beat that ends it."""
        while True:
            try:
                data = os.read(self.pipe.fileno(), 65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                return
            if not data:
                break
            self._text += data.decode(errors="replace")
        if not self._text:
            return
        dumps, self._text = split_dumps(self._text, complete=self.on_blocked_thread or not wait_for_partial)
        for sampled_at, body in dumps:
            try:
                self._report(sampled_at, body)
            except ValueError as exc:  # a report the protocol refuses: the beats must go on
                log.warning("a stack could not be reported: %s", str(exc).splitlines()[0])
        if self._text and self._partial is None and self._loop is not None:
            self._partial = self._loop.call_later(PARTIAL_WAIT_S, self._take_partial)

    def _take_partial(self) -> None:
        self._partial = None
        self.collect(wait_for_partial=False)

    def _report(self, sampled_at: float | None, body: str) -> None:
        now = time.monotonic()
        stamp = self.shared[STAMP]
        start = stamp if now - stamp >= self.after_s * 0.9 else self.shared[BLOCK_FROM]
        if start != self._block:
            self._block, self._index = start, 0
        index = self._index
        self._index += 1
        if index + 1 & index or index >= 2 ** MAX_SAMPLES - 1:
            return  # samples 0, 1, 3, 7 …: after × 1, 2, 4, 8 …
        taken = sampled_at if sampled_at is not None else start + self.after_s * (index + 1)
        frames, more = parse_dump(body)
        if not frames:
            return
        self.send(StackReport(v=1, taken_at=round(time.time() - now + taken, 6),
                              blocked_ms=round(max(0.0, taken - start) * 1000, 3),
                              via="sampler" if sampled_at is not None else "signal", frames=frames, more=more))
