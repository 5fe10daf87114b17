"""NATS's own view of each worker's connection: the evidence that a silent worker is
still there (starved) rather than gone (dead).

Every agent names its NATS connection after its subject stem, so each server's
``/connz`` lists the workers connected to it. A worker on some server's list is alive as
far as the network can tell. A worker seen last on a server that cannot be read now
keeps that evidence for ``GRACE_S``: when a server dies its workers reconnect to another
within milliseconds and are listed there at the next reading, and when a server is
wedged (stopped, cut off: its sockets stay open) its workers leave it once its pings go
unanswered (``BEATING``), which takes up to ``GRACE_S``. A worker on no list, its
server readable, has no evidence: its silence is judged as silence, and past
``dead_after`` it is dead.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import httpx

from heartmon.bus.connect import BEATING
from heartmon.bus.subjects import stem_identity

GRACE_S = BEATING.stale_after_s
FETCH_S = 2.0
"""A server that has not answered /connz within this is unreadable this time (a
stopped process still accepts connections, and answers none): the others are read on."""
CONNZ_LIMIT = 1_000_000
"""Asked for in one page: /connz answers 1024 connections by default."""


@dataclass
class Evidence:
    """Sans I/O: readings in, changes of each worker's evidence out."""

    prefix: str
    keys: dict[str, str | None] = field(default_factory=dict)
    """Connection name -> worker key (None: not a worker's), read once per name: a
    reading of 10,000 connections would otherwise unescape 10,000 names each time."""
    seen_on: dict[str, tuple[str, float | None]] = field(default_factory=dict)
    """Worker key -> (the server it was last listed on, since when that server could not
    be read, or None while it can)."""
    vouched: dict[str, str] = field(default_factory=dict)

    def reading(self, lists: Mapping[str, Iterable[str] | None], now: float) -> list[tuple[str, str | None]]:
        """One reading of every server at ``now``: server -> the names of its connections,
        or None when it could not be read. Returns (worker key, evidence or None) for
        each worker whose evidence changed."""
        listed: dict[str, str] = {}
        keys = self.keys
        for server, names in lists.items():
            for name in names or ():
                if name not in keys:
                    identity = stem_identity(self.prefix, name)
                    keys[name] = None if identity is None else identity.key
                if (key := keys[name]) is not None:
                    listed[key] = server
        if len(keys) > 4 * max(len(listed), 1024):  # names of connections long gone
            self.keys = {n: k for n, k in keys.items() if k in listed}
        for key, server in listed.items():
            self.seen_on[key] = (server, None)
        for key, (server, since) in list(self.seen_on.items()):
            if key in listed:
                continue
            if lists.get(server, ()) is not None:
                del self.seen_on[key]  # its server is read, and lists it no more
            elif since is None:
                self.seen_on[key] = (server, now)
            elif now - since > GRACE_S:
                del self.seen_on[key]
        changes: list[tuple[str, str | None]] = []
        for key, (server, since) in self.seen_on.items():
            because = (f"NATS connection open on {server}" if since is None
                       else f"NATS server {server} cannot be read; connected there when it last could")
            if self.vouched.get(key) != because:
                self.vouched[key] = because
                changes.append((key, because))
        for key in [k for k in self.vouched if k not in self.seen_on]:
            del self.vouched[key]
            changes.append((key, None))
        return changes


def monitoring_url(address: str) -> str:
    """``HOST:PORT`` or ``http(s)://HOST:PORT`` -> the base URL of a monitoring endpoint."""
    address = address.rstrip("/")
    return address if address.startswith(("http://", "https://")) else f"http://{address}"


def stem_names(prefix: str) -> re.Pattern[bytes]:
    """The ``"name"`` fields of /connz that are heartmon stems under ``prefix``. A stem has
    no quote or backslash (its tokens are escaped), so the bytes are searched rather than
    parsed: /connz of 10,000 connections is 5 MB of JSON, about 50 ms to parse whole on the
    monitor's ingest loop, for one field of each."""
    return re.compile(rb'"name":\s*"(' + re.escape(prefix.encode()) + rb'\.[^"\\]*)"')


async def fetch_connz(client: httpx.AsyncClient, base: str) -> bytes | None:
    """One server's /connz, or None when it cannot be read."""
    try:
        response = await client.get(f"{base}/connz", params={"limit": CONNZ_LIMIT}, timeout=FETCH_S)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    return response.content if b'"connections"' in response.content else None  # else not NATS


async def follow(client: httpx.AsyncClient, servers: list[str], evidence: Evidence, interval_s: float,
                 changed: Callable[[str, str | None], None], status: Callable[[str | None], None]) -> None:
    """Reads every server's /connz each interval and reports each change of evidence;
    ``status`` gets a line naming the servers that could not be read, or None. A reading
    never takes more than a tenth of the loop: a fleet whose readings cost more is read
    less often."""
    bases = [monitoring_url(s) for s in servers]
    names = stem_names(evidence.prefix)
    while True:
        bodies = await asyncio.gather(*(fetch_connz(client, b) for b in bases))
        started = time.perf_counter()
        lists = {b: None if body is None else [m.decode() for m in names.findall(body)]
                 for b, body in zip(bases, bodies, strict=True)}
        down = [b for b, found in lists.items() if found is None]
        status(f"cannot read /connz of {', '.join(down)}" if down else None)
        for key, because in evidence.reading(lists, time.monotonic()):
            changed(key, because)
        await asyncio.sleep(max(interval_s, 10 * (time.perf_counter() - started)))
