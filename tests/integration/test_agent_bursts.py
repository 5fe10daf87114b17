"""The worker-side agent at its edges, with real processes on loopback.

A burst of injects must never wedge a worker: whatever its hub sends, the heartbeat
keeps going. And a worker says what it is doing (connected, hub unavailable) the same
way in every isolation mode, the process mode's heartbeat child included.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import subprocess
import time

import httpx
import psutil
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from heartmon.protocol import Inject, decode_from_worker, encode
from heartmon.stopping import stop_processes
from tests.harness import HEARTMON, free_port, wait_gone, wait_until, workers

BURST = 800
"""Injects fired at once, each on its own connection so that they reach the worker
faster than it runs them. Each one the worker takes is a message to its main process
and, once run, two reports back: a few hundred filled both directions of the pipe
between a process worker and its heartbeat child, and both blocked writing."""


async def _burst(base_url: str, worker: str, count: int) -> list[object]:
    """Fires ``count`` short sync-sleep injects at once; any answer, or none, is fine."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:
        return await asyncio.gather(
            *(client.post(f"/api/workers/{worker}/inject", params={"probe": "sync-sleep", "duration_s": 0.01})
              for _ in range(count)),
            return_exceptions=True,
        )


def _beating(client: httpx.Client, name: str, over_s: float = 2.0) -> bool:
    """True when the worker is healthy or busy and its beats advance over ``over_s``."""
    before = workers(client).get(name)
    if not before or before["state"] not in ("healthy", "busy") or before["seq"] is None:
        return False
    time.sleep(over_s)
    after = workers(client).get(name)
    return bool(
        after and after["state"] in ("healthy", "busy")
        and after["seq"] > before["seq"] and after["last_beat_at"] > before["last_beat_at"]
    )


def test_a_burst_of_injects_never_wedges_a_process_worker(launch):
    # --quiet: the mock's event lines (two per probe) would fill its stdout pipe, which
    # no one reads here, and block the hub itself.
    mock = launch("mock", "--port", "0", "--workers", "process:1,thread:1,none:1", "--interval-ms", "100", "--quiet")
    with httpx.Client(base_url=mock.http, timeout=10) as client:
        names = ("process-1", "thread-1", "none-1")
        wait_until(lambda: all(workers(client).get(n, {}).get("available") for n in names), 30, "the fleet to beat")
        answers = asyncio.run(_burst(mock.http, "process-1", BURST))
        assert len(answers) == BURST
        wait_until(lambda: _beating(client, "process-1"), 20, "process-1 to beat again after the burst", every_s=0.2)
        # The others never shared anything with it, and it still takes work.
        assert all(workers(client)[n]["available"] for n in names[1:])
        again = client.post("/api/workers/process-1/inject", params={"probe": "sync-sleep", "duration_s": 0.01})
        assert again.status_code == 202, again.text


class _BurstingHub:
    """A hub that bounds nothing: it sends every inject at once to the first worker that
    says hello, and records what comes back. The real hub bounds injects per worker; the
    worker must not depend on it."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.ids = {f"b{i:05d}" for i in range(count)}
        self.beats: list[tuple[float, int]] = []
        self.finished: dict[str, str | None] = {}
        self.started: set[str] = set()
        self.sent_at: float | None = None

    async def handler(self, ws: ServerConnection) -> None:
        sender = asyncio.create_task(self._send_all(ws))
        try:
            decode_from_worker(await ws.recv())  # hello
            async for frame in ws:
                message = decode_from_worker(frame)
                if message.type == "beat":
                    self.beats.append((time.monotonic(), message.seq))
                elif message.type == "probe_started":
                    self.started.add(message.id)
                elif message.type == "probe_finished":
                    self.finished[message.id] = message.error
        except ConnectionClosed:
            pass  # the test is over, or the worker went: what it sent is what counts
        finally:
            sender.cancel()

    async def _send_all(self, ws: ServerConnection) -> None:
        for command_id in sorted(self.ids):
            await ws.send(encode(Inject(id=command_id, probe="sync-sleep", duration_s=0.01)))
        self.sent_at = time.monotonic()

    def largest_gap_s(self, since: float) -> float:
        times = [since] + [t for t, _ in self.beats if t >= since] + [time.monotonic()]
        return max(b - a for a, b in zip(times, times[1:], strict=False))


async def test_a_process_worker_beats_through_a_burst_from_a_hub_that_bounds_nothing(launch):
    """2,000 injects straight down the worker's connection: the heartbeat child passes
    at most a bounded number to its main process and answers the rest itself, so it
    never waits on a main process that reads nothing, and beats all along."""
    hub = _BurstingHub(2000)
    async with serve(hub.handler, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        launch("worker", "--hub", url, "--isolation", "process", "--name", "burst", "--interval-ms", "100",
               ready=None)
        deadline = time.monotonic() + 30
        while not hub.beats and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert hub.beats, "the worker never beat"
        first = hub.beats[0][0]
        while (len(hub.finished) < hub.count or hub.sent_at is None) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            assert hub.largest_gap_s(first) < 5, f"no beat for {hub.largest_gap_s(first):.1f} s during the burst"
        assert set(hub.finished) == hub.ids, f"{hub.count - len(hub.finished)} injects never answered"
        seq = hub.beats[-1][1]
        await asyncio.sleep(1.0)
        assert hub.beats[-1][1] > seq, "the worker stopped beating after the burst"
        assert hub.largest_gap_s(first) < 5
    refused = {i for i, error in hub.finished.items() if error and error.startswith("refused")}
    ran = {i for i, error in hub.finished.items() if error is None}
    assert refused and ran, "some injects run, those past the worker's bound are refused"
    assert ran <= hub.started and not refused & hub.started


# --- what a worker prints --------------------------------------------------------


class _Worker:
    """A `heartmon worker` whose stderr (where logging goes) is read line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*HEARTMON, "worker", *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self.tree: dict[int, psutil.Process] = {}

    def remember_tree(self) -> None:
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.tree.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    def read_until(self, text: str, timeout_s: float = 15.0) -> str:
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stderr, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.remember_tree()
            if selector.select(timeout=min(0.2, max(0.0, deadline - time.monotonic()))):
                line = self.proc.stderr.readline()
                if not line:
                    break
                self.lines.append(line.rstrip("\n"))
                if text in line:
                    return line
        raise AssertionError(f"no line with {text!r} on stderr; so far: {self.lines}")

    def stop(self) -> None:
        """By pid, the heartbeat child included; whatever happened before."""
        self.remember_tree()
        stop_processes([self.proc], 10.0)
        for proc in wait_gone(list(self.tree.values())):
            proc.kill()
        self.proc.stderr.close()


def test_a_process_worker_says_when_its_hub_is_unavailable_and_when_it_connects(launch):
    port = free_port()  # nothing listens there
    worker = _Worker("--hub", f"ws://127.0.0.1:{port}", "--isolation", "process", "--name", "p1",
                     "--interval-ms", "100")
    try:
        line = worker.read_until("unavailable", 15)
        assert "p1" in line and f"127.0.0.1:{port}" in line
        assert worker.tree, "a process worker has a heartbeat child"
        hub = launch("hub", "--port", str(port))
        line = worker.read_until("connected to", 30)
        assert "p1" in line and f"127.0.0.1:{port}" in line
        with httpx.Client(base_url=hub.http, timeout=10) as client:
            wait_until(lambda: workers(client).get("p1", {}).get("available"), 15, "p1 to beat")
    finally:
        worker.stop()


def test_every_isolation_prints_the_same_connected_line(launch):
    hub = launch("hub", "--port", "0")
    for isolation in ("none", "thread", "process"):
        worker = _Worker("--hub", hub.url, "--isolation", isolation, "--name", f"w-{isolation}")
        try:
            line = worker.read_until("connected to", 20)
            assert line.split(" ", 3)[2:] == ["heartmon.agent", f"w-{isolation} connected to {hub.url}/connect\n"]
        finally:
            worker.stop()

