"""Health detection against real workers under real load: a worker whose loop is starved
is starved while silent, never dead, and recovers with its episode; an isolated worker
doing the same work is busy; a killed worker is dead; the monitor resyncs after a hub
restart; `heartmon check` judges hubs and HTTP health endpoints."""

import json
import subprocess
import time

import httpx
import psutil
import pytest

from heartmon.config import load_settings
from heartmon.monitor import Monitor
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
    assert [(e["from"], e["to"]) for e in none] == [("healthy", "late"), ("late", "starved"), ("starved", "healthy")], err
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


def test_a_busy_isolated_worker_shows_its_main_loop_block_growing(fleet100):
    with Monitor(load_settings(), [fleet100.url]) as monitor:
        wait_until(lambda: monitor.fleet.trackers.get("process-1"), 10, "the monitor to see process-1")
        httpx.post(f"{fleet100.http}/api/workers/process-1/inject", params={"probe": "gil-hold", "duration_s": 2})
        states, blocked = set(), []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            with monitor.lock:
                t = monitor.fleet.trackers["process-1"]
                states.add(t.state)
                if t.state == "busy":
                    blocked.append(t.main_blocked_ms)
            time.sleep(0.1)
    assert states <= {"healthy", "busy"} and "busy" in states
    assert len(blocked) >= 5 and blocked[-1] > blocked[0] + 500 and max(blocked) < 2500


def test_a_killed_worker_is_dead_within_a_second(fleet100):
    with Monitor(load_settings(), [fleet100.url]) as monitor:
        wait_until(lambda: monitor.fleet.trackers.get("thread-1"), 10, "the monitor to see thread-1")
        with httpx.Client(base_url=fleet100.http) as client:
            pid = workers(client)["thread-1"]["pid"]
        killed = time.monotonic()
        psutil.Process(pid).kill()
        wait_until(lambda: monitor.fleet.trackers["thread-1"].state == "dead", 5, "thread-1 to be dead")
        assert time.monotonic() - killed < 1.0
        assert {t.name: t.state for t in monitor.fleet.trackers.values()}["none-1"] != "dead"


def test_the_monitor_reconnects_to_a_restarted_hub_and_resyncs(launch):
    port = str(free_port())
    hub = launch("hub", "--port", port)
    launch("worker", "--hub", hub.url, "--isolation", "thread", "--name", "w", "--interval-ms", "100", ready=None)
    with Monitor(load_settings(), [hub.url]) as monitor:
        wait_until(lambda: monitor.fleet.trackers.get("w") and monitor.fleet.trackers["w"].beats > 3, 20, "beats")
        assert hub.stop() == 0
        wait_until(lambda: monitor.sources[0].status.link == "retrying", 10, "the monitor to notice")
        launch("hub", "--port", port)
        wait_until(lambda: monitor.sources[0].status.link == "connected", 20, "the monitor to reconnect")
        beats = monitor.fleet.trackers["w"].beats
        wait_until(lambda: monitor.fleet.trackers["w"].beats > beats + 3, 20, "beats through the new hub")
        assert monitor.fleet.trackers["w"].state == "healthy"


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
