"""The recording's writer: a process of its own that turns batches of rows into SQLite
transactions.

SQLite costs a few microseconds of interpreter time per row inserted, which on a
thread of the monitor's process would be taken from the ingest loop (they share one
interpreter lock): at 100,000 beats a second that is a third of it. Here it costs the
monitor one ``marshal`` of each batch and a pipe write. The writer commits each batch in
one transaction, in WAL mode: what it committed survives any crash of either process,
and when the monitor dies, by ``kill -9`` or otherwise, its end of the pipe closes, so
the writer commits what it was sent and exits (it is never orphaned for longer).

It speaks on its stdout only to say that it stopped, and why, in one line. Its imports
are the standard library's and this package's schema and files: it starts in a few
milliseconds.
"""

from __future__ import annotations

import marshal
import os
import sqlite3
import struct
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

from heartmon.recording import files
from heartmon.recording.schema import SCHEMA, SCHEMA_VERSION

FRAME = struct.Struct("!I")
WORKER, TRANSITION, ENDED = 0, 1, 2
"""Tags of the batch items that are not journal rows (which are plain 8-tuples)."""
PRUNE_EVERY_S = 60.0


def open_file(path: Path, max_bytes: float | None) -> sqlite3.Connection:
    """A recording's file opened for writing. ``max_bytes`` caps it in SQLite itself:
    past it every write fails as on a full disk, and is said the same way."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    if max_bytes is not None:
        page = db.execute("PRAGMA page_size").fetchone()[0]
        db.execute(f"PRAGMA max_page_count={max(16, int(max_bytes // page))}")
    return db


def create(path: Path, meta: dict[str, Any], max_bytes: float | None) -> None:
    """A new recording: its tables and its meta, before any row is sent."""
    db = open_file(path, max_bytes)
    try:
        db.executescript(SCHEMA)
        db.execute("BEGIN")
        db.executemany("INSERT INTO meta VALUES (?, ?)",
                       [(k, str(v)) for k, v in {"schema_version": SCHEMA_VERSION, **meta}.items()])
        db.execute("COMMIT")
    finally:
        db.close()


def write(db: sqlite3.Connection, items: list[Any]) -> None:
    journal, workers, transitions, ended = [], [], [], []
    for item in items:
        if len(item) == 8:
            journal.append(item)
        elif item[0] == WORKER:
            workers.append(item[1])
        elif item[0] == TRANSITION:
            transitions.append(item[1])
        else:
            ended.append(("ended", repr(item[1])))
    db.execute("BEGIN")
    try:
        db.executemany("INSERT INTO workers VALUES (?, ?, ?)", workers)
        db.executemany("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?, ?, ?)", journal)
        db.executemany(f"INSERT INTO transitions VALUES ({', '.join('?' * 15)})", transitions)
        db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", ended)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
            db.execute("ROLLBACK")
        raise


def _frames(stream: BinaryIO):
    while header := stream.read(FRAME.size):
        (size,) = FRAME.unpack(header)
        yield marshal.loads(stream.read(size))


NICE = 10
"""The writer yields the CPU to the monitor: on a busy machine each batch's commit (some
15 ms of work every flush at 10,000 beats a second) would otherwise delay the screen's
frames. Its backlog waits in the pipe and in memory, and it catches up when the
machine is idle."""


def main() -> None:
    os.nice(NICE)
    path, max_bytes = Path(sys.argv[1]), float(sys.argv[2])
    prune_dir, max_age_s = (Path(sys.argv[3]), float(sys.argv[4])) if len(sys.argv) > 4 else (None, 0.0)
    db = open_file(path, max_bytes)
    next_prune = 0.0

    def prune() -> None:
        """The default directory (only it: ``prune_dir``), when the recording starts and
        every PRUNE_EVERY_S after."""
        nonlocal next_prune
        if prune_dir is not None and time.monotonic() >= next_prune:
            next_prune = time.monotonic() + PRUNE_EVERY_S
            files.prune(prune_dir, max_bytes, max_age_s, keep=path)

    prune()
    for items in _frames(sys.stdin.buffer):
        try:
            write(db, items)
        except (sqlite3.Error, OSError) as exc:
            print(_why(exc, path, max_bytes), flush=True)
            break
        prune()
    db.close()


def _why(exc: BaseException, path: Path, max_bytes: float) -> str:
    if "full" in str(exc) and files.size(path) >= max_bytes * 0.9:
        return f"{path} reached the size limit (recording.max_mb, {max_bytes / 1e6:g} MB)"
    return f"cannot write {path}: {reason(exc)}"


def reason(exc: BaseException) -> str:
    """An error as the end of a line: the OS's words where it has them."""
    return exc.strerror.lower() if isinstance(exc, OSError) and exc.strerror else str(exc)


if __name__ == "__main__":
    main()
