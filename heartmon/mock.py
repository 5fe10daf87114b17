"""The mock server: a hub plus a fleet of real worker processes, in one command."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime

from heartmon.fleet import Fleet, worker_log
from heartmon.hub import Hub
from heartmon.protocol import (
    Isolation,
    Message,
    WorkerJoined,
    WorkerLeft,
    WorkerProbeFinished,
    WorkerProbeStarted,
)
from heartmon.stopping import stop_processes


def describe_event(message: Message) -> str | None:
    """One line for a person, for every event but beats (which are for machines)."""
    match message:
        case WorkerJoined(info=info):
            return f"{info.worker} joined ({info.isolation}, pid {info.pid}, every {info.interval_ms} ms)"
        case WorkerLeft(worker=worker, reason=reason):
            return f"{worker} left: {reason}"
        case WorkerProbeStarted(worker=worker, probe=probe, duration_s=duration):
            return f"{worker} started {probe} for {duration:g} s"
        case WorkerProbeFinished(worker=worker, elapsed_s=elapsed, error=error):
            return f"{worker} finished its probe after {elapsed:.2f} s" + (f" with an error: {error}" if error else "")
    return None


def print_events(message: Message) -> None:
    line = describe_event(message)
    if line:
        print(f"{datetime.now():%H:%M:%S} {line}", flush=True)


async def run_mock(
    hub: Hub,
    host: str,
    port: int,
    spec: list[tuple[Isolation, int]],
    interval_ms: int,
    on_ready: Callable[[str, Fleet], None],
) -> None:
    """Serves until cancelled; the fleet is stopped on the way out, whatever the way."""
    async with hub.listen(host, port) as server:
        bound = server.sockets[0].getsockname()
        url = f"ws://{host if ':' not in host else f'[{host}]'}:{bound[1]}"
        with worker_log() as log:
            fleet = Fleet(url, interval_ms, hub.token, log)
            try:
                fleet.start(spec)
                on_ready(url, fleet)
                await asyncio.Future()  # until cancelled
            finally:
                # In a thread, so that the hub keeps serving the workers' goodbyes.
                await asyncio.to_thread(fleet.stop)
                if fleet.procs and hub.listeners:
                    print(f"stopped {len(fleet.procs)} workers", file=sys.stderr, flush=True)


class EmbeddedMock:
    """`heartmon mock` as a child process that dies with us, for `heartmon` itself.

    Its own process, not a thread of the monitor: the hub's clock and pool must not
    share a GIL with the UI. It is stopped on exit, and killed by the kernel if we die
    first (PR_SET_PDEATHSIG, passed down through HEARTMON_DIE_WITH).
    """

    GRACE_S = 0.7
    """How long the mock gets to stop on SIGTERM, all of it: its workers' own grace
    (WORKER_GRACE_S, past which it kills them), its hub's shutdown and its interpreter's
    exit fit in it with room to spare. The user's terminal waits for this, so past it
    the mock is killed; its workers then die with it (PR_SET_PDEATHSIG), and only its
    cleanup (the workers' log) is lost."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.args = args
        self.env = dict(os.environ) if env is None else env
        self.proc: subprocess.Popen | None = None
        self._asked = False

    def __enter__(self) -> str:
        self._errors = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "heartmon", "mock", "--quiet", *self.args],
            env={**self.env, "HEARTMON_DIE_WITH": str(os.getpid())},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._errors, text=True,
        )
        assert self.proc.stdout is not None  # stdout=PIPE
        line = self.proc.stdout.readline()  # the first line is the address, or EOF on failure
        if not line.startswith("hub listening on "):
            self._stop()
            self._errors.seek(0)
            reason = self._errors.read().strip() or "the mock fleet did not start"
            self._close()
            raise MockError(reason)
        return line.split()[-1]

    def __exit__(self, *exc: object) -> None:
        self._stop()
        self._close()

    def begin_stop(self) -> None:
        """Asks the mock to stop now, so that it stops while the caller tears down its
        own things; leaving the context then waits for what remains of its grace."""
        if self.proc is not None and not self._asked:
            self.proc.terminate()
            self._asked = True

    def _stop(self) -> None:
        if self.proc is not None:
            stop_processes([self.proc], self.GRACE_S, asked=self._asked)

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self._errors.close()


class MockError(RuntimeError):
    pass
