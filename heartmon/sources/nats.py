"""A fleet on a NATS cluster (heartmon.bus), followed with no hub in between.

``nats://HOST:PORT[,nats://HOST:PORT…][?fleet=NAME&monitor=HOST:PORT&monitor=…]``:
every worker under the prefix (settings ``nats.prefix``), or those of one fleet. The
servers are only where to start: the client learns the rest of the cluster from them.
``monitor`` names each server's monitoring endpoint (or settings ``nats.monitor``):
their ``/connz`` lists the connections NATS holds, and a silent worker still listed is
alive as far as the network can tell, so it is starved, not dead. Without one, a silent
worker is judged on its silence alone, as any system that shows no connections.

On (re)connecting the source asks every worker to say hello again (``<prefix>.discover``):
a monitor that starts after its fleet knows none of them. A worker heard without a hello
is asked on its own. While the source's own connection is down its workers are unknown;
once back, one that has not said hello within ``REHELLO_S`` gets the time a returning
hub gives its workers, then it is dead.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from heartmon.backoff import RECONNECT_MAX_S
from heartmon.bus.connect import WATCHING, BusError, keep_opening, parse_servers
from heartmon.bus.evidence import Evidence, follow
from heartmon.bus.hearing import Hearing
from heartmon.bus.subjects import DISCOVER, Identity, reports
from heartmon.protocol import FromWorker, Hello, ProtocolError, WorkerInfo, relayed
from heartmon.sources import Client, Ingest, SourceStatus

if TYPE_CHECKING:
    from nats.aio.client import Client as Nats
    from nats.aio.msg import Msg

    from heartmon.config import NatsSettings, Settings

REHELLO_S = 2.0
OPTIONS = ("fleet", "monitor")


def from_url(url: str, settings: Settings, client: Client) -> NatsSource:
    servers_part, _, query = url.partition("?")
    try:
        options = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"cannot read the options {query!r}: expected fleet=NAME&monitor=HOST:PORT") from None
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ValueError(f"unknown option {sorted(unknown)[0]!r}; a nats:// source takes {' and '.join(OPTIONS)}")
    try:
        servers = parse_servers(servers_part)
    except BusError as exc:
        raise ValueError(str(exc)) from None
    fleets = options.get("fleet", [])
    if len(fleets) > 1 or (fleets and not fleets[0]):
        raise ValueError("fleet= names one fleet")
    if any(not m for m in options.get("monitor", [])):
        raise ValueError("monitor= names a server's monitoring endpoint, HOST:PORT")
    monitors = options.get("monitor") or settings.nats.monitor
    return NatsSource(url, servers, settings.nats, fleets[0] if fleets else None, monitors, client)


class NatsSource:
    kind = "nats"

    def __init__(self, label: str, servers: list[str], settings: NatsSettings, fleet: str | None,
                 monitors: list[str], client: Client) -> None:
        self.status = SourceStatus(label)
        self.servers, self.settings, self.fleet, self.monitors = servers, settings, fleet, monitors
        self.client = client
        prefix = settings.prefix
        self.subject = reports(prefix, fleet)
        self.hearing = Hearing(prefix)
        self.evidence = Evidence(prefix)
        self._nc: Nats | None = None
        self._ingest: Ingest | None = None
        self._back_at: float | None = None
        """When the connection came back: who has not said hello since is missing."""
        self._heard: dict[str, float] = {}
        """Worker key -> when its last hello was heard."""
        self._lost = False
        self._connz_down: str | None = None

    async def run(self, ingest: Ingest) -> None:
        self._ingest = ingest
        self._nc = nc = await keep_opening(
            self.servers, self.settings, WATCHING, (0.1, RECONNECT_MAX_S),
            lambda exc: self.status.set("retrying", str(exc)), lambda: self.status.set("connecting"),
            disconnected_cb=self._disconnected, reconnected_cb=self._reconnected, error_cb=self._error)
        try:
            await nc.subscribe(self.subject, cb=self._take)
            await self._connected()
            if self.monitors:
                await follow(self.client(), self.monitors, self.evidence, self.settings.connz_interval_ms / 1000,
                             self._vouch, self._connz_status)
            else:
                await asyncio.Future()  # messages arrive on the subscription
        finally:
            await nc.close()

    async def _connected(self) -> None:
        assert self._nc is not None
        self._lost = False
        self._back_at = self._ingest.now() if self._ingest else None
        self._show()
        await self._nc.publish(f"{self.settings.prefix}.{DISCOVER}", b"")
        asyncio.get_running_loop().call_later(REHELLO_S, self._missing)

    def _show(self) -> None:
        detail = self._connz_down or ("" if self.monitors else "no monitoring endpoint (monitor=HOST:PORT): "
                                                                  "a silent worker is judged on silence alone")
        self.status.set("connected", detail)

    def _missing(self) -> None:
        """Workers heard before the connection was lost and not since it came back. One
        NATS still holds a connection for (on a wedged server, say, that it has yet to
        leave) is not missing yet: it is asked about again until it is heard or is not."""
        ingest, back = self._ingest, self._back_at
        if ingest is None or back is None or self._lost:
            return
        waiting = False
        for key, heard in self._heard.items():
            if heard >= back:
                continue
            if key in self.evidence.vouched:
                waiting = True
            else:
                ingest.missing(self.status.label, key, ingest.now(), "not heard since the NATS link came back")
                self._heard[key] = back  # said once
        if waiting:
            asyncio.get_running_loop().call_later(REHELLO_S, self._missing)

    async def _disconnected(self) -> None:
        if self._ingest is not None and not self._lost:
            self._lost = True
            self._ingest.source_lost(self.status.label, self._ingest.now())
        self.status.set("retrying", "NATS connection lost; reconnecting")

    async def _reconnected(self) -> None:
        await self._connected()

    async def _error(self, exc: Exception) -> None:
        self.status.set(self.status.link, f"NATS: {exc}")

    def _vouch(self, key: str, because: str | None) -> None:
        if self._ingest is not None:
            self._ingest.vouch(self.status.label, key, self._ingest.now(), because)

    def _connz_status(self, down: str | None) -> None:
        self._connz_down = down
        if not self._lost:
            self._show()

    async def _take(self, msg: Msg) -> None:
        ingest = self._ingest
        assert ingest is not None
        now = ingest.now()
        try:
            identity, message = self.hearing.decode(msg.subject, msg.data)
        except ProtocolError as exc:
            self.status.refuse(f"{msg.subject[:80]}: {exc.message}")
            return
        self.take(ingest, identity, message, now)

    def take(self, ingest: Ingest, identity: Identity, message: FromWorker, now: float) -> None:
        label, key = self.status.label, identity.key
        if isinstance(message, Hello):
            self._heard[key] = now
            info = WorkerInfo(worker=key, isolation=message.isolation, pid=message.pid, host=message.host,
                              interval_ms=message.interval_ms, agent=message.agent, probes=message.probes,
                              connected_at=time.time())
            ingest.joined(label, info, now, connected=None)
            # /connz may have listed it before its hello came: that evidence was for no one then.
            ingest.vouch(label, key, now, self.evidence.vouched.get(key))
            return
        if not ingest.judging(label, key):
            if self.hearing.should_ask(identity, now) and self._nc is not None:
                asyncio.ensure_future(self._ask(identity))
            return
        ingest.hub_message(label, relayed(key, message, time.time()), now)

    async def _ask(self, identity: Identity) -> None:
        if self._nc is not None and self._nc.is_connected:
            await self._nc.publish(identity.command(self.settings.prefix, DISCOVER), b"")
