"""Hub addresses: users type ``ws://host:port``; the code needs the WS and HTTP forms."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


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
