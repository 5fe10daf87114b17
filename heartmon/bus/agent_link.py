"""The agent's side of the bus: the same Beater, publishing instead of sending.

The connection lives wherever the beats are sent from: the app's loop (``none``), the
heartbeat thread, or the heartbeat child, which holds its own connection so that a
starved main thread cannot silence it. Nothing here pings on its own: nats-py's ping
timer runs on the same loop as the beats, so a loop starved for minutes sends no ping
and fails none, and the servers' pings (every two minutes by default) are answered as
soon as it runs again. A lost server is the client's to handle: it reconnects to
another server of the cluster, buffering what is published meanwhile.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from heartmon.bus.connect import BEATING, BusError, keep_opening
from heartmon.bus.subjects import DISCOVER, Identity
from heartmon.hub_state import RouteError, check_duration, check_probe
from heartmon.protocol import Inject, Message, ProtocolError, decode_to_worker, encode

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from heartmon.agent import Beater
    from heartmon.config import NatsSettings

log = logging.getLogger("heartmon.agent")


async def beat_on_bus(beater: Beater) -> None:
    from heartmon.config import NatsSettings

    config = beater.config
    settings = config.bus or NatsSettings()
    await _Link(beater, Identity(settings.fleet, beater.host, config.name), settings.prefix).run(settings)


class _Link:
    def __init__(self, beater: Beater, identity: Identity, prefix: str) -> None:
        self.beater, self.identity, self.prefix = beater, identity, prefix
        self.nc: Client | None = None

    async def run(self, settings: NatsSettings) -> None:
        config = self.beater.config

        def failed(exc: BusError) -> None:
            log.info("%s: %s", config.name, exc)

        self.nc = await keep_opening(list(config.nats), settings, BEATING, (config.backoff_initial_s,
                                     config.backoff_max_s), failed, name=self.identity.stem(self.prefix),
                                     disconnected_cb=self._disconnected, reconnected_cb=self._reconnected,
                                     error_cb=self._error)
        log.info("%s connected to NATS as %s", config.name, self.identity.key)
        try:
            await self._session(self.nc)  # for good: the client reconnects by itself
        finally:
            self.beater.online = False
            await self.nc.close()

    async def _session(self, nc: Client) -> None:
        command = self.identity.command
        await nc.subscribe(command(self.prefix, "inject"), cb=self._inject)
        await nc.subscribe(command(self.prefix, DISCOVER), cb=self._hello)
        await nc.subscribe(f"{self.prefix}.{DISCOVER}", cb=self._hello)
        await self._hello()
        self.beater.online = True
        await self.beater.send_forever(self._publish)

    async def _publish(self, message: Message) -> None:
        """Publishes, or drops the message when the client cannot take it: while no server
        is reachable it buffers (2 MiB, some twenty thousand beats) and refuses beyond."""
        from nats.errors import Error as NatsError

        assert self.nc is not None
        kind = type(message).model_fields["type"].default  # each message's Literal tag
        try:
            await self.nc.publish(self.identity.subject(self.prefix, kind), encode(message).encode())
        except NatsError as exc:
            log.debug("%s: dropped a %s: %s", self.beater.config.name, kind, exc)

    async def _hello(self, _request: Msg | None = None) -> None:
        await self._publish(self.beater.hello())

    async def _inject(self, msg: Msg) -> None:
        await msg.respond(json.dumps(take_inject(self.beater, self.identity, msg.data)).encode())

    async def _disconnected(self) -> None:
        self.beater.online = False  # a stack taken now describes a block nobody will see whole
        self.beater.stack_reports.clear()

    async def _reconnected(self) -> None:
        self.beater.online = True
        await self._hello()  # a monitor that started while we were away has not heard it

    async def _error(self, exc: Exception) -> None:
        log.debug("%s: NATS: %s", self.beater.config.name, exc)


def take_inject(beater: Beater, identity: Identity, data: bytes) -> dict[str, Any]:
    """The worker's answer to an inject request: what a hub answers over HTTP, the
    accepted command or the error, with the same codes and messages."""
    try:
        message = decode_to_worker(data.decode(errors="replace"))
        if not isinstance(message, Inject):
            raise ProtocolError("unexpected", f"only injects are answered here, not {message.type!r}")
        check_duration(message.duration_s, beater.config.max_duration_s)
        check_probe(message.probe, beater.probes)
    except (ProtocolError, RouteError) as exc:
        return {"error": exc.code, "message": exc.message}
    beater.take(message)
    return {"id": message.id, "worker": identity.key, "probe": message.probe, "duration_s": message.duration_s}
