"""The agent: the worker-side heartbeat library, usable in anyone's asyncio app.

Where the heartbeat is sent from is the whole point, because of the GIL:

* ``none``    -- from the app's own event loop. Any blocking code silences it.
* ``thread``  -- from a thread with its own loop. Survives pure-Python work and
  blocking calls that release the GIL, not C code that holds the GIL.
* ``process`` -- from a child process. Survives everything the main thread does.

The main loop stamps a shared clock every few milliseconds; an isolated heartbeat
reads it and reports how long the main loop has been blocked *right now*, so the hub
sees a busy worker as busy instead of losing it. Commands from the hub arrive on the
heartbeat side and reach the main loop by message passing, like Node worker threads;
the main loop runs them synchronously, exactly as user code would.

Usage::

    agent = Agent(AgentConfig(hub="ws://127.0.0.1:8787", name="w1", isolation="process"))
    task = asyncio.create_task(agent.run())   # beside the app's own work
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import RawArray

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from heartmon import __version__
from heartmon.backoff import backoff_delay
from heartmon.lifeline import die_with_parent
from heartmon.probes import ProbeRegistry, load_registry
from heartmon.protocol import (
    PROTOCOL_VERSION,
    Beat,
    Error,
    Hello,
    Inject,
    Isolation,
    Message,
    ProbeFinished,
    ProbeStarted,
    ProtocolError,
    decode_from_worker,
    decode_to_worker,
    encode,
)
from heartmon.urls import auth_headers, hub_ws

log = logging.getLogger("heartmon.agent")

TICK_S = 0.01
"""How often the main loop stamps the shared clock: the resolution of main_blocked_ms."""
_STAMP, _LAG = 0, 1
"""Slots of the shared array: the main loop's last stamp (monotonic s), its worst lag (ms)."""
ACK_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class AgentConfig:
    hub: str
    name: str
    isolation: Isolation = "none"
    interval_ms: int = 1000
    token: str | None = None
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 5.0


async def watch_main_loop(shared) -> None:
    """Runs on the main loop: stamps the shared clock and records how late it wakes."""
    while True:
        expected = time.monotonic() + TICK_S
        await asyncio.sleep(TICK_S)
        now = time.monotonic()
        shared[_LAG] = max(shared[_LAG], (now - expected) * 1000)
        shared[_STAMP] = now


class Beater:
    """Keeps one connection to the hub, sends hello, beats and the main loop's reports.

    It lives on whichever loop isolates it (the app's, a thread's, a child's); every
    method but :meth:`enqueue_threadsafe` must be called on that loop.
    """

    def __init__(
        self,
        config: AgentConfig,
        shared,
        deliver: Callable[[Inject], None],
        probes: list[str],
        pid: int | None = None,
    ) -> None:
        self.config = config
        self.pid = pid or os.getpid()
        """The worker's own pid (where user code runs), not the heartbeat child's."""
        self.shared = shared
        self.deliver = deliver
        self.probes = probes
        self.isolated = config.isolation != "none"
        self.t0 = time.monotonic()
        self.seq = -1
        self.pending: deque[tuple[Message, concurrent.futures.Future | None]] = deque()
        self.wake = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def enqueue(self, message: Message, sent: concurrent.futures.Future | None = None) -> None:
        self.pending.append((message, sent))
        self.wake.set()

    def enqueue_threadsafe(self, message: Message) -> Awaitable[None]:
        """Hands a report to the heartbeat side; the awaitable resolves once it is sent."""
        sent: concurrent.futures.Future = concurrent.futures.Future()
        self.loop.call_soon_threadsafe(self.enqueue, message, sent)
        return asyncio.wrap_future(sent)

    async def run(self) -> None:
        url = hub_ws(self.config.hub, "/connect")
        headers = auth_headers(self.config.token)
        attempt = 0
        while True:
            try:
                # No websocket pings: beats are the liveness signal, and a ping timeout
                # on a starved loop would turn "busy" into "closed".
                async with connect(
                    url, additional_headers=headers, compression=None, ping_interval=None, open_timeout=5,
                    close_timeout=2,
                ) as ws:
                    await ws.send(encode(self._hello()))
                    log.info("%s connected to %s", self.config.name, url)
                    attempt = 0
                    await self._session(ws)
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
                log.info("%s: hub %s unavailable (%s)", self.config.name, url, exc)
            delay = backoff_delay(attempt, self.config.backoff_initial_s, self.config.backoff_max_s)
            attempt += 1
            await asyncio.sleep(delay)

    def _hello(self) -> Hello:
        return Hello(
            v=PROTOCOL_VERSION,
            worker=self.config.name,
            isolation=self.config.isolation,
            pid=self.pid,
            host=socket.gethostname(),
            interval_ms=self.config.interval_ms,
            agent=f"heartmon/{__version__}",
            probes=self.probes,
        )

    async def _session(self, ws: ClientConnection) -> None:
        sender = asyncio.create_task(self._send(ws))
        try:
            async for frame in ws:
                self._on_frame(frame)
        finally:
            sender.cancel()
            with suppress(asyncio.CancelledError, ConnectionClosed):
                await sender

    def _on_frame(self, frame: str | bytes) -> None:
        try:
            message = decode_to_worker(frame)
        except ProtocolError as exc:
            log.warning("%s: bad frame from hub: %s", self.config.name, exc)
            return
        if isinstance(message, Error):
            log.warning("%s: hub says %s: %s", self.config.name, message.code, message.message)
        else:
            self.deliver(message)

    def _beat(self, now: float, lateness_s: float) -> Beat:
        lag_ms = self.shared[_LAG]
        self.shared[_LAG] = 0.0
        if self.isolated:
            blocked_ms: float | None = max(0.0, (now - self.shared[_STAMP] - TICK_S) * 1000)
        else:
            # On the loop the beat's own lateness is the loop's lag.
            lag_ms, blocked_ms = max(lag_ms, lateness_s * 1000), None
        return Beat(seq=self.seq, sent_at=time.time(), loop_lag_ms=round(lag_ms, 3),
                    main_blocked_ms=None if blocked_ms is None else round(blocked_ms, 3))

    async def _send(self, ws: ClientConnection) -> None:
        interval = self.config.interval_ms / 1000
        while True:
            now = time.monotonic()
            # seq counts interval slots since start, so a silence shows as a gap in seq.
            slot = int((now - self.t0) / interval)
            if slot > self.seq:
                lateness = now - (self.t0 + slot * interval)
                self.seq = slot
                await ws.send(encode(self._beat(now, lateness)))
            while self.pending:
                message, sent = self.pending[0]
                await ws.send(encode(message))
                self.pending.popleft()
                if sent is not None and not sent.done():
                    sent.set_result(None)
            self.wake.clear()
            next_at = self.t0 + (self.seq + 1) * interval
            with suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), max(0.0, next_at - time.monotonic()))


class ProbeRunner:
    """Runs injected probes on the main loop, synchronously, as user code would."""

    def __init__(self, registry: ProbeRegistry, report: Callable[[Message], Awaitable[None]]) -> None:
        self.registry = registry
        self.report = report
        self.loop = asyncio.get_running_loop()
        self.tasks: set[asyncio.Task] = set()

    def submit_threadsafe(self, inject: Inject) -> None:
        self.loop.call_soon_threadsafe(self.submit, inject)

    def submit(self, inject: Inject) -> None:
        task = self.loop.create_task(self._handle(inject))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _reported(self, message: Message) -> None:
        # Wait until the heartbeat side has the report on the wire, so that
        # probe_started is not stuck behind the very probe it announces.
        with suppress(TimeoutError):
            await asyncio.wait_for(self.report(message), ACK_TIMEOUT_S)

    async def _handle(self, inject: Inject) -> None:
        await self._reported(ProbeStarted(id=inject.id, probe=inject.probe, duration_s=inject.duration_s))
        start = time.perf_counter()
        error = None
        try:
            self.registry.get(inject.probe)().run(inject.duration_s, **inject.params)
        except Exception as exc:  # a failing probe is reported, the worker goes on
            error = f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - start
        await self._reported(ProbeFinished(id=inject.id, elapsed_s=round(elapsed, 6), error=error))


class Agent:
    """Heartbeats to a hub from the isolation chosen; run it as a task of the app."""

    def __init__(self, config: AgentConfig, registry: ProbeRegistry | None = None) -> None:
        self.config = config
        self.registry = registry or load_registry()

    async def run(self) -> None:
        shared = RawArray("d", 2)
        shared[_STAMP] = time.monotonic()
        watcher = asyncio.create_task(watch_main_loop(shared))
        try:
            runner_for = {"none": self._on_loop, "thread": self._in_thread, "process": self._in_process}
            await runner_for[self.config.isolation](shared)
        finally:
            watcher.cancel()

    async def _on_loop(self, shared) -> None:
        runner = ProbeRunner(self.registry, report=lambda m: beater.enqueue_threadsafe(m))
        beater = Beater(self.config, shared, runner.submit, self.registry.names())
        await beater.run()

    async def _in_thread(self, shared) -> None:
        runner = ProbeRunner(self.registry, report=lambda m: beater.enqueue_threadsafe(m))
        started: concurrent.futures.Future[tuple[Beater, asyncio.Task]] = concurrent.futures.Future()
        ended: concurrent.futures.Future[None] = concurrent.futures.Future()

        async def beat_in_thread() -> None:
            beater = Beater(self.config, shared, runner.submit_threadsafe, self.registry.names())
            task = asyncio.create_task(beater.run())
            started.set_result((beater, task))
            with suppress(asyncio.CancelledError):
                await task

        def thread_main() -> None:
            try:
                asyncio.run(beat_in_thread())
            finally:
                with suppress(concurrent.futures.InvalidStateError):  # cancelled: we are stopping
                    ended.set_result(None)

        thread = threading.Thread(target=thread_main, name=f"heartmon-heartbeat-{self.config.name}", daemon=True)
        thread.start()
        beater, task = await asyncio.wrap_future(started)
        try:
            await asyncio.wrap_future(ended)
        finally:
            beater.loop.call_soon_threadsafe(task.cancel)
            await asyncio.to_thread(thread.join, 2.0)

    async def _in_process(self, shared) -> None:
        loop = asyncio.get_running_loop()
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe()

        async def report(message: Message) -> None:
            with suppress(OSError):  # the child is gone: we are ending anyway
                ours.send_bytes(encode(message).encode())

        runner = ProbeRunner(self.registry, report)
        child = ctx.Process(
            target=_beat_in_child,
            args=(self.config, shared, theirs, os.getpid(), self.registry.names()),
            name=f"heartmon-heartbeat-{self.config.name}",
            daemon=True,
        )
        child.start()
        theirs.close()
        ended = loop.create_future()

        def on_readable() -> None:
            try:
                runner.submit(decode_to_worker(ours.recv_bytes().decode()))
            except (EOFError, OSError):
                loop.remove_reader(ours.fileno())
                if not ended.done():
                    ended.set_result(None)

        loop.add_reader(ours.fileno(), on_readable)
        try:
            await ended  # the child only ends before us if it crashed
        finally:
            with suppress(ValueError, OSError):
                loop.remove_reader(ours.fileno())
            ours.close()  # the child sees EOF and leaves
            await asyncio.to_thread(child.join, 2.0)
            if child.is_alive():
                child.kill()
                await asyncio.to_thread(child.join, 2.0)


def _beat_in_child(config: AgentConfig, shared, conn: Connection, parent: int, probes: list[str]) -> None:
    """Entry point of the heartbeat process: it lives exactly as long as its parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    die_with_parent(parent)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_child_main(config, shared, conn, probes, parent))


async def _child_main(config: AgentConfig, shared, conn: Connection, probes: list[str], parent: int) -> None:
    loop = asyncio.get_running_loop()

    def deliver(inject: Inject) -> None:
        conn.send_bytes(encode(inject).encode())

    beater = Beater(config, shared, deliver, probes, pid=parent)
    task = asyncio.create_task(beater.run())

    def on_readable() -> None:
        try:
            beater.enqueue(decode_from_worker(conn.recv_bytes().decode()))
        except (EOFError, OSError):  # the parent is gone or closed the pipe: stop
            loop.remove_reader(conn.fileno())
            task.cancel()

    loop.add_reader(conn.fileno(), on_readable)
    with suppress(asyncio.CancelledError):
        await task
