"""Hub addresses and credentials: users type ``ws://host:port`` and a token; the code
needs the WS and HTTP forms and the header."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def check_address(address: str, schemes: tuple[str, ...]) -> str:
    """The address as a URL: one of `schemes`, a host and a valid port; else a
    ValueError whose message names the problem.

    ``HOST:PORT`` with no scheme is a hub, ``ws://HOST:PORT``: that is what someone who
    types ``localhost:8787`` means. Nothing else without a scheme is guessed at: a bare
    word taken as a URL would be polled (or watched) forever without ever answering.
    """
    if "://" not in address and "ws" in schemes:
        return _host_port(address)
    try:
        parts = urlsplit(address)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        raise ValueError(f"invalid address {address!r}: {exc}") from None
    if parts.scheme not in schemes:
        raise ValueError(f"invalid address {address!r}: expected {' or '.join(f'{s}://' for s in schemes)}")
    if not parts.hostname:
        raise ValueError(f"invalid address {address!r}: no host")
    return address


def _host_port(address: str) -> str:
    """``HOST:PORT`` (``[::1]:PORT`` too) -> ``ws://HOST:PORT``; anything else is refused."""
    try:
        parts = urlsplit(f"ws://{address}")
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid address {address!r}: {exc}") from None
    if not parts.hostname or port is None or parts.username is not None or parts.path or parts.query or parts.fragment:
        raise ValueError(f"invalid address {address!r}: no scheme, and not HOST:PORT")
    return f"ws://{address}"


def hub_ws(base: str, path: str) -> str:
    """``ws://h:p`` (or ``http://h:p``) -> ``ws://h:p/<path>``."""
    parts = urlsplit(base if "://" in base else f"ws://{base}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def hub_http(base: str) -> str:
    """``ws://h:p`` -> ``http://h:p`` (no trailing slash)."""
    parts = urlsplit(base if "://" in base else f"ws://{base}")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def auth_headers(token: str | None) -> dict[str, str]:
    """The header a hub with a token asks for; none without one."""
    return {"Authorization": f"Bearer {token}"} if token else {}
