"""Celery 5 workers over a real redis-server, watched by heartmon's engine in-process.

The case heartmon exists for: a solo worker whose only thread is in a CPU-bound task
sends no heartbeat (Celery's own tools call it offline), yet it is alive and burning
CPU, so heartmon says starved, not dead. Then the other ways a worker goes quiet (a
SIGKILL, a clean stop, the broker itself going away) and the events it cannot read.

Bounds are generous (tens of seconds): CI has two loaded cores; timing is measured in
``benchmarks/systems.py``, not here.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
from collections.abc import Iterator

import pytest
from celery import Celery

from heartmon.config import Settings
from heartmon.detector import Transition
from heartmon.monitor import Monitor
from heartmon.sources import SourceError, parse_source
from heartmon.sources import celery as celery_source
from heartmon.sources.celery import CelerySource, parse_event
from heartmon.view import DetailView, RowView, ViewRequest
from tests.harness import wait_until
from tests.systems import Redis, Service, Services, python_env, start_redis

HOST = socket.gethostname()
TASK_S = 12
"""The CPU-bound task: longer than the starved threshold (5 intervals of 1 s), shorter
than it takes a test to be slow."""


def settings() -> Settings:
    """Thresholds for a 1 s interval, as defaults (late 2 s, starved 5 s, dead 10 s) but
    late at 3 s, so that a prefork worker's timer delayed by a loaded machine is not late."""
    return Settings(detector={"late_after": 3.0},
                    systems={"reconnect_max_ms": 1000})


def start_worker(services: Services, redis: Redis, name: str = "solo", pool: str = "solo",
                 options: tuple[str, ...] = (), **env: str) -> Service:
    argv = [sys.executable, "-m", "celery", "-A", "heartmon.systems.celery_app", "worker", f"--pool={pool}",
            "--heartbeat-interval", "1", "-n", f"{name}@{HOST}", "--loglevel=INFO", *options]
    if pool == "prefork":
        argv += ["--concurrency", "2"]
    return services.spawn("celery", argv, env=python_env(CELERY_BROKER_URL=redis.url(), **env))


def send(redis: Redis, probe: str, seconds: float) -> None:
    """Queues heartmon's probe task (the app the systems experiment starts, too) from an
    app of the test's own: ``busy-python`` burns the worker's CPU, ``sync-sleep`` only waits."""
    with Celery("heartmon_tests_client", broker=redis.url()) as app:
        app.send_task("heartmon.probe", args=[probe, seconds])


def spec(redis: Redis, query: str = "") -> str:
    return f"celery+redis://127.0.0.1:{redis.port}/0{query}"


def row(monitor: Monitor, source: str, name: str) -> RowView | None:
    return next((r for r in monitor.view(ViewRequest(height=1000)).rows if r.key == (source, name)), None)


def state(monitor: Monitor, source: str, name: str) -> str | None:
    found = row(monitor, source, name)
    return found.state if found else None


def detail(monitor: Monitor, source: str, name: str) -> DetailView:
    view = monitor.view(ViewRequest(height=0, detail=(source, name)))
    assert view.detail is not None, f"no detail for {name}"
    return view.detail


def transitions(monitor: Monitor, name: str) -> list[Transition]:
    return [e for e in monitor.view(ViewRequest(height=0)).entries if isinstance(e, Transition) and e.worker == name]


def wait_state(monitor: Monitor, source: str, name: str, wanted: str, timeout_s: float, service: Service) -> None:
    wait_until(lambda: state(monitor, source, name) == wanted, timeout_s,
               f"{name} to be {wanted} (it is {state(monitor, source, name)}; worker log {service.log})")


@pytest.fixture
def monitor(redis: Redis) -> Iterator[Monitor]:
    with Monitor(settings(), [spec(redis)]) as running:
        yield running
    assert running.crashed is None


def test_an_idle_worker_is_healthy_and_known_by_its_pid(services: Services, redis: Redis, monitor: Monitor) -> None:
    worker = start_worker(services, redis)
    source, name = spec(redis), f"solo@{HOST}"
    wait_state(monitor, source, name, "healthy", 60, worker)
    wait_until(lambda: detail(monitor, source, name).p50_s is not None, 30, "a second beat")
    seen = detail(monitor, source, name)
    assert (seen.pid, seen.host, seen.row.isolation, seen.row.interval_s) == (worker.pid, HOST, "celery", 1.0)
    assert seen.doing is None and seen.native == "Celery/Flower would show: online"
    assert monitor.view().sources[0].link == "connected"
    assert monitor.sources[0].status.refused == 0


def test_a_solo_worker_in_a_cpu_task_is_starved_never_dead_then_recovers(
        services: Services, redis: Redis, monitor: Monitor) -> None:
    """On a machine with more CPU-bound processes than cores (a burner per core beside
    the worker), the worker's share of a core flickers around the busy line for longer
    than the dead threshold: it must stay starved, as on a quiet machine."""
    worker = start_worker(services, redis)
    source, name = spec(redis), f"solo@{HOST}"
    wait_state(monitor, source, name, "healthy", 60, worker)
    for core in range(os.cpu_count() or 2):
        services.spawn(f"burner-{core}", [sys.executable, "-c", "while True: pass"])
    send(redis, "busy-python", TASK_S)
    wait_state(monitor, source, name, "starved", 40, worker)
    starved = next(t for t in transitions(monitor, name) if t.to_state == "starved")
    assert starved.native == "Celery/Flower would show: offline"
    assert "process burning CPU" in starved.reason
    wait_state(monitor, source, name, "healthy", 60, worker)
    moves = transitions(monitor, name)
    assert not [t for t in moves if t.to_state == "dead"], moves
    recovery = next(t for t in moves if t.episode is not None)
    assert recovery.from_state == "starved" and recovery.episode.length_s >= 5.0


def test_a_prefork_worker_in_the_same_task_stays_healthy(
        services: Services, redis: Redis, monitor: Monitor) -> None:
    """The pool's children run the tasks; the main process's timer beats on time, and
    its beats say what it is doing."""
    worker = start_worker(services, redis, name="prefork", pool="prefork")
    source, name = spec(redis), f"prefork@{HOST}"
    wait_state(monitor, source, name, "healthy", 60, worker)
    send(redis, "busy-python", TASK_S)
    send(redis, "sync-sleep", TASK_S)
    wait_until(lambda: detail(monitor, source, name).doing == "2 active tasks", 40,
               f"beats that say both tasks run (worker log {worker.log})")
    wait_until(lambda: detail(monitor, source, name).doing is None, 60, f"the tasks to end (worker log {worker.log})")
    assert state(monitor, source, name) == "healthy"
    assert transitions(monitor, name) == [], "a prefork worker's beats never stop for a task"


def test_a_killed_worker_is_dead_once_its_pid_is_gone(services: Services, redis: Redis, monitor: Monitor) -> None:
    worker = start_worker(services, redis)
    source, name = spec(redis), f"solo@{HOST}"
    wait_state(monitor, source, name, "healthy", 60, worker)
    worker.kill()
    wait_state(monitor, source, name, "dead", 30, worker)
    assert transitions(monitor, name)[-1].reason == "process gone"


def test_a_clean_stop_is_dead_at_once_by_worker_offline(services: Services, redis: Redis, monitor: Monitor) -> None:
    worker = start_worker(services, redis)
    source, name = spec(redis), f"solo@{HOST}"
    wait_state(monitor, source, name, "healthy", 60, worker)
    worker.stop()
    wait_state(monitor, source, name, "dead", 30, worker)
    assert transitions(monitor, name)[-1].reason == "worker-offline: clean shutdown"


def envelope(event: object, *, body: str | None = None, **overrides: object) -> bytes:
    """A kombu message as Celery publishes an event over Redis, with parts replaced."""
    encoded = base64.b64encode(json.dumps(event).encode()).decode() if body is None else body
    message = {"body": encoded, "content-encoding": "utf-8", "content-type": "application/json",
               "headers": {}, "properties": {"body_encoding": "base64", "delivery_mode": 1}, **overrides}
    return json.dumps(message).encode()


BEAT = {"type": "worker-heartbeat", "hostname": "fake@elsewhere", "pid": 4242, "freq": 1.0, "active": 0,
        "processed": 0, "timestamp": 0.0}
MALFORMED = [
    (b"\xff not json", "not a JSON message"),
    (b"[1, 2]", "not a JSON object"),
    (envelope(BEAT, **{"content-type": "application/x-python-serialize"}), "content-type"),
    (envelope(BEAT, body="%%% not base64 %%%"), "not base64 JSON"),
    (envelope(BEAT, body=base64.b64encode(b"{oops").decode()), "not base64 JSON"),
    (envelope({**BEAT, "type": "worker-dance"}), "unknown event type 'worker-dance'"),
    (envelope({k: v for k, v in BEAT.items() if k != "hostname"}), "hostname None"),
    (envelope({**BEAT, "freq": 0}), "freq 0"),
    (envelope({**BEAT, "freq": -1.0}), "freq -1.0"),
    (envelope({**BEAT, "freq": float("nan")}), "freq nan"),
    (envelope({**BEAT, "freq": float("inf")}), "freq inf"),
    (envelope({**BEAT, "freq": "2"}), "freq '2'"),
    (envelope({**BEAT, "pid": True}), "pid True"),
    (envelope({**BEAT, "active": -1}), "active -1"),
    (b"[" * 100_000, "a message of 100000 bytes, not read"),
    (b"[" * 60_000, "not a JSON message"),  # under the size bound, too deep for json (RecursionError)
    (envelope(BEAT, body=base64.b64encode(b"[" * 40_000).decode()), "not base64 JSON"),
    (envelope({**BEAT, "freq": 10**400}), "freq 1000000"),  # too big for a float (OverflowError)
    (envelope({**BEAT, "freq": 1e308}), "freq 1e+308"),
    (envelope({**BEAT, "freq": 1e-300}), "freq 1e-300"),
    (envelope({**BEAT, "freq": 3601}), "freq 3601 is not an interval of 0.01 to 3600 s"),
    (envelope({**BEAT, "hostname": "ev\x1b[2J\x1b[31mRED@elsewhere"}), "a worker name with control characters"),
    (envelope({**BEAT, "hostname": "a\nb 12:00:00.000 solo healthy@elsewhere"}), "with control characters"),
    (envelope({**BEAT, "hostname": "nul\x00@elsewhere"}), "with control characters"),
    (envelope({**BEAT, "hostname": "h@" + "y" * 200}), "a worker name of 202 characters"),
    (envelope({"type": "worker-offline", "hostname": "off\x1b[31m@elsewhere"}), "worker-offline: a worker name"),
]


def test_malformed_events_are_refused_and_counted_and_the_worker_stays_healthy(
        services: Services, redis: Redis, monitor: Monitor) -> None:
    """The worker runs without gossip: with it, it reads the same worker.* events, and
    Celery 5.7 stops on one of them (``[1, 2]``: "Unrecoverable error: TypeError"). A
    message the parser cannot take (too big, too deep, a number no float holds) is one
    refusal too, never a lost link that would make the real worker unknown."""
    worker = start_worker(services, redis, options=("--without-gossip",))
    source, name = spec(redis), f"solo@{HOST}"
    wait_state(monitor, source, name, "healthy", 60, worker)
    status = monitor.sources[0].status
    publisher = redis.client()
    channel = "/0.celeryev/worker.heartbeat"
    for count, (message, problem) in enumerate(MALFORMED, start=1):
        publisher.publish(channel, message)
        wait_until(lambda count=count: status.refused == count, 20, f"{problem!r} to be refused")
        assert status.last_refused.startswith(channel) and problem in status.last_refused, status.last_refused
    publisher.publish("/0.celeryev/worker.task-succeeded", envelope({"type": "task-succeeded", "uuid": "x"}))
    publisher.publish(channel, envelope({"type": "task-started", "hostname": "fake@elsewhere"}))
    gaps = detail(monitor, source, name).window
    wait_until(lambda: detail(monitor, source, name).window >= gaps + 3, 30, "more beats of the real worker")
    publisher.close()
    assert status.refused == len(MALFORMED), status.last_refused  # task events are ignored, not refused
    assert state(monitor, source, name) == "healthy"
    assert monitor.view().sources[0].link == "connected" and transitions(monitor, name) == []
    assert [r.name for r in monitor.view(ViewRequest(height=1000)).rows] == [name]


def test_the_freq_range_ends_are_taken() -> None:
    """An interval of 10 ms to an hour (heartmon's own protocol's longest) is a rhythm."""
    for freq in (0.01, 3600):
        event = parse_event(envelope({**BEAT, "freq": freq}))
        assert event is not None and event[1] is not None and event[1].interval_s == freq


class NoIngest:
    """An Ingest for a message that must reach none of it."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"a refused message called ingest.{name}")


def test_whatever_one_message_makes_the_parser_raise_refuses_that_message_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The parsing of one message is the boundary: an exception it did not foresee is that
    message's refusal (one line, counted), not an error of the link that would make every
    worker unknown. A channel unfit for the terminal is quoted in the line."""
    def broken(data: bytes) -> None:
        raise OverflowError("int too large to convert to float")

    monkeypatch.setattr(celery_source, "parse_event", broken)
    source = parse_source("celery+redis://127.0.0.1:6379/0", settings(), lambda: pytest.fail("no HTTP client"))
    assert isinstance(source, CelerySource)
    source._take(NoIngest(), b"/0.celeryev/worker.heartbeat", b"{}", 0.0)  # type: ignore[arg-type]
    assert (source.status.refused, source.status.last_refused) == (
        1, "/0.celeryev/worker.heartbeat: unreadable (OverflowError)")
    source._take(NoIngest(), b"/0.celeryev/worker.\x1b[2J", b"{}", 0.0)  # type: ignore[arg-type]
    assert source.status.last_refused == "'/0.celeryev/worker.\\x1b[2J': unreadable (OverflowError)"


def test_a_broker_restart_makes_workers_unknown_then_back(services: Services, redis: Redis, monitor: Monitor) -> None:
    """While redis-server is down nothing is known; when it is back a worker is healthy
    at its next beat, and one killed meanwhile is dead once it has had dead_after
    intervals to speak."""
    stays, dies = start_worker(services, redis, name="stays"), start_worker(services, redis, name="dies")
    source = spec(redis)
    for worker, name in ((stays, f"stays@{HOST}"), (dies, f"dies@{HOST}")):
        wait_state(monitor, source, name, "healthy", 60, worker)
    redis.service.stop()
    wait_until(lambda: monitor.view().sources[0].link == "retrying", 30, "the source to see the broker gone")
    assert "redis 127.0.0.1" in monitor.view().sources[0].detail
    for worker, name in ((stays, f"stays@{HOST}"), (dies, f"dies@{HOST}")):
        wait_state(monitor, source, name, "unknown", 10, worker)
    dies.kill()
    start_redis(services, port=redis.port)
    wait_until(lambda: monitor.view().sources[0].link == "connected", 30, "the source to reconnect")
    wait_state(monitor, source, f"stays@{HOST}", "healthy", 60, stays)
    wait_state(monitor, source, f"dies@{HOST}", "dead", 60, dies)
    assert transitions(monitor, f"dies@{HOST}")[-1].reason == "not back since its source returned"


def test_a_custom_event_exchange_is_heard_with_its_namespace(services: Services, redis: Redis) -> None:
    plain, named = spec(redis), spec(redis, "?namespace=heartmon_ev")
    with Monitor(settings(), [plain, named]) as monitor:
        worker = start_worker(services, redis, CELERY_EVENT_EXCHANGE="heartmon_ev")
        wait_state(monitor, named, f"solo@{HOST}", "healthy", 60, worker)
        wait_until(lambda: detail(monitor, named, f"solo@{HOST}").window >= 2, 30, "more beats")
        assert [r.key for r in monitor.view(ViewRequest(height=1000)).rows] == [(named, f"solo@{HOST}")]


@pytest.mark.parametrize(("url", "problem"), [
    ("celery+redis://127.0.0.1:6379/x", "the database must be a number"),
    ("celery+redis://127.0.0.1:6379/0?queue=a", "unknown option 'queue'"),
    ("celery+redis://127.0.0.1:6379/0?namespace=ev*", "namespace must be an exchange name"),
    ("celery+redis://127.0.0.1:6379/0?namespace=", "namespace must be an exchange name"),
    ("celery+redis://127.0.0.1:port/0", "invalid address"),
])
def test_a_bad_url_is_refused_with_the_reason(url: str, problem: str) -> None:
    with pytest.raises(SourceError, match=problem):
        parse_source(url, Settings(), lambda: pytest.fail("no HTTP client is needed"))


def test_parsing_a_url_does_not_connect() -> None:
    """The UI process parses sources only to check them: an unreachable broker is fine,
    and the label never shows the password."""
    source = parse_source("celery+redis://:secret@192.0.2.1:6390/3?namespace=ev", Settings(),
                          lambda: pytest.fail("no HTTP client is needed"))
    assert isinstance(source, CelerySource) and source.kind == "celery"
    assert (source.status.label, source.status.link) == ("celery+redis://192.0.2.1:6390/3?namespace=ev", "connecting")
    assert source.pattern == "/3.ev/worker.*"
