"""``heartmon hub --nats``: a hub whose workers are on a NATS cluster.

It is an ordinary hub (heartmon.hub) with its workers fed from the bus instead of from
its own /connect: the same state, the same detector, so /api/workers, /metrics, ``any``
routing and /watch (for monitors that only speak to hubs) mean what they mean for any
hub. Any number of bridges may follow one cluster: each hears every message and judges
it the same way, so they agree on the pool without talking to each other.

A bridged worker's "connection" is a :class:`BusRoute`: commands go to the worker by
request/reply. On a cluster that lets anyone connect the bridge sends none (403,
``insecure_cluster``) unless it was started with ``--insecure``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

import httpx

from heartmon.bus.commands import request_inject
from heartmon.bus.connect import WATCHING, BusError, check_commands_allowed, open_bus
from heartmon.bus.evidence import Evidence, follow
from heartmon.bus.hearing import Hearing
from heartmon.bus.subjects import DISCOVER, Identity, reports
from heartmon.hub_state import RouteError
from heartmon.protocol import Hello, Inject, ProtocolError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from heartmon.config import NatsSettings
    from heartmon.hub import Hub

log = logging.getLogger("heartmon.hub")


class InsecureCluster(RouteError):
    status = HTTPStatus.FORBIDDEN


class BusRoute:
    """Where a bridged worker's commands go."""

    def __init__(self, bridge: Bridge, key: str) -> None:
        self.bridge, self.key = bridge, key

    async def send(self, command: Inject) -> dict:
        bridge = self.bridge
        if bridge.refusal is not None:
            raise InsecureCluster("insecure_cluster", bridge.refusal)
        assert bridge.nc is not None
        return await request_inject(bridge.nc, bridge.settings.prefix, self.key, command)


class Bridge:
    def __init__(self, hub: Hub, servers: list[str], settings: NatsSettings, fleet: str | None = None) -> None:
        """Every fleet under the prefix, or only ``fleet``."""
        self.hub, self.servers, self.settings = hub, servers, settings
        prefix = settings.prefix
        self.subject = reports(prefix, fleet)
        self.hearing = Hearing(prefix)
        self.evidence = Evidence(prefix)
        self.nc: Client | None = None
        self.refusal: str | None = "not connected to NATS yet"

    async def run(self, client: httpx.AsyncClient, on_ready: Callable[[], None]) -> None:
        """Raises BusError when no server takes the first connection."""
        self.nc = nc = await open_bus(self.servers, self.settings, WATCHING, disconnected_cb=self._lost,
                                      reconnected_cb=self._discover)
        try:
            try:
                await check_commands_allowed(self.servers, self.settings)
                self.refusal = None
            except BusError as exc:
                self.refusal = str(exc)
                log.warning("%s", exc)
            await nc.subscribe(self.subject, cb=self._take)
            await self._discover()
            on_ready()
            if self.settings.monitor:
                await follow(client, self.settings.monitor, self.evidence, self.settings.connz_interval_ms / 1000,
                             self._vouch, lambda down: None)
            else:
                await asyncio.Future()
        finally:
            await nc.close()

    async def _lost(self) -> None:
        """Without the bus, the bridge's workers' silence is its own: they are unknown, not
        judged, until they say hello again (asked to on reconnecting)."""
        self.hub.state.bus_lost(self.hub.clock())

    async def _discover(self) -> None:
        assert self.nc is not None
        await self.nc.publish(f"{self.settings.prefix}.{DISCOVER}", b"")

    def _vouch(self, key: str, because: str | None) -> None:
        self.hub.state.vouch(key, because, self.hub.clock())

    async def _take(self, msg: Msg) -> None:
        hub, state = self.hub, self.hub.state
        now = hub.clock()
        try:
            identity, message = self.hearing.decode(msg.subject, msg.data)
            key = identity.key
            record = state.records.get(key)
            if isinstance(message, Hello):
                joined = state.join(message.model_copy(update={"worker": key}), BusRoute(self, key), now,
                                    connected=None)
                self.hub.publish(*joined.publish)
                self._vouch(key, self.evidence.vouched.get(key))
            elif record is None:
                await self._ask(identity, now)
            else:
                self.hub.publish(state.message(record, message, now))
        except ProtocolError as exc:
            hub.metrics.rejected.labels(exc.code).inc()
            log.info("refused a message on %s: %s", msg.subject[:120], exc)

    async def _ask(self, identity: Identity, now: float) -> None:
        if self.nc is not None and self.hearing.should_ask(identity, now):
            await self.nc.publish(identity.command(self.settings.prefix, DISCOVER), b"")


async def run_bridge(hub: Hub, host: str, port: int, servers: list[str], settings: NatsSettings,
                     fleet: str | None, on_ready: Callable[[str], None]) -> None:
    """Serves the hub and follows the bus until cancelled."""
    async with hub.listen(host, port) as server, httpx.AsyncClient(timeout=2) as client:
        bound = server.sockets[0].getsockname()
        url = f"ws://{host if ':' not in host else f'[{host}]'}:{bound[1]}"
        await Bridge(hub, servers, settings, fleet).run(client, lambda: on_ready(url))
