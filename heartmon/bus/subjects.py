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
from urllib.parse import unquote

SAFE = re.compile(r"[A-Za-z0-9_-]")
TOKEN = re.compile(r"^(?:[A-Za-z0-9_-]|%[0-9A-F]{2})+$")
PREFIX = re.compile(r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$")

DISCOVER = "discover"
"""``<prefix>.discover``: every worker of every fleet publishes its hello again (a monitor
that starts after them knows none); ``<stem>.cmd.discover`` asks one worker."""


def escape(part: str) -> str:
    return "".join(c if SAFE.match(c) else "".join(f"%{b:02X}" for b in c.encode()) for c in part)


def unescape(token: str) -> str:
    if not TOKEN.match(token):
        raise ValueError(f"not an escaped subject token: {token[:60]!r}")
    try:
        return unquote(token, errors="strict") if "%" in token else token
    except UnicodeDecodeError:
        raise ValueError(f"not UTF-8 once unescaped: {token[:60]!r}") from None


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
        """Where the worker publishes messages of ``kind``."""
        return f"{self.stem(prefix)}.{kind}"

    def command(self, prefix: str, kind: str) -> str:
        """Where the worker listens for ``inject`` and ``discover``."""
        return f"{self.stem(prefix)}.cmd.{kind}"

    @classmethod
    def from_key(cls, key: str) -> Identity:
        """``fleet/host/name``; the name may itself hold slashes."""
        parts = key.split("/", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"a worker on NATS is named FLEET/HOST/NAME, not {key!r}")
        return cls(*parts)


def reports(prefix: str, fleet: str | None) -> str:
    """What a monitor subscribes to: the messages workers publish, of every fleet or one,
    in one subscription so that they are taken in the order each worker sent them (a
    stack before the beat that ends its block). Commands to a worker sit one token
    deeper (``<stem>.cmd.inject``) and are not matched: no monitor receives them, and an
    inject to a worker that does not exist hears NATS's "no responders" at once."""
    return f"{prefix}.{'*' if fleet is None else escape(fleet)}.*.*.*"


def parse(prefix: str, subject: str) -> tuple[Identity, str]:
    """``<prefix>.<fleet>.<host>.<name>.<type>`` -> (identity, type). Raises ValueError for
    a subject no heartmon agent would publish on."""
    rest = subject[len(prefix) + 1:] if subject.startswith(prefix + ".") else None
    if rest is None:
        raise ValueError(f"subject {subject[:80]!r} is not under {prefix!r}")
    tokens = rest.split(".")
    if len(tokens) != 4:
        raise ValueError(f"subject {subject[:80]!r} is not {prefix}.FLEET.HOST.NAME.TYPE")
    fleet, host, worker, kind = tokens
    return Identity(unescape(fleet), unescape(host), unescape(worker)), kind


def stem_identity(prefix: str, stem: str) -> Identity | None:
    """A NATS connection's name back to the worker it is, or None when it is not one of ours."""
    try:
        return parse(prefix, f"{stem}.x")[0]
    except ValueError:
        return None


MAX_KEY = 512
"""The longest ``fleet/host/name`` (the protocol's RowName): a row's name, not a payload."""
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def unfit_identity(identity: Identity) -> str | None:
    """Why an identity read off a subject cannot name a row, or None when it can. It
    reaches terminals and hubs' listings: no control characters, no ``/`` in the fleet
    or host (the key would not read back), a bounded length."""
    if "/" in identity.fleet or "/" in identity.host:
        return "a fleet or host with '/' in it"
    key = identity.key
    if len(key) > MAX_KEY:
        return f"a worker name of {len(key)} characters (at most {MAX_KEY})"
    if _UNPRINTABLE.search(key):
        return "control characters in the fleet, host or name"
    return None


def check_prefix(prefix: str) -> str:
    if not PREFIX.match(prefix):
        raise ValueError(f"a subject prefix is dot-separated tokens of letters, digits, '_' and '-', not {prefix!r}")
    return prefix
