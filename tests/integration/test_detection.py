"""Health detection against real workers under real load: a worker whose loop is starved
is starved while silent, never dead, and recovers with its episode; an isolated worker
doing the same work is busy; a killed worker is dead; the monitor resyncs after a hub
restart; `heartmon check` judges hubs and HTTP health endpoints."""

import json
import signal
import subprocess
import time

import httpx
import psutil
import pytest

from heartmon.config import load_settings
from heartmon.monitor import Monitor
from heartmon.view import RowView, ViewRequest
from tests.harness import HEARTMON, free_port, wait_until, workers

INTERVAL_S = 0.1
STARVED_AFTER_S = 5 * INTERVAL_S  # the default: 5 intervals


@pytest.fixture
def fleet100(launch):
    """One worker per isolation mode at the default-like 100 ms interval."""
    running = launch("mock", "--port", "0", "--interval-ms", "100", "--workers", "none:1,thread:1,process:1")
    with httpx.Client(base_url=running.http, timeout=10) as client:
        wait_until(lambda: len([w for w in workers(client).values() if w["available"]]) == 3, 30, "the fleet")
    running.remember_tree()
    return running


def _events(hub_url: str, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([*HEARTMON, "events", hub_url, "--json", "--for", str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_starved_worker_is_starved_while_silent_never_dead_then_recovers(fleet100):
    events = _events(fleet100.url, 6)
    try:
        while "connected" not in events.stderr.readline():  # `heartmon events` is watching
            pass
        for worker in ("none-1", "process-1"):
            httpx.post(f"{fleet100.http}/api/workers/{worker}/inject", params={"probe": "gil-hold", "duration_s": 2})
        out, err = events.communicate(timeout=30)
    finally:
        events.kill()
        events.wait()
    lines = [json.loads(line) for line in out.splitlines()]
    none = [e for e in lines if e["worker"] == "none-1"]
    expected = [("healthy", "late"), ("late", "starved"), ("starved", "healthy")]
    assert [(e["from"], e["to"]) for e in none] == expected, err
    recovered = none[2]
    assert all(e["to"] != "dead" for e in lines)
    assert recovered["event"] == "recovered" and recovered["probe"] == "gil-hold"
    assert 1700 <= recovered["episode_ms"] <= 2500
    assert recovered["missed"] >= 15
    # Reported while still silent, within the starvation threshold plus 200 ms of the last beat.
    ts = {e["to"]: _epoch(e["ts"]) for e in none}
    last_beat = ts["healthy"] - recovered["episode_ms"] / 1000
    assert ts["starved"] < ts["healthy"]
    assert ts["starved"] - last_beat <= STARVED_AFTER_S + 0.2
    # The isolated worker was busy, never late or starved.
    process = [(e["from"], e["to"]) for e in lines if e["worker"] == "process-1"]
    assert process == [("healthy", "busy"), ("busy", "healthy")]


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def _rows(monitor: Monitor) -> dict[str, RowView]:
    return {row.name: row for row in monitor.view(ViewRequest(height=1000)).rows}


def _entries(monitor: Monitor) -> list:
    return list(monitor.view(ViewRequest(height=0)).entries)


def test_a_busy_isolated_worker_shows_its_main_loop_block_growing(fleet100):
    with Monitor(load_settings(), [fleet100.url]) as monitor:
        wait_until(lambda: "process-1" in _rows(monitor), 10, "the monitor to see process-1")
        httpx.post(f"{fleet100.http}/api/workers/process-1/inject", params={"probe": "gil-hold", "duration_s": 2})
        states, blocked = set(), []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            row = _rows(monitor)["process-1"]
            states.add(row.state)
            if row.state == "busy":
                blocked.append(row.blocked_ms)
            time.sleep(0.1)
    assert states <= {"healthy", "busy"} and "busy" in states
    assert len(blocked) >= 5 and blocked[-1] > blocked[0] + 500 and max(blocked) < 2500


def test_a_killed_worker_is_dead_within_a_second(fleet100):
    with Monitor(load_settings(), [fleet100.url]) as monitor:
        wait_until(lambda: "thread-1" in _rows(monitor), 10, "the monitor to see thread-1")
        with httpx.Client(base_url=fleet100.http) as client:
            pid = workers(client)["thread-1"]["pid"]
        killed = time.monotonic()
        psutil.Process(pid).kill()
        wait_until(lambda: _rows(monitor)["thread-1"].state == "dead", 5, "thread-1 to be dead")
        assert time.monotonic() - killed < 1.0
        assert _rows(monitor)["none-1"].state != "dead"


def test_a_lost_hub_makes_its_workers_unknown_not_dead_and_they_come_back(launch):
    port = str(free_port())
    hub = launch("hub", "--port", port)
    launch("worker", "--hub", hub.url, "--isolation", "thread", "--name", "w", "--interval-ms", "100", ready=None)
    with Monitor(load_settings(), [hub.url]) as monitor:
        wait_until(lambda: (row := _rows(monitor).get("w")) and row.p99_s is not None, 20, "beats")
        assert hub.stop() == 0
        wait_until(lambda: monitor.view().sources[0].link == "retrying", 10, "the monitor to notice")
        time.sleep(1.5)  # past the dead threshold (10 intervals): nothing is known, so nothing is judged
        view = monitor.view(ViewRequest(height=10))
        assert [(row.name, row.state) for row in view.rows] == [("w", "unknown")]
        assert view.counts["unknown"] == 1 and view.available == 0 and not view.no_available_worker
        launch("hub", "--port", port)
        wait_until(lambda: monitor.view().sources[0].link == "connected", 20, "the monitor to reconnect")
        wait_until(lambda: _rows(monitor)["w"].state == "healthy", 20, "w back through the new hub")
        moves = [(e.from_state, e.to_state) for e in _entries(monitor) if getattr(e, "worker", None) == "w"]
    assert ("healthy", "unknown") in moves and ("unknown", "healthy") in moves
    assert all(to != "dead" and to != "late" for _, to in moves), moves


def test_two_hubs_with_a_worker_of_the_same_name_are_two_rows(launch):
    hubs = [launch("hub", "--port", "0"), launch("hub", "--port", "0")]
    for hub in hubs:
        launch("worker", "--hub", hub.url, "--isolation", "none", "--name", "worker-1", "--interval-ms", "100",
               ready=None)
    with Monitor(load_settings(), [hub.url for hub in hubs]) as monitor:
        wait_until(lambda: len(monitor.view(ViewRequest(height=10)).rows) == 2, 20, "both workers")
        rows = monitor.view(ViewRequest(height=10)).rows
    assert sorted(row.key for row in rows) == sorted((hub.url, "worker-1") for hub in hubs)


def test_check_passes_on_a_healthy_fleet_and_fails_on_a_starved_worker(fleet100):
    ok = subprocess.run([*HEARTMON, "check", fleet100.url], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "all 3 workers healthy or busy" in ok.stdout
    httpx.post(f"{fleet100.http}/api/workers/none-1/inject", params={"probe": "gil-hold", "duration_s": 3})
    with httpx.Client(base_url=fleet100.http) as client:  # the hub runs the same detector
        wait_until(lambda: workers(client)["none-1"]["state"] == "starved", 5, "none-1 to starve")
    bad = subprocess.run([*HEARTMON, "check", fleet100.url, "--within", "1"], capture_output=True, text=True,
                         timeout=30)
    assert bad.returncode == 1
    assert bad.stdout.splitlines() == [bad.stdout.splitlines()[0]] and bad.stdout.startswith("none-1: starved")


def test_check_reads_http_health_endpoints(fleet100):
    healthz = f"hub={fleet100.http}/healthz"
    ok = subprocess.run([*HEARTMON, "check", healthz, "--http-interval-ms", "100"], capture_output=True, text=True,
                        timeout=30)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    down = subprocess.run([*HEARTMON, "check", f"http://127.0.0.1:{free_port()}/healthz", "--within", "1"],
                          capture_output=True, text=True, timeout=30)
    assert down.returncode == 1 and "retrying" in down.stdout


def test_a_wedged_hub_makes_its_workers_unknown_and_they_come_back_when_it_resumes(launch):
    hub = launch("hub", "--port", "0")
    launch("worker", "--hub", hub.url, "--isolation", "process", "--name", "w", "--interval-ms", "1000", ready=None)
    with Monitor(load_settings(), [hub.url]) as monitor:
        wait_until(lambda: (row := _rows(monitor).get("w")) and row.p99_s is not None, 20, "beats")
        hub.proc.send_signal(signal.SIGSTOP)  # the hub's loop can answer nothing, its sockets stay open
        try:
            wait_until(lambda: _rows(monitor)["w"].state == "unknown", 5, "w to be unknown")
        finally:
            hub.proc.send_signal(signal.SIGCONT)
        wait_until(lambda: _rows(monitor)["w"].state == "healthy", 20, "w back when the hub resumes")
        moves = [(e.from_state, e.to_state) for e in _entries(monitor) if getattr(e, "worker", None) == "w"]
    assert moves == [("healthy", "unknown"), ("unknown", "healthy")]
