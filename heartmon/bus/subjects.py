"""Subjects: a worker is ``fleet/host/name`` everywhere, and ``<prefix>.<fleet>.<host>.<name>``
on the bus.

A NATS subject token may not hold ``.``, ``*``, ``>`` or white space, and host names have
dots (``web-1.example.com``) while worker names may hold almost anything the protocol
allows. Each part is therefore escaped into one token: every byte outside
``[A-Za-z0-9_-]`` becomes ``%XX``, so the token is unambiguous and reads back exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SAFE = re.compile(r"[A-Za-z0-9_-]")
TOKEN = re.compile(r"^(?:[A-Za-z0-9_-]|%[0-9A-F]{2})+$")
PREFIX = re.compile(r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$")

FROM_WORKER = frozenset({"hello", "beat", "probe_started", "probe_finished", "stack"})
"""The message types a worker publishes, each on its own subject."""
TO_WORKER = frozenset({"inject", "discover"})
"""The subjects a worker listens on: commands by request/reply, and requests to say hello again."""
DISCOVER = "discover"
"""``<prefix>.discover``: every worker of every fleet publishes its hello again (a monitor
that starts after them knows none); ``….<name>.discover`` asks one worker."""


def escape(part: str) -> str:
    return "".join(c if SAFE.match(c) else "".join(f"%{b:02X}" for b in c.encode()) for c in part)


def unescape(token: str) -> str:
    if not TOKEN.match(token):
        raise ValueError(f"not an escaped subject token: {token[:60]!r}")
    return bytes(int(t[1:], 16) if t.startswith("%") else ord(t)
                 for t in re.findall(r"%[0-9A-F]{2}|.", token)).decode()


@dataclass(frozen=True, slots=True)
class Identity:
    fleet: str
    host: str
    worker: str

    @property
    def key(self) -> str:
        """The worker's name in rows, the hub's API and commands."""
        return f"{self.fleet}/{self.host}/{self.worker}"

    def stem(self, prefix: str) -> str:
        """Its subjects' common part, and the name of its NATS connection (``/connz``)."""
        return ".".join((prefix, escape(self.fleet), escape(self.host), escape(self.worker)))

    def subject(self, prefix: str, kind: str) -> str:
        return f"{self.stem(prefix)}.{kind}"

    @classmethod
    def from_key(cls, key: str) -> Identity:
        """``fleet/host/name``; the name may itself hold slashes."""
        parts = key.split("/", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"a worker on NATS is named FLEET/HOST/NAME, not {key!r}")
        return cls(*parts)


def parse(prefix: str, subject: str) -> tuple[Identity, str] | None:
    """``<prefix>.<fleet>.<host>.<name>.<type>`` -> (identity, type); None for a subject of
    that shape that is not a worker's (``<prefix>.discover``). Raises ValueError for a
    subject under the prefix that no heartmon agent would publish."""
    rest = subject[len(prefix) + 1:] if subject.startswith(prefix + ".") else None
    if rest is None:
        raise ValueError(f"subject {subject[:80]!r} is not under {prefix!r}")
    tokens = rest.split(".")
    if tokens == [DISCOVER]:
        return None
    if len(tokens) != 4:
        raise ValueError(f"subject {subject[:80]!r} is not {prefix}.FLEET.HOST.NAME.TYPE")
    fleet, host, worker, kind = tokens
    return Identity(unescape(fleet), unescape(host), unescape(worker)), kind


def stem_identity(prefix: str, stem: str) -> Identity | None:
    """A NATS connection's name back to the worker it is, or None when it is not one of ours."""
    try:
        parsed = parse(prefix, f"{stem}.x")
    except ValueError:
        return None
    return None if parsed is None else parsed[0]


def check_prefix(prefix: str) -> str:
    if not PREFIX.match(prefix):
        raise ValueError(f"a subject prefix is dot-separated tokens of letters, digits, '_' and '-', not {prefix!r}")
    return prefix
