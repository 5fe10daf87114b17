"""Records a live fleet state's inputs to SQLite, off the monitor's interpreter.

The recorder stands between the monitor and its fleet state: each input is passed on
unchanged, and a row for it is appended to a queue (a deque: appending is one atomic
step, whatever thread drains it). A thread of the recorder takes the queue every
``flush_ms`` and sends it, marshalled, to the writer process
(:mod:`heartmon.recording.writer`), which commits it in one transaction. So the ingest
loop pays an append per beat, the UI nothing, and a ``kill -9`` of the monitor loses at
most the rows of the last ``flush_ms``: the writer commits all it was sent.

Anything that stops the writing (a full disk, the size limit, a file that cannot be
written) stops the recording, never the monitor: the monitor is told in one line, and
goes on watching.
"""

from __future__ import annotations

import marshal
import os
import sqlite3
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from heartmon import __version__
from heartmon.detector import Key, Transition
from heartmon.fleet_state import FleetState
from heartmon.recording.journal import BEAT, EVALUATE_DUE, OPS, RecordingError, input_row, transition_row
from heartmon.recording.writer import ENDED, FRAME, TRANSITION, WORKER, create, reason
from heartmon.stopping import stop_processes

MAX_BACKLOG = 2_000_000
"""Rows waiting to be sent past which the writer is too slow for this fleet: the
recording stops rather than hold the monitor's memory hostage."""
WRITER_GRACE_S = 10.0
"""How long the writer gets, once told to end, to commit what it was sent."""


class Recorder:
    def __init__(self, path: Path, meta: dict[str, Any], *, flush_s: float = 0.5, max_bytes: float = 1e9,
                 max_age_s: float | None = None, prune: Path | None = None,
                 on_stop: Callable[[str], None] | None = None) -> None:
        """``prune``: the default directory, whose recordings this one keeps within
        ``max_bytes`` and ``max_age_s`` while it runs; ``on_stop`` hears, once, why the
        recording stopped before :meth:`close`."""
        self.path = path
        self.flush_s = flush_s
        self.on_stop = on_stop
        self.recording = True
        self.status = f"recording to {path}"
        self._queue: deque[Any] = deque()
        self._ids: dict[Key, int] = {}
        self._last_t = 0.0
        self._closing = threading.Event()
        self._stop_lock = threading.Lock()
        try:
            if path.exists():
                raise RecordingError(f"{path} already exists: a recording goes to a new file")
            path.parent.mkdir(parents=True, exist_ok=True)
            create(path, {"heartmon_version": __version__, **meta}, max_bytes)
        except (sqlite3.Error, OSError) as exc:
            raise RecordingError(f"cannot write {path}: {reason(exc)}") from None
        command = [sys.executable, "-m", "heartmon.recording.writer", str(path), repr(max_bytes)]
        if prune is not None and max_age_s is not None:
            command += [str(prune), repr(max_age_s)]
        self._writer = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._sender = threading.Thread(target=self._send_forever, name="heartmon-recorder", daemon=True)
        self._sender.start()
        self._listener = threading.Thread(target=self._listen, name="heartmon-recorder-status", daemon=True)
        self._listener.start()

    # --- the monitor's side -------------------------------------------------------

    def attach(self, fleet: FleetState) -> None:
        """Every input of ``fleet`` from now on is recorded as it is made."""
        push, ids, record = self._queue.append, self._ids, self

        def wrap(name: str) -> Callable[..., Any]:
            method = getattr(fleet, name)

            def recorded(*args: Any, **kwargs: Any) -> Any:
                result = method(*args, **kwargs)
                if record.recording:
                    row = input_row(name, args, kwargs, record._worker, record._last_t)
                    record._last_t = row[0]
                    push(row)
                    if isinstance(result, list) and result:
                        record._transitions(result)
                return result

            return recorded

        beat, evaluate_due = fleet.beat, fleet.evaluate_due

        def recorded_beat(now: float, key: Key, seq: int | None = None, main_blocked_ms: float | None = None,
                          loop_lag_ms: float | None = None, latency_ms: float | None = None) -> list[Transition]:
            changes = beat(now, key, seq, main_blocked_ms, loop_lag_ms, latency_ms)
            if record.recording:
                worker = ids.get(key)
                push((now, BEAT, worker if worker is not None else record._worker(key), seq, main_blocked_ms,
                      loop_lag_ms, latency_ms, None))
                record._last_t = now
                if changes:
                    record._transitions(changes)
            return changes

        def recorded_evaluate_due(now: float) -> list[Transition]:
            changes = evaluate_due(now)
            if record.recording:
                push((now, EVALUATE_DUE, None, None, None, None, None, None))
                record._last_t = now
                if changes:
                    record._transitions(changes)
            return changes

        for name in OPS[2:]:
            setattr(fleet, name, wrap(name))
        setattr(fleet, "beat", recorded_beat)  # noqa: B010 - an instance's method, shadowed on purpose
        setattr(fleet, "evaluate_due", recorded_evaluate_due)  # noqa: B010

    def _worker(self, key: Key) -> int:
        worker = self._ids.get(key)
        if worker is None:
            worker = self._ids[key] = len(self._ids) + 1
            self._queue.append((WORKER, (worker, key[0], key[1])))
        return worker

    def _transitions(self, changes: list[Any]) -> None:
        for change in changes:
            if isinstance(change, Transition):
                self._queue.append((TRANSITION, transition_row(change, self._worker((change.source, change.worker)))))

    # --- to and from the writer -------------------------------------------------------

    def _send_forever(self) -> None:
        while not self._closing.wait(self.flush_s):
            self._send()
        self._send()

    def _send(self) -> None:
        queue = self._queue
        count = len(queue)
        if not count or not self.recording:
            return
        if count > MAX_BACKLOG:
            self._stop(f"the disk is too slow for this fleet: {count} rows waited to be written")
            return
        body = marshal.dumps([queue.popleft() for _ in range(count)])
        try:
            assert self._writer.stdin is not None
            self._writer.stdin.write(FRAME.pack(len(body)) + body)
            self._writer.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # the writer stopped: why arrives on its stdout, or its exit code says

    def _listen(self) -> None:
        assert self._writer.stdout is not None
        line = self._writer.stdout.readline().decode(errors="replace").strip()
        if line:
            self._stop(line)
        elif not self._closing.is_set():
            self._writer.wait()
            self._stop(f"the recording's writer exited (code {self._writer.returncode})")

    def _stop(self, reason: str) -> None:
        with self._stop_lock:
            if not self.recording:
                return
            self.recording = False
        self._queue.clear()
        self.status = f"recording stopped: {reason}"
        if self.on_stop is not None:
            self.on_stop(self.status)

    def close(self, now: float) -> None:
        """Sends what is left, and when the monitor stopped (``now``, its clock); the
        writer commits it and closes the file (SQLite folds the WAL back into it)."""
        if self.recording:
            self._queue.append((ENDED, now))
        self._closing.set()
        self._sender.join(WRITER_GRACE_S)
        try:
            assert self._writer.stdin is not None
            self._writer.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            self._writer.wait(WRITER_GRACE_S)
        except subprocess.TimeoutExpired:
            stop_processes([self._writer], 0.5)
        self._listener.join(1)
