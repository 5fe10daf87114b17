"""The hub's server: workers connect on /connect, monitors watch on /watch, people
use HTTP. What the hub knows and decides lives in :mod:`heartmon.hub_state`, with no
I/O; this module only moves frames and answers requests.

One websockets server serves it all on one port: WebSocket paths go through the
handshake, every other request is answered in ``process_request`` (websockets reads no
request bodies, so commands take query parameters and a request with a body is
refused). The pool of *available* workers is judged by the same detector the monitor
runs, so a command routed to ``any`` fails with "no available worker" exactly when the
monitor shows none: a fleet whose heartbeats are starved, reproduced.

A client cannot cost the others more than its share: frames are taken one at a time
with a turn of the loop between them, and a connection that sends more than
``max_frames_per_s`` has the excess dropped unread (counted in /metrics).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from http import HTTPStatus
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from heartmon.detector import Thresholds
from heartmon.hub_metrics import CONTENT_TYPE, Gauges, HubMetrics
from heartmon.hub_state import HubState, RouteError, WorkerRecord
from heartmon.probes import ProbeRegistry
from heartmon.protocol import Message, ProtocolError, decode_from_worker, encode
from heartmon.rate_limit import RateLimit

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
DURATION = re.compile(r"^[0-9]{1,6}(\.[0-9]{1,6})?$")
"""A probe's duration as a person writes it: no exponents, underscores or spaces."""
MIN_DURATION_S = 0.001
JUDGE_S = 0.05
"""The longest the hub sleeps between two judgements of its pool: a worker that joins
with an earlier deadline than the one slept for waits at most this long."""


class HttpError(Exception):
    """A request the hub refuses: the HTTP status and a message that names the problem."""

    def __init__(self, status: HTTPStatus, code: str, message: str, allow: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.allow = status, code, message, allow


class _Connection(ServerConnection):
    """websockets reads a request's head and nothing more: it drops a connection whose
    request has a body, and reads a pipelined second request as a WebSocket frame, so
    neither got an answer. This connection hands websockets the first request's head
    alone. A body is refused (``body_refused``, answered 400 by the hub); whatever
    follows a plain HTTP request (a pipelined one) is left unread, and the answer says
    ``Connection: close`` so the client sends it again. A WebSocket upgrade passes
    through untouched."""

    HEAD_LIMIT = 64 * 1024

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._head: bytes | None = b""
        self.body_refused = False

    def data_received(self, data: bytes) -> None:
        if self._head is None:
            return super().data_received(data)
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0 and len(self._head) < self.HEAD_LIMIT:
            return  # the head is still coming
        head, rest, self._head = self._head[:end + 4], self._head[end + 4:], None
        if end < 0 or b"\nupgrade:" in head.lower():
            return super().data_received(head + rest)
        lines = head.split(b"\r\n")
        kept = [line for line in lines if not line.lower().startswith((b"content-length:", b"transfer-encoding:"))]
        self.body_refused = any(line.lower().startswith(b"transfer-encoding:") or
                                (line.lower().startswith(b"content-length:") and line.split(b":", 1)[1].strip() != b"0")
                                for line in lines)
        super().data_received(b"\r\n".join(kept))


class Hub:
    def __init__(self, registry: ProbeRegistry, *, token: str | None = None, max_duration_s: float = 60.0,
                 thresholds: Thresholds | None = None, max_pending: int = 32, max_frames_per_s: float = 200.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.token = token
        self.clock = clock
        self.metrics = HubMetrics()
        self.state = HubState(thresholds or Thresholds(), registry.names(), max_duration_s=max_duration_s,
                              max_pending=max_pending, identity_required=token is not None,
                              wall_offset=time.time() - clock(), metrics=self.metrics)
        self.max_frames_per_s = max_frames_per_s
        self.watchers: set[ServerConnection] = set()
        self.listeners: list[Callable[[Message], None]] = []
        """In-process subscribers: they see every event as /watch does, with no socket."""
        self.metrics.read_from(self._gauges)

    # --- serving ------------------------------------------------------------------

    @asynccontextmanager
    async def listen(self, host: str, port: int) -> AsyncIterator[Server]:
        """Serves inside the block; on the way out, stops within about SHUTDOWN_S
        whatever the peers do (a client that never closes its end must not hold us)."""
        server = await self._serve(host, port)
        judge = asyncio.ensure_future(self._judge())
        try:
            yield server
        finally:
            judge.cancel()
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
            create_connection=_Connection,
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

    async def _judge(self) -> None:
        """Judges the pool at each deadline (within JUDGE_S of it), so that what the HTTP
        API and the metrics read is current without a GET ever changing anything."""
        while True:
            now = self.clock()
            due = self.state.judge(now)
            self.publish(*self.state.bury(now))
            await asyncio.sleep(JUDGE_S if due is None else min(JUDGE_S, max(0.0, due - now) + 0.002))

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None  # set by the handshake, which precedes the handler
        path = unquote(urlsplit(ws.request.path).path)
        limit = RateLimit(self.max_frames_per_s, 2 * self.max_frames_per_s, self.clock())
        if path == "/connect":
            await self._worker_session(ws, limit)
        else:
            await self._watch_session(ws, limit)

    async def _frames(self, ws: ServerConnection, limit: RateLimit) -> AsyncIterator[str | bytes]:
        """The connection's frames within its share; a turn of the loop after each, so
        that a client with thousands queued cannot hold every other one back."""
        async for frame in ws:
            if limit.allow(self.clock()):
                yield frame
            else:
                self.metrics.rate_limited.inc()
            await asyncio.sleep(0)

    # --- workers ------------------------------------------------------------------

    async def _worker_session(self, ws: ServerConnection, limit: RateLimit) -> None:
        record: WorkerRecord | None = None
        reason = "connection closed"
        try:
            async for frame in self._frames(ws, limit):
                try:
                    message = decode_from_worker(frame)
                    if record is None:
                        joined = self.state.join(message, ws, self.clock())
                        record = joined.record
                        if isinstance(joined.replaced, ServerConnection):
                            await joined.replaced.close(1000, "replaced by a new connection")
                        self.publish(*joined.publish)
                    else:
                        self.publish(self.state.message(record, message, self.clock()))
                except ProtocolError as exc:
                    await self._refuse(ws, exc)
                    if exc.code in ("unsupported_version", "name_taken"):
                        await ws.close(1008 if exc.code == "name_taken" else 1002, exc.message[:100])
        except ConnectionClosed as exc:
            if exc.rcvd is None and exc.sent is not None and exc.sent.code == 1009:
                self.metrics.rejected.labels("too_large").inc()
            reason = "connection lost" if exc.rcvd is None else "connection closed"
        finally:
            if record is not None:
                self.publish(*self.state.left(record, reason, self.clock()))

    async def _refuse(self, ws: ServerConnection, exc: ProtocolError) -> None:
        self.metrics.rejected.labels(exc.code).inc()
        log.info("refused a frame from %s: %s", ws.remote_address, exc)
        with suppress(ConnectionClosed):
            await ws.send(encode(exc.reply()))

    # --- monitors -----------------------------------------------------------------

    async def _watch_session(self, ws: ServerConnection, limit: RateLimit) -> None:
        # Subscribed before the snapshot is sent: send() writes at once, so no event
        # published meanwhile can be lost or come before it.
        self.watchers.add(ws)
        try:
            await ws.send(encode(self.state.snapshot(self.clock())))
            async for _frame in self._frames(ws, limit):  # monitors only listen
                await self._refuse(ws, ProtocolError("unexpected", "/watch is receive-only"))
        except ConnectionClosed:
            pass
        finally:
            self.watchers.discard(ws)

    def publish(self, *messages: Message) -> None:
        for message in messages:
            for listener in self.listeners:
                listener(message)
            if not self.watchers:
                continue
            for ws in [w for w in self.watchers if w.transport.get_write_buffer_size() > WATCHER_BACKLOG_BYTES]:
                self.watchers.discard(ws)
                self.metrics.watchers_dropped.inc()
                ws.transport.abort()
            broadcast(self.watchers, encode(message))

    # --- commands -----------------------------------------------------------------

    async def inject(self, target: str, probe: str, duration_s: float, params: dict | None = None) -> dict:
        """Routes a probe to a worker (or ``any`` available one); raises RouteError."""
        routed = self.state.route_inject(target, probe, duration_s, self.clock(), uuid.uuid4().hex[:12], params)
        conn = routed.conn
        if not isinstance(conn, ServerConnection):  # a worker on a bus: it answers the command itself
            try:
                return await conn.send(routed.command)  # type: ignore[attr-defined]
            except RouteError:
                self.state.unsent(routed)
                raise
        try:
            await conn.send(encode(routed.command))
        except ConnectionClosed:
            self.state.unsent(routed)
            raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, "worker_gone",
                            f"worker {routed.worker!r} disconnected before the command was sent") from None
        return {"id": routed.command.id, "worker": routed.worker, "probe": probe, "duration_s": duration_s}

    def _gauges(self) -> Gauges:
        available = len(self.state.available())
        workers = [(r.name, r.hello.isolation, r.tracker.state) for r in self.state.records.values()]
        return Gauges(workers, available, len(self.watchers))

    # --- HTTP ---------------------------------------------------------------------

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path, query = unquote(url.path).rstrip("/") or "/", parse_qs(url.query)
        # Split before unquoting: a worker named fleet/host/name arrives as one segment, %2F and all.
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        method = getattr(request, "method", "GET")
        try:
            if isinstance(ws, _Connection) and ws.body_refused:
                raise HttpError(HTTPStatus.BAD_REQUEST, "body_not_accepted",
                                "requests take query parameters; a body is not read")
            if path == "/healthz":
                _allow(method, "GET")
                return _json(ws, HTTPStatus.OK, {"status": "ok", "workers": len(self.state.records)})
            if not self._authorized(request.headers):
                self.metrics.unauthorized.inc()
                response = _json(ws, HTTPStatus.UNAUTHORIZED,
                                 {"error": "unauthorized", "message": "this hub needs 'Authorization: Bearer <token>'"})
                response.headers["WWW-Authenticate"] = 'Bearer realm="heartmon"'
                return response
            return await self._route(ws, method, path, parts, query)
        except (HttpError, RouteError) as exc:
            if path.endswith("/inject"):
                self.metrics.injects.labels(exc.code).inc()
            response = _json(ws, exc.status, {"error": exc.code, "message": exc.message})
            if isinstance(exc, HttpError) and exc.allow:
                response.headers["Allow"] = exc.allow
            return response

    async def _route(self, ws: ServerConnection, method: str, path: str, parts: list[str],
                     query: dict[str, list[str]]) -> Response | None:
        if path in ("/connect", "/watch"):
            _allow(method, "GET")
            return None  # the WebSocket handshake goes on
        if path == "/api/workers":
            _allow(method, "GET")
            return _json(ws, HTTPStatus.OK, self.state.listing())
        if path == "/api/probes":
            _allow(method, "GET")
            return _json(ws, HTTPStatus.OK, self.registry.describe())
        if path == "/metrics":
            _allow(method, "GET")
            return _respond(ws, HTTPStatus.OK, self.metrics.exposition().decode(), CONTENT_TYPE)
        if len(parts) == 4 and parts[:2] == ["api", "workers"] and parts[3] == "inject":
            _allow(method, "POST")
            probe = _one(query, "probe")
            raw = _one(query, "duration_s")
            if not DURATION.match(raw) or float(raw) < MIN_DURATION_S:
                raise HttpError(HTTPStatus.BAD_REQUEST, "bad_duration",
                                f"duration_s must be a number of seconds like 2 or 0.5 (at least {MIN_DURATION_S:g}), "
                                f"not {raw!r}")
            result = await self.inject(parts[2], probe, float(raw))
            self.metrics.injects.labels("accepted").inc()
            return _json(ws, HTTPStatus.ACCEPTED, result)
        raise HttpError(HTTPStatus.NOT_FOUND, "not_found", f"no such endpoint: {path}")

    def _authorized(self, headers: Headers) -> bool:
        if self.token is None:
            return True
        given = headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed", f"use {allowed}, not {method}", allowed)


def _one(query: dict[str, list[str]], key: str) -> str:
    values = query.get(key)
    if not values:
        raise HttpError(HTTPStatus.BAD_REQUEST, "missing_parameter", f"query parameter {key!r} is required")
    return values[-1]


def _json(ws: ServerConnection, status: HTTPStatus, body: object) -> Response:
    return _respond(ws, status, json.dumps(body) + "\n", "application/json")


def _respond(ws: ServerConnection, status: HTTPStatus, text: str, content_type: str) -> Response:
    response = ws.respond(status, text)
    # Headers is a multidict: setting a name adds a value, so the defaults go first.
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
    # websockets half-closes after an HTTP answer and waits for the client to close;
    # a keep-alive client never would, and the hub could not shut down.
    del response.headers["Connection"]
    response.headers["Connection"] = "close"
    return response
