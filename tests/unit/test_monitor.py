"""The monitor's seams: HTTP endpoints through httpx's MockTransport, its clock injected."""

import threading

import httpx

from heartmon.config import load_settings
from heartmon.monitor import Monitor
from heartmon.protocol import Snapshot, WorkerBeat, WorkerInfo
from tests.harness import wait_until


def settings(**monitor):
    return load_settings(overrides={"monitor": {"http_interval_ms": 20, "http_timeout_ms": 200, **monitor}})


class Endpoint:
    """A scripted health endpoint: answers 200 until told to fail; counts overlaps."""

    def __init__(self) -> None:
        self.status = 200
        self.calls = 0
        self.in_flight = 0
        self.overlaps = 0
        self.lock = threading.Lock()

    async def handler(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.calls += 1
            self.in_flight += 1
            self.overlaps += self.in_flight > 1
        try:
            if self.status == 0:
                raise httpx.ConnectError("refused", request=request)
            return httpx.Response(self.status, json={"ok": self.status == 200})
        finally:
            with self.lock:
                self.in_flight -= 1


def test_http_answers_are_beats_and_failures_missed_beats():
    endpoint = Endpoint()
    monitor = Monitor(settings(), ["api=http://svc.test/health"], transport=httpx.MockTransport(endpoint.handler))
    with monitor:
        wait_until(lambda: (t := monitor.fleet.trackers.get("api")) and t.beats >= 5, 5, "beats from the endpoint")
        tracker = monitor.fleet.trackers["api"]
        assert tracker.state == "healthy" and tracker.latency_ms is not None
        assert monitor.sources[0].status.link == "connected"
        endpoint.status = 503
        wait_until(lambda: tracker.state == "late", 5, "a failing endpoint to be late")
        assert monitor.sources[0].status.detail == "HTTP 503"
        endpoint.status = 200
        wait_until(lambda: tracker.state == "healthy", 5, "the endpoint to recover")
        recovery = [e for e in list(monitor.fleet.log) if getattr(e, "episode", None)][-1]
        assert recovery.episode.missed >= 2  # the failed polls are the missed beats
        endpoint.status = 0
        wait_until(lambda: tracker.state == "dead", 5, "an unreachable endpoint to be dead (no evidence of life)")
        endpoint.status = 200
        wait_until(lambda: tracker.state == "healthy", 5, "an answer to revive it")
    assert endpoint.overlaps == 0


def test_one_client_serves_every_endpoint():
    endpoint = Endpoint()
    monitor = Monitor(settings(), ["a=http://a.test/", "b=http://b.test/"], transport=httpx.MockTransport(endpoint.handler))
    with monitor:
        wait_until(lambda: {"a", "b"} <= set(monitor.fleet.trackers), 5, "both endpoints")
        assert monitor.sources[0].client() is monitor.sources[1].client()


class ManualClock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.t

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.t += seconds


def test_the_monitor_does_not_convict_workers_for_its_own_stall():
    clock = ManualClock()
    monitor = Monitor(settings(tick_ms=10, stall_ms=250), [], clock=clock)
    info = WorkerInfo(worker="w", isolation="thread", pid=1, host="elsewhere", interval_ms=100, agent="t",
                      probes=[], connected_at=0.0, last_beat_at=0.0, seq=0)
    def tick() -> None:
        ticks = monitor.ticks
        wait_until(lambda: monitor.ticks > ticks, 5, "an evaluation")

    with monitor:
        tick()
        monitor.hub_message("hub", Snapshot(v=1, hub="hub", sent_at=0.0, workers=[info]), clock())
        for seq in range(1, 4):
            clock.advance(0.1)
            monitor.hub_message("hub", WorkerBeat(worker="w", seq=seq, sent_at=0, recv_at=0, loop_lag_ms=0), clock())
            tick()
        clock.advance(3.0)  # the whole monitor froze for 3 s (a suspended VM, a GIL-holding call)
        wait_until(lambda: any(e.__class__.__name__ == "MonitorStall" for e in list(monitor.fleet.log)), 5,
                   "the monitor to notice its own stall")
        tick()
        assert monitor.fleet.trackers["w"].state == "healthy"
        for _ in range(6):  # silence after the stall, while the monitor runs, is the worker's own
            clock.advance(0.1)
            tick()
        assert monitor.fleet.trackers["w"].state == "starved"
