"""The monitor's seams: HTTP endpoints through httpx's MockTransport, its clock injected."""

import threading
import time

import httpx

from heartmon.config import load_settings
from heartmon.monitor import Burning, Monitor
from heartmon.protocol import Snapshot, WorkerBeat, WorkerInfo
from heartmon.view import ViewRequest
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


def _row(monitor: Monitor, name: str):
    view = monitor.view(ViewRequest(height=1000))
    return next((row for row in view.rows if row.name == name), None)


def test_http_answers_are_beats_and_failures_missed_beats():
    endpoint = Endpoint()
    monitor = Monitor(settings(), ["api=http://svc.test/health"], transport=httpx.MockTransport(endpoint.handler))
    with monitor:
        wait_until(lambda: (row := _row(monitor, "api")) and row.p99_s is not None, 5, "beats from the endpoint")
        assert _row(monitor, "api").state == "healthy"
        assert monitor.view().sources[0].link == "connected"
        endpoint.status = 503
        wait_until(lambda: _row(monitor, "api").state == "late", 5, "a failing endpoint to be late")
        assert monitor.view().sources[0].detail == "HTTP 503"
        endpoint.status = 200
        wait_until(lambda: _row(monitor, "api").state == "healthy", 5, "the endpoint to recover")
        recovery = [e for e in monitor.view(ViewRequest(height=0)).entries if getattr(e, "episode", None)][-1]
        assert recovery.episode.missed >= 2  # the failed polls are the missed beats
        endpoint.status = 0
        wait_until(lambda: _row(monitor, "api").state == "dead", 5,
                   "an unreachable endpoint to be dead (no evidence of life)")
        endpoint.status = 200
        wait_until(lambda: _row(monitor, "api").state == "healthy", 5, "an answer to revive it")
    assert endpoint.overlaps == 0


def test_one_client_serves_every_endpoint(monkeypatch):
    """httpx's seam: one long-lived client whatever the number of endpoints, so that
    connections are pooled and the transport can be swapped in one place."""
    made = []

    class Counted(httpx.AsyncClient):
        def __init__(self, *args, **kwargs) -> None:
            made.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(httpx, "AsyncClient", Counted)
    endpoint = Endpoint()
    monitor = Monitor(settings(), ["a=http://a.test/", "b=http://b.test/", "c=http://c.test/"],
                      transport=httpx.MockTransport(endpoint.handler))
    with monitor:
        wait_until(lambda: all(_row(monitor, n) for n in "abc") and endpoint.calls >= 9, 5, "every endpoint, polled")
    assert len(made) == 1


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
    with monitor:
        monitor.hub_message("hub", Snapshot(v=1, sent_at=0.0, workers=[info]), clock())
        for seq in range(1, 4):
            clock.advance(0.1)
            monitor.hub_message("hub", WorkerBeat(worker="w", seq=seq, sent_at=0, recv_at=0, loop_lag_ms=0), clock())
        clock.advance(3.0)  # the whole monitor froze for 3 s (a suspended VM, a GIL-holding call)
        wait_until(lambda: any(e.__class__.__name__ == "MonitorStall"
                               for e in monitor.view(ViewRequest(height=0)).entries), 5,
                   "the monitor to notice its own stall")
        time.sleep(0.3)  # the deadlines that fell due in the stall are judged now
        assert _row(monitor, "w").state == "healthy"
        assert [e for e in monitor.view(ViewRequest(height=0)).entries if getattr(e, "to_state", None)] == []
        for _ in range(6):  # silence after the stall, while the monitor runs, is the worker's own
            clock.advance(0.1)
            time.sleep(0.05)
        wait_until(lambda: _row(monitor, "w").state == "starved", 5, "the silence after the stall to starve it")


def test_a_burning_pid_stays_burning_while_its_share_of_a_core_flickers():
    """Three CPU-bound processes on two cores get about two thirds of a core each, read
    every half second as 80 %, 45 %, 30 %…: a starved worker among them must keep its
    evidence of life, or it is called dead while it works. Idle (a sleeping task) ends it."""
    burning = Burning(busy=50, idle=10)
    key = ("celery+redis://127.0.0.1:6379/0", "solo@host")
    assert not burning.reading(key, True, 30)  # never burned: 30 % is not evidence
    assert [burning.reading(key, True, p) for p in (80, 45, 30, 12, 60)] == [True] * 5
    assert not burning.reading(key, True, 5)  # it stopped working
    assert not burning.reading(key, True, 30)  # and must pass the busy line again
    assert burning.reading(key, True, 95)
    assert not burning.reading(key, False, 95)  # gone is gone
    other = ("celery+redis://127.0.0.1:6379/0", "other@host")
    burning.reading(other, True, 99)
    burning.keep([key])
    assert not burning.reading(other, True, 30)  # forgotten once no longer watched
