"""RQ workers, real ones (rq 2.x) on a real redis-server, watched through the engine
itself: ``Monitor`` with an ``rq+redis://`` source, on a thread of the test.

The workers run with ``--worker-ttl 16``: RQ then waits 1 s for a job between idle
beats (``worker_ttl - 15``), so heartmon's thresholds are seconds, not minutes. A
SimpleWorker busy in pure Python writes nothing until its job returns: heartmon must call
it starved (RQ says it is busy), never dead, and count one episode when it beats again.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import rq

from config.settings import Settings
from heartmon.detector import Transition
from heartmon.monitor import Monitor
from heartmon.polling import PollTimeout
from heartmon.sources import Heard, SourceStatus
from heartmon.sources.rq import FIELDS, RqSource, from_url, interval_of
from heartmon.view import DetailView, RowView, ViewRequest
from tests.harness import free_port, wait_until
from tests.systems import Redis, Service, Services, python_env, start_redis

WORKER_TTL = 16
"""RQ's idle rhythm is max(1, worker_ttl - 15): one beat a second."""
SETTINGS = Settings(systems={"reconnect_max_ms": 1000})


def start_worker(services: Services, redis: Redis, name: str, queue: str, *options: str) -> Service:
    return services.spawn(f"rq-{name}", [sys.executable, "-m", "rq.cli", "worker", "--url", redis.url(),
                                         "--worker-ttl", str(WORKER_TTL), "--name", name, *options, queue],
                          env=python_env())


def no_client() -> httpx.AsyncClient:
    raise AssertionError("the RQ source has no use for the monitor's HTTP client")


def watch(redis: Redis) -> Monitor:
    return Monitor(SETTINGS, [f"rq+redis://127.0.0.1:{redis.port}/0"])


def status(monitor: Monitor) -> SourceStatus:
    return monitor.sources[0].status


def row(monitor: Monitor, name: str) -> RowView | None:
    return next((r for r in monitor.view(ViewRequest(height=1000)).rows if r.name == name), None)


def detail(monitor: Monitor, name: str) -> DetailView:
    view = monitor.view(ViewRequest(detail=(status(monitor).label, name)))
    assert view.detail is not None, f"no worker {name}"
    return view.detail


def wait_state(monitor: Monitor, name: str, state: str, timeout_s: float = 60,
               services: Services | None = None) -> float:
    """Waits until the worker is in ``state``; returns when it was seen so (test clock);
    on a timeout, says what it is instead, with the end of each service's log."""
    def reached() -> bool:
        assert monitor.crashed is None, monitor.crashed
        found = row(monitor, name)
        return found is not None and found.state == state

    try:
        wait_until(reached, timeout_s, f"{name} to be {state}")
    except TimeoutError:
        logs = "\n".join(f"--- {s.name}\n{s.output()[-2000:]}" for s in (services.started if services else []))
        raise AssertionError(f"{name} is {row(monitor, name)}, not {state}\n{logs}") from None
    return time.monotonic()


def entries(monitor: Monitor, name: str) -> list[Transition]:
    """Every transition of the worker in the monitor's log, oldest first."""
    return [e for e in monitor.view(ViewRequest(height=0)).entries if isinstance(e, Transition) and e.worker == name]


def test_the_interval_is_rqs_own_rule_read_from_the_ttl_a_beat_set() -> None:
    """Idle: worker_ttl + 60 -> worker_ttl - 15, at least 1. A forking worker's busy beat:
    job_monitoring_interval + 60 -> the monitoring interval. A SimpleWorker's: the job's
    timeout + 60 (420 without one) -> no rhythm (None): it keeps its idle interval."""
    assert interval_of(420 + 60, busy=False, job_timeout_s=None) == 405  # RQ's defaults
    assert interval_of(16 + 60, busy=False, job_timeout_s=None) == 1
    assert interval_of(10 + 60, busy=False, job_timeout_s=None) == 1  # dequeue_timeout is at least 1
    assert interval_of(30 + 60, busy=True, job_timeout_s=180) == 30
    assert interval_of(180 + 60, busy=True, job_timeout_s=180) is None
    assert interval_of(30 + 60, busy=True, job_timeout_s=-1) == 30
    assert interval_of(420, busy=True, job_timeout_s=-1) is None
    assert interval_of(420 + 60, busy=True, job_timeout_s=None) is None


def test_a_source_url_is_checked_without_connecting() -> None:
    """The UI process parses the source only to check it: a port where nothing listens
    is fine at parse time; a wrong scheme or database is a ValueError that says why."""
    source = from_url(f"rq+redis://127.0.0.1:{free_port()}/3", SETTINGS, no_client)
    assert isinstance(source, RqSource) and source.kind == "rq"
    assert source.status.link == "connecting" and source.status.label.endswith("/3")
    with pytest.raises(ValueError, match="rq\\+redis://HOST:PORT/DB"):
        from_url("redis://127.0.0.1:6379/0", SETTINGS, no_client)
    with pytest.raises(ValueError, match="database must be a number"):
        from_url("rq+redis://127.0.0.1:6379/zero", SETTINGS, no_client)


class Recorder:
    """An Ingest that writes down what the source tells it, on a clock the test sets."""

    def __init__(self) -> None:
        self.t = 0.0
        self.calls: list[tuple] = []

    def now(self) -> float:
        return self.t

    def hub_message(self, source: str, message: object, now: float) -> None:
        raise AssertionError("an RQ source relays no hub's messages")

    def source_lost(self, source: str, now: float) -> None:
        self.calls.append(("lost", now))

    def heard(self, source: str, name: str, now: float, beat: Heard) -> None:
        self.calls.append(("heard", name, now, beat.interval_s))

    def gone(self, source: str, name: str, now: float, reason: str) -> None:
        self.calls.append(("gone", name, now, reason))

    def vouch(self, source: str, name: str, now: float, because: str | None) -> None:
        self.calls.append(("vouch", name, now, because))


def idle_hash(last_heartbeat: str, **fields: str) -> list[bytes | None]:
    """A worker's :data:`FIELDS` as the poll's script reads them (None for one it lacks)."""
    fields = {"last_heartbeat": last_heartbeat, "pid": "4242", "hostname": "elsewhere", "state": "idle", **fields}
    return [fields[name].encode() if name in fields else None for name in FIELDS]


def test_a_beat_seen_before_its_expire_is_taken_when_the_ttl_is_set() -> None:
    """Outside a job RQ writes the time, then the EXPIRE, in two commands. A worker with
    RQ's defaults (TTL 480 s, a beat every 405 s) read between them shows the old TTL's
    last 75 s: taken as it stands, that is an interval of 1 s, and the worker would be dead
    10 s later. The beat waits one poll for its TTL instead."""
    source = from_url("rq+redis://127.0.0.1:6379/0", SETTINGS, no_client)
    ingest = Recorder()
    source._take(ingest, [[b"rq:worker:w", b"hash", idle_hash("2026-01-01T00:00:00.000000Z"), 480_000, None]], 0.0)
    assert ingest.calls == [("heard", "w", 0.0, 405.0), ("vouch", "w", 0.0, None)]
    ingest.calls.clear()
    later = "2026-01-01T00:06:45.000000Z"
    source._take(ingest, [[b"rq:worker:w", b"hash", idle_hash(later), 75_000, None]], 405.0)  # before its EXPIRE
    assert ingest.calls == []
    source._take(ingest, [[b"rq:worker:w", b"hash", idle_hash(later), 479_800, None]], 405.25)
    assert ingest.calls == [("heard", "w", 405.25, 405.0)]
    ingest.calls.clear()
    source._take(ingest, [], 406.0)
    assert ingest.calls == [("gone", "w", 406.0, "left rq:workers")]


def test_unfit_names_and_intervals_beyond_reason_are_refused_once_each() -> None:
    """Worker names reach the terminal: control characters (an ESC sequence, a newline
    forging a log line, a NUL) and absurd lengths are refused. So is a TTL that RQ's rule
    turns into a rhythm over an hour (10**12 s would keep a row healthy for ever), or a busy
    one promising a beat in no time. Each is counted once, though its TTL counts down from
    one poll to the next. A whole job's promise (a SimpleWorker first seen busy) may be
    longer than an hour: it is judged on an hour, RQ saying all along it is busy."""
    source = from_url("rq+redis://127.0.0.1:6379/0", SETTINGS, no_client)
    ingest = Recorder()
    beat = "2026-01-01T00:00:00.000000Z"
    refused = [(b"rq:worker:ev\x1b[2J\x1b[31mRED", 76_000, idle_hash(beat)),
               (b"rq:worker:a\nb 12:00:00.000 good healthy", 76_000, idle_hash(beat)),
               (b"rq:worker:nul\x00", 76_000, idle_hash(beat)),
               (b"rq:worker:" + b"x" * 200, 76_000, idle_hash(beat)),
               (b"rq:worker:huge-ttl", 10**15, idle_hash(beat)),
               (b"rq:worker:busy-no-promise", 30_000, idle_hash(beat, state="busy", current_job="j1"))]
    taken = [(b"rq:worker:good", 76_000, idle_hash(beat)),
             (b"rq:worker:long-job", 10**15, idle_hash(beat, state="busy", current_job="j2"))]
    for poll in range(3):
        rows = [[key, b"hash", raw, pttl_ms - poll * 1000, None] for key, pttl_ms, raw in refused + taken]
        source._take(ingest, rows, float(poll))
        assert source.status.refused == len(refused), source.status
    assert [c for c in ingest.calls if c[0] == "heard"] == [("heard", "good", 0.0, 1.0),
                                                             ("heard", "long-job", 0.0, 3600.0)]
    lines = list(source._refused.values())
    assert "rq:workers lists a worker name with control characters: 'ev\\x1b[2J\\x1b[31mRED'" in lines, lines
    assert all("\n" not in line and "\x1b" not in line and "\x00" not in line for line in lines), lines
    assert "rq:workers lists a worker name of 200 characters (at most 128): " + repr("x" * 40) + "…" in lines
    assert "rq:worker:huge-ttl has a TTL whose interval by RQ's rule is over 3600 s" in lines
    assert "rq:worker:busy-no-promise is busy with a TTL of at most 60 s, which promises no next beat" in lines


def test_a_huge_field_in_a_listed_hash_does_not_cross_the_link_at_each_poll(redis: Redis) -> None:
    """A poll reads the fields it needs, never a whole hash: 16 MB beside them in one
    worker's hash would be sent at each of four polls a second. Redis counts what it sent."""
    connection = redis.client()
    connection.hset("rq:worker:big", mapping={"last_heartbeat": "2026-01-01T00:00:00.000000Z", "pid": "4242",
                                              "hostname": "elsewhere", "state": "idle", "junk": "z" * 16_000_000})
    connection.expire("rq:worker:big", 76)
    connection.sadd("rq:workers", "rq:worker:big")
    with watch(redis) as monitor:
        wait_until(lambda: status(monitor).link == "connected", 15, "the source to connect")
        sent = connection.info("stats")["total_net_output_bytes"]
        time.sleep(2)  # eight polls
        sent = connection.info("stats")["total_net_output_bytes"] - sent
        assert sent < 1_000_000, f"{sent} bytes sent in 2 s"
        assert row(monitor, "big") is not None and status(monitor).refused == 0, status(monitor)


def test_idle_workers_are_healthy_at_rqs_idle_rhythm(services: Services, redis: Redis) -> None:
    start_worker(services, redis, "idle-1", "default")
    with watch(redis) as monitor:
        wait_state(monitor, "idle-1", "healthy", services=services)
        wait_until(lambda: detail(monitor, "idle-1").row.p99_s is not None and len(detail(monitor, "idle-1").gaps) >= 4,
                   30, "a few idle beats")
        info = detail(monitor, "idle-1")
        assert status(monitor).link == "connected"
        assert info.row.interval_s == 1.0 and info.row.isolation == "rq"
        assert info.pid == services.started[-1].pid and info.host
        assert info.vouched is None and info.doing is None
        assert all(0.5 < gap < 2.0 for gap in info.gaps), info.gaps  # one beat a second, timed on our clock
        assert [e.to_state for e in info.entries] == [], info.entries


def test_a_simple_worker_in_a_long_job_is_starved_not_dead_while_a_forking_one_stays_healthy(
        services: Services, redis: Redis) -> None:
    """The same 14 s pure-Python job on a SimpleWorker and a forking Worker, and a 14 s
    sleep on a second SimpleWorker. A SimpleWorker writes nothing until its job returns:
    late, then starved with RQ's word for it, then healthy with one episode. The sleeper
    burns no CPU, so RQ's word is its only evidence of life: without it, it would be dead
    after 10 silent seconds. The forking worker's main process goes on beating (every 2 s,
    its monitoring interval)."""
    start_worker(services, redis, "simple-1", "burn", "-w", "rq.worker.SimpleWorker")
    start_worker(services, redis, "simple-2", "nap", "-w", "rq.worker.SimpleWorker")
    start_worker(services, redis, "fork-1", "fork", "--job-monitoring-interval", "2")
    names = ("simple-1", "simple-2", "fork-1")
    with watch(redis) as monitor:
        for name in names:
            wait_state(monitor, name, "healthy", services=services)
        connection = redis.client()
        jobs = {"simple-1": rq.Queue("burn", connection=connection).enqueue("tests.apps.rq_jobs.burn", 14),
                "simple-2": rq.Queue("nap", connection=connection).enqueue("tests.apps.rq_jobs.nap", 14),
                "fork-1": rq.Queue("fork", connection=connection).enqueue("tests.apps.rq_jobs.burn", 14)}
        seen: dict[str, set[str]] = {name: set() for name in names}

        def look() -> None:
            """Every state each worker is seen in, all along the jobs."""
            for name in names:
                found = row(monitor, name)
                seen[name].add(found.state if found else "missing")

        def until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
            try:
                wait_until(lambda: look() or predicate(), timeout_s, what)
            except PollTimeout as exc:
                raise AssertionError(f"{exc}; states seen: {seen}") from None

        until(lambda: {"starved"} <= seen["simple-1"] & seen["simple-2"], 40, "both SimpleWorkers to be starved")
        for name in ("simple-1", "simple-2"):
            during = detail(monitor, name)
            assert during.vouched == f"RQ says busy in job {jobs[name].id}", during
            assert during.doing == f"job {jobs[name].id}", during
            assert during.row.interval_s == 1.0, during  # its idle rhythm, not the job's 180 s timeout
        assert detail(monitor, "fork-1").doing == f"job {jobs['fork-1'].id}"
        assert detail(monitor, "fork-1").row.interval_s == 2.0  # its monitoring interval while busy
        until(lambda: all(job.get_status(refresh=True) == "finished" for job in jobs.values()), 60, "the jobs to end")
        until(lambda: all(detail(monitor, name).row.state == "healthy" and detail(monitor, name).doing is None
                          for name in names), 30, "each worker's next idle beat")
        assert "dead" not in seen["simple-1"] | seen["simple-2"], seen
        assert seen["fork-1"] <= {"healthy", "busy"}, seen
        for name in names:
            assert detail(monitor, name).row.interval_s == 1.0  # back to its idle rhythm
            assert detail(monitor, name).vouched is None
        for name in ("simple-1", "simple-2"):
            moves = [(e.from_state, e.to_state) for e in entries(monitor, name)]
            assert moves == [("healthy", "late"), ("late", "starved"), ("starved", "healthy")], moves
            starved, recovery = entries(monitor, name)[1:]
            assert f"RQ says busy in job {jobs[name].id}" in starved.reason, starved
            assert recovery.episode is not None and recovery.episode.length_s >= 10, recovery
        assert entries(monitor, "fork-1") == []


def test_a_killed_worker_is_dead_once_its_pid_is_gone_and_a_stopped_one_when_it_leaves_rq_workers(
        services: Services, redis: Redis) -> None:
    """SIGKILL leaves the worker listed until its key expires (76 s here): the local pid
    is what tells. SIGTERM unregisters it: gone at the next poll."""
    killed = start_worker(services, redis, "killed-1", "default")
    stopped = start_worker(services, redis, "stopped-1", "default")
    with watch(redis) as monitor:
        for name in ("killed-1", "stopped-1"):
            wait_state(monitor, name, "healthy", services=services)
        killed.kill()
        wait_state(monitor, "killed-1", "dead", 15)
        assert redis.client().sismember("rq:workers", "rq:worker:killed-1")  # RQ still lists it
        assert entries(monitor, "killed-1")[-1].reason == "process gone"
        stopped.stop(signal.SIGTERM)
        wait_state(monitor, "stopped-1", "dead", 15)
        assert entries(monitor, "stopped-1")[-1].reason == "left rq:workers"


def test_a_garbage_worker_hash_is_refused_once_and_the_others_are_unaffected(
        services: Services, redis: Redis) -> None:
    start_worker(services, redis, "good-1", "default")
    connection = redis.client()
    connection.sadd("rq:workers", "rq:worker:bad-time", "rq:worker:bad-pid", "rq:worker:no-pid",
                    "rq:worker:a-string")
    connection.hset("rq:worker:bad-time", mapping={"last_heartbeat": "yesterday", "pid": "12"})
    connection.hset("rq:worker:bad-pid", mapping={"last_heartbeat": "2026-01-01T00:00:00.000000Z", "pid": "x1"})
    connection.hset("rq:worker:no-pid", mapping={"last_heartbeat": "2026-01-01T00:00:00.000000Z"})
    connection.set("rq:worker:a-string", "hello")
    with watch(redis) as monitor:
        wait_state(monitor, "good-1", "healthy", services=services)
        before = len(detail(monitor, "good-1").gaps)
        time.sleep(3)  # a dozen polls: each bad hash is still counted once
        assert status(monitor).refused == 4, status(monitor)
        assert status(monitor).last_refused.startswith("rq:worker:"), status(monitor)
        names = {r.name for r in monitor.view(ViewRequest(height=1000)).rows}
        assert names == {"good-1"}, names
        after = detail(monitor, "good-1")
        assert after.row.state == "healthy" and len(after.gaps) >= before + 2, (before, after)
        connection.hset("rq:worker:bad-time", "last_heartbeat", "still not a time")  # a new fault: counted
        wait_until(lambda: status(monitor).refused == 5, 10, "the changed hash to be refused again")


def test_a_redis_restart_makes_workers_unknown_then_healthy_again(services: Services, tmp_path: Path) -> None:
    port = free_port()
    redis = start_redis(services, port, directory=tmp_path)  # its data kept across the restart
    start_worker(services, redis, "steady-1", "default")
    with watch(redis) as monitor:
        wait_state(monitor, "steady-1", "healthy", services=services)
        redis.client().shutdown(save=True)
        redis.service.proc.wait(10)
        wait_until(lambda: status(monitor).link == "retrying", 15, "the source to retry")
        wait_state(monitor, "steady-1", "unknown", 15)
        assert "\n" not in status(monitor).detail and status(monitor).detail, status(monitor)
        time.sleep(1.5)  # a few failed polls: the source is lost once
        start_redis(services, port, directory=tmp_path)
        wait_until(lambda: status(monitor).link == "connected", 20, "the source to reconnect")
        wait_state(monitor, "steady-1", "healthy", 30, services)
        moves = [(e.from_state, e.to_state) for e in entries(monitor, "steady-1")]
        assert moves == [("healthy", "unknown"), ("unknown", "healthy")], moves
