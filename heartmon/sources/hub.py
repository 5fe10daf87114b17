"""A hub's /watch stream: a snapshot, then every event, resynced after each reconnect."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from heartmon.backoff import backoff_delay
from heartmon.protocol import MAX_MONITOR_FRAME_BYTES, Error, ProtocolError, Snapshot, decode_to_monitor
from heartmon.sources import Ingest, Link, SourceStatus
from heartmon.urls import auth_headers, hub_ws


PING_S = 0.5
"""The monitor pings its hubs every this often (workers are never pinged: a starved
worker's loop could not answer). A hub that leaves a ping unanswered for this long is
wedged or gone; the stream is closed without waiting for the hub's goodbye, so its
workers turn unknown within about 1.5 s, before a worker beating every second (the
agent's default) is called starved for the hub's silence."""


class HubSource:
    """Follows a hub's /watch stream. While the stream is down, what its workers do is
    not known (:meth:`Ingest.hub_lost`); the snapshot after a reconnect is the truth."""

    kind = "hub"

    def __init__(self, url: str, token: str | None, backoff_initial_s: float = 0.1, backoff_max_s: float = 5.0) -> None:
        self.url = hub_ws(url, "/watch")
        self.status = SourceStatus(url)
        self.token = token
        self.backoff = (backoff_initial_s, backoff_max_s)

    async def run(self, ingest: Ingest) -> None:
        headers = auth_headers(self.token)
        attempt = 0
        lost = False
        while True:
            self._set(ingest, "connecting", "")
            try:
                async with connect(self.url, additional_headers=headers, compression=None, open_timeout=5,
                                   max_size=MAX_MONITOR_FRAME_BYTES, ping_interval=PING_S,
                                   ping_timeout=PING_S, close_timeout=PING_S) as ws:
                    attempt = 0
                    async for frame in ws:
                        now = ingest.now()
                        try:
                            message = decode_to_monitor(frame)
                        except ProtocolError:
                            continue  # a hub of another version; the snapshot still resyncs
                        if isinstance(message, Snapshot):
                            self._set(ingest, "connected", "")
                            lost = False
                        if not isinstance(message, Error):
                            ingest.hub_message(self.status.label, message, now)
                    detail = "hub closed the stream"
            except InvalidStatus as exc:
                code = exc.response.status_code
                detail = "unauthorized: wrong or missing token" if code == 401 else f"hub answered HTTP {code}"
            except Exception as exc:  # whatever it was, the source shows it and tries again
                detail = str(exc) or type(exc).__name__
            if not lost:
                ingest.hub_lost(self.status.label, ingest.now())
                lost = True
            self._set(ingest, "retrying", detail)
            await asyncio.sleep(backoff_delay(attempt, *self.backoff))
            attempt += 1

    def _set(self, ingest: Ingest, link: Link, detail: str) -> None:
        self.status.link, self.status.detail, self.status.since = link, detail, ingest.now()
