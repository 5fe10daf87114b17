"""The hub: workers connect on /connect, monitors watch on /watch, people use HTTP.

One websockets server serves all of it on one port: WebSocket paths go through the
handshake, every other request is answered in ``process_request`` (websockets reads
no request bodies, so commands take query parameters). The hub keeps the pool of
*available* workers with the same detector the monitor runs (available: ``healthy``
or ``busy``), so a command routed to ``any`` fails with "no available worker" exactly
when the monitor shows none: a fleet whose heartbeats are starved, reproduced.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from heartmon.detector import Thresholds
from heartmon.fleet_state import FleetState
from heartmon.probes import ProbeRegistry
from heartmon.protocol import (
    PROTOCOL_VERSION,
    Beat,
    Hello,
    Inject,
    Message,
    ProbeFinished,
    ProbeStarted,
    ProtocolError,
    Snapshot,
    WorkerBeat,
    WorkerInfo,
    WorkerJoined,
    WorkerLeft,
    WorkerProbeFinished,
    WorkerProbeStarted,
    check_version,
    decode_from_worker,
    encode,
)

log = logging.getLogger("heartmon.hub")

HARD_MAX_FRAME_BYTES = 1024 * 1024
"""Frames up to this size are read and refused with an error reply; larger ones make
websockets close that one connection (1009), which is counted too."""
SHUTDOWN_S = 0.5
"""How long a closing hub waits for WebSocket peers to answer its close. Gone or killed
peers have closed their end already and live ones answer within milliseconds; one that
cannot (a worker whose loop is starved) is dropped past this."""
WATCHER_BACKLOG_BYTES = 4 * 1024 * 1024
"""A monitor that stopped reading (suspended, stalled) is dropped past this much unsent
data, rather than growing the hub without bound; it reconnects and resyncs."""


class HubError(Exception):
    """A request the hub refuses: the HTTP status and a message that names the problem."""

    def __init__(self, status: HTTPStatus, code: str, message: str, allow: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.allow = allow


@dataclass
class WorkerSession:
    hello: Hello
    ws: ServerConnection
    connected_at: float
    last_beat_at: float | None = None
    seq: int | None = None
    probe: str | None = None

    def info(self) -> WorkerInfo:
        h = self.hello
        return WorkerInfo(
            worker=h.worker, isolation=h.isolation, pid=h.pid, host=h.host, interval_ms=h.interval_ms,
            agent=h.agent, probes=h.probes, connected_at=self.connected_at,
            last_beat_at=self.last_beat_at, seq=self.seq, probe=self.probe,
        )


@dataclass
class Hub:
    registry: ProbeRegistry
    token: str | None = None
    max_duration_s: float = 60.0
    thresholds: Thresholds = field(default_factory=Thresholds)
    name: str = "hub"
    wall: Callable[[], float] = time.time
    mono: Callable[[], float] = time.monotonic
    workers: dict[str, WorkerSession] = field(default_factory=dict)
    watchers: set[ServerConnection] = field(default_factory=set)
    beats: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    injects: Counter[str] = field(default_factory=Counter)
    unauthorized: int = 0
    listeners: list[Callable[[Message], None]] = field(default_factory=list)
    """In-process subscribers: they see every event as /watch does, with no socket."""
    fleet: FleetState = field(init=False)

    def __post_init__(self) -> None:
        self.fleet = FleetState(self.thresholds, log_size=100)

    # --- serving ------------------------------------------------------------------

    @asynccontextmanager
    async def listen(self, host: str, port: int) -> AsyncIterator[Server]:
        """Serves inside the block; on the way out, stops within about SHUTDOWN_S
        whatever the peers do (a client that never closes its end must not hold us)."""
        server = await self._serve(host, port)
        try:
            yield server
        finally:
            # Stops accepting and closes the open WebSockets (1001).
            server.close()
            sockets = list(server.all_connections)
            if sockets:
                await asyncio.wait([asyncio.ensure_future(ws.wait_closed()) for ws in sockets], timeout=SHUTDOWN_S)
                for ws in sockets:
                    ws.transport.abort()  # a no-op for those that closed
            # Left are HTTP connections: answered and half-closed, waiting only for the
            # client to close its end (websockets gives it close_timeout), or with a
            # request in flight or none sent yet (open_timeout). A moment for answers
            # being written, then nothing more is worth waiting for.
            try:
                await asyncio.wait_for(server.wait_closed(), 0.05)
            except TimeoutError:
                if abort_clients := getattr(server.server, "abort_clients", None):  # Python 3.13+
                    abort_clients()
                for task in list(server.handler_tasks):
                    task.cancel()
                with suppress(TimeoutError):
                    await asyncio.wait_for(server.wait_closed(), 0.1)

    def _serve(self, host: str, port: int) -> Server:
        return serve(
            self._handler, host, port,
            process_request=self._process_request,
            max_size=HARD_MAX_FRAME_BYTES,
            compression=None,
            # Heartbeats are the liveness signal; a ping timeout on a worker whose
            # loop is starved would wrongly turn "busy" into "connection lost".
            ping_interval=None,
            # On shutdown a peer that cannot answer the close (its loop is starved)
            # is dropped after 2 s rather than holding the hub for websockets' 10.
            close_timeout=2,
            logger=logging.getLogger("heartmon.hub.ws"),
        )

    async def _handler(self, ws: ServerConnection) -> None:
        path = urlsplit(ws.request.path).path
        if path == "/connect":
            await self._worker_session(ws)
        else:
            await self._watch_session(ws)

    # --- workers ------------------------------------------------------------------

    async def _worker_session(self, ws: ServerConnection) -> None:
        session: WorkerSession | None = None
        reason = "connection closed"
        try:
            async for frame in ws:
                try:
                    message = decode_from_worker(frame)
                    if session is None:
                        session = await self._join(ws, message)
                    else:
                        self._on_worker_message(session, message)
                except ProtocolError as exc:
                    await self._refuse(ws, exc)
                    if exc.code == "unsupported_version":
                        await ws.close(1002, "unsupported protocol version")
        except ConnectionClosed as exc:
            if exc.rcvd is None and exc.sent is not None and exc.sent.code == 1009:
                self.rejected["too_large"] += 1
            reason = "connection lost" if exc.rcvd is None else "connection closed"
        finally:
            if session is not None and self.workers.get(session.hello.worker) is session:
                del self.workers[session.hello.worker]
                self.fleet.forget(("", session.hello.worker))
                self._publish(WorkerLeft(worker=session.hello.worker, reason=reason, at=self.wall()))

    async def _refuse(self, ws: ServerConnection, exc: ProtocolError) -> None:
        self.rejected[exc.code] += 1
        log.info("refused a frame from %s: %s", ws.remote_address, exc)
        await ws.send(encode(exc.reply()))

    async def _join(self, ws: ServerConnection, message: Message) -> WorkerSession:
        if not isinstance(message, Hello):
            raise ProtocolError("hello_required", f"the first frame must be 'hello', not {message.type!r}")
        check_version(message)
        old = self.workers.get(message.worker)
        session = WorkerSession(message, ws, connected_at=self.wall())
        self.workers[message.worker] = session
        self.fleet.join(self.mono(), ("", message.worker), message.interval_ms / 1000, connected=True,
                        isolation=message.isolation, pid=message.pid, host=message.host)
        if old is not None:  # a reconnect whose old connection is not yet known dead
            self._publish(WorkerLeft(worker=message.worker, reason="replaced by a new connection", at=self.wall()))
            await old.ws.close(1000, "replaced by a new connection")
        self._publish(WorkerJoined(info=session.info()))
        return session

    def _on_worker_message(self, session: WorkerSession, message: Message) -> None:
        name = session.hello.worker
        now = self.wall()
        if isinstance(message, Beat):
            session.last_beat_at, session.seq = now, message.seq
            self.fleet.beat(self.mono(), ("", name), seq=message.seq, main_blocked_ms=message.main_blocked_ms,
                            loop_lag_ms=message.loop_lag_ms)
            self.beats[name] += 1
            self._publish(WorkerBeat(worker=name, seq=message.seq, sent_at=message.sent_at, recv_at=now,
                                     loop_lag_ms=message.loop_lag_ms, main_blocked_ms=message.main_blocked_ms))
        elif isinstance(message, ProbeStarted):
            session.probe = message.probe
            self._publish(WorkerProbeStarted(worker=name, id=message.id, probe=message.probe,
                                             duration_s=message.duration_s, recv_at=now))
        elif isinstance(message, ProbeFinished):
            session.probe = None
            self._publish(WorkerProbeFinished(worker=name, id=message.id, elapsed_s=message.elapsed_s,
                                              error=message.error, recv_at=now))
        else:
            raise ProtocolError("unexpected", f"{message.type!r} is only valid as the first frame")

    # --- monitors -----------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return Snapshot(v=PROTOCOL_VERSION, hub=self.name, sent_at=self.wall(),
                        workers=[s.info() for s in self.workers.values()])

    async def _watch_session(self, ws: ServerConnection) -> None:
        # Subscribed before the snapshot is sent: send() writes at once, so no event
        # published meanwhile can be lost or come before it.
        self.watchers.add(ws)
        try:
            await ws.send(encode(self.snapshot()))
            async for _frame in ws:  # monitors only listen
                await self._refuse(ws, ProtocolError("unexpected", "/watch is receive-only"))
        except ConnectionClosed:
            pass
        finally:
            self.watchers.discard(ws)

    def _publish(self, message: Message) -> None:
        for listener in self.listeners:
            listener(message)
        if not self.watchers:
            return
        for ws in [w for w in self.watchers if w.transport.get_write_buffer_size() > WATCHER_BACKLOG_BYTES]:
            self.watchers.discard(ws)
            self.rejected["watcher_too_slow"] += 1
            ws.transport.abort()
        broadcast(self.watchers, encode(message))

    # --- commands -----------------------------------------------------------------

    def available(self) -> list[WorkerSession]:
        """Connected workers the detector calls healthy or busy, judged now: the
        deadlines that fell due since the last question are judged, nothing else."""
        self.fleet.evaluate_due(self.mono())
        return [self.workers[name] for _, name in self.fleet.available() if name in self.workers]

    async def inject(self, target: str, probe: str, duration_s: float, params: dict | None = None) -> dict:
        """Routes a probe to a worker (or ``any`` available one); raises HubError."""
        if not 0 < duration_s <= self.max_duration_s:
            raise HubError(HTTPStatus.BAD_REQUEST, "bad_duration",
                           f"duration_s must be > 0 and <= {self.max_duration_s:g}, not {duration_s:g}")
        if target == "any":
            known = sorted(set(self.registry.names()) | {p for s in self.workers.values() for p in s.hello.probes})
            self._check_probe(probe, known)
            candidates = [s for s in self.available() if probe in s.hello.probes]
            if not candidates:
                counts = ", ".join(f"{n} {state}" for state, n in self.fleet.counts().items() if n)
                raise HubError(HTTPStatus.SERVICE_UNAVAILABLE, "no_available_worker",
                               f"no available worker for {probe!r}: {counts or 'no workers connected'}")
            session = min(candidates, key=lambda s: (s.probe is not None, s.hello.worker))
        else:
            session = self.workers.get(target)
            if session is None:
                raise HubError(HTTPStatus.NOT_FOUND, "unknown_worker",
                               f"unknown worker {target!r}; connected: {', '.join(sorted(self.workers)) or 'none'}")
            self._check_probe(probe, session.hello.probes)
        command = Inject(id=uuid.uuid4().hex[:12], probe=probe, duration_s=duration_s, params=params or {})
        try:
            await session.ws.send(encode(command))
        except ConnectionClosed:
            raise HubError(HTTPStatus.SERVICE_UNAVAILABLE, "worker_gone",
                           f"worker {session.hello.worker!r} disconnected before the command was sent") from None
        return {"id": command.id, "worker": session.hello.worker, "probe": probe, "duration_s": duration_s}

    @staticmethod
    def _check_probe(probe: str, known: list[str]) -> None:
        if probe not in known:
            raise HubError(HTTPStatus.BAD_REQUEST, "unknown_probe",
                           f"unknown probe {probe!r}; known probes: {', '.join(known) or 'none'}")

    # --- HTTP ---------------------------------------------------------------------

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path, query = url.path.rstrip("/") or "/", parse_qs(url.query)
        if path == "/healthz":
            return _json(ws, HTTPStatus.OK, {"status": "ok", "workers": len(self.workers)})
        if not self._authorized(request.headers):
            self.unauthorized += 1
            return _json(ws, HTTPStatus.UNAUTHORIZED,
                         {"error": "unauthorized", "message": "this hub needs 'Authorization: Bearer <token>'"})
        try:
            return await self._route(ws, request.method, path, query)
        except HubError as exc:
            if path.endswith("/inject"):
                self.injects[exc.code] += 1
            response = _json(ws, exc.status, {"error": exc.code, "message": exc.message})
            if exc.allow:
                response.headers["Allow"] = exc.allow
            return response

    async def _route(self, ws: ServerConnection, method: str, path: str, query: dict[str, list[str]]) -> Response | None:
        parts = path.strip("/").split("/")
        if path in ("/connect", "/watch"):
            _allow(method, "GET")
            return None  # the WebSocket handshake goes on
        if path == "/api/workers":
            _allow(method, "GET")
            available = {s.hello.worker for s in self.available()}
            trackers = self.fleet.trackers
            return _json(ws, HTTPStatus.OK, [
                {**s.info().model_dump(), "state": trackers[("", name)].state, "available": name in available}
                for name, s in self.workers.items()
            ])
        if path == "/api/probes":
            _allow(method, "GET")
            return _json(ws, HTTPStatus.OK, self.registry.describe())
        if path == "/metrics":
            _allow(method, "GET")
            return _respond(ws, HTTPStatus.OK, self.metrics(), "text/plain; version=0.0.4; charset=utf-8")
        if len(parts) == 4 and parts[:2] == ["api", "workers"] and parts[3] == "inject":
            _allow(method, "POST")
            probe = _one(query, "probe")
            try:
                duration_s = float(_one(query, "duration_s"))
            except ValueError:
                raise HubError(HTTPStatus.BAD_REQUEST, "bad_duration", "duration_s must be a number of seconds") from None
            result = await self.inject(parts[2], probe, duration_s)
            self.injects["accepted"] += 1
            return _json(ws, HTTPStatus.ACCEPTED, result)
        raise HubError(HTTPStatus.NOT_FOUND, "not_found", f"no such endpoint: {path}")

    def _authorized(self, headers: Headers) -> bool:
        if self.token is None:
            return True
        given = headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())

    def metrics(self) -> str:
        """Prometheus text exposition format."""
        lines: list[str] = []

        def family(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            lines.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}"])
            lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)

        family("heartmon_workers_connected", "gauge", "Workers with an open /connect session.",
               [("", len(self.workers))])
        family("heartmon_workers_available", "gauge", "Connected workers that are healthy or busy: the pool.",
               [("", len(self.available()))])
        family("heartmon_workers", "gauge", "Connected workers by detected state.",
               [(f'{{state="{state}"}}', n) for state, n in self.fleet.counts().items()])
        family("heartmon_watchers_connected", "gauge", "Monitors subscribed on /watch.", [("", len(self.watchers))])
        family("heartmon_beats_total", "counter", "Heartbeats received, per worker.",
               [(f'{{worker="{w}"}}', n) for w, n in sorted(self.beats.items())])
        family("heartmon_frames_rejected_total", "counter",
               "Frames refused with an error reply (malformed, unknown type, wrong version, too large).",
               [(f'{{code="{c}"}}', n) for c, n in sorted(self.rejected.items())])
        family("heartmon_injects_total", "counter", "Inject commands, by result.",
               [(f'{{result="{r}"}}', n) for r, n in sorted(self.injects.items())])
        family("heartmon_http_unauthorized_total", "counter", "Requests refused for a missing or wrong token.",
               [("", self.unauthorized)])
        return "\n".join(lines) + "\n"


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise HubError(HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed", f"use {allowed}, not {method}", allowed)


def _one(query: dict[str, list[str]], key: str) -> str:
    values = query.get(key)
    if not values:
        raise HubError(HTTPStatus.BAD_REQUEST, "missing_parameter", f"query parameter {key!r} is required")
    return values[-1]


def _json(ws: ServerConnection, status: HTTPStatus, body: object) -> Response:
    return _respond(ws, status, json.dumps(body) + "\n", "application/json")


def _respond(ws: ServerConnection, status: HTTPStatus, text: str, content_type: str) -> Response:
    response = ws.respond(status, text)
    response.headers["Content-Type"] = content_type
    # websockets half-closes after an HTTP answer and waits for the client to close;
    # a keep-alive client never would, and the hub could not shut down.
    response.headers["Connection"] = "close"
    return response

