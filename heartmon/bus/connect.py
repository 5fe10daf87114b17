"""The one way heartmon connects to NATS: which servers, with which credentials and
TLS, and whether commands may be sent there at all."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from heartmon.backoff import backoff_delay

if TYPE_CHECKING:
    import nats.aio.client

    from heartmon.config import NatsSettings

log = logging.getLogger("heartmon.bus")

SCHEMES = ("nats", "tls")


@dataclass(frozen=True)
class Pings:
    """How often the client pings its server, and how many may go unanswered before
    it calls the connection stale and moves to another server."""

    interval_s: float
    unanswered: int

    @property
    def stale_after_s(self) -> float:
        return self.interval_s * (self.unanswered + 1)


WATCHING = Pings(0.5, 2)
"""For monitors and bridges: a server that answers no ping for about a second is wedged
or cut off (a stopped process keeps its sockets open, and nothing else would tell),
and the client moves to another. Their loops are heartmon's own, never starved."""
BEATING = Pings(2.0, 3)
"""For agents: a wedged server is left within 8 s. A starved loop sends no ping and
misses no pong (its ping timer does not run either), so a block, however long, costs
the connection nothing."""
FIRST_CONNECT_S = 5.0
"""How long the first connection may take, every server tried, before the caller hears
why it failed (and retries with its backoff, or stops, as it sees fit)."""
RECONNECT_WAIT_S = 0.25
"""How long the client waits before trying a server it just failed on. Others in the
pool (the cluster advertises its members) are tried at once, so a worker whose server
died is on another within milliseconds, inside a late threshold."""


class BusError(Exception):
    """A NATS address, connection or command heartmon refuses: the message names why."""


def parse_servers(spec: str) -> list[str]:
    """``nats://h:p[,tls://h2:p2…]`` -> the URLs. Credentials in a URL are refused: a
    command line is readable by every user of the machine (``ps``)."""
    urls = [u.strip() for u in spec.split(",") if u.strip()]
    if not urls:
        raise BusError("no NATS server given: expected nats://HOST:PORT[,nats://HOST:PORT…]")
    for url in urls:
        if "@" in url.partition("://")[2].partition("/")[0]:  # before anything that would quote it
            raise BusError(f"NATS address {url.rpartition('@')[2]!r} carries credentials: set them in "
                           "settings ([nats] user/password or token) or HEARTMON_NATS__PASSWORD / "
                           "HEARTMON_NATS__TOKEN, not on a command line")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - parsing the port is the check
        except ValueError as exc:
            raise BusError(f"invalid NATS address {url!r}: {exc}") from None
        if parts.scheme not in SCHEMES or not parts.hostname:
            raise BusError(f"invalid NATS address {url!r}: expected nats://HOST:PORT or tls://HOST:PORT")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise BusError(f"invalid NATS address {url!r}: expected nats://HOST:PORT, with nothing after the port")
    return urls


def credentials(settings: NatsSettings) -> dict[str, Any]:
    """nats-py's keyword arguments for the settings' credentials and TLS."""
    options: dict[str, Any] = {}
    if settings.token is not None:
        options["token"] = settings.token.get_secret_value()
    if settings.user is not None:
        options["user"] = settings.user
        options["password"] = settings.password.get_secret_value() if settings.password is not None else ""
    if settings.tls_ca is not None:
        options["tls"] = ssl.create_default_context(cafile=str(settings.tls_ca))
    return options


async def open_bus(servers: list[str], settings: NatsSettings, pings: Pings, name: str | None = None,
                   **extra: Any) -> nats.aio.client.Client:
    """A connection that reconnects forever, to any server of the cluster. Raises
    BusError when no server takes the first connection."""
    import nats
    from nats.errors import Error as NatsError

    told = extra.pop("error_cb", _log_error)
    seen: list[Exception] = []

    async def error(exc: Exception) -> None:
        seen.append(exc)
        await told(exc)

    try:
        # Told to reconnect forever, the client also tries its first connection forever.
        return await asyncio.wait_for(nats.connect(
            servers=servers, name=name, allow_reconnect=True, max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT_S, connect_timeout=2, error_cb=error, ping_interval=pings.interval_s,
            max_outstanding_pings=pings.unanswered, **credentials(settings), **extra), FIRST_CONNECT_S)
    except (OSError, TimeoutError, NatsError) as exc:
        why = _reason(seen[-1]) if seen else _reason(exc) if str(exc) else f"no answer within {FIRST_CONNECT_S:g} s"
        raise BusError(f"cannot connect to NATS at {', '.join(servers)}: {why}") from None


async def keep_opening(servers: list[str], settings: NatsSettings, pings: Pings, backoff: tuple[float, float],
                       failed: Callable[[BusError], None], trying: Callable[[], None] = lambda: None,
                       **options: Any) -> nats.aio.client.Client:
    """open_bus until a server takes the connection, with a capped, jittered backoff
    (initial, max) between tries: ``trying`` before each, ``failed`` with why after each
    that fails."""
    attempt = 0
    while True:
        trying()
        try:
            return await open_bus(servers, settings, pings, **options)
        except BusError as exc:
            failed(exc)
        await asyncio.sleep(backoff_delay(attempt, *backoff))
        attempt += 1


async def _log_error(exc: Exception) -> None:
    """nats-py's own default prints a traceback for every failed attempt."""
    log.info("NATS: %s", _reason(exc))


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return "authorization violation: wrong or missing credentials" if "authorization" in text.lower() else text


async def check_commands_allowed(servers: list[str], settings: NatsSettings) -> None:
    """Commands burn CPU in the workers that run them. On a cluster that lets anyone
    connect, anyone could send them, so heartmon sends none there unless told
    ``--insecure``. The test is the definition: a connection without credentials."""
    if settings.insecure:
        return
    import nats
    from nats.errors import Error as NatsError

    anonymous = settings.model_copy(update={"user": None, "password": None, "token": None})
    seen: list[BaseException] = []

    async def error(exc: Exception) -> None:
        seen.append(exc)

    try:
        probe = await asyncio.wait_for(nats.connect(
            servers=servers, allow_reconnect=False, max_reconnect_attempts=1, connect_timeout=2, error_cb=error,
            **credentials(anonymous)), FIRST_CONNECT_S)
    except (OSError, TimeoutError, NatsError) as exc:
        seen.append(exc)
        if any("authorization" in str(e).lower() for e in seen):
            return  # refused without credentials: the cluster has auth
        raise BusError(f"cannot connect to NATS at {', '.join(servers)}: {_reason(seen[0])}") from None
    await probe.close()
    raise BusError(f"NATS at {', '.join(servers)} lets anyone connect without credentials: heartmon sends "
                   "no commands there. Configure auth on the cluster, or pass --insecure")
