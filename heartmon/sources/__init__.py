"""Where arrivals come from. One module per kind of source, all behind one seam: a
source runs on the monitor's ingest loop and tells an :class:`Ingest` what it heard,
stamped with the monitor's own receive time (liveness is judged on our clock, never
on the sender's timestamps, as Celery does). :func:`parse_source` turns a command-line
SOURCE into the right kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlsplit

import httpx

from heartmon.urls import check_address

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
    """What a source may tell the monitor; every call is made on the ingest loop.
    Workers are named by (source label, worker name)."""

    def now(self) -> float: ...
    def hub_message(self, source: str, message: object, now: float) -> None: ...
    def hub_lost(self, source: str, now: float) -> None: ...
    def http_answer(self, source: str, name: str, interval_s: float, now: float, seq: int,
                    latency_ms: float | None) -> None: ...


class Source(Protocol):
    kind: str
    """"hub" when commands can be sent to it, else the kind's name."""
    status: SourceStatus

    async def run(self, ingest: Ingest) -> None: ...


def parse_source(spec: str, token: str | None, interval_s: float, timeout_s: float,
                 client: Callable[[], httpx.AsyncClient]) -> Source:
    """``ws://h:p`` or ``h:p`` -> a hub; ``[NAME=]http(s)://…`` -> an endpoint named NAME
    (or host:port/path). Anything else is refused: taken for a URL, it would be watched
    forever without a single answer."""
    from heartmon.sources.http import HttpSource
    from heartmon.sources.hub import HubSource

    name, sep, url = spec.partition("=")
    if not sep or "://" in name:
        name, url = "", spec
    try:
        url = check_address(url, ("ws", "wss", "http", "https"))
    except ValueError as exc:
        raise SourceError(f"source {spec!r}: {exc}; expected ws://HOST:PORT or HOST:PORT (a hub) or "
                          "[NAME=]http(s)://… (a health endpoint)") from None
    parts = urlsplit(url)
    if parts.scheme in ("ws", "wss"):
        if name:
            raise SourceError(f"source {spec!r}: only HTTP endpoints take a NAME=")
        return HubSource(url, token)
    return HttpSource(name or (parts.netloc + parts.path.rstrip("/")), url, interval_s, timeout_s, client)
