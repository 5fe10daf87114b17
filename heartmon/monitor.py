"""The monitor's engine: an ingest thread that the UI cannot block.

Arrivals are stamped with the monitor's own clock on a thread with its own event loop,
fed to the fleet state, and the detector is evaluated there on a fixed tick. Whoever
shows the result (the TUI, ``heartmon events``, ``heartmon check``) reads the fleet
state and its log under a lock; none of them can delay a timestamp. The ingest loop also measures its own lag: when it stalled, the silence it
missed is excused instead of blamed on workers (Cassandra does the same).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable

import httpx
import psutil

from heartmon.config import Settings
from heartmon.fleet_state import FleetState
from heartmon.protocol import (
    Snapshot,
    WorkerBeat,
    WorkerJoined,
    WorkerLeft,
    WorkerProbeFinished,
    WorkerProbeStarted,
)
from heartmon.sources import HttpSource, HubSource, parse_source


class Monitor:
    def __init__(
        self,
        settings: Settings,
        sources: list[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
        hostname: str | None = None,
        epoch_offset: float | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.fleet = FleetState(settings.detector)
        self.lock = threading.Lock()
        self.hostname = hostname or socket.gethostname()
        self.transport = transport
        self._client: httpx.AsyncClient | None = None
        m = settings.monitor
        self.sources: list[HubSource | HttpSource] = [
            parse_source(spec, settings.token, m.http_interval_ms / 1000, m.http_timeout_ms / 1000, self._http)
            for spec in sources
        ]
        self.owner: dict[str, str] = {}
        """Which hub each worker was heard from, for a resync after a reconnect."""
        self.lag_ms = 0.0
        """How late the ingest loop's last tick was: the monitor's own lag."""
        self.ticks = 0
        """Evaluations so far: proof that the ingest loop is alive."""
        self.crashed: BaseException | None = None
        self._wall_offset = time.time() - clock() if epoch_offset is None else epoch_offset
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    # --- life -------------------------------------------------------------------

    def start(self) -> Monitor:
        ready = threading.Event()

        def run() -> None:
            async def main() -> None:
                self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
                ready.set()
                await self._ingest()

            try:
                asyncio.run(main())
            except asyncio.CancelledError:
                pass
            except BaseException as exc:  # shown by whoever reads the monitor
                self.crashed = exc
            finally:
                ready.set()

        self._thread = threading.Thread(target=run, name="heartmon-ingest", daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def stop(self) -> None:
        if self._loop is not None and self._task is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wall(self, t: float) -> float:
        """The monitor's clock (monotonic) as seconds since the epoch, for display."""
        return t + self._wall_offset

    # --- the ingest loop ----------------------------------------------------------

    def now(self) -> float:
        return self.clock()

    def _http(self) -> httpx.AsyncClient:
        assert self._client is not None, "HTTP sources run inside the ingest loop"
        return self._client

    async def _ingest(self) -> None:
        async with httpx.AsyncClient(transport=self.transport) as client:
            self._client = client
            await asyncio.gather(self._tick(), self._evidence(), *(source.run(self) for source in self.sources))

    async def _tick(self) -> None:
        period = self.settings.monitor.tick_ms / 1000
        stall = self.settings.monitor.stall_ms / 1000
        last = self.now()
        while True:
            await asyncio.sleep(max(0.0, last + period - self.now()))
            now = self.now()
            lag = now - (last + period)
            self.lag_ms = max(0.0, lag * 1000)
            with self.lock:
                if lag > stall:
                    self.fleet.monitor_stalled(last, now)
                self.fleet.evaluate(now)
            self.ticks += 1
            last = now

    async def _evidence(self) -> None:
        """Local workers: is the pid still there, is it burning CPU?"""
        every = self.settings.monitor.evidence_ms / 1000
        busy_percent = self.settings.monitor.busy_cpu_percent
        processes: dict[str, psutil.Process] = {}
        while True:
            await asyncio.sleep(every)
            with self.lock:
                local = [(t.name, t.pid) for t in self.fleet.trackers.values()
                         if t.pid and t.host == self.hostname and t.state != "dead"]
            readings = [(name, *_read_process(processes, name, pid, busy_percent)) for name, pid in local]
            now = self.now()
            with self.lock:
                for name, alive, busy in readings:
                    self.fleet.evidence(now, name, alive, busy)

    # --- what sources report (called on the ingest loop) --------------------------

    def hub_message(self, source: str, message: object, now: float) -> None:
        fleet = self.fleet
        with self.lock:
            match message:
                case WorkerBeat():
                    fleet.beat(now, message.worker, seq=message.seq, main_blocked_ms=message.main_blocked_ms,
                               loop_lag_ms=message.loop_lag_ms)
                case WorkerJoined(info=info):
                    self.owner[info.worker] = source
                    fleet.join(now, info.worker, info.interval_ms / 1000, connected=True, isolation=info.isolation,
                               pid=info.pid, host=info.host)
                case WorkerLeft():
                    fleet.left(now, message.worker, message.reason)
                case WorkerProbeStarted():
                    fleet.probe_started(now, message.worker, message.id, message.probe, message.duration_s)
                case WorkerProbeFinished():
                    fleet.probe_finished(now, message.worker, message.id, message.elapsed_s, message.error)
                case Snapshot():
                    self._resync(source, message, now)

    def _resync(self, source: str, snapshot: Snapshot, now: float) -> None:
        """After a (re)connect: the hub's list is the truth; who left meanwhile is dead."""
        present = set()
        for info in snapshot.workers:
            present.add(info.worker)
            self.owner[info.worker] = source
            heard = info.last_beat_at if info.last_beat_at is not None else info.connected_at
            self.fleet.join(now, info.worker, info.interval_ms / 1000, connected=True, isolation=info.isolation,
                            pid=info.pid, host=info.host, heard_at=now - max(0.0, snapshot.sent_at - heard),
                            seq=info.seq)
            if info.probe and self.fleet.trackers[info.worker].probe is None:
                self.fleet.trackers[info.worker].probe = info.probe
        for name, owner in self.owner.items():
            if owner == source and name not in present:
                self.fleet.left(now, name, "left while the monitor was disconnected")
        self.fleet.evaluate(now)  # judge the snapshot's ages at once

    def hub_lost(self, source: str, now: float) -> None:
        """The stream broke: whether its workers' connections are open is now unknown."""
        with self.lock:
            for name, owner in self.owner.items():
                tracker = self.fleet.trackers.get(name)
                if owner == source and tracker is not None and tracker.connected:
                    tracker.connected = None

    def http_answer(self, name: str, interval_s: float, now: float, seq: int, latency_ms: float | None) -> None:
        with self.lock:
            tracker = self.fleet.trackers.get(name)
            if tracker is None or (latency_ms is not None and tracker.state == "dead"):
                self.fleet.join(now, name, interval_s, connected=None)  # an answer is a hello
            if latency_ms is not None:
                self.fleet.beat(now, name, seq=seq, latency_ms=latency_ms)


def _read_process(cache: dict[str, psutil.Process], name: str, pid: int, busy_percent: float) -> tuple[bool, bool]:
    """(alive, burning CPU) for a local pid; a zombie counts as gone."""
    try:
        proc = cache.get(name)
        if proc is None or proc.pid != pid:
            proc = cache[name] = psutil.Process(pid)
            proc.cpu_percent(None)  # the first reading only starts the measurement
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False, False
        return True, proc.cpu_percent(None) >= busy_percent
    except psutil.NoSuchProcess:
        cache.pop(name, None)
        return False, False
    except psutil.AccessDenied:
        return True, False
