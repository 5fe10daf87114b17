"""RQ workers, read from the Redis they register in: ``rq+redis://HOST:PORT/DB``.

RQ lists its workers in the set ``rq:workers`` (of keys ``rq:worker:<name>``); each
worker's hash holds ``last_heartbeat``, ``pid``, ``hostname``, ``state`` and, while it
works, ``current_job``. Its main loop beats by writing ``last_heartbeat`` and an
``EXPIRE`` on its hash. heartmon polls the set and every hash, and takes a *change* of
``last_heartbeat`` as a beat, timed on its own clock when the poll saw it (the time
written is the worker's clock, and says nothing about when the write arrived).

How often a worker beats is RQ's own rule (rq 2.x, ``rq/worker/base.py`` and
``worker_classes.py``), read back from the TTL the beat set:

* Idle (any state but ``busy``): the worker beats each time its dequeue wait ends,
  every ``dequeue_timeout = max(1, worker_ttl - 15)`` seconds, and sets the TTL to
  ``worker_ttl + 60``. So the interval is ``max(1, TTL - 75)``.
* Busy in a forking ``Worker``: the main process waits for the work horse and beats
  every ``job_monitoring_interval``, with a TTL of that plus 60 (the first beat of a job:
  ``min(job timeout, job_monitoring_interval) + 60``). The interval is ``TTL - 60``,
  shorter than the job's timeout.
* Busy in a ``SimpleWorker``: one beat as the job starts, with a TTL of the job's
  timeout plus 60 (RQ's ``DEFAULT_WORKER_TTL`` of 420 for a job without a timeout), and
  none until the job returns: the job runs on the only thread, the one that beats. A
  promise that covers the whole job is not a rhythm, so the worker keeps the interval
  of its idle beats, and its silence during a long job is what heartmon calls
  starvation. ``state == busy`` is RQ's word that it is alive (:meth:`Ingest.vouch`):
  ``starved``, not ``dead``, until its key expires or its pid is gone. (A forking
  worker whose job's timeout is at most its monitoring interval promises the same, and
  is judged the same way.) A worker first seen busy in such a job, whose idle beats
  heartmon has not seen, is judged on the promise itself until its next idle beat.

The TTL a beat set is read as ``ceil(PTTL / 1000)`` at the poll that sees the beat
(RQ's TTLs are whole seconds, and a poll comes well within one of the beat). Outside a
job RQ writes the time and the ``EXPIRE`` in two commands; a poll between them sees
the new time with the old TTL. A changed time whose TTL has not been set again since
the previous poll is therefore taken one poll later, when its ``EXPIRE`` has landed.

A worker that leaves ``rq:workers`` (a clean shutdown unregisters it) or whose hash
expired (it stopped beating, as a SIGKILLed one does) is gone: dead at once.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from heartmon.backoff import backoff_delay
from heartmon.sources import Client, Heard, Ingest, SourceStatus, unfit_name
from heartmon.sources.redis_link import RedisAddress, redis_address

if TYPE_CHECKING:
    from heartmon.config import Settings

SCHEME = "rq+redis"
WORKERS_KEY = "rq:workers"
WORKER_PREFIX = "rq:worker:"
JOB_PREFIX = "rq:job:"
IDLE_TTL_EXTRA_S = 75
"""An idle beat's TTL is ``worker_ttl + 60`` and its interval ``worker_ttl - 15``."""
BUSY_TTL_EXTRA_S = 60
"""A busy beat's TTL is the time it promises the next one in, plus 60."""
SIMPLE_NO_TIMEOUT_TTL_S = 420
"""rq.defaults.DEFAULT_WORKER_TTL: a SimpleWorker's TTL in a job without a timeout."""
TTL_SET_SLACK_MS = 500
"""How far a TTL may stray from its countdown since the previous poll before it counts
as set again: less than the one second by which even the fastest idle beat moves it."""
LINK_TIMEOUT_S = 2.0
"""A Redis that does not answer a poll within this is lost, as one refusing connections is."""
MAX_INTERVAL_S = 3600
"""The longest rhythm taken from a TTL: an hour, what heartmon's own protocol allows an
agent (``Hello.interval_ms``). RQ's rule gives more only for a ``worker_ttl`` or a
monitoring interval over an hour; a TTL of years would keep a row healthy for years."""
FIELDS = ("current_job", "last_heartbeat", "pid", "hostname", "state")
"""The fields of a worker's hash the source reads, the job first (the script reads its
timeout). RQ keeps more (birth, queues, counters) and anyone may add any: read whole,
one listed hash with a 64 MB field would cross the link at every poll."""

READ_WORKERS = """
local rows = {}
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local kind = redis.call('TYPE', key).ok
  local fields, timeout = {}, false
  if kind == 'hash' then
    fields = redis.call('HMGET', key, unpack(ARGV, 2))
    if fields[1] then
      timeout = redis.pcall('HGET', ARGV[1] .. fields[1], 'timeout')
      if type(timeout) == 'table' then timeout = false end
    end
  end
  rows[#rows + 1] = {key, kind, fields, redis.call('PTTL', key), timeout}
end
return rows
"""
"""One poll in one round trip: the set, each listed hash's :data:`FIELDS` with its TTL,
and the timeout of the job a busy worker names (which tells a SimpleWorker's promise
from a forking worker's). A pipeline could not: which hashes and which job to read is
only known from the replies in the same round trip. As a script the read is also one
consistent instant. Called with :func:`script_args`."""


def from_url(url: str, settings: Settings, client: Client) -> RqSource:
    """Checks ``rq+redis://HOST:PORT/DB`` and builds the source; connects only when run
    (the UI process parses the same string only to check it)."""
    s = settings.systems
    return RqSource(redis_address(url, SCHEME), s.rq_poll_ms / 1000, s.reconnect_max_ms / 1000)


def script_args() -> list[str]:
    """:data:`READ_WORKERS`'s arguments: the job keys' prefix, then the fields to read."""
    return [JOB_PREFIX, *FIELDS]


@dataclass(frozen=True, slots=True)
class Reading:
    """One worker's hash as one poll read it."""

    last_heartbeat: str
    pid: int
    host: str | None
    job: str | None
    """The job it is busy in, or None when RQ does not say it is busy."""
    busy: bool
    ttl_s: int
    """The TTL its last beat set, in whole seconds."""
    pttl_ms: int
    job_timeout_s: float | None


@dataclass(slots=True)
class Known:
    """What the source remembers of a worker between polls."""

    beat: str
    """The ``last_heartbeat`` last taken as a beat."""
    pttl_ms: int
    at: float
    """When the previous poll read ``pttl_ms``: its countdown says whether the TTL was set since."""
    rhythm_s: float | None
    """The interval of its idle beats, kept through a job that promises none."""
    vouched: str | None = None
    held: bool = False
    """A changed time seen before its EXPIRE: taken at the next poll whatever the TTL."""


def interval_of(ttl_s: int, busy: bool, job_timeout_s: float | None) -> float | None:
    """The interval RQ's own rule gives a beat that set a TTL of ``ttl_s``; None when the
    beat promises nothing until its job ends (a SimpleWorker's, see the module's docstring)."""
    if not busy:
        return float(max(1, ttl_s - IDLE_TTL_EXTRA_S))
    promise = ttl_s - BUSY_TTL_EXTRA_S
    if job_timeout_s is not None and job_timeout_s > 0:
        return float(promise) if promise < job_timeout_s else None
    return float(promise) if ttl_s < SIMPLE_NO_TIMEOUT_TTL_S else None


def read(kind: bytes, raw: list[bytes | None], pttl_ms: int, raw_timeout: bytes | None) -> Reading:
    """A worker's hash (its :data:`FIELDS`, None for one it lacks), or a ValueError saying
    in a few words what is wrong with it. Nothing in the words changes from one poll to the
    next while the hash does not (not the TTL counting down): a fault is counted once."""
    if kind != b"hash":
        raise ValueError(f"is a {kind.decode(errors='replace')}, not a hash")
    fields = {name: value.decode() for name, value in zip(FIELDS, raw, strict=True) if value is not None}
    last = fields.get("last_heartbeat")
    if not last:
        raise ValueError("has no last_heartbeat")
    try:
        datetime.fromisoformat(last)
    except ValueError:
        raise ValueError(f"last_heartbeat {last[:40]!r} is not a time") from None
    pid = fields.get("pid", "")
    if not (pid.isascii() and pid.isdigit()) or int(pid) == 0:
        raise ValueError(f"pid {pid[:40]!r} is not a process id" if pid else "has no pid")
    if pttl_ms < 0:
        raise ValueError("has no TTL, so RQ's rule gives no interval")
    busy = fields.get("state") == "busy"
    try:
        job_timeout = float(raw_timeout) if raw_timeout is not None else None
    except ValueError:  # the job's field, not the worker's: its timeout is just not known
        job_timeout = None
    ttl_s = math.ceil(pttl_ms / 1000)
    rhythm = interval_of(ttl_s, busy, job_timeout)
    if rhythm is not None and rhythm <= 0:
        raise ValueError(f"is busy with a TTL of at most {BUSY_TTL_EXTRA_S} s, which promises no next beat")
    if rhythm is not None and rhythm > MAX_INTERVAL_S:
        raise ValueError(f"has a TTL whose interval by RQ's rule is over {MAX_INTERVAL_S} s")
    return Reading(last, int(pid), fields.get("hostname") or None, fields.get("current_job") if busy else None,
                   busy, ttl_s, pttl_ms, job_timeout)


class RqSource:
    """Polls one Redis for RQ's workers. While Redis cannot be read, what the workers do
    is not known (:meth:`Ingest.source_lost`); once it answers again, a worker comes back
    at its next beat, and one no longer listed is gone."""

    kind = "rq"

    def __init__(self, address: RedisAddress, poll_s: float, reconnect_max_s: float) -> None:
        self.address = address
        self.poll_s, self.reconnect_max_s = poll_s, reconnect_max_s
        self.status = SourceStatus(f"{SCHEME}://{address.label}")
        self._known: dict[str, Known] = {}
        self._refused: dict[str, str] = {}
        """Why each worker's hash was refused, so that a hash read again every poll is
        counted once, and again only when what is wrong with it changes."""
        self._lost = False

    async def run(self, ingest: Ingest) -> None:
        client = self.address.client()
        script = client.register_script(READ_WORKERS)
        attempt = 0
        try:
            while True:
                started = ingest.now()
                try:
                    rows = await asyncio.wait_for(script(keys=[WORKERS_KEY], args=script_args()), LINK_TIMEOUT_S)
                except (RedisError, OSError, TimeoutError) as exc:
                    self._link_down(ingest, exc)
                    await asyncio.sleep(backoff_delay(attempt, self.poll_s, self.reconnect_max_s))
                    attempt += 1
                    continue
                attempt = 0
                now = ingest.now()
                if self.status.link != "connected":
                    self.status.set("connected")
                    self._lost = False
                self._take(ingest, rows, now)
                await asyncio.sleep(max(0.0, started + self.poll_s - ingest.now()))
        finally:
            await client.aclose()

    def _link_down(self, ingest: Ingest, exc: BaseException) -> None:
        now = ingest.now()
        if not self._lost:
            ingest.source_lost(self.status.label, now)
            self._lost = True
        detail = " ".join(str(exc).split()) or type(exc).__name__
        self.status.set("retrying", detail)

    def _take(self, ingest: Ingest, rows: list[list[Any]], now: float) -> None:
        label = self.status.label
        listed = set()
        for key, kind, raw, pttl_ms, raw_timeout in rows:
            name = key.decode(errors="replace").removeprefix(WORKER_PREFIX)
            listed.add(name)
            if kind == b"none":  # listed, but its key expired: RQ cleans the set up later
                if self._known.pop(name, None) is not None:
                    ingest.gone(label, name, now, "key expired")
                continue
            unfit = unfit_name(name)  # the name becomes the row's, on the terminal
            if unfit is not None:
                self._refuse(name, f"{WORKERS_KEY} lists {unfit}")
                continue
            try:
                reading = read(kind, raw, pttl_ms, raw_timeout)
            except ValueError as exc:  # UnicodeDecodeError included
                self._refuse(name, f"{WORKER_PREFIX}{name} {exc}")
                continue
            self._refused.pop(name, None)
            self._see(ingest, name, reading, now)
        for name in [name for name in self._known if name not in listed]:
            del self._known[name]
            ingest.gone(label, name, now, "left rq:workers")
        for name in [name for name in self._refused if name not in listed]:
            del self._refused[name]

    def _refuse(self, name: str, why: str) -> None:
        """Counts a refused hash the first time, and again only when ``why`` changes."""
        if self._refused.get(name) != why:
            self._refused[name] = why
            self.status.refuse(why)

    def _see(self, ingest: Ingest, name: str, reading: Reading, now: float) -> None:
        label = self.status.label
        known = self._known.get(name)
        first = known is None
        if known is None:
            known = self._known[name] = Known(reading.last_heartbeat, reading.pttl_ms, now, None)
            self._heard(ingest, name, known, reading, now)
        elif reading.last_heartbeat != known.beat:
            countdown = known.pttl_ms - (now - known.at) * 1000
            if known.held or abs(reading.pttl_ms - countdown) > TTL_SET_SLACK_MS:
                known.beat, known.held = reading.last_heartbeat, False
                self._heard(ingest, name, known, reading, now)
            else:
                known.held = True
        known.pttl_ms, known.at = reading.pttl_ms, now
        because = f"RQ says busy in job {reading.job}" if reading.busy else None
        if first or because != known.vouched:  # a worker back under an old name may have been vouched for
            known.vouched = because
            ingest.vouch(label, name, now, because)

    def _heard(self, ingest: Ingest, name: str, known: Known, reading: Reading, now: float) -> None:
        promised = interval_of(reading.ttl_s, reading.busy, reading.job_timeout_s)
        if not reading.busy:
            known.rhythm_s = promised
        # A whole job's promise, for a worker whose rhythm is not known: a job may be allowed
        # longer than an hour, but no interval is (RQ's word that it is busy keeps it alive).
        interval = promised or known.rhythm_s or float(min(reading.ttl_s - BUSY_TTL_EXTRA_S, MAX_INTERVAL_S))
        doing = f"job {reading.job}" if reading.busy else None
        ingest.heard(self.status.label, name, now,
                     Heard(interval, "rq", pid=reading.pid, host=reading.host, doing=doing))

