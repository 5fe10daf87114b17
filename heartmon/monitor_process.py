"""The monitor's engine in a child process: heartmon's own ``process`` isolation,
applied to itself.

A thread would share the interpreter lock with the UI: decoding ten thousand beats a
second delays the UI's frames, and a long UI frame delays the timestamps that every
verdict rests on. In a child process neither can starve the other. The two talk over
one socket pair: the UI sends a :class:`~heartmon.view.ViewRequest` per tick (and on
every scroll or key), the child answers with a :class:`~heartmon.view.FleetView`. The
UI reads without ever blocking: whatever has arrived is parsed when the socket is
readable, and the newest view wins.

The child dies with its parent (PR_SET_PDEATHSIG, and end-of-file on the socket), and
the parent reports a child that died in one line, through the view's ``crashed``.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from heartmon.config import Settings
from heartmon.detector import Key
from heartmon.lifeline import die_with_parent
from heartmon.monitor import Monitor
from heartmon.sources import no_client, parse_source
from heartmon.stopping import stop_processes
from heartmon.view import FleetView, ViewRequest

if TYPE_CHECKING:
    pass

_HEADER = struct.Struct("!I")
STOP_GRACE_S = 0.3


def _frame(value: Any) -> bytes:
    body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


class _Frames:
    """Length-prefixed frames out of a byte stream that arrives in pieces."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        values = []
        while len(self._buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer)
            if len(self._buffer) < _HEADER.size + size:
                break
            values.append(pickle.loads(self._buffer[_HEADER.size:_HEADER.size + size]))
            del self._buffer[:_HEADER.size + size]
        return values


class MonitorProcess:
    """The same read API as :class:`Monitor` (``subscribe`` and ``request``), with the
    engine in a child process. ``request`` never blocks; views arrive on the loop that
    :meth:`attach` was given."""

    def __init__(self, settings: Settings, sources: list[str]) -> None:
        for spec in sources:  # a bad SOURCE is the user's error: say so here, not in the child
            parse_source(spec, settings, no_client)
        self.settings, self.source_specs = settings, sources
        self._subscribers: list[Callable[[FleetView], None]] = []
        self._frames = _Frames()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last: FleetView | None = None
        self._unsent_spy: Key | None = None

    def start(self) -> MonitorProcess:
        ours, theirs = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "heartmon.monitor_process", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
            env={**os.environ, "HEARTMON_DIE_WITH": str(os.getpid())},
        )
        theirs.close()
        # The model itself, not its JSON, which masks secrets (a NATS password or token).
        ours.sendall(_frame((self.settings, self.source_specs)))
        ours.setblocking(False)
        self._sock = ours
        return self

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Views are read on ``loop`` as they arrive: the UI's loop."""
        assert self._sock is not None, "start() first"
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._readable)

    def subscribe(self, callback: Callable[[FleetView], None]) -> None:
        self._subscribers.append(callback)

    def request(self, request: ViewRequest) -> None:
        """Asks for a view. If the child is too far behind to take even this, the request
        is dropped: the next tick asks again, and carries a stack read the user asked for
        (``spy``) that could not be sent, so that one is never lost."""
        if self._sock is None or self._last is not None and self._last.crashed:
            return
        if request.spy is None and self._unsent_spy is not None:
            request = replace(request, spy=self._unsent_spy)
        try:
            self._sock.send(_frame(request))
        except (BlockingIOError, InterruptedError):
            self._unsent_spy = request.spy
            return
        except OSError:
            self._died()
            return
        self._unsent_spy = None

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._died()
            return
        views = self._frames.feed(data)
        if views:
            self._deliver(views[-1])

    def _deliver(self, view: FleetView) -> None:
        self._last = view
        for callback in self._subscribers:
            callback(view)

    def _died(self) -> None:
        """The child is gone: say so once, in the view every screen already reads."""
        if self._loop is not None and self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
        code = None
        if self._proc is not None:
            try:  # its socket closed as it exited: the exit code follows at once
                code = self._proc.wait(0.5)
            except subprocess.TimeoutExpired:
                pass
        reason = f"the ingest process exited (code {code})" if code is not None else "the ingest process is gone"
        if self._last is not None and self._last.crashed:
            return  # the child said why before it went
        self._deliver(replace(self._last or FleetView(at=0.0, wall_offset=0.0), crashed=reason, entries=()))

    def stop(self) -> None:
        """Closes the socket (the child exits on end-of-file), then makes sure of it."""
        if self._loop is not None and self._sock is not None and not self._loop.is_closed():
            try:
                self._loop.remove_reader(self._sock.fileno())
            except (ValueError, RuntimeError):
                pass
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            stop_processes([self._proc], STOP_GRACE_S)

    def __enter__(self) -> MonitorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _serve(sock: socket.socket) -> None:
    """The child: the engine on this process's loop, a view for every request."""
    loop = asyncio.get_running_loop()
    frames = _Frames()
    received: list[Any] = []
    while not received:  # the settings may arrive in pieces
        data = await loop.sock_recv(sock, 1 << 20)
        if not data:
            return  # the UI went before it said what to watch
        received = frames.feed(data)
    (settings, specs), *pending = received
    monitor = Monitor(settings, specs)
    engine = asyncio.ensure_future(monitor.run())
    last = pending[-1] if pending else ViewRequest()
    try:
        if pending:
            await loop.sock_sendall(sock, _frame(monitor.view(last)))
        while True:
            receive = asyncio.ensure_future(loop.sock_recv(sock, 1 << 20))
            await asyncio.wait({receive, engine}, return_when=asyncio.FIRST_COMPLETED)
            if engine.done():  # ingest crashed: one last view says why, then we go
                receive.cancel()
                monitor.crashed = engine.exception() or RuntimeError("ingest stopped")
                await loop.sock_sendall(sock, _frame(monitor.view(last)))
                return
            data = receive.result()
            if not data:
                return  # the UI is gone: so are we
            if requests := frames.feed(data):
                for request in requests:
                    monitor.asked(request)
                last = requests[-1]
                await loop.sock_sendall(sock, _frame(monitor.view(last)))
    finally:
        engine.cancel()


def main() -> None:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the UI's to handle; it stops us
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.setblocking(False)
    try:
        asyncio.run(_serve(sock))
    except (ConnectionError, asyncio.CancelledError):
        pass


if __name__ == "__main__":
    main()
