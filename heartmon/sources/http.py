"""An HTTP health endpoint, polled: each 2xx answer is a beat, anything else a missed one.

A plain service has no heartbeat of its own, so a failed poll says only that it did
not answer. How it failed is the evidence of life that tells starved from dead: a
connection the kernel accepted (or a request it took) that gets no answer within the
timeout means the process is there and its loop is not serving — ``starved``, as a
uvicorn handler that hogs its event loop is. A refused or reset connection is no
evidence at all: ``dead`` once the silence passes the dead threshold. When the
endpoint is on this machine, the pid listening on its port is found, so that its
life and CPU count too (a SIGKILLed service is dead at once, not after the threshold).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable
from contextlib import AsyncExitStack
from urllib.parse import urlsplit

import httpx
import psutil

from heartmon.sources import Heard, Ingest, SourceStatus

NO_ANSWER = "accepts connections but does not answer"
MAX_BODY_BYTES = 64 * 1024


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
        parts = urlsplit(url)
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._local = _is_local(parts.hostname or "")

    async def run(self, ingest: Ingest) -> None:
        seq = 0
        pid: int | None = None
        answered = False  # after a failed poll, the service that answers may be a new process
        host = socket.gethostname() if self._local else None
        while True:
            started = ingest.now()
            ok, detail, alive = await self._poll()
            if ok and not answered and self._local:
                pid = await asyncio.to_thread(_listening_pid, self._port)
            answered = ok
            now = ingest.now()
            self.status.set("connected" if ok else "retrying", detail)
            label = self.status.label
            if ok:
                ingest.heard(label, self.name, now, Heard(self.interval_s, "http", pid=pid, host=host, seq=seq,
                                                          latency_ms=(now - started) * 1000))
            else:
                ingest.listed(label, self.name, now, Heard(self.interval_s, "http", pid=pid, host=host))
            ingest.vouch(label, self.name, now, alive)
            seq += 1
            await asyncio.sleep(max(0.0, started + self.interval_s - ingest.now()))

    async def _poll(self) -> tuple[bool, str, str | None]:
        """(a 2xx answer, what the status line says, evidence of life). The whole poll,
        from connecting to the status line, has one deadline: a server that trickles its
        headers cannot hold it. The body says nothing more and is read only up to
        MAX_BODY_BYTES within what is left of it (an endless body is not a memory leak)."""
        sent = False

        async def trace(event: str, info: dict) -> None:  # httpcore's hook: the request went out
            nonlocal sent
            sent = sent or event.endswith("send_request_headers.complete")

        try:
            async with AsyncExitStack() as stack:
                async with asyncio.timeout(self.timeout_s):
                    response = await stack.enter_async_context(
                        self.client().stream("GET", self.url, timeout=self.timeout_s, extensions={"trace": trace}))
                with contextlib.suppress(TimeoutError, httpx.HTTPError, httpx.StreamError):
                    async with asyncio.timeout(max(0.0, self.timeout_s / 2)):
                        read = 0
                        async for chunk in response.aiter_raw():
                            read += len(chunk)
                            if read > MAX_BODY_BYTES:
                                break
                return response.is_success, f"HTTP {response.status_code}", None
        except (TimeoutError, httpx.TimeoutException) as exc:
            if sent or isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout)):  # taken in, never answered
                return False, f"{NO_ANSWER} within {self.timeout_s:g} s", NO_ANSWER
            return False, f"no connection within {self.timeout_s:g} s", None
        except Exception as exc:  # refused, reset, unreachable: no evidence of life
            return False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, None


def _is_local(host: str) -> bool:
    """Whether the endpoint's host is this machine (loopback, or one of its addresses)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host in (socket.gethostname(), socket.getfqdn())
    if address.is_loopback:
        return True
    return any(a.address == host for addrs in psutil.net_if_addrs().values() for a in addrs)


def _listening_pid(port: int) -> int | None:
    """The pid listening on ``port`` here, if this user may see it (another user's
    sockets are hidden without privileges: then the poll's outcome is the only evidence)."""
    try:
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return conn.pid
    except psutil.Error:
        return None
    return None
