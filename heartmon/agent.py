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

Nothing the main loop does, or fails to do, may stop the heartbeat: the heartbeat side
never waits for the main loop. It hands it at most MAX_PENDING_INJECTS commands at a
time and refuses the rest itself, and in process isolation every write between the two
processes is buffered by the writer's event loop instead of blocking it.

Usage::

    agent = Agent(AgentConfig(hub="ws://127.0.0.1:8787", name="w1", isolation="process"))
    # or, over a NATS cluster (heartmon.bus):
    agent = Agent(AgentConfig(nats=("nats://10.0.0.5:4222",), name="w1", isolation="process"))
    task = asyncio.create_task(agent.run())   # beside the app's own work
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import RawArray
from typing import TYPE_CHECKING, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from heartmon import __version__
from heartmon.backoff import RECONNECT_MAX_S, backoff_delay
from heartmon.capture import BLOCK_FROM, LAG, SLOTS, STAMP, StackReader, stack_pipe, start_capture
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
    StackReport,
    decode_from_worker,
    decode_to_worker,
    encode,
)
from heartmon.urls import auth_headers, hub_ws

if TYPE_CHECKING:
    from heartmon.config import NatsSettings

log = logging.getLogger("heartmon.agent")

TICK_S = 0.01
"""How often the main loop stamps the shared clock: the resolution of main_blocked_ms."""
ACK_TIMEOUT_S = 1.0
MAX_PENDING_INJECTS = 32
"""Injects the main loop may hold at once, queued or running. The heartbeat side answers
any beyond it with a probe_finished carrying an error, at once, instead of passing it
on: a burst of commands must cost the worker a few refusals, never its heartbeat."""
MAX_ERROR_CHARS = 1000
"""A probe's exception is reported cut to this length, so that its report stays a small
frame whatever the probe raised."""
LINE_LIMIT = 4 * 1024 * 1024
"""The longest line between a process worker and its heartbeat child: above any frame
the agent's connection accepts from its hub (1 MiB) once re-encoded."""
LOG_BACKLOG_BYTES = 1024 * 1024
"""Log lines the heartbeat child holds for its parent at most; past it they are dropped
rather than let a parent that reads nothing grow the child without bound."""


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    name: str
    hub: str = ""
    """A hub's address (ws://HOST:PORT), unless the agent publishes to NATS instead."""
    nats: tuple[str, ...] = ()
    """NATS servers (nats://HOST:PORT, tls://…): publish there, not to a hub (heartmon.bus)."""
    bus: NatsSettings | None = None
    """On NATS: the prefix, fleet and credentials (the defaults when None)."""
    host: str | None = None
    """The host name the worker says it runs on (its identity on NATS is fleet/host/name);
    the machine's own when None."""
    max_duration_s: float = 60.0
    """On NATS the worker itself refuses longer probes, as a hub would."""
    isolation: Isolation = "none"
    interval_ms: int = 1000
    token: str | None = None
    backoff_initial_s: float = 0.05
    backoff_max_s: float = RECONNECT_MAX_S
    capture: Literal["auto", "sampler", "off"] = "auto"
    """How the main thread's stack is taken while its loop is blocked (heartmon.capture):
    ``auto`` by a signal handler that needs no GIL (a sampling thread where that cannot
    run), ``sampler`` by the thread alone, ``off`` not at all."""

    @property
    def capture_after_s(self) -> float:
        """Blocked this long, the stack is taken (and again at 2×, 4×, 8× … while the block
        lasts): the detector's default late threshold, two intervals."""
        return 2 * self.interval_ms / 1000


async def watch_main_loop(shared, arm: Callable[[], None], after_s: float) -> None:
    """Runs on the main loop: stamps the shared clock, records how late it wakes, keeps
    the stack watchdog from firing (``arm``) and, after a block long enough to have
    fired it, saves where the block started for the reader that times the dumps."""
    while True:
        expected = time.monotonic() + TICK_S
        await asyncio.sleep(TICK_S)
        now = time.monotonic()
        shared[LAG] = max(shared[LAG], (now - expected) * 1000)
        if now - shared[STAMP] >= after_s - TICK_S:
            shared[BLOCK_FROM] = shared[STAMP]
        shared[STAMP] = now
        arm()


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
        instance: str | None = None,
        stacks: Connection | None = None,
        stacks_on_loop_thread: bool = False,
    ) -> None:
        self.config = config
        self.pid = pid or os.getpid()
        """The worker's own pid (where user code runs), not the heartbeat child's."""
        self.instance = instance
        self.shared = shared
        self.deliver = deliver
        """Hands an inject to the main loop; it must return at once, whatever that loop does."""
        self.probes = probes
        self.isolated = config.isolation != "none"
        self.host = config.host or socket.gethostname()
        self.t0 = time.monotonic()
        self.seq = -1
        self.pending: deque[tuple[Message, concurrent.futures.Future | None]] = deque()
        self.unfinished: Counter[str] = Counter()
        """Injects handed to the main loop whose probe_finished has not come back, by id."""
        self.wake = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.online = False
        self.stack_reports: deque[StackReport] = deque()
        """Sent before anything else: before the beat that ends their block (which would
        close the episode without them), and before the probe reports that follow it."""
        self.stacks = None if stacks is None else StackReader(
            stacks, shared, config.capture_after_s, self._stack, on_blocked_thread=stacks_on_loop_thread)
        """Reads the main thread's stacks, taken while its loop is blocked (heartmon.capture)."""

    def _stack(self, report: StackReport) -> None:
        """A stack taken while no hub is connected describes a block nobody saw: dropped."""
        if self.online:
            self.stack_reports.append(report)
            self.wake.set()

    def enqueue(self, message: Message, sent: concurrent.futures.Future | None = None) -> None:
        """Queues a report of the main loop for the hub; a probe_finished frees its slot."""
        if isinstance(message, ProbeFinished) and self.unfinished[message.id] > 0:
            self.unfinished[message.id] -= 1
            if not self.unfinished[message.id]:
                del self.unfinished[message.id]
        self._queue(message, sent)

    def _queue(self, message: Message, sent: concurrent.futures.Future | None = None) -> None:
        self.pending.append((message, sent))
        self.wake.set()

    def take(self, inject: Inject) -> None:
        """Passes an inject to the main loop, or refuses it here when the main loop already
        holds MAX_PENDING_INJECTS: the refusal is a probe_finished with an error, so the
        hub and its monitors hear about it as about any probe that failed."""
        held = self.unfinished.total()
        if held >= MAX_PENDING_INJECTS:
            log.debug("%s: refused inject %s: %d pending", self.config.name, inject.id, held)
            self._queue(ProbeFinished(
                id=inject.id, elapsed_s=0.0,
                error=f"refused: {held} injects already pending on this worker (at most {MAX_PENDING_INJECTS})",
            ))
            return
        self.unfinished[inject.id] += 1
        self.deliver(inject)

    def enqueue_threadsafe(self, message: Message) -> Awaitable[None]:
        """Hands a report to the heartbeat side; the awaitable resolves once it is sent."""
        sent: concurrent.futures.Future = concurrent.futures.Future()
        self.loop.call_soon_threadsafe(self.enqueue, message, sent)
        return asyncio.wrap_future(sent)

    async def run(self) -> None:
        if self.stacks is not None:
            self.stacks.start()
        try:
            if self.config.nats:
                from heartmon.bus.agent_link import beat_on_bus

                await beat_on_bus(self)
            else:
                await self._connect()
        finally:
            if self.stacks is not None:
                self.stacks.close()

    async def _connect(self) -> None:
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
                    await ws.send(encode(self.hello()))
                    log.info("%s connected to %s", self.config.name, url)
                    attempt = 0
                    await self._session(ws)
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
                log.info("%s: hub %s unavailable (%s)", self.config.name, url, exc)
            delay = backoff_delay(attempt, self.config.backoff_initial_s, self.config.backoff_max_s)
            attempt += 1
            await asyncio.sleep(delay)

    def hello(self) -> Hello:
        return Hello(
            v=PROTOCOL_VERSION,
            worker=self.config.name,
            isolation=self.config.isolation,
            pid=self.pid,
            host=self.host,
            interval_ms=self.config.interval_ms,
            agent=f"heartmon/{__version__}",
            probes=self.probes,
            instance=self.instance,
        )

    async def _session(self, ws: ClientConnection) -> None:
        async def send(message: Message) -> None:
            await ws.send(encode(message))

        sender = asyncio.create_task(self.send_forever(send))
        self.online = True
        try:
            async for frame in ws:
                self._on_frame(frame)
        finally:
            self.online = False
            self.stack_reports.clear()
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
            self.take(message)

    def _beat(self, now: float, lateness_s: float) -> Beat:
        lag_ms = self.shared[LAG]
        self.shared[LAG] = 0.0
        if self.isolated:
            blocked_ms: float | None = max(0.0, (now - self.shared[STAMP] - TICK_S) * 1000)
        else:
            # On the loop the beat's own lateness is the loop's lag.
            lag_ms, blocked_ms = max(lag_ms, lateness_s * 1000), None
        return Beat(seq=self.seq, sent_at=time.time(), loop_lag_ms=round(lag_ms, 3),
                    main_blocked_ms=None if blocked_ms is None else round(blocked_ms, 3))

    async def send_forever(self, send: Callable[[Message], Awaitable[None]]) -> None:
        """Sends beats on their slots, and whatever is queued, through ``send`` (the
        hub's WebSocket, or a NATS publish) until cancelled."""
        interval = self.config.interval_ms / 1000
        while True:
            now = time.monotonic()
            # seq counts interval slots since start, so a silence shows as a gap in seq.
            slot = int((now - self.t0) / interval)
            if slot > self.seq and self.stacks is not None:
                self.stacks.collect()  # a stack taken during a block goes before the beat that ends it
            while self.stack_reports:
                await send(self.stack_reports[0])
                self.stack_reports.popleft()
            if slot > self.seq:
                lateness = now - (self.t0 + slot * interval)
                self.seq = slot
                await send(self._beat(now, lateness))
            while self.pending:
                message, sent = self.pending[0]
                await send(message)
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
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        elapsed = time.perf_counter() - start
        await self._reported(ProbeFinished(id=inject.id, elapsed_s=round(elapsed, 6), error=error))


class Agent:
    """Heartbeats to a hub from the isolation chosen; run it as a task of the app."""

    def __init__(self, config: AgentConfig, registry: ProbeRegistry | None = None) -> None:
        self.config = config
        self.registry = registry or load_registry()
        self.instance = uuid.uuid4().hex
        """Made once and sent in every hello, across reconnects and restarts of run(), so
        that a hub can tell this agent coming back from another one taking its name."""

    async def run(self) -> None:
        shared = RawArray("d", SLOTS)
        shared[STAMP] = time.monotonic()
        stacks, dumps = stack_pipe()
        capture = start_capture(dumps.fileno(), shared, self.config.capture_after_s, self.config.capture)
        if capture is None:
            stacks.close()
        watcher = asyncio.create_task(watch_main_loop(shared, capture.arm if capture else lambda: None,
                                                      self.config.capture_after_s))
        try:
            runner_for = {"none": self._on_loop, "thread": self._in_thread, "process": self._in_process}
            await runner_for[self.config.isolation](shared, stacks if capture else None)
        finally:
            watcher.cancel()
            if capture is not None:
                capture.close()
            dumps.close()

    def _beater(self, shared, deliver: Callable[[Inject], None], stacks: Connection | None = None,
                on_loop_thread: bool = False) -> Beater:
        return Beater(self.config, shared, deliver, self.registry.names(), instance=self.instance, stacks=stacks,
                      stacks_on_loop_thread=on_loop_thread)

    async def _on_loop(self, shared, stacks: Connection | None) -> None:
        runner = ProbeRunner(self.registry, report=lambda m: beater.enqueue_threadsafe(m))
        beater = self._beater(shared, runner.submit, stacks, on_loop_thread=True)
        await beater.run()

    async def _in_thread(self, shared, stacks: Connection | None) -> None:
        runner = ProbeRunner(self.registry, report=lambda m: beater.enqueue_threadsafe(m))
        started: concurrent.futures.Future[tuple[Beater, asyncio.Task]] = concurrent.futures.Future()
        ended: concurrent.futures.Future[None] = concurrent.futures.Future()

        async def beat_in_thread() -> None:
            beater = self._beater(shared, runner.submit_threadsafe, stacks)
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

    async def _in_process(self, shared, stacks: Connection | None) -> None:
        """The heartbeat child holds the connection and passes injects over a socket
        pair; this loop runs them and passes its reports back. Both ends write through
        their event loop's buffer, so neither ever blocks on the other: the child's loop
        stays free to beat while ours is deep in a probe and reads nothing. A second
        socket pair carries the child's log records to our logging, read by a thread so
        that they come out even while our loop is blocked."""
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = socket.socketpair()
        log_in, log_out = socket.socketpair()
        level = log.getEffectiveLevel()
        try:
            child = ctx.Process(
                target=_beat_in_child,
                args=(self.config, shared, theirs, log_out, level, os.getpid(), self.registry.names(), self.instance,
                      stacks),
                name=f"heartmon-heartbeat-{self.config.name}",
                daemon=True,
            )
            child.start()
        except BaseException:
            for sock in (ours, log_in):
                sock.close()
            raise
        finally:
            theirs.close()  # the child has its own copies
            log_out.close()
            if stacks is not None:
                stacks.close()
        relay = threading.Thread(target=relay_logs, args=(log_in,), name=f"heartmon-logs-{self.config.name}",
                                 daemon=True)
        relay.start()
        channel = await Channel.open(ours)

        async def report(message: Message) -> None:
            await channel.send_flushed(message)

        runner = ProbeRunner(self.registry, report)
        try:
            async for line in channel.lines():  # the child only ends before us if it crashed
                try:
                    message = decode_to_worker(line)
                except ProtocolError as exc:
                    log.warning("%s: bad message from the heartbeat process: %s", self.config.name, exc)
                    continue
                if isinstance(message, Inject):
                    runner.submit(message)
        finally:
            channel.close()  # the child sees EOF and leaves
            await asyncio.to_thread(child.join, 2.0)
            if child.is_alive():
                child.kill()
                await asyncio.to_thread(child.join, 2.0)
            await asyncio.to_thread(relay.join, 1.0)  # the child's last lines


class Channel:
    """Messages between a process worker and its heartbeat child: one JSON frame a line
    on a stream socket, both ends on an event loop.

    ``send`` never blocks: what the socket cannot take now waits in the transport's
    buffer until the peer reads. That is what keeps a heartbeat child beating while its
    parent's loop runs probes and reads nothing, and what keeps two full socket buffers
    from deadlocking two processes that each wait to write to the other. The buffer
    stays small because the heartbeat side passes at most MAX_PENDING_INJECTS injects
    at a time, and each one brings back two reports.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        # drain() then waits until everything is handed to the kernel, not merely
        # until the buffer is below a high-water mark.
        writer.transport.set_write_buffer_limits(high=0)

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=LINE_LIMIT)
        return cls(reader, writer)

    def send(self, message: Message) -> None:
        if not self.writer.is_closing():  # the peer is gone: we are ending anyway
            self.writer.write(encode(message).encode() + b"\n")

    async def send_flushed(self, message: Message) -> None:
        """Sends and waits until the socket has the message, so that the peer gets it
        even if this loop blocks right after (a report before the probe it announces)."""
        self.send(message)
        with suppress(ConnectionError):
            await self.writer.drain()

    async def lines(self) -> AsyncIterator[str]:
        """Every line the peer sends, until it closes its end or goes away."""
        while True:
            try:
                line = await self.reader.readline()
            except ValueError:  # over LINE_LIMIT: dropped, the next line is read
                log.warning("dropped a message of over %d bytes between heartbeat and worker", LINE_LIMIT)
                continue
            except ConnectionError:
                return
            if not line.endswith(b"\n"):  # end of file, and any partial last line
                return
            yield line[:-1].decode(errors="replace")

    def close(self) -> None:
        self.writer.close()


_RECORD_FIELDS = ("name", "levelno", "levelname", "pathname", "filename", "module", "lineno", "funcName",
                  "created", "msecs", "relativeCreated", "thread", "threadName", "processName", "process")


class ForwardLogs(logging.Handler):
    """In the heartbeat child: sends every log record to the parent, where the app's
    own logging (its handlers, levels and format) prints it, as for the other
    isolations. A spawned child inherits none of that configuration. Writes go through
    the child's loop and never wait for the parent."""

    def __init__(self, transport: asyncio.WriteTransport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.transport = transport
        self.loop = loop
        self._loop_thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {key: getattr(record, key) for key in _RECORD_FIELDS}
            fields["msg"] = record.getMessage()
            if record.exc_info:
                fields["exc_text"] = logging.Formatter().formatException(record.exc_info)
            if record.stack_info:
                fields["stack_info"] = record.stack_info
            line = json.dumps(fields, default=str).encode() + b"\n"
        except Exception:
            self.handleError(record)
            return
        if threading.get_ident() == self._loop_thread:
            self._write(line)
        else:
            with suppress(RuntimeError):  # the loop is closed: the child is ending
                self.loop.call_soon_threadsafe(self._write, line)

    def _write(self, line: bytes) -> None:
        # A closing transport warns on writes through asyncio's logger, which is us.
        if not self.transport.is_closing() and self.transport.get_write_buffer_size() < LOG_BACKLOG_BYTES:
            self.transport.write(line)


def relay_logs(sock: socket.socket) -> None:
    """In the worker, on a thread: logs each record its heartbeat child sends, until the
    child is gone."""
    with sock, sock.makefile("rb") as lines:
        for line in lines:
            try:
                record = logging.makeLogRecord({**json.loads(line), "args": None, "exc_info": None})
            except (ValueError, TypeError):
                continue
            logger = logging.getLogger(record.name)
            if logger.isEnabledFor(record.levelno):
                logger.handle(record)


def _beat_in_child(config: AgentConfig, shared, sock: socket.socket, log_sock: socket.socket, log_level: int,
                   parent: int, probes: list[str], instance: str | None, stacks: Connection | None) -> None:
    """Entry point of the heartbeat process: it lives exactly as long as its parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    die_with_parent(parent)
    asyncio.run(_child_main(config, shared, sock, log_sock, log_level, probes, parent, instance, stacks))


async def _child_main(config: AgentConfig, shared, sock: socket.socket, log_sock: socket.socket, log_level: int,
                      probes: list[str], parent: int, instance: str | None, stacks: Connection | None) -> None:
    loop = asyncio.get_running_loop()
    log_transport, _ = await loop.create_unix_connection(asyncio.Protocol, sock=log_sock)
    root = logging.getLogger()
    root.addHandler(ForwardLogs(log_transport, loop))
    root.setLevel(log_level)  # the parent filters again, with its own loggers' levels
    channel = await Channel.open(sock)
    beater = Beater(config, shared, channel.send, probes, pid=parent, instance=instance, stacks=stacks)
    task = asyncio.create_task(beater.run())

    async def read_reports() -> None:
        async for line in channel.lines():
            try:
                beater.enqueue(decode_from_worker(line))
            except ProtocolError as exc:
                log.warning("%s: bad report from the worker: %s", config.name, exc)
        task.cancel()  # the parent is gone or closed its end: stop

    reader = asyncio.create_task(read_reports())
    try:
        with suppress(asyncio.CancelledError):
            await task
    finally:
        reader.cancel()
        channel.close()
        log_transport.close()
