"""What the Redis-backed sources (Celery, RQ) share: their URL, and a link to the broker
that is retried with backoff and reported on the source's status line.

``celery+redis://HOST:PORT/DB`` and ``rq+redis://HOST:PORT/DB`` name a Redis server the
way redis-py does, with the system's name in front. A password goes in the URL
(``celery+redis://:secret@host:6379/0``), as in both systems' own settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True, slots=True)
class RedisAddress:
    host: str
    port: int
    db: int
    password: str | None
    options: dict[str, str]
    """The URL's query (``?namespace=``), one value per name."""

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}/{self.db}"

    def client(self):
        """An asyncio redis-py client that does not retry on its own: the source retries,
        with backoff, and says so on its status line, so every loss of the link is seen
        (redis-py's default would spend seconds retrying one command silently)."""
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        return redis.asyncio.Redis(host=self.host, port=self.port, db=self.db, password=self.password,
                                   socket_connect_timeout=2, health_check_interval=0, retry=Retry(NoBackoff(), 0))


def redis_address(url: str, scheme: str, options: tuple[str, ...] = ()) -> RedisAddress:
    """The Redis server a ``scheme://`` source names, or a ValueError naming what is wrong."""
    import redis  # noqa: F401 - fails with the missing module's name: the caller names the extra

    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError as exc:
        raise ValueError(f"invalid address: {exc}") from None
    if parts.scheme != scheme or not parts.hostname:
        raise ValueError(f"expected {scheme}://HOST:PORT/DB")
    path = parts.path.strip("/") or "0"
    if not path.isdigit():
        raise ValueError(f"the database must be a number, not {path!r}")
    query = {name: values[-1] for name, values in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = sorted(set(query) - set(options))
    if unknown:
        accepted = ", ".join(options) or "none"
        raise ValueError(f"unknown option {unknown[0]!r} (accepted: {accepted})")
    return RedisAddress(parts.hostname, port, int(path), parts.password, query)
