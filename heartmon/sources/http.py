"""An HTTP health endpoint, polled: each 2xx answer is a beat, anything else a missed one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from heartmon.sources import Heard, Ingest, SourceStatus


class HttpSource:
    """Polls a health endpoint. The endpoint is the worker: a failed poll is the
    worker's missed beat, not a lost source. Polls never overlap: the next starts one
    interval after the last one began, or when it ends if it took longer."""

    kind = "http"

    def __init__(self, name: str, url: str, interval_s: float, timeout_s: float,
                 client: Callable[[], httpx.AsyncClient]) -> None:
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
            if ok:
                ingest.heard(self.status.label, self.name, now,
                             Heard(self.interval_s, "http", seq=seq, latency_ms=(now - started) * 1000))
            seq += 1
            await asyncio.sleep(max(0.0, started + self.interval_s - ingest.now()))
