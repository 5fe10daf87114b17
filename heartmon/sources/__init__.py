"""Where arrivals come from. One module per kind of source, all behind one seam: a
source runs on the monitor's ingest loop and tells an :class:`Ingest` what it heard,
stamped with the monitor's own receive time (liveness is judged on our clock, never
on the sender's timestamps). :func:`parse_source` turns a command-line SOURCE into
the right kind.

Two families speak through the seam. heartmon's own hubs relay the agent's protocol
(:meth:`Ingest.hub_message`). Everything else — Celery, RQ, Inngest Connect, a plain
HTTP service — is a system heartmon did not write: its source translates what that
system shows into :class:`Heard` beats, :meth:`Ingest.gone` and :meth:`Ingest.vouch`
(evidence of life besides beats), and the same detector judges them all.
"""

from __future__ import annotations

import importlib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import urlsplit

import httpx

from heartmon.urls import check_address

if TYPE_CHECKING:
    from heartmon.config import Settings
    from heartmon.protocol import WorkerInfo

Link = Literal["connecting", "connected", "retrying"]


class SourceError(ValueError):
    pass


@dataclass
class SourceStatus:
    label: str
    link: Link = "connecting"
    detail: str = ""
    refused: int = 0
    """Inputs the source could not understand (a malformed event, an unknown message):
    each is dropped and counted, and the source goes on."""
    last_refused: str = ""

    def set(self, link: Link, detail: str = "") -> None:
        self.link, self.detail = link, detail

    def refuse(self, why: str) -> None:
        self.refused += 1
        self.last_refused = why


@dataclass(frozen=True, slots=True)
class Heard:
    """A beat from a worker heartmon did not write, as its source understood it. The
    first one is its hello; one after it was dead or unknown brings it back."""

    interval_s: float
    kind: str
    """The system ("celery", "rq", "inngest", "http"): shown where an agent's isolation
    is, and what picks the system's own verdict (:mod:`heartmon.native`)."""
    pid: int | None = None
    host: str | None = None
    """With ``pid``: when it is this machine, the pid's life and CPU are evidence too."""
    seq: int | None = None
    latency_ms: float | None = None
    doing: str | None = None
    """What the worker says it is doing ("1 active task"); None when idle."""


class Ingest(Protocol):
    """What a source may tell the monitor; every call is made on the ingest loop.
    Workers are named by (source label, worker name)."""

    def now(self) -> float: ...
    def hub_message(self, source: str, message: object, now: float) -> None: ...
    def joined(self, source: str, info: WorkerInfo, now: float, connected: bool | None) -> None:
        """A worker of heartmon's agent said hello: ``connected`` True when its source
        holds its connection (a hub), None when connections are evidence to be vouched
        for (a NATS cluster)."""
    def judging(self, source: str, name: str) -> bool:
        """Whether the worker said hello and is judged now (not dead or unknown since):
        only then do its beats count, and a source whose workers can be asked for their
        hello asks the others."""
    def source_lost(self, source: str, now: float) -> None:
        """The source is unreachable: its workers are unknown until they are heard again."""
    def heard(self, source: str, name: str, now: float, beat: Heard) -> None: ...
    def listed(self, source: str, name: str, now: float, info: Heard) -> None:
        """The worker exists but did not beat (an endpoint that failed its first poll): it
        appears if it is new, so that its silence is judged; nothing else changes."""
    def gone(self, source: str, name: str, now: float, reason: str) -> None:
        """The system says the worker stopped (a clean shutdown, a closed connection): dead at once."""
    def missing(self, source: str, name: str, now: float, reason: str) -> None:
        """The source is back and cannot list the worker (a broker keeps no list): an
        unknown worker gets ``dead_after`` intervals to be heard, then it is dead."""
    def vouch(self, source: str, name: str, now: float, because: str | None) -> None:
        """Evidence of life besides beats, in words, or None when there is none (any more)."""


MAX_NAME = 128
"""Longer names from a system's wire are refused: a row's name, not a payload."""


def unfit_name(name: str) -> str | None:
    """Why a worker name a system sent cannot be a row, or None when it can. Names reach
    the terminal (``events``, the table): control characters (ESC sequences, a newline
    forging a line) and absurd lengths are refused at the source, counted like any
    other bad input."""
    if not name:
        return "an empty worker name"
    if len(name) > MAX_NAME:
        return f"a worker name of {len(name)} characters (at most {MAX_NAME}): {name[:40]!r}…"
    if any(unicodedata.category(c).startswith("C") for c in name):
        return f"a worker name with control characters: {name[:60]!r}"
    return None


class Source(Protocol):
    kind: str
    """"hub" when commands can be sent to it, else the kind's name."""
    status: SourceStatus

    async def run(self, ingest: Ingest) -> None: ...


Client = Callable[[], httpx.AsyncClient]
"""The monitor's one long-lived HTTP client, available once ingest runs."""


def no_client() -> httpx.AsyncClient:
    """The client for a source that never polls HTTP where it is built: one parsed only
    to check its SOURCE string (the ingest child builds its own), or one the systems
    experiment hears with a recorder."""
    raise RuntimeError("this source was not built to poll HTTP here")

KINDS: dict[str, tuple[str, str | None]] = {
    "celery+redis": ("heartmon.sources.celery", "celery"),
    "rq+redis": ("heartmon.sources.rq", "rq"),
    "inngest": ("heartmon.sources.inngest", None),
    "nats": ("heartmon.sources.nats", "nats"),
    "tls": ("heartmon.sources.nats", "nats"),
}
"""Scheme -> (module, the extra that installs its client, if it needs one). Each module
has a ``from_url(url, settings, client)`` that checks the URL and builds the source."""

SYNTAX = ("expected ws://HOST:PORT or HOST:PORT (a hub), [NAME=]http(s)://… (a health endpoint), "
          "celery+redis://HOST:PORT/DB, rq+redis://HOST:PORT/DB, inngest://HOST:PORT or nats://HOST:PORT")


def shown(spec: str) -> str:
    """A SOURCE as it may be printed: any credentials in its URLs (``//user:pass@``) masked."""
    return re.sub(r"//[^/@?#]*@", "//…@", spec)


def parse_source(spec: str, settings: Settings, client: Client) -> Source:
    """``ws://h:p`` or ``h:p`` -> a hub; ``[NAME=]http(s)://…`` -> an endpoint named NAME
    (or host:port/path); a system's scheme -> its source. Anything else is refused:
    taken for a URL, it would be watched forever without a single answer."""
    from heartmon.sources.http import HttpSource
    from heartmon.sources.hub import HubSource

    name, sep, url = spec.partition("=")
    if not sep or "://" in name:
        name, url = "", spec
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme in KINDS:
        if name:
            raise SourceError(f"source {shown(spec)!r}: only HTTP endpoints take a NAME=")
        return _system(spec, scheme, url, settings, client)
    try:
        url = check_address(url, ("ws", "wss", "http", "https"))
    except ValueError as exc:
        raise SourceError(f"source {shown(spec)!r}: {exc}; {SYNTAX}") from None
    parts = urlsplit(url)
    if parts.scheme in ("ws", "wss"):
        if name:
            raise SourceError(f"source {shown(spec)!r}: only HTTP endpoints take a NAME=")
        return HubSource(url, settings.token)
    m = settings.monitor
    return HttpSource(name or (parts.netloc + parts.path.rstrip("/")), url, m.http_interval_ms / 1000,
                      m.http_timeout_ms / 1000, client)


def _system(spec: str, scheme: str, url: str, settings: Settings, client: Client) -> Source:
    module_name, extra = KINDS[scheme]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if extra is None or (exc.name or "").startswith("heartmon"):
            raise
        raise SourceError(f"source {shown(spec)!r} needs {exc.name}: pip install 'heartmon[{extra}]'") from None
    try:
        return module.from_url(url, settings, client)
    except ValueError as exc:
        raise SourceError(f"source {shown(spec)!r}: {exc}") from None
