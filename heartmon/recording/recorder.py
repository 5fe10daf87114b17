"""Records a live fleet state's inputs to SQLite, off the threads that make them.

The recorder stands between the monitor and its fleet state: each input is passed on
unchanged, and a row for it is appended to a queue (a deque: appending is one atomic
step, whatever thread drains it). A writer thread of its own takes the queue every
``flush_ms`` and writes it in one transaction, in WAL mode. So the ingest loop pays an
append per beat, the UI nothing, and a ``kill -9`` loses at most the rows of the last
flush: every transaction before it is whole on disk (WAL with ``synchronous=NORMAL``
is durable across a crash of the process, if not of the machine).

Anything that stops the writing (a full disk, the size limit, a file that cannot be
written) stops the recording, never the monitor: the monitor is told in one line, and
goes on watching.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from heartmon.detector import Key, Transition
from heartmon.fleet_state import FleetState
from heartmon.recording import files
from heartmon.recording.journal import (
    BEAT,
    EVALUATE_DUE,
    OPS,
    SCHEMA,
    SCHEMA_VERSION,
    RecordingError,
    input_row,
    transition_row,
)

MAX_BACKLOG = 2_000_000
"""Rows waiting for the writer past which the disk is too slow for this fleet: the
recording stops rather than hold the monitor's memory hostage."""
PRUNE_EVERY_S = 60.0
_WORKER, _TRANSITION = 0, 1
"""Tags of the queue's two rarer items; a journal row is a plain 8-tuple."""



def heartmon_version() -> str:
    try:
        return version("heartmon")
    except PackageNotFoundError:
        return "unknown"


class Recorder:
    def __init__(self, path: Path, meta: dict[str, Any], *, flush_s: float = 0.5, max_bytes: float | None = None,
                 max_age_s: float | None = None, prune: Path | None = None,
                 on_stop: Callable[[str], None] | None = None) -> None:
        """``prune``: the default directory, whose older recordings this one keeps within
        ``max_bytes`` and ``max_age_s`` while it runs; ``on_stop`` hears, once, why the
        recording stopped before :meth:`close`."""
        self.path = path
        self.flush_s = flush_s
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.prune_dir = prune
        self.on_stop = on_stop
        self.recording = True
        self.status = f"recording to {path}"
        self._queue: deque[Any] = deque()
        self._ids: dict[Key, int] = {}
        self._last_t = 0.0
        self._closing = threading.Event()
        self._db = self._open(meta)
        self._thread = threading.Thread(target=self._write_forever, name="heartmon-recorder", daemon=True)
        self._thread.start()

    def _open(self, meta: dict[str, Any]) -> sqlite3.Connection:
        try:
            if self.path.exists() and self.path.stat().st_size > 0:
                raise RecordingError(f"{self.path} already exists: a recording goes to a new file")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if self.max_bytes is not None:
                page = db.execute("PRAGMA page_size").fetchone()[0]
                db.execute(f"PRAGMA max_page_count={max(16, int(self.max_bytes // page))}")
            db.executescript(SCHEMA)
            rows = {"schema_version": SCHEMA_VERSION, "heartmon_version": heartmon_version(), **meta}
            with db:
                db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in rows.items()])
            return db
        except RecordingError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise RecordingError(f"cannot write {self.path}: {_reason(exc)}") from None

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
            self._queue.append((_WORKER, (worker, key[0], key[1])))
        return worker

    def _transitions(self, changes: list[Any]) -> None:
        for change in changes:
            if isinstance(change, Transition):
                self._queue.append((_TRANSITION, transition_row(change, self._worker((change.source, change.worker)))))

    # --- the writer's side --------------------------------------------------------

    def _write_forever(self) -> None:
        next_prune = 0.0
        waited = 0.0
        while not self._closing.wait(self.flush_s):
            self._flush()
            waited += self.flush_s
            if self.prune_dir is not None and waited >= next_prune and self.recording:
                next_prune = waited + PRUNE_EVERY_S
                files.prune(self.prune_dir, self.max_bytes or float("inf"), self.max_age_s or float("inf"),
                            keep=self.path)
        self._flush()

    def _flush(self) -> None:
        queue = self._queue
        count = len(queue)
        if not count or not self.recording:
            return
        if count > MAX_BACKLOG:
            self._stop(f"the disk is too slow for this fleet: {count} rows waited to be written")
            return
        journal, workers, transitions = [], [], []
        for _ in range(count):
            item = queue.popleft()
            if len(item) == 8:
                journal.append(item)
            elif item[0] == _WORKER:
                workers.append(item[1])
            else:
                transitions.append(item[1])
        try:
            with self._db:
                self._db.executemany("INSERT INTO workers VALUES (?, ?, ?)", workers)
                self._db.executemany("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?, ?, ?)", journal)
                self._db.executemany(f"INSERT INTO transitions VALUES ({', '.join('?' * 15)})", transitions)
        except (sqlite3.Error, OSError) as exc:
            if self.max_bytes is not None and files.size(self.path) >= self.max_bytes * 0.9:
                self._stop(f"{self.path} reached the size limit (recording.max_mb, {self.max_bytes / 1e6:.0f} MB)")
            else:
                self._stop(f"cannot write {self.path}: {_reason(exc)}")

    def _stop(self, reason: str) -> None:
        self.recording = False
        self._queue.clear()
        self.status = f"recording stopped: {reason}"
        if self.on_stop is not None:
            self.on_stop(self.status)

    def close(self, now: float) -> None:
        """Writes what is left, and when the monitor stopped (``now``, its clock), and
        closes the file (SQLite folds the WAL back into it)."""
        self._closing.set()
        self._thread.join(10)
        try:
            if self.recording:
                with self._db:
                    self._db.execute("INSERT OR REPLACE INTO meta VALUES ('ended', ?)", (repr(now),))
            self._db.close()
        except sqlite3.Error:
            pass


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)
