"""``inngest://HOST:PORT``: heartmon serves an Inngest Connect gateway, and the real SDK
workers that connect to it are the workers it watches.

Connect is Inngest's persistent-connection mode: a worker asks the API for a gateway
(``POST /v0/connect/start``, protobuf), opens a WebSocket to it (subprotocol
``v0.connect.inngest.com``) and beats on it. heartmon answers both on one port, with
one websockets server: the start request in ``process_request``, the gateway as the
WebSocket handler. The handshake is the protocol's own: ``GATEWAY_HELLO``, the worker's
``WORKER_CONNECT`` (who it is, and the session the start request gave it),
``GATEWAY_CONNECTION_READY`` with the heartbeat interval heartmon asks for
(``systems.inngest_heartbeat_ms``); then a ``WORKER_HEARTBEAT`` every interval, each
answered with ``GATEWAY_HEARTBEAT`` (an SDK that misses two answers reconnects).

What heartmon learns: each heartbeat is a beat. The open socket is evidence of life:
the kernel keeps a worker's connection open while its main thread spins, so a worker
that goes silent with its socket open is *starved*, not dead; the socket closing (a
clean shutdown, or the kernel closing a killed process's sockets) is *dead* at once.
TCP keepalive, answered by the peer's kernel however busy the process, closes the
connection of a machine that vanished without a word.

Names: ``APP/INSTANCE`` (the apps the connection serves, joined with ``+``, and its
instance id, which both SDKs default to the hostname: give each worker on a machine
its own). Two open connections with one name are one worker reconnecting (an SDK
opens the new connection before it closes the old): a beat on any of them is its beat,
and it is gone only when its last connection closes. So a second client that takes a
worker's name can add beats but never silence the real worker's. A name with control
characters or over ``MAX_NAME`` characters is refused (it would reach the terminal).

One client cannot hold the others back: each connection gets a share of frames
(``MAX_FRAMES_PER_S``; the excess is dropped unread and counted) and the loop turns
after every frame; frames are small (``MAX_FRAME_BYTES``) and a message with absurdly
many fields is refused before it is parsed whole.

The interval a worker beats at: the Node SDK beats at the one the gateway asks for.
The Python SDK (0.5) ignores it and beats every 10 s unless overridden in its code; so
a worker of any SDK but Node's is taken to beat every ``max(asked, 10 s)`` until two of
its heartbeats arrive, and from then on at the shortest gap measured between two (a
gap can only be longer than the SDK's sleep, never shorter).

Pointing the SDKs at heartmon (``inngest://127.0.0.1:8289``):

* Node (``inngest`` 4): ``INNGEST_BASE_URL=http://127.0.0.1:8289`` (or ``baseUrl`` on
  the client) and ``INNGEST_DEV=1``; on Node 20 also
  ``NODE_OPTIONS=--experimental-websocket``.
* Python (``inngest[connect]``): ``inngest.Inngest(app_id=..., api_base_url=
  "http://127.0.0.1:8289", is_production=False)`` (or ``INNGEST_API_BASE_URL`` and
  ``INNGEST_DEV=1``).

Safe by default: a non-loopback address needs ``HEARTMON_TOKEN``. With a token, every
start request must carry it the way the SDKs carry a signing key (``Authorization:
Bearer`` and the SHA-256 of the key's hex digits): the token is hex (``openssl rand
-hex 32``) and workers run in cloud mode with ``INNGEST_SIGNING_KEY=signkey-prod-<token>``
(and no ``INNGEST_DEV``). The WebSocket then needs the session token that request got.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import socket
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from heartmon.backoff import backoff_delay
from heartmon.rate_limit import RateLimit
from heartmon.sources import Client, Heard, Ingest, SourceStatus, unfit_name
from heartmon.sources.connect_wire import (
    FROM_WORKER,
    Kind,
    Message,
    StartResponse,
    WireError,
    WorkerConnect,
    check_start_request,
    decode_app_name,
    decode_message,
    decode_worker_connect,
    encode_connection_ready,
    encode_message,
    encode_start_response,
)

if TYPE_CHECKING:
    from heartmon.config import Settings

PROTOCOL = Subprotocol("v0.connect.inngest.com")
START_PATH = "/v0/connect/start"
GATEWAY_PATH = "/v0/connect"
GATEWAY_GROUP = "heartmon"
HONOURS_INTERVAL = frozenset({"typescript"})
"""``sdk_language`` of the SDKs that beat at the interval the gateway asks for."""
SDK_DEFAULT_INTERVAL_S = 10.0
"""The protocol's default interval, and the Python SDK's fixed one: what a worker that
may not honour the asked interval is assumed to use until it is measured."""
EXTEND_LEASE = "5s"
"""The protocol's default; the Python SDK reads only whole seconds."""
HANDSHAKE_S = 10.0
"""How long a WebSocket may take to send WORKER_CONNECT (the real gateway gives 5 s;
a loaded machine starting a Node worker thread gets more)."""
SESSION_TTL_S = 60.0
MAX_SESSIONS = 1024
"""Start requests whose WebSocket has not come yet, kept at most this long and this many."""
MAX_START_BODY = 64 * 1024
"""A StartRequest lists gateways to avoid: a few bytes. Anything near this is not one."""
HEAD_LIMIT = 64 * 1024
MAX_FRAME_BYTES = 256 * 1024
"""Larger frames close 1009. The largest a worker sends heartmon is WORKER_CONNECT, which
carries every function's configuration: measured with the Node SDK, 0.7 KiB for one
function and 22 KiB for a hundred; this leaves room for a thousand. (Workers send
results only for runs a gateway hands them, and heartmon hands none.)"""
MAX_FRAMES_PER_S = 200.0
"""Each connection's share, with bursts of twice as many: a worker sends one frame per
heartbeat (and a few when it pauses). The excess is dropped unread."""
MAX_CLOSE_REASON = 123
"""A close frame's reason may be at most this many UTF-8 bytes."""
CLOSE_S = 1.0
"""How long a stopping source waits for a worker to answer its close: a starved one
cannot, and is dropped past this."""
KEEPALIVE = (10, 5, 3)
"""TCP keepalive (idle s, interval s, probes): a vanished machine's socket closes in
about 25 s; a busy process's kernel answers the probes, so it is never closed for being busy."""
SIGNKEY_PREFIX = re.compile(r"^signkey-\w+-")
HOST_HEADER = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
"""A Host header safe to put back in the gateway URL the worker will connect to."""

def from_url(url: str, settings: Settings, client: Client) -> InngestSource:
    """Checks ``inngest://HOST:PORT`` and the token rules; binds nothing (the UI process
    parses sources only to check them)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid address {url!r}: {exc}") from None
    if parts.scheme != "inngest" or not parts.hostname or not port or parts.username is not None or \
            parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"expected inngest://HOST:PORT (the address heartmon's Connect gateway binds), not {url!r}")
    token = settings.token
    if not token and not _loopback(parts.hostname):
        raise ValueError(f"refusing to serve a Connect gateway on {parts.hostname} without a token: anyone who can "
                         "reach it could pose as your workers. Set HEARTMON_TOKEN to hex digits "
                         "(openssl rand -hex 32) and give workers INNGEST_SIGNING_KEY=signkey-prod-<token>, "
                         "or bind 127.0.0.1.")
    key_hash = _signing_key_hash(token) if token else None
    return InngestSource(url, parts.hostname, port, settings.systems.inngest_heartbeat_ms / 1000, key_hash,
                         settings.systems.reconnect_max_ms / 1000)


def _loopback(host: str) -> bool:
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc.strerror}") from None
    return all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def _signing_key_hash(token: str) -> str:
    """What an SDK whose signing key is ``signkey-…-<token>`` sends: the SHA-256 of the
    key's bytes (its hex digits decoded), in hex. A token that is not hex could never be
    sent by an SDK, so it is refused here rather than failing every worker later."""
    try:
        key = bytes.fromhex(SIGNKEY_PREFIX.sub("", token))
    except ValueError:
        key = b""
    if not key:
        raise ValueError("an Inngest worker carries the token as its signing key, so HEARTMON_TOKEN must be hex "
                         "digits (openssl rand -hex 32), or an Inngest signing key (signkey-prod-<hex>)")
    return hashlib.sha256(key).hexdigest()


class Refused(Exception):
    """Input the gateway will not take: the line for :meth:`SourceStatus.refuse`, and
    how the connection is closed."""

    def __init__(self, why: str, code: int = 1002) -> None:
        super().__init__(why)
        self.why, self.code = why, code

    def close_reason(self) -> str:
        """``why`` cut to what a close frame may carry, counted in UTF-8 bytes (a reason
        quoting the client's emoji is longer than its characters), on a character's
        boundary: websockets refuses a longer one and the client would get 1011."""
        return self.why.encode()[:MAX_CLOSE_REASON].decode(errors="ignore")


@dataclass
class _Session:
    token: str
    issued_at: float


@dataclass(eq=False)
class _Conn:
    """One worker's WebSocket, from its WORKER_CONNECT on."""

    name: str
    honours: bool
    """Its SDK beats at the interval heartmon asks for; else it is measured."""
    host: str | None
    last_beat: float | None = None
    min_gap: float | None = None
    paused: bool = False


class _Share:
    """A connection's share of the loop: frames past ``MAX_FRAMES_PER_S`` are dropped
    unread, and told as one refusal a second at most, so that refusing costs nothing
    per frame."""

    def __init__(self, now: float) -> None:
        self.limit = RateLimit(MAX_FRAMES_PER_S, 2 * MAX_FRAMES_PER_S, now)
        self.dropped = 0
        self.told_at: float | None = None

    def refusal(self, now: float) -> str | None:
        """The line to refuse a dropped frame with, when one is due."""
        self.dropped += 1
        if self.told_at is not None and now - self.told_at < 1.0:
            return None
        self.told_at = now
        return f"more than {MAX_FRAMES_PER_S:g} frames a second; {self.dropped} dropped unread so far"


class InngestSource:
    """Serves the Connect gateway on HOST:PORT once it runs; see the module's docstring."""

    kind = "inngest"

    def __init__(self, label: str, host: str, port: int, interval_s: float, key_hash: str | None,
                 retry_max_s: float) -> None:
        self.label, self.host, self.port = label, host, port
        self.interval_s = interval_s
        """The heartbeat interval heartmon asks workers for."""
        self.key_hash = key_hash
        """The signing-key hash start requests must carry; None when heartmon has no token."""
        self.retry_max_s = retry_max_s
        self.status = SourceStatus(label)
        self._sessions: dict[str, _Session] = {}
        """Start requests whose WebSocket has not come yet, by connection id."""
        self._names: dict[str, list[_Conn]] = {}
        """Each worker's open connections: a beat on any of them is its beat."""

    async def run(self, ingest: Ingest) -> None:
        """Serves until cancelled; a port that cannot be bound is retried."""
        attempt = 0
        while True:
            try:
                async with serve(lambda ws: self._gateway(ws, ingest), self.host, self.port,
                                 process_request=lambda ws, request: self._start(ws, request, ingest),
                                 create_connection=_Connection, subprotocols=[PROTOCOL], max_size=MAX_FRAME_BYTES,
                                 compression=None, ping_interval=None, close_timeout=CLOSE_S,
                                 logger=logging.getLogger("heartmon.sources.inngest.ws")) as server:
                    self.status.set("connected", f"Connect gateway on {self.host}:{self.port}")
                    attempt = 0
                    await server.serve_forever()
            except OSError as exc:
                self.status.set("retrying", f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}")
            await asyncio.sleep(backoff_delay(attempt, 0.5, self.retry_max_s))
            attempt += 1

    # --- the start request --------------------------------------------------------

    def _start(self, ws: ServerConnection, request: Request, ingest: Ingest) -> Response | None:
        path = urlsplit(request.path).path
        if path == GATEWAY_PATH and "Upgrade" in request.headers:
            return None  # the WebSocket handshake goes on
        peer = _peer(ws)
        method = getattr(request, "method", "GET")
        if path != START_PATH:
            return self._refuse_http(ws, HTTPStatus.NOT_FOUND, f"{peer}: {method} {path[:80]!r} is neither "
                                     f"POST {START_PATH} nor the {GATEWAY_PATH} WebSocket")
        if method != "POST":
            return self._refuse_http(ws, HTTPStatus.METHOD_NOT_ALLOWED, f"{peer}: {method} {START_PATH}; use POST")
        if self.key_hash is not None and not self._authorized(request.headers):
            return self._refuse_http(ws, HTTPStatus.UNAUTHORIZED, f"{peer}: start request without the right signing "
                                     "key (INNGEST_SIGNING_KEY=signkey-prod-<HEARTMON_TOKEN>)")
        assert isinstance(ws, _Connection)  # create_connection
        try:
            if ws.body_error:
                raise WireError(ws.body_error)
            check_start_request(ws.body)
        except WireError as exc:
            return self._refuse_http(ws, HTTPStatus.BAD_REQUEST, f"{peer}: bad start request: {exc}")
        now = ingest.now()
        self._sessions = {k: s for k, s in self._sessions.items() if now - s.issued_at < SESSION_TTL_S}
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        connection_id = str(uuid.uuid4())
        session = self._sessions[connection_id] = _Session(secrets.token_urlsafe(24), now)
        host = request.headers.get("Host", "")
        if not HOST_HEADER.match(host):
            host = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        body = encode_start_response(StartResponse(connection_id, f"ws://{host}{GATEWAY_PATH}", GATEWAY_GROUP,
                                                   session.token, secrets.token_urlsafe(24)))
        return _response(HTTPStatus.OK, body, "application/protobuf")

    def _authorized(self, headers: Headers) -> bool:
        """Constant-time: the Python SDK sends the bare hash, the Node SDK keeps the key's
        ``signkey-…-`` prefix in front of it."""
        assert self.key_hash is not None
        scheme, _, value = headers.get("Authorization", "").partition(" ")
        return hmac.compare_digest(SIGNKEY_PREFIX.sub("", value.strip()).encode(), self.key_hash.encode()) \
            and scheme == "Bearer"

    def _refuse_http(self, ws: ServerConnection, status: HTTPStatus, why: str) -> Response:
        self.status.refuse(why)
        return _response(status, (why + "\n").encode(), "text/plain; charset=utf-8")

    # --- the gateway ----------------------------------------------------------------

    async def _gateway(self, ws: ServerConnection, ingest: Ingest) -> None:
        conn: _Conn | None = None
        reason = ""
        try:
            await ws.send(encode_message(Kind.GATEWAY_HELLO))
            try:
                first = await asyncio.wait_for(ws.recv(), HANDSHAKE_S)
            except TimeoutError:
                raise Refused(f"no WORKER_CONNECT within {HANDSHAKE_S:g} s of GATEWAY_HELLO") from None
            hello, name = self._worker_connect(_decode(first), ingest.now())
            await ws.send(encode_message(Kind.GATEWAY_CONNECTION_READY,
                                         encode_connection_ready(f"{round(self.interval_s * 1000)}ms", EXTEND_LEASE)))
            conn = self._join(ws, hello, name, ingest)
            share = _Share(ingest.now())
            async for frame in ws:
                now = ingest.now()
                if share.limit.allow(now):
                    kind = _decode(frame).kind
                    if kind == Kind.WORKER_HEARTBEAT:
                        self._beat(conn, now, ingest)
                        await ws.send(encode_message(Kind.GATEWAY_HEARTBEAT))
                    elif kind == Kind.WORKER_CONNECT:
                        raise Refused("a second WORKER_CONNECT on one connection")
                    elif kind == Kind.WORKER_PAUSE:
                        conn.paused = True  # shutting down: it beats until its in-flight work is done
                elif (why := share.refusal(now)) is not None:
                    self.status.refuse(f"{_peer(ws)}: {why}")
                await asyncio.sleep(0)  # a client with thousands of frames queued must not hold the others back
        except Refused as exc:
            self.status.refuse(f"{_peer(ws)}: {exc.why}; closed the connection ({exc.code})")
            reason = f"Connect socket closed by heartmon: {exc.why}"
            await ws.close(exc.code, exc.close_reason())
        except ConnectionClosed:
            pass  # as when the frames end: the close frame, if any, says how
        finally:
            if conn is not None:
                self._leave(conn, ingest, reason or _closed(ws))

    def _worker_connect(self, message: Message, now: float) -> tuple[WorkerConnect, str]:
        """The worker and its name. The session is checked before its apps are decoded:
        a client without one costs no more than the message's top level."""
        if message.kind != Kind.WORKER_CONNECT:
            raise Refused(f"frame before the handshake: {Kind(message.kind).name} before WORKER_CONNECT")
        try:
            hello = decode_worker_connect(message.payload)
        except WireError as exc:
            raise Refused(f"WORKER_CONNECT does not decode: {exc}") from None
        session = self._sessions.pop(hello.connection_id, None)
        if session is None or now - session.issued_at >= SESSION_TTL_S or \
                not hmac.compare_digest(session.token.encode(), hello.session_token.encode()):
            raise Refused(f"WORKER_CONNECT for connection {hello.connection_id[:40]!r} without the session token "
                          f"its start request ({START_PATH}) was given", 1008)
        try:
            apps = [decode_app_name(config) for config in hello.app_configs]
        except WireError as exc:
            raise Refused(f"WORKER_CONNECT does not decode: {exc}") from None
        instance = hello.instance_id or hello.connection_id
        name = f"{'+'.join(apps)}/{instance}" if apps else instance
        if (why := unfit_name(name)) is not None:
            raise Refused(f"WORKER_CONNECT with {why}", 1008)
        return hello, name

    def _join(self, ws: ServerConnection, hello: WorkerConnect, name: str, ingest: Ingest) -> _Conn:
        conn = _Conn(name, hello.sdk_language in HONOURS_INTERVAL, _peer_host(ws))
        self._names.setdefault(name, []).append(conn)
        now = ingest.now()
        ingest.heard(self.label, name, now, self._heard(conn))
        ingest.vouch(self.label, name, now, "Connect socket open")
        self.status.set("connected", self._connected())
        return conn

    def _beat(self, conn: _Conn, now: float, ingest: Ingest) -> None:
        if conn.last_beat is not None:
            gap = now - conn.last_beat
            conn.min_gap = gap if conn.min_gap is None else min(conn.min_gap, gap)
        conn.last_beat = now
        ingest.heard(self.label, conn.name, now, self._heard(conn))

    def _heard(self, conn: _Conn) -> Heard:
        if conn.honours:
            interval = self.interval_s
        elif conn.min_gap is not None:
            interval = conn.min_gap
        else:
            interval = max(self.interval_s, SDK_DEFAULT_INTERVAL_S)
        return Heard(interval, "inngest", host=conn.host, doing="shutting down" if conn.paused else None)

    def _leave(self, conn: _Conn, ingest: Ingest, reason: str) -> None:
        conns = self._names[conn.name]
        conns.remove(conn)
        if not conns:
            del self._names[conn.name]
            now = ingest.now()
            ingest.gone(self.label, conn.name, now, reason)
            ingest.vouch(self.label, conn.name, now, None)
        self.status.set("connected", self._connected())

    def _connected(self) -> str:
        return f"Connect gateway on {self.host}:{self.port}, {len(self._names)} workers connected"



def _decode(frame: str | bytes) -> Message:
    """The frame's message, decoded once; a kind that is no worker's to send is refused."""
    try:
        message = decode_message(_binary(frame))
    except WireError as exc:
        raise Refused(f"frame does not decode as a ConnectMessage: {exc}") from None
    try:
        kind = Kind(message.kind)
    except ValueError:
        raise Refused(f"unknown message kind {message.kind}") from None
    if kind not in FROM_WORKER:
        raise Refused(f"{kind.name} is the gateway's to send, not a worker's")
    return message


def _binary(frame: str | bytes) -> bytes:
    if isinstance(frame, str):
        raise Refused("a text frame: Connect speaks binary protobuf", 1003)
    return frame


def _closed(ws: ServerConnection) -> str:
    """How the worker closed its socket: with a close frame (a clean stop) or without (the
    kernel closed a killed process's socket, or the network dropped it)."""
    got = ws.protocol.close_rcvd
    if got is None:
        return "Connect socket closed without a close frame"
    return f"Connect socket closed ({got.code}{' ' + got.reason if got.reason else ''})"


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    """``Connection: close``: websockets half-closes after an HTTP answer and would wait
    for a keep-alive client to close its end."""
    headers = Headers([("Date", email.utils.formatdate(usegmt=True)), ("Connection", "close"),
                       ("Content-Length", str(len(body))), ("Content-Type", content_type)])
    return Response(status.value, status.phrase, headers, body)


def _peer(ws: ServerConnection) -> str:
    address = ws.remote_address
    return f"{address[0]}:{address[1]}" if address else "a client"


def _peer_host(ws: ServerConnection) -> str | None:
    address = ws.remote_address
    return str(address[0]) if address else None


class _Connection(ServerConnection):
    """websockets reads a request's head and refuses one that declares a body; the start
    request has one (a protobuf StartRequest). This connection reads a plain HTTP
    request's body (up to MAX_START_BODY) and hands websockets the head alone; a
    WebSocket upgrade passes through untouched. Whatever follows the body is left
    unread: the answer says ``Connection: close``. It also turns TCP keepalive on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: bytearray | None = bytearray()
        self.body = b""
        self.body_error: str | None = None

    def connection_made(self, transport: Any) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for option, value in zip(("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"), KEEPALIVE, strict=True):
                if hasattr(socket, option):  # Linux; macOS names the first TCP_KEEPALIVE
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._pending is None:
            return super().data_received(data)
        self._pending += data
        end = self._pending.find(b"\r\n\r\n")
        if end < 0:
            if len(self._pending) < HEAD_LIMIT:
                return  # the head is still coming
            head, rest = bytes(self._pending), b""  # websockets refuses a head this long
        else:
            head, rest = bytes(self._pending[:end + 4]), bytes(self._pending[end + 4:])
        lines = head.split(b"\r\n")
        if end < 0 or any(line.lower().startswith(b"upgrade:") for line in lines[1:]):
            self._pending = None
            return super().data_received(head + rest)
        length, self.body_error = _declared_body(lines)
        if len(rest) < length:
            return  # the body is still coming
        self._pending, self.body = None, rest[:length]
        kept = [line for line in lines if not line.lower().startswith((b"content-length:", b"transfer-encoding:"))]
        super().data_received(b"\r\n".join(kept))


def _declared_body(lines: list[bytes]) -> tuple[int, str | None]:
    """(bytes to read, why the body is refused or None) from a request's head lines."""
    lengths = {line.split(b":", 1)[1].strip() for line in lines if line.lower().startswith(b"content-length:")}
    if any(line.lower().startswith(b"transfer-encoding:") for line in lines):
        return 0, "a chunked body; send Content-Length"
    if not lengths:
        return 0, None
    if len(lengths) > 1 or not next(iter(lengths)).isdigit():
        return 0, "an invalid Content-Length"
    length = int(next(iter(lengths)))
    if length > MAX_START_BODY:
        return 0, f"a body of {length} bytes; a StartRequest is at most {MAX_START_BODY}"
    return length, None
