"""NATS's own view of each worker's connection: the evidence that a silent worker is
still there (starved) rather than gone (dead).

Every agent names its NATS connection after its subject stem, so each server's
``/connz`` lists the workers connected to it. A worker on some server's list is alive as
far as the network can tell. A worker seen last on a server that cannot be read now
keeps that evidence for ``GRACE_ROUNDS`` more readings: when a server dies its workers
are reconnecting to another, and within a round or two they are listed there. A
worker on no list, its server readable, has no evidence: its silence is judged as
silence, and past ``dead_after`` it is dead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx

from heartmon.bus.subjects import Identity, stem_identity

GRACE_ROUNDS = 2
CONNZ_LIMIT = 1_000_000
"""Asked for in one page: /connz answers 1024 connections by default."""


@dataclass
class Evidence:
    """Sans I/O: readings in, changes of each worker's evidence out."""

    prefix: str
    seen_on: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Worker key -> (the server it was last listed on, readings since, while that server
    could not be read)."""
    vouched: dict[str, str] = field(default_factory=dict)

    def reading(self, lists: dict[str, Iterable[str] | None]) -> list[tuple[str, str | None]]:
        """One reading of every server: server -> the names of its connections, or None
        when it could not be read. Returns (worker key, evidence or None) for each
        worker whose evidence changed."""
        listed: dict[str, str] = {}
        for server, names in lists.items():
            for name in names or ():
                identity = stem_identity(self.prefix, name)
                if identity is not None:
                    listed[identity.key] = server
        for key, server in listed.items():
            self.seen_on[key] = (server, 0)
        for key, (server, rounds) in list(self.seen_on.items()):
            if key in listed:
                continue
            if lists.get(server, ()) is None and rounds < GRACE_ROUNDS:
                self.seen_on[key] = (server, rounds + 1)
            else:
                del self.seen_on[key]
        changes: list[tuple[str, str | None]] = []
        for key, (server, rounds) in self.seen_on.items():
            because = (f"NATS connection open on {server}" if rounds == 0
                       else f"NATS server {server} unreadable; connected there {rounds} reading(s) ago")
            if self.vouched.get(key) != because:
                self.vouched[key] = because
                changes.append((key, because))
        for key in [k for k in self.vouched if k not in self.seen_on]:
            del self.vouched[key]
            changes.append((key, None))
        return changes

    def connected(self, identity: Identity) -> bool:
        return identity.key in self.seen_on


def monitoring_url(address: str) -> str:
    """``HOST:PORT`` or ``http(s)://HOST:PORT`` -> the base URL of a monitoring endpoint."""
    address = address.rstrip("/")
    return address if address.startswith(("http://", "https://")) else f"http://{address}"


async def read_connz(client: httpx.AsyncClient, base: str) -> list[str] | None:
    """The names of the connections one server holds, or None when it cannot be read."""
    try:
        response = await client.get(f"{base}/connz", params={"limit": CONNZ_LIMIT})
        response.raise_for_status()
        return [c.get("name", "") for c in response.json().get("connections") or ()]
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


async def follow(client: httpx.AsyncClient, servers: list[str], evidence: Evidence, interval_s: float,
                 changed: Callable[[str, str | None], None], status: Callable[[str | None], None]) -> None:
    """Reads every server's /connz each interval and reports each change of evidence;
    ``status`` gets a line naming the servers that could not be read, or None."""
    bases = [monitoring_url(s) for s in servers]
    while True:
        lists = await asyncio.gather(*(read_connz(client, b) for b in bases))
        down = [b for b, names in zip(bases, lists, strict=True) if names is None]
        status(f"cannot read /connz of {', '.join(down)}" if down else None)
        for key, because in evidence.reading(dict(zip(bases, lists, strict=True))):
            changed(key, because)
        await asyncio.sleep(interval_s)
