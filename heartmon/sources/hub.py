"""A hub's /watch stream: a snapshot, then every event, resynced after each reconnect."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from heartmon.backoff import backoff_delay
from heartmon.protocol import MAX_MONITOR_FRAME_BYTES, Error, ProtocolError, Snapshot, decode_to_monitor
from heartmon.sources import Ingest, SourceStatus
from heartmon.urls import auth_headers, hub_ws

PING_S = 0.5
"""How long the monitor lets a hub be silent before it asks (a ping), and how long it
then waits for any sign of it. Workers are never pinged: a starved worker's loop could
not answer. Any frame is a sign of life too, so a stream that is only backlogged (the
pong queued behind beats) is never dropped; a hub that sends nothing and answers
nothing for about a second is wedged or gone, and its workers turn unknown before a
worker beating every second (the agent's default) could be called starved for it."""


class HubSource:
    """Follows a hub's /watch stream. While the stream is down, what its workers do is
    not known (:meth:`Ingest.source_lost`); the snapshot after a reconnect is the truth."""

    kind = "hub"

    def __init__(self, url: str, token: str | None, backoff_initial_s: float = 0.1, backoff_max_s: float = 5.0) -> None:
        self.url = hub_ws(url, "/watch")
        self.status = SourceStatus(url)
        self.token = token
        self.backoff = (backoff_initial_s, backoff_max_s)
        self._heard = 0.0
        """When the stream last brought anything: a hub that sends is alive."""
        self._lost = False

    async def run(self, ingest: Ingest) -> None:
        headers = auth_headers(self.token)
        attempt = 0
        while True:
            self.status.set("connecting")
            try:
                async with connect(self.url, additional_headers=headers, compression=None, open_timeout=5,
                                   max_size=MAX_MONITOR_FRAME_BYTES, ping_interval=None,
                                   close_timeout=PING_S) as ws:
                    attempt = 0
                    watchdog = asyncio.ensure_future(self._watchdog(ws, ingest))
                    try:
                        async for frame in ws:
                            self._heard = now = ingest.now()
                            self._take(ingest, frame, now)
                    finally:
                        watchdog.cancel()
                    detail = "hub closed the stream"
            except InvalidStatus as exc:
                code = exc.response.status_code
                detail = "unauthorized: wrong or missing token" if code == 401 else f"hub answered HTTP {code}"
            except Exception as exc:  # whatever it was, the source shows it and tries again
                detail = str(exc) or type(exc).__name__
            if not self._lost:
                ingest.source_lost(self.status.label, ingest.now())
                self._lost = True
            self.status.set("retrying", detail)
            await asyncio.sleep(backoff_delay(attempt, *self.backoff))
            attempt += 1

    def _take(self, ingest: Ingest, frame: str | bytes, now: float) -> None:
        try:
            message = decode_to_monitor(frame)
        except ProtocolError:
            return  # a hub of another version; the snapshot still resyncs
        if isinstance(message, Snapshot):
            self.status.set("connected")
            self._lost = False
        if not isinstance(message, Error):
            ingest.hub_message(self.status.label, message, now)

    async def _watchdog(self, ws: ClientConnection, ingest: Ingest) -> None:
        """Drops the stream when the hub has sent nothing, pong included, for PING_S
        after a silence of PING_S."""
        while True:
            await asyncio.sleep(PING_S)
            asked = ingest.now()
            if asked - self._heard < PING_S:
                continue
            pong = await ws.ping()
            try:
                await asyncio.wait_for(pong, PING_S)
            except TimeoutError:
                if self._heard < asked:  # not a frame since we asked: wedged or gone
                    ws.transport.abort()
                    return

