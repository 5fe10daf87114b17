"""Where recordings live by default, and how long they are kept.

Every monitor records unless told not to, so the default must stay bounded on its own:
one file per run under the user's state directory, the oldest deleted when they are
too old or take too much room together. A file the user named (``--record FILE``) is
theirs, and never deleted.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

SUFFIX = ".sqlite"
_SIDECARS = ("-wal", "-shm")
"""SQLite's WAL files beside a recording: counted with it, deleted with it."""


def directory() -> Path:
    """``$XDG_STATE_HOME/heartmon/recordings``, by default ``~/.local/state/heartmon/recordings``."""
    from heartmon.fleet import state_dir  # here: the writer process prunes without importing the fleet's models

    return state_dir() / "recordings"


def new_file(folder: Path | None = None, now: float | None = None) -> Path:
    """A new recording's name: when it started (local time, sortable) and the pid, so
    that two monitors started in the same second do not share a file."""
    folder = folder or directory()
    stamp = datetime.fromtimestamp(time.time() if now is None else now).strftime("%Y-%m-%d_%H-%M-%S")
    return folder / f"{stamp}_{os.getpid()}{SUFFIX}"


def recordings(folder: Path | None = None) -> list[Path]:
    """The recordings in a folder, oldest first (by when they were last written)."""
    folder = folder or directory()
    try:
        found = [p for p in folder.iterdir() if p.name.endswith(SUFFIX) and p.is_file()]
    except OSError:
        return []
    return sorted(found, key=_mtime)


def newest(folder: Path | None = None) -> Path | None:
    found = recordings(folder)
    return found[-1] if found else None


def size(path: Path) -> int:
    """A recording's bytes, its WAL files included."""
    total = 0
    for part in _parts(path):
        try:
            total += part.stat().st_size
        except OSError:
            pass
    return total


def _parts(path: Path) -> list[Path]:
    """A recording's file and its WAL files."""
    return [path, *(path.with_name(path.name + s) for s in _SIDECARS)]


def prune(folder: Path, max_bytes: float, max_age_s: float, keep: Path | None = None,
          now: float | None = None) -> list[Path]:
    """Deletes the recordings older than ``max_age_s``, then the oldest until the rest
    fit in ``max_bytes``; never ``keep`` (the one being written). Returns what it deleted."""
    now = time.time() if now is None else now
    found = [p for p in recordings(folder) if p != keep]
    deleted = [p for p in found if now - _mtime(p) > max_age_s]
    kept = [p for p in found if p not in deleted]
    total = sum(size(p) for p in kept) + (size(keep) if keep is not None else 0)
    for path in kept:  # oldest first
        if total <= max_bytes:
            break
        total -= size(path)
        deleted.append(path)
    for path in deleted:
        for part in _parts(path):
            try:
                part.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                break  # not ours to delete after all; the next prune tries again
    return deleted


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
