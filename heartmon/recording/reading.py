"""A recording, opened for reading: its meta, workers, journal and transitions."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heartmon.detector import Key, Thresholds
from heartmon.recording import files
from heartmon.recording.journal import RecordingError, Row
from heartmon.recording.schema import SCHEMA_VERSION

CHUNK = 20_000
"""Journal rows read at a time: a long recording is never in memory whole."""



@dataclass(frozen=True, slots=True)
class RecordedTransition:
    """One row of ``transitions``: what the live monitor decided, and when."""

    t: float
    key: Key
    from_state: str
    to_state: str
    reason: str
    silence_s: float | None
    episode_start: float | None
    episode_s: float | None
    missed: int | None
    probe: str | None
    main_blocked_ms: float | None
    blocked_s: float | None
    native: str | None
    culprit: str | None


def named(path: Path | None) -> Recording:
    """The recording a command was given, else the newest of the default directory."""
    path = path or files.newest()
    if path is None:
        raise RecordingError(f"no recordings in {files.directory()}: name one (FILE)")
    return Recording(path)


class Recording:
    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise RecordingError(f"{path}: no such recording")
        try:
            # Read-write, so that SQLite can take in the WAL of a monitor that was killed;
            # read-only where the file may not be written (someone else's recording).
            try:
                self.db = sqlite3.connect(path)
                self.db.execute("PRAGMA query_only=1")
                meta = dict(self.db.execute("SELECT key, value FROM meta"))
            except sqlite3.OperationalError as exc:
                if "readonly" not in str(exc) and "read-only" not in str(exc):
                    raise
                self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                meta = dict(self.db.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as exc:
            raise RecordingError(f"{path} is not a heartmon recording: {exc}") from None
        version = meta.get("schema_version")
        if version != str(SCHEMA_VERSION):
            raise RecordingError(f"{path} is a recording of schema version {version}; this heartmon reads version "
                                 f"{SCHEMA_VERSION}")
        self.meta = meta
        try:
            self.thresholds = Thresholds.model_validate_json(meta["thresholds"])
            self.wall_offset = float(meta["wall_offset"])
            self.log_size = int(meta["log_size"])
            self.sources: list[dict[str, Any]] = json.loads(meta["sources"])
        except (KeyError, ValueError) as exc:
            raise RecordingError(f"{path}: its meta table is damaged ({exc})") from None
        self.workers: dict[int, Key] = {id: (source, name) for id, source, name in
                                        self.db.execute("SELECT id, source, name FROM workers")}
        first, last = self.db.execute("SELECT min(t), max(t) FROM journal").fetchone()
        ended = float(meta["ended"]) if "ended" in meta else None
        self.start: float = first if first is not None else (ended or 0.0)
        self.end: float = max(x for x in (last, ended, self.start) if x is not None)

    def key_of(self, worker: int) -> Key:
        return self.workers[worker]

    def rows(self, after: int = 0) -> Iterator[tuple[int, Row]]:
        """Journal rows after rowid ``after``, in the order they were made."""
        while True:
            chunk = self.db.execute("SELECT rowid, t, op, worker, seq, a, b, c, args FROM journal WHERE rowid > ? "
                                    "ORDER BY rowid LIMIT ?", (after, CHUNK)).fetchall()
            for rowid, *row in chunk:
                yield rowid, tuple(row)
            if len(chunk) < CHUNK:
                return
            after = chunk[-1][0]

    def transitions(self, since: float | None = None, until: float | None = None) -> list[RecordedTransition]:
        since = self.start if since is None else since
        until = self.end if until is None else until
        return [RecordedTransition(t, self.workers[worker], *rest) for t, worker, *rest in self.db.execute(
            "SELECT t, worker, from_state, to_state, reason, silence_s, episode_start, episode_s, missed, probe, "
            "main_blocked_ms, blocked_s, native, culprit FROM transitions WHERE t >= ? AND t <= ? ORDER BY rowid",
            (since, until))]

    def wall(self, t: float) -> float:
        return t + self.wall_offset

    def close(self) -> None:
        self.db.close()
