"""Where arrivals come from: a hub's /watch stream, or HTTP health endpoints polled.

Each source reports its own connection state, runs on the monitor's ingest loop, and
hands arrivals to the :class:`Ingest` with the monitor's own receive time: liveness is
judged on our clock, never on the sender's timestamps (as Celery does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from heartmon.agent import backoff_delay
from heartmon.protocol import MAX_MONITOR_FRAME_BYTES, Error, ProtocolError, Snapshot, decode_to_monitor
from heartmon.urls import auth_headers, check_address, hub_ws

Link = Literal["connecting", "connected", "retrying"]


class SourceError(ValueError):
    pass


@dataclass
class SourceStatus:
    label: str
    link: Link = "connecting"
    detail: str = ""
    since: float = 0.0


class Ingest(Protocol):
    """What a source may tell the monitor; every call is made on the ingest loop."""

    def now(self) -> float: ...
    def hub_message(self, source: str, message: object, now: float) -> None: ...
    def hub_lost(self, source: str, now: float) -> None: ...
    def http_answer(self, name: str, interval_s: float, now: float, seq: int, latency_ms: float | None) -> None: ...


class HubSource:
    """Follows a hub's /watch stream; resyncs from its snapshot after every reconnect."""

    def __init__(self, url: str, token: str | None, backoff_initial_s: float = 0.1, backoff_max_s: float = 5.0) -> None:
        self.url = hub_ws(url, "/watch")
        self.status = SourceStatus(url)
        self.token = token
        self.backoff = (backoff_initial_s, backoff_max_s)
        self.rejected = 0

    async def run(self, ingest: Ingest) -> None:
        headers = auth_headers(self.token)
        attempt = 0
        while True:
            self._set(ingest, "connecting", "")
            try:
                async with connect(self.url, additional_headers=headers, compression=None, open_timeout=5,
                                   max_size=MAX_MONITOR_FRAME_BYTES) as ws:
                    attempt = 0
                    async for frame in ws:
                        now = ingest.now()
                        try:
                            message = decode_to_monitor(frame)
                        except ProtocolError:
                            self.rejected += 1
                            continue
                        if isinstance(message, Snapshot):
                            self._set(ingest, "connected", "")
                        if not isinstance(message, Error):
                            ingest.hub_message(self.status.label, message, now)
                    detail = "hub closed the stream"
            except InvalidStatus as exc:
                code = exc.response.status_code
                detail = "unauthorized: wrong or missing token" if code == 401 else f"hub answered HTTP {code}"
            except Exception as exc:  # whatever it was, the source shows it and tries again
                detail = str(exc) or type(exc).__name__
            ingest.hub_lost(self.status.label, ingest.now())
            self._set(ingest, "retrying", detail)
            await asyncio.sleep(backoff_delay(attempt, *self.backoff))
            attempt += 1

    def _set(self, ingest: Ingest, link: Link, detail: str) -> None:
        self.status.link, self.status.detail, self.status.since = link, detail, ingest.now()


class HttpSource:
    """Polls a health endpoint: each 2xx answer is a beat, anything else a missed one.
    Polls never overlap: the next starts one interval after the last one began, or
    when it ends if it took longer."""

    def __init__(self, name: str, url: str, interval_s: float, timeout_s: float, client: Callable[[], httpx.AsyncClient]) -> None:
        self.name, self.url = name, url
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self.client = client
        self.status = SourceStatus(f"{name}={url}")

    async def run(self, ingest: Ingest) -> None:
        seq = 0
        while True:
            started = ingest.now()
            try:
                response = await self.client().get(self.url, timeout=self.timeout_s)
                ok, detail = response.is_success, f"HTTP {response.status_code}"
            except Exception as exc:  # an error or a timeout is a missed beat, shown as such
                ok, detail = False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            now = ingest.now()
            self.status.link, self.status.detail, self.status.since = ("connected" if ok else "retrying"), detail, now
            ingest.http_answer(self.name, self.interval_s, now, seq, (now - started) * 1000 if ok else None)
            seq += 1
            await asyncio.sleep(max(0.0, started + self.interval_s - ingest.now()))


def parse_source(spec: str, token: str | None, interval_s: float, timeout_s: float,
                 client: Callable[[], httpx.AsyncClient]) -> HubSource | HttpSource:
    """``ws://h:p`` -> a hub; ``[NAME=]http(s)://…`` -> an endpoint named NAME (or host:port/path)."""
    name, sep, url = spec.partition("=")
    if not sep or "://" in name:
        name, url = "", spec
    try:
        check_address(url, ("ws", "wss", "http", "https"))
    except ValueError as exc:
        raise SourceError(f"source {spec!r}: {exc}; expected ws://HOST:PORT (a hub) or "
                          "[NAME=]http(s)://… (a health endpoint)") from None
    parts = urlsplit(url)
    if parts.scheme in ("ws", "wss"):
        if name:
            raise SourceError(f"source {spec!r}: only HTTP endpoints take a NAME=")
        return HubSource(url, token)
    return HttpSource(name or (parts.netloc + parts.path.rstrip("/")), url, interval_s, timeout_s, client)

