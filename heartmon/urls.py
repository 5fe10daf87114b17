"""Hub addresses and credentials: users type ``ws://host:port`` and a token; the code
needs the WS and HTTP forms and the header."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def check_address(address: str, schemes: tuple[str, ...]) -> str:
    """The address as given, if it has one of `schemes`, a host and a valid port;
    else a ValueError whose message names the problem."""
    try:
        parts = urlsplit(address if "://" in address else f"ws://{address}")
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        raise ValueError(f"invalid address {address!r}: {exc}") from None
    if parts.scheme not in schemes:
        raise ValueError(f"invalid address {address!r}: expected {' or '.join(f'{s}://' for s in schemes)}")
    if not parts.hostname:
        raise ValueError(f"invalid address {address!r}: no host")
    return address


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
