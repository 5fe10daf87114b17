"""Plain HTTP services heartmon did not write: a real Starlette app on uvicorn, started
on a free loopback port, watched the way a new user would (``heartmon events``) and
through the engine itself. A service hogging its event loop is starved, not dead; a
killed one is dead; a port that accepts and never answers is alive and not serving."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import psutil

from heartmon.config import load_settings
from heartmon.monitor import Monitor
from heartmon.view import ViewRequest
from tests.harness import free_port, wait_until
from tests.systems import start_asgi


def hog(port: int, seconds: float) -> threading.Thread:
    """Asks the service to run pure Python on its loop; the answer comes when it is done."""
    thread = threading.Thread(target=lambda: httpx.get(f"http://127.0.0.1:{port}/hog?s={seconds}", timeout=60),
                              daemon=True)
    thread.start()
    return thread


def row(monitor: Monitor, name: str):
    return next((r for r in monitor.view(ViewRequest(height=1000)).rows if r.name == name), None)


def test_events_shows_a_service_hogging_its_loop_as_starved_then_recovered(services, launch):
    """The on-call case, with the defaults: a 1 s poll, a 2 s timeout, and a handler that
    keeps uvicorn's only loop for 8 s. Before, this was late and never starved: a busy
    service and a dead one looked the same."""
    port = free_port()
    start_asgi(services, port)
    events = launch("events", f"api=http://127.0.0.1:{port}/healthz", "--json", ready=None)
    time.sleep(2.5)  # a few answered polls first
    hog(port, 8).join(30)
    lines = []
    while not any(e.get("event") == "recovered" for e in lines):
        line = events.read_until(r"^\{", timeout_s=30).string
        lines.append(json.loads(line))
    moves = [(e["from"], e["to"]) for e in lines]
    assert ("late", "starved") in moves, moves
    assert all(to != "dead" for _, to in moves), moves
    starved = next(e for e in lines if e["to"] == "starved")
    assert "but alive" in starved["reason"], starved
    recovered = lines[-1]
    assert recovered["from"] == "starved" and recovered["to"] == "healthy"
    assert recovered["episode_ms"] >= 5000, recovered  # the whole silence, as one episode


def _settings():
    return load_settings(overrides={"monitor": {"http_interval_ms": 200, "http_timeout_ms": 400}})


def test_a_killed_service_is_dead_at_once_and_comes_back_when_restarted(services):
    port = free_port()
    service = start_asgi(services, port)
    with Monitor(_settings(), [f"api=http://127.0.0.1:{port}/healthz"]) as monitor:
        wait_until(lambda: (r := row(monitor, "api")) and r.state == "healthy" and r.p99_s is not None, 30,
                   "the service to be healthy")
        detail = monitor.view(ViewRequest(detail=row(monitor, "api").key)).detail
        assert detail is not None and detail.pid == service.pid  # the pid listening on its port
        service.kill()
        killed = time.monotonic()
        wait_until(lambda: row(monitor, "api").state == "dead", 30, "the killed service to be dead")
        entries = monitor.view(ViewRequest(height=0)).entries
        death = [e for e in entries if getattr(e, "to_state", None) == "dead"][-1]
        assert death.reason == "process gone", death
        # its pid was gone: no need to wait out the dead threshold (10 × 200 ms)
        assert time.monotonic() - killed < 30
        start_asgi(services, port)
        wait_until(lambda: row(monitor, "api").state == "healthy", 30, "the restarted service to be healthy")


def test_a_port_that_accepts_but_never_answers_is_starved_and_a_closed_one_dead():
    """The kernel completes a TCP handshake for a process whose loop never gets to it:
    alive, not serving. Once nothing listens any more, the connection is refused: that
    is no evidence of life, and the silence ends dead."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # never accepted: requests wait in the backlog
    port = listener.getsockname()[1]
    try:
        with Monitor(_settings(), [f"stuck=http://127.0.0.1:{port}/healthz"]) as monitor:
            wait_until(lambda: (r := row(monitor, "stuck")) and r.state == "starved", 30,
                       "a port that accepts and never answers to be starved")
            detail = monitor.view(ViewRequest(detail=row(monitor, "stuck").key)).detail
            assert detail.vouched == "accepts connections but does not answer"
            assert monitor.view().sources[0].detail.startswith("accepts connections but does not answer")
            listener.close()
            wait_until(lambda: row(monitor, "stuck").state == "dead", 30, "a refused port to be dead")
            assert monitor.view().sources[0].detail.startswith("ConnectError")
    finally:
        listener.close()


class RawServer:
    """A loopback HTTP server that misbehaves on purpose, one way per mode: an endless
    200 body, a 200 whose body trickles, headers that trickle and never end."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            if self.mode == "endless":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
                chunk = b"x" * 65536
                while not self.stopped.is_set():
                    conn.sendall(chunk)
            elif self.mode == "trickle-body":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                while not self.stopped.is_set():
                    conn.sendall(b"x")
                    time.sleep(0.05)
            else:  # trickle-headers: a status line that never ends
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while not self.stopped.is_set():
                    conn.sendall(b"X-Slow: 1\r\n")
                    time.sleep(0.05)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()


def test_an_endless_body_is_not_read_to_its_end_and_a_trickle_cannot_hold_a_poll():
    """A 200 with an endless body is a healthy answer, read only up to a bound (memory
    stays flat); a body that trickles is an answer too. Headers that trickle and never
    end are a request taken in and never answered: starved, never a poll that hangs."""
    servers = {mode: RawServer(mode) for mode in ("endless", "trickle-body", "trickle-headers")}
    sources = [f"{mode}=http://127.0.0.1:{server.port}/healthz" for mode, server in servers.items()]
    process = psutil.Process()
    try:
        with Monitor(_settings(), sources) as monitor:
            wait_until(lambda: (r := row(monitor, "endless")) and r.p99_s is not None, 30, "endless to answer twice")
            wait_until(lambda: (r := row(monitor, "trickle-body")) and r.p99_s is not None, 30,
                       "trickle-body to answer twice")
            wait_until(lambda: (r := row(monitor, "trickle-headers")) and r.state == "starved", 30,
                       "trickle-headers to be starved")
            before = process.memory_info().rss
            time.sleep(3)  # some fifteen more polls of each
            assert process.memory_info().rss - before < 50 * 1024 * 1024
            assert row(monitor, "endless").state == "healthy"
            assert row(monitor, "trickle-body").state == "healthy"
            details = {s.label.split("=")[0]: s.detail for s in monitor.view().sources}
            assert details["trickle-headers"].startswith("accepts connections but does not answer"), details
    finally:
        for server in servers.values():
            server.close()
