"""Spawns worker processes for the mock and the matrix, and makes sure they die with us.

Workers are real OS processes (``python -m heartmon worker``): the load a probe puts
on one must not touch the hub or the others. Three layers keep them from outliving
their parent: a graceful SIGTERM on stop, SIGKILL for those that do not listen (a
worker deep in a C call handles no signal), and PR_SET_PDEATHSIG for a parent that
is itself killed.

Their output goes to one log file per run under the user's state directory, removed
when the run ends cleanly; only the newest few are ever kept.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from heartmon.protocol import ISOLATIONS, Isolation
from heartmon.stopping import stop_processes

WORKER_GRACE_S = 0.3
"""How long a worker gets to stop on SIGTERM. One that can run its handler closes its
connection at once and exits within about 0.1 s on an idle machine; past this it is
either still tearing down (harmless to cut short) or stuck in user code (a probe's
long C call holds the GIL, so its handler cannot run), which would hold the user's
quit for as long as that call lasts. So it is killed; its heartbeat child, in process
isolation, dies with it (PR_SET_PDEATHSIG)."""
LOGS_KEPT = 5
"""Workers' logs of earlier runs kept (those of runs that did not end cleanly, or that
are still running); older ones are deleted when a run starts."""

_SPEC_ITEM = re.compile(r"^(none|thread|process):(\d+)$")


class FleetSpecError(ValueError):
    pass


def parse_fleet_spec(spec: str, max_workers: int = 200) -> list[tuple[Isolation, int]]:
    """``none:2,thread:2,process:2`` -> ``[("none", 2), ("thread", 2), ("process", 2)]``.

    At most ``max_workers`` in all: each is a real Python process (two in process
    isolation), and a typo such as ``none:99999`` would fork until the machine gives up."""
    items: list[tuple[Isolation, int]] = []
    for raw in filter(None, (part.strip() for part in spec.split(","))):
        match = _SPEC_ITEM.match(raw)
        if not match:
            raise FleetSpecError(
                f"invalid worker spec {raw!r}: expected MODE:COUNT with MODE one of {', '.join(ISOLATIONS)}"
            )
        items.append((match.group(1), int(match.group(2))))  # type: ignore[arg-type]
    if not items:
        raise FleetSpecError("the worker spec names no workers")
    total = sum(count for _, count in items)
    if total > max_workers:
        raise FleetSpecError(f"the worker spec {spec!r} asks for {total} workers; at most {max_workers} in all")
    return items


@dataclass
class Fleet:
    hub: str
    interval_ms: int
    token: str | None = None
    log: IO[str] | None = None
    """Where the workers' own output goes; never the terminal the monitor draws on."""
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def spawn(self, isolation: Isolation, name: str) -> subprocess.Popen:
        env = dict(os.environ, HEARTMON_DIE_WITH=str(os.getpid()), PYTHONUNBUFFERED="1")
        if self.token:
            env["HEARTMON_TOKEN"] = self.token
        cmd = [sys.executable, "-m", "heartmon", "worker", "--hub", self.hub, "--isolation", isolation,
               "--name", name, "--interval-ms", str(self.interval_ms)]
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                stdout=self.log or subprocess.DEVNULL, stderr=self.log or subprocess.DEVNULL)
        self.procs[name] = proc
        return proc

    def start(self, spec: list[tuple[Isolation, int]]) -> None:
        for isolation, count in spec:
            for index in range(1, count + 1):
                self.spawn(isolation, f"{isolation}-{index}")

    def stop(self, grace_s: float = WORKER_GRACE_S) -> None:
        """Stops every worker within ``grace_s`` (all together, not each in turn), killing
        those that do not exit on SIGTERM: quitting must not wait for a probe to end."""
        stop_processes(self.procs.values(), grace_s)


def state_dir() -> Path:
    """heartmon's directory for state worth keeping a while but not backing up, such as
    logs: ``$XDG_STATE_HOME/heartmon``, by default ``~/.local/state/heartmon``."""
    base = os.environ.get("XDG_STATE_HOME", "")
    # The XDG spec says a relative path is invalid and must be ignored.
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "heartmon"


@contextmanager
def worker_log() -> Iterator[IO[str] | None]:
    """A log file for the workers' output, one per run, under :func:`state_dir`.

    Not the terminal (the monitor draws on it) and not a temporary directory, where
    one file per run piled up for good. It is removed when the block ends cleanly,
    cancellation (SIGTERM, Ctrl-C) included, and kept when an error escapes it, for
    someone to read; when it starts, all but the newest LOGS_KEPT earlier logs are
    deleted. Without a writable state directory the output is discarded (None).
    """
    try:
        directory = state_dir()
        directory.mkdir(parents=True, exist_ok=True)
        _prune(directory, LOGS_KEPT)
        path = directory / f"workers-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        log = path.open("x", buffering=1)
    except (OSError, RuntimeError) as exc:  # RuntimeError: no home directory
        print(f"heartmon: no workers' log, their output is discarded: {exc}", file=sys.stderr, flush=True)
        yield None
        return
    keep = False
    try:
        with log:
            yield log
    except Exception:
        keep = True
        raise
    finally:
        if not keep:
            path.unlink(missing_ok=True)


def _prune(directory: Path, keep: int) -> None:
    """Deletes all but the newest ``keep`` workers' logs in ``directory``."""
    logs = []
    for path in directory.glob("workers-*.log"):
        with suppress(OSError):  # another run may be pruning too
            logs.append((path.stat().st_mtime, path))
    logs.sort(reverse=True)
    for _mtime, path in logs[keep:]:
        with suppress(OSError):
            path.unlink()
