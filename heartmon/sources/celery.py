"""Celery workers, heard on their Redis broker without importing Celery.

Every Celery worker sends ``worker-heartbeat`` each ``freq`` seconds from a timer on its
main process's event loop, whatever its pool: a solo worker in a long CPU-bound task
sends none until the task ends, which Celery's own tools (Flower, ``celery events``)
show as offline once the silence passes twice ``freq``. Over Redis the events are
pub/sub messages on ``/{db}.{exchange}/{routing key}`` (kombu's fanout prefix; the
exchange is ``celeryev`` unless ``event_exchange`` says otherwise), each a kombu JSON
envelope whose body is base64 JSON. Nothing is stored in Redis, so the source only
knows what it hears while subscribed: a worker is known from its next beat, and one
that stopped while the link was down is never heard from again.

``celery+redis://HOST:PORT/DB[?namespace=EXCHANGE]``. Only ``worker.*`` is subscribed:
task events are not needed to tell a starved worker from a dead one.

Evidence of life: a worker on this machine is checked by its pid (the monitor's
evidence loop, as for heartmon's own agents); for a remote one the source has none,
since nothing on the broker ties a Redis connection to a Celery nodename.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import TYPE_CHECKING, TypeGuard

from redis.asyncio.client import PubSub

from heartmon.backoff import backoff_delay
from heartmon.sources import Client, Heard, Ingest, SourceStatus, unfit_name
from heartmon.sources.redis_link import RedisAddress, redis_address

if TYPE_CHECKING:
    from heartmon.config import Settings

SCHEME = "celery+redis"
DEFAULT_NAMESPACE = "celeryev"
"""Celery's ``event_exchange`` default."""
BEATS = frozenset({"worker-online", "worker-heartbeat"})
"""A worker's first event says what a heartbeat does (its freq, pid, active tasks)."""
OFFLINE = "worker-offline"
LINK_CHECK_S = 1.0
"""A subscription that brings nothing for this long is asked (PING); one that then
answers nothing for as long again is a dead link (a broker gone without a FIN), whose
workers turn unknown instead of being judged on a silence that is the link's."""
BACKOFF_INITIAL_S = 0.1
MAX_MESSAGE_BYTES = 64 * 1024
"""A Celery worker event is a few hundred bytes (a JSON envelope around base64 JSON);
anything bigger is refused unread. It also bounds how deep JSON may nest: what is too
deep for the parser even so is refused as any other JSON that cannot be read."""
MIN_FREQ_S, MAX_FREQ_S = 0.01, 3600.0
"""The heartbeat intervals heartmon takes. An hour is what its own protocol allows an
agent (``Hello.interval_ms``); beyond it a row would stay healthy for days on one beat,
and under 10 ms it would be dead before the next message could arrive."""
_PATTERN_SPECIALS = frozenset("*?[]\\/")


class MalformedEvent(ValueError):
    """An event the source cannot read; its message is the one line the status keeps."""


def from_url(url: str, settings: Settings, client: Client) -> CelerySource:
    """Checks ``celery+redis://HOST:PORT/DB[?namespace=NAME]`` and builds the source,
    without connecting: the UI process parses it only to check the string. ``client``
    (the monitor's HTTP client) is not needed: the broker is Redis."""
    address = redis_address(url, SCHEME, ("namespace",))
    namespace = address.options.get("namespace", DEFAULT_NAMESPACE)
    if not namespace or _PATTERN_SPECIALS.intersection(namespace):
        raise ValueError(f"the namespace must be an exchange name without * ? [ ] \\ or /, not {namespace!r}")
    return CelerySource(address, namespace, settings.systems.reconnect_max_ms / 1000)


class CelerySource:
    """Follows a Celery broker's worker events. A beat (``worker-heartbeat`` or
    ``worker-online``) is heard on heartmon's clock, never the event's timestamp (the
    worker's clock, and the moment it was sent, not received); ``worker-offline`` is a
    clean shutdown, dead at once. While the link is down its workers are unknown."""

    kind = "celery"

    def __init__(self, address: RedisAddress, namespace: str, reconnect_max_s: float) -> None:
        self.address = address
        self.pattern = f"/{address.db}.{namespace}/worker.*"
        suffix = "" if namespace == DEFAULT_NAMESPACE else f"?namespace={namespace}"
        self.status = SourceStatus(f"{SCHEME}://{address.label}{suffix}")  # never the password
        self.reconnect_max_s = reconnect_max_s
        self._known: set[str] = set()
        """Workers heard and not gone."""
        self._lost = False

    async def run(self, ingest: Ingest) -> None:
        attempt = 0
        self.status.set("connecting")
        while True:
            client = self.address.client()
            try:
                async with client, client.pubsub() as pubsub:
                    await pubsub.psubscribe(self.pattern)
                    await self._listen(ingest, pubsub)
            except Exception as exc:  # whatever it was, the source shows it and tries again
                detail = (str(exc).splitlines() or [type(exc).__name__])[0]
            attempt = 0 if self.status.link == "connected" else attempt + 1
            if not self._lost:
                ingest.source_lost(self.status.label, ingest.now())
                self._lost = True
            self.status.set("retrying", f"redis {self.address.label}: {detail}")
            await asyncio.sleep(backoff_delay(attempt, BACKOFF_INITIAL_S, self.reconnect_max_s))

    async def _listen(self, ingest: Ingest, pubsub: PubSub) -> None:
        """Takes events as they arrive until the link fails; returns only by raising."""
        asked = False
        while True:
            message = await pubsub.get_message(timeout=LINK_CHECK_S)
            now = ingest.now()
            if message is None:
                if asked:
                    raise ConnectionError(f"no answer to PING for {LINK_CHECK_S:g} s")
                await pubsub.ping()
                asked = True
                continue
            asked = False
            if message["type"] == "pmessage":
                self._take(ingest, message["channel"], message["data"], now)
            elif message["type"] == "psubscribe":
                self._connected(ingest, now)

    def _connected(self, ingest: Ingest, now: float) -> None:
        """Subscribed. Workers known before a loss are unknown until heard; Redis keeps
        no list of them, so each gets ``dead_after`` intervals to be heard (one that
        stopped while the link was down sent its ``worker-offline`` to no one)."""
        self.status.set("connected")
        if self._lost:
            for name in self._known:
                ingest.missing(self.status.label, name, now, "not heard since the broker came back")
        self._lost = False

    def _take(self, ingest: Ingest, channel: bytes, data: bytes, now: float) -> None:
        """One message. Parsing it is where one message's trouble stops: whatever it makes
        the parser raise, that message is refused and counted, and the link, which is fine,
        goes on (an escaped exception would be taken for a lost broker, every worker unknown)."""
        try:
            event = parse_event(data)
        except Exception as exc:  # the boundary of one message, not of the link
            problem = str(exc) if isinstance(exc, MalformedEvent) else f"unreadable ({type(exc).__name__})"
            self.status.refuse(f"{_channel(channel)}: {problem}")
            return
        if event is None:
            return
        hostname, beat = event
        if beat is None:
            self._known.discard(hostname)
            ingest.gone(self.status.label, hostname, now, "worker-offline: clean shutdown")
        else:
            self._known.add(hostname)
            ingest.heard(self.status.label, hostname, now, beat)



def parse_event(data: bytes) -> tuple[str, Heard | None] | None:
    """One pub/sub message: (nodename, its beat) for a beat, (nodename, None) for
    ``worker-offline``, None for an event that says nothing about liveness (a task's).
    Raises :class:`MalformedEvent` naming the problem."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise MalformedEvent(f"a message of {len(data)} bytes, not read (at most {MAX_MESSAGE_BYTES})")
    try:
        envelope = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        raise MalformedEvent("not a JSON message") from None
    if not isinstance(envelope, dict):
        raise MalformedEvent("the message is not a JSON object")
    content_type = envelope.get("content-type")
    if content_type != "application/json":
        raise MalformedEvent(f"content-type {_short(content_type)}: heartmon reads JSON events "
                             "(Celery's default event_serializer)")
    properties = envelope.get("properties")
    encoding = properties.get("body_encoding") if isinstance(properties, dict) else None
    if encoding != "base64":
        raise MalformedEvent(f"body_encoding {_short(encoding)}, expected 'base64'")
    body = envelope.get("body")
    if not isinstance(body, str):
        raise MalformedEvent("no body")
    try:
        event = json.loads(base64.b64decode(body, validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise MalformedEvent("the body is not base64 JSON") from None
    if not isinstance(event, dict):
        raise MalformedEvent("the event is not a JSON object")
    kind = event.get("type")
    if isinstance(kind, str) and kind.startswith("task-"):
        return None
    if kind not in BEATS and kind != OFFLINE:
        raise MalformedEvent(f"unknown event type {_short(kind)}")
    hostname = event.get("hostname")
    if not isinstance(hostname, str) or not hostname:
        raise MalformedEvent(f"{kind}: hostname {_short(hostname)} is not a nodename")
    unfit = unfit_name(hostname)  # the nodename becomes the row's name, on the terminal
    if unfit is not None:
        raise MalformedEvent(f"{kind}: {unfit}")
    if kind == OFFLINE:
        return hostname, None
    freq, pid, active = event.get("freq"), event.get("pid"), event.get("active")
    if not _number(freq) or not MIN_FREQ_S <= freq <= MAX_FREQ_S:  # compared exactly: no float(10**400)
        raise MalformedEvent(f"{kind} from {_short(hostname)}: freq {_short(freq)} is not an interval "
                             f"of {MIN_FREQ_S:g} to {MAX_FREQ_S:g} s")
    if not _integer(pid) or pid <= 0:
        raise MalformedEvent(f"{kind} from {_short(hostname)}: pid {_short(pid)} is not a process id")
    if not _integer(active) or active < 0:
        raise MalformedEvent(f"{kind} from {_short(hostname)}: active {_short(active)} is not a count")
    _, at, host = hostname.partition("@")  # Celery's nodesplit: no '@' means it is all host
    doing = None if active == 0 else f"{active} active task{'s' if active > 1 else ''}"
    return hostname, Heard(float(freq), "celery", pid=pid, host=host if at else hostname, doing=doing)


def _number(value: object) -> TypeGuard[float]:
    """A JSON number; JSON's true and false are not."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _channel(channel: bytes) -> str:
    """The channel a refused message came on, for its line: any name matching the pattern
    is a channel, so one unfit for the terminal is quoted and cut instead."""
    text = channel.decode(errors="replace")
    return text if unfit_name(text) is None else _short(text)


def _short(value: object) -> str:
    """A value from the wire, quoted and cut, for a one-line reason."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
