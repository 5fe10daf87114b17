"""The hub's state and routing, with no I/O: websockets' split of protocol from
connection, applied to the hub.

One record per worker holds its hello, its connection (an opaque handle: this module
never sends), when it connected, its tracker (the detector's view of it) and the
injects sent to it that it has not finished. Every event returns what to publish;
routing raises a typed :class:`RouteError` that the server maps to an HTTP answer. Time
comes in as a parameter (the monitor's clock, monotonic); wall-clock times for the wire
are that plus a fixed offset, so nothing is kept twice. Everything here is tested with
plain values, without processes or sockets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import ClassVar

from heartmon.detector import Key, Thresholds, Tracker, Transition
from heartmon.fleet_state import FleetState
from heartmon.hub_metrics import HubMetrics
from heartmon.protocol import (
    PROTOCOL_VERSION,
    Beat,
    FromWorker,
    Hello,
    Inject,
    Message,
    ProbeFinished,
    ProbeStarted,
    ProtocolError,
    Snapshot,
    WorkerInfo,
    WorkerJoined,
    WorkerLeft,
    check_version,
    relayed,
)

BUS = "nats"
"""The source of the hub's bus workers in its fleet state (``(BUS, name)``; its own
connections' workers are ``("", name)``), so that losing the bus touches only them."""


class RouteError(Exception):
    """An inject the hub refuses. ``status`` is the HTTP answer; ``code`` is stable and
    counted; the message names the problem for a person."""

    status: ClassVar[HTTPStatus]

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class BadInject(RouteError):
    status = HTTPStatus.BAD_REQUEST


class UnknownWorker(RouteError):
    status = HTTPStatus.NOT_FOUND


class TooManyPending(RouteError):
    status = HTTPStatus.TOO_MANY_REQUESTS


class NoAvailableWorker(RouteError):
    status = HTTPStatus.SERVICE_UNAVAILABLE


@dataclass(eq=False)
class WorkerRecord:
    hello: Hello
    conn: object
    """The connection that said this hello; the server sends through it."""
    connected_at: float
    tracker: Tracker
    pending: set[str] = field(default_factory=set)
    """Injects sent and not finished: bounded, so a burst cannot pile up in a worker."""
    running: str | None = None
    """The id of the probe running now: a refused inject's report does not end it."""

    @property
    def name(self) -> str:
        return self.hello.worker


@dataclass(frozen=True)
class Joined:
    record: WorkerRecord
    publish: list[Message]
    replaced: object | None
    """The connection this hello replaced (a reconnect not yet known dead): close it."""


@dataclass(frozen=True)
class Routed:
    conn: object
    command: Inject
    worker: str


class HubState:
    def __init__(self, thresholds: Thresholds, probes: list[str], *, max_duration_s: float = 60.0,
                 max_pending: int = 32, identity_required: bool = False, wall_offset: float = 0.0,
                 metrics: HubMetrics | None = None) -> None:
        self.fleet = FleetState(thresholds, log_size=0)  # the hub judges its pool; monitors keep the log
        self.probes = probes
        """The probes the hub's own registry knows, beside those its workers announce."""
        self.max_duration_s = max_duration_s
        self.max_pending = max_pending
        self.identity_required = identity_required
        """With a token, a live worker's name can only be taken again by the same agent
        instance (its hello's ``instance``): a client with the token cannot silently
        replace a running worker by saying hello with its name."""
        self.wall_offset = wall_offset
        self.metrics = metrics or HubMetrics()
        self.records: dict[str, WorkerRecord] = {}
        self._dead_on_bus: list[str] = []
        """Bus workers judged dead since the last :meth:`bury`, from the judgements
        themselves: the pool is not scanned at every deadline."""

    def wall(self, now: float) -> float:
        return now + self.wall_offset

    # --- workers ------------------------------------------------------------------

    def join(self, hello: FromWorker, conn: object, now: float, connected: bool | None = True) -> Joined:
        """The first frame of a connection. Raises ProtocolError for anything but a
        hello this hub accepts. ``connected`` is None for a worker the hub hears over a
        bus: it holds no connection of its own, and NATS vouches for the worker's."""
        if not isinstance(hello, Hello):
            raise ProtocolError("hello_required", f"the first frame must be 'hello', not {hello.type!r}")
        check_version(hello)
        old = self.records.get(hello.worker)
        key = ("" if connected else BUS, hello.worker)
        if (old is not None and connected is None and old.tracker.key == key
                and (old.hello.instance, old.hello.pid) == (hello.instance, hello.pid)):
            # The same agent saying hello again on the bus, asked to: its history goes on, and
            # it is back from unknown if the bus had been lost.
            self._track(key, hello, now, connected)
            return Joined(old, [], None)
        # Over a bus the cluster's own auth decides who may publish on a worker's subjects.
        if old is not None and self.identity_required and connected is not None and (hello.instance is None
                                                           or hello.instance != old.hello.instance):
            raise ProtocolError("name_taken", f"worker {hello.worker!r} is connected as another agent instance")
        if old is not None:
            self.fleet.forget(old.tracker.key)
        self.fleet.forget(key)  # a new session starts a new history
        self._track(key, hello, now, connected)
        record = WorkerRecord(hello, conn, self.wall(now), self.fleet.trackers[key])
        self.records[hello.worker] = record
        publish: list[Message] = []
        if old is not None:
            publish.append(WorkerLeft(worker=hello.worker, reason="replaced by a new connection", at=self.wall(now)))
        publish.append(WorkerJoined(info=self.info(record)))
        return Joined(record, publish, old.conn if old is not None else None)

    def _track(self, key: Key, hello: Hello, now: float, connected: bool | None) -> None:
        self.fleet.join(now, key, hello.interval_ms / 1000, connected=connected, isolation=hello.isolation,
                        pid=hello.pid, host=hello.host)

    def message(self, record: WorkerRecord, message: FromWorker, now: float) -> Message:
        """A frame after the hello; returns what to publish to monitors."""
        if isinstance(message, Hello):
            raise ProtocolError("unexpected", f"{message.type!r} is only valid as the first frame")
        name = record.name
        if isinstance(message, Beat):
            last = record.tracker.last_beat_at
            self.fleet.beat(now, record.tracker.key, seq=message.seq, main_blocked_ms=message.main_blocked_ms,
                            loop_lag_ms=message.loop_lag_ms)
            self.metrics.beat(name, None if last is None else now - last)
        elif isinstance(message, ProbeStarted):
            record.tracker.probe, record.running = message.probe, message.id
        elif isinstance(message, ProbeFinished):
            if message.id == record.running:
                record.tracker.probe, record.running = None, None
            record.pending.discard(message.id)
        return relayed(name, message, self.wall(now))

    def left(self, record: WorkerRecord, reason: str, now: float) -> list[Message]:
        """A connection ended. Only the current one counts: a replaced connection that
        closes later says nothing."""
        if self.records.get(record.name) is not record:
            return []
        del self.records[record.name]
        self.fleet.forget(record.tracker.key)
        return [WorkerLeft(worker=record.name, reason=reason, at=self.wall(now))]

    def vouch(self, name: str, because: str | None, now: float) -> None:
        """Evidence of a bus worker's life besides its beats (its NATS connection); none
        for a worker the hub does not know (yet)."""
        record = self.records.get(name)
        if record is not None:
            self._note_dead(self.fleet.vouch(now, record.tracker.key, because))

    def bus_lost(self, now: float) -> None:
        """The hub's link to the bus is down: what its bus workers do is not known until
        they say hello again. Workers connected to the hub itself are not touched."""
        self.fleet.source_lost(now, BUS)

    def bury(self, now: float) -> list[Message]:
        """Bus workers the detector judged dead leave, as a closed connection would have
        made them: a monitor of the hub then shows them dead, and a hello brings them back."""
        names, self._dead_on_bus = self._dead_on_bus, []
        records = [self.records.get(name) for name in dict.fromkeys(names)]  # once each, in order
        dead = [r for r in records if r is not None and r.tracker.source == BUS and r.tracker.state == "dead"]
        return [m for r in dead for m in self.left(r, "silent, and NATS holds no connection for it", now)]

    # --- reading --------------------------------------------------------------------

    def info(self, record: WorkerRecord) -> WorkerInfo:
        h, t = record.hello, record.tracker
        return WorkerInfo(
            worker=h.worker, isolation=h.isolation, pid=h.pid, host=h.host, interval_ms=h.interval_ms,
            agent=h.agent, probes=h.probes, connected_at=record.connected_at,
            last_beat_at=None if t.last_beat_at is None else self.wall(t.last_beat_at), seq=t.seq, probe=t.probe,
        )

    def snapshot(self, now: float) -> Snapshot:
        return Snapshot(v=PROTOCOL_VERSION, sent_at=self.wall(now),
                        workers=[self.info(r) for r in self.records.values()])

    def judge(self, now: float) -> float | None:
        """Judges the deadlines that fell due; returns the next one. The server calls it
        when a deadline comes, so that reading the pool changes nothing."""
        self._note_dead(self.fleet.evaluate_due(now))
        return self.fleet.next_due()

    def _note_dead(self, changes: list[Transition]) -> None:
        self._dead_on_bus.extend(c.worker for c in changes if c.to_state == "dead" and c.source == BUS)

    def available(self) -> list[WorkerRecord]:
        """Connected workers the detector calls healthy or busy, as last judged."""
        return [self.records[name] for _, name in self.fleet.available()]

    def listing(self) -> list[dict]:
        available = {r.name for r in self.available()}
        return [{**self.info(r).model_dump(), "state": r.tracker.state, "available": r.name in available}
                for r in self.records.values()]

    # --- commands -------------------------------------------------------------------

    def route_inject(self, target: str, probe: str, duration_s: float, now: float, command_id: str,
                     params: dict | None = None) -> Routed:
        """Chooses the worker for an inject and records it as pending there."""
        check_duration(duration_s, self.max_duration_s)
        if target == "any":
            known = sorted(set(self.probes) | {p for r in self.records.values() for p in r.hello.probes})
            check_probe(probe, known)
            self.judge(now)  # a command routes on the pool as it is now
            candidates = [r for r in self.available() if probe in r.hello.probes]
            if not candidates:
                counts = ", ".join(f"{n} {state}" for state, n in self.fleet.counts().items() if n)
                raise NoAvailableWorker("no_available_worker",
                                        f"no available worker for {probe!r}: {counts or 'no workers connected'}")
            record = min(candidates, key=lambda r: (len(r.pending), r.tracker.probe is not None, r.name))
        else:
            found = self.records.get(target)
            if found is None:
                connected = ", ".join(sorted(self.records)) or "none"
                raise UnknownWorker("unknown_worker", f"unknown worker {target!r}; connected: {connected}")
            record = found
            check_probe(probe, record.hello.probes)
        if len(record.pending) >= self.max_pending:
            raise TooManyPending("too_many_pending",
                                 f"worker {record.name!r} has {len(record.pending)} injects pending; "
                                 f"the limit is {self.max_pending}: try again when they finish")
        command = Inject(id=command_id, probe=probe, duration_s=duration_s, params=params or {})
        record.pending.add(command_id)
        return Routed(record.conn, command, record.name)

    def unsent(self, routed: Routed) -> None:
        """The command could not be sent: it is not pending."""
        record = self.records.get(routed.worker)
        if record is not None:
            record.pending.discard(routed.command.id)


def check_duration(duration_s: float, max_duration_s: float) -> None:
    if not (math.isfinite(duration_s) and 0 < duration_s <= max_duration_s):
        raise BadInject("bad_duration", f"duration_s must be > 0 and <= {max_duration_s:g}, not {duration_s:g}")


def check_probe(probe: str, known: list[str]) -> None:
    if probe not in known:
        raise BadInject("unknown_probe", f"unknown probe {probe!r}; known probes: {', '.join(known) or 'none'}")
