"""The monitor's engine: sources in, judged fleet out, as frozen views.

Arrivals are stamped with the monitor's own clock on an event loop that does nothing
else, fed to the fleet state, and judged at their deadlines (the earliest threshold
any silent worker will cross), not on a periodic scan. Readers get
:class:`~heartmon.view.FleetView` values from :meth:`Monitor.view`; nothing outside this
module touches the fleet state, its trackers or the lock.

The loop also measures its own lag: when it stalled, the silence it missed is excused
instead of blamed on workers (Cassandra does the same). ``heartmon events`` and
``heartmon check`` run this engine on a thread of their own process; the TUI runs it
in a child process (:mod:`heartmon.monitor_process`), so that drawing the screen and
taking in beats never share an interpreter lock.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

import httpx
import psutil

from heartmon import py_spy
from heartmon.config import Settings
from heartmon.detector import Key, Tracker, Transition
from heartmon.fleet_state import FleetState
from heartmon.protocol import (
    Snapshot,
    WorkerBeat,
    WorkerInfo,
    WorkerJoined,
    WorkerLeft,
    WorkerProbeFinished,
    WorkerProbeStarted,
    WorkerStack,
)
from heartmon.recording import files as recordings
from heartmon.recording.journal import RecordingError
from heartmon.recording.recorder import Recorder
from heartmon.sources import Heard, Source, parse_source
from heartmon.stacks import Stack
from heartmon.view import FleetView, SourceView, Viewer, ViewRequest

JUDGE_SLACK_S = 0.002
"""Deadlines that fall within this of each other are judged in one wake-up: a thousand
workers' deadlines cost at most a few hundred wake-ups a second, each at most this late."""
SPIES_AT_ONCE = 2
"""py-spy runs at most this many at a time (each takes some 15 ms of a core): a fleet
that goes late at once is read a few workers at a time, not all at once."""


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
        self._fleet = FleetState(settings.detector)
        self._viewer = Viewer(self._fleet)
        self._lock = threading.Lock()
        self.hostname = hostname or socket.gethostname()
        self.transport = transport
        self._client: httpx.AsyncClient | None = None
        self.sources: list[Source] = [parse_source(spec, settings, self._http) for spec in sources]
        self._owner: dict[str, str] = {}
        """Which hub each worker name was heard from, for a resync after a reconnect."""
        self.lag_ms = 0.0
        """How late the ingest loop's last tick was: the monitor's own lag."""
        self.crashed: BaseException | None = None
        self.wall_offset = time.time() - clock() if epoch_offset is None else epoch_offset
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._alarm: asyncio.TimerHandle | None = None
        self._alarm_due = 0.0
        self._alive_at = clock()
        self._subscribers: list[Callable[[FleetView], None]] = []
        self._py_spy = py_spy.find(settings.monitor.py_spy)
        self._spied: set[tuple[Key, float]] = set()
        """(worker, start of its block) py-spy was asked to read: once per block."""
        self._spies: set[asyncio.Task] = set()
        self._spying: asyncio.Semaphore | None = None
        self._notes: set[str] = set()
        self.recorder: Recorder | None = None
        self._not_recording = "not recording"
        if settings.recording.enabled and settings.recording.file is not None:
            self._record(settings.recording.file)

    @property
    def recording(self) -> str:
        """What the header says about the recording: where it goes, or why it stopped
        or never started."""
        return self.recorder.status if self.recorder is not None else self._not_recording

    def _record(self, path: Path) -> None:
        """Records every input of the fleet state from now on. A recording that cannot
        start or goes wrong is said once; the monitor watches on without it."""
        r = self.settings.recording
        default = path.parent == recordings.directory()
        meta = {"started": datetime.fromtimestamp(self.wall(self.now())).astimezone().isoformat(),
                "wall_offset": repr(self.wall_offset), "hostname": self.hostname,
                "thresholds": self.settings.detector.model_dump_json(), "log_size": self._fleet.log.maxlen,
                "sources": json.dumps([{"label": s.status.label, "kind": s.kind} for s in self.sources])}
        try:
            self.recorder = Recorder(path, meta, flush_s=r.flush_ms / 1000, max_bytes=r.max_mb * 1e6,
                                     max_age_s=r.max_age_days * 86400, prune=path.parent if default else None,
                                     on_stop=self._recording_stopped)
        except RecordingError as exc:
            self._not_recording = f"not recording: {exc}"
            self._fleet.notice(self.now(), self._not_recording)
            return
        self.recorder.attach(self._fleet)

    def _recording_stopped(self, line: str) -> None:
        """From the recorder's thread: said in the log, on the ingest loop."""
        def say() -> None:
            with self._lock:
                self._fleet.notice(self.now(), line)

        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(say)
        else:
            say()

    # --- life -------------------------------------------------------------------

    def start(self) -> Monitor:
        """Runs ingest on a thread with its own event loop."""
        ready = threading.Event()

        def run() -> None:
            async def main() -> None:
                ready.set()
                await self.run()

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
            try:
                self._loop.call_soon_threadsafe(self._task.cancel)
            except RuntimeError:  # the loop closed meanwhile
                pass
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def run(self) -> None:
        """Ingest until cancelled, on the running loop."""
        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        self._spying = asyncio.Semaphore(SPIES_AT_ONCE)
        self._alive_at = self.now()  # the loop's stalls count from its start, not from construction
        try:
            async with httpx.AsyncClient(transport=self.transport) as client:
                self._client = client
                await asyncio.gather(self._tick(), self._evidence(), *(source.run(self) for source in self.sources))
        finally:
            if self._alarm is not None:
                self._alarm.cancel()
            for spy in self._spies:
                spy.cancel()
            if self.recorder is not None:
                self.recorder.close(self.now())

    # --- the one read API ---------------------------------------------------------

    def view(self, request: ViewRequest = ViewRequest()) -> FleetView:
        """The fleet as the request wants to see it, now: plain values, safe to keep."""
        now = self.now()
        sources = tuple(SourceView(s.status.label, s.kind, s.status.link, s.status.detail, s.status.refused,
                                   s.status.last_refused) for s in self.sources)
        crashed = f"{type(self.crashed).__name__}: {self.crashed}" if self.crashed else None
        with self._lock:
            return self._viewer.view(request, now, self.wall_offset, sources=sources, ingest_lag_ms=self.lag_ms,
                                     crashed=crashed, recording=self.recording)

    def subscribe(self, callback: Callable[[FleetView], None]) -> None:
        """For a screen: ``callback`` gets the view of every :meth:`request`."""
        self._subscribers.append(callback)

    def request(self, request: ViewRequest) -> None:
        """A screen asks for a view; in-process it is built and handed over at once."""
        self.asked(request)
        view = self.view(request)
        for callback in self._subscribers:
            callback(view)

    def judge(self, now: float) -> None:
        """Judges every deadline due by ``now``: what the alarm does on the ingest loop,
        for a monitor that is fed by hand on an injected clock (scripted fleets)."""
        with self._lock:
            self._fleet.evaluate_due(now)

    def wall(self, t: float) -> float:
        """The monitor's clock (monotonic) as seconds since the epoch, for display."""
        return t + self.wall_offset

    # --- the ingest loop ----------------------------------------------------------

    def now(self) -> float:
        return self.clock()

    def _http(self) -> httpx.AsyncClient:
        assert self._client is not None, "HTTP sources run inside the ingest loop"
        return self._client

    def _awake(self, now: float) -> None:
        """Called whenever the loop runs a timer: a gap since the last one longer than
        the stall bound was the monitor's own stall, excused for every worker."""
        if now - self._alive_at > self.settings.monitor.stall_ms / 1000:
            self._fleet.monitor_stalled(self._alive_at, now)
        self._alive_at = now

    async def _tick(self) -> None:
        """Measures the loop's own lag; judging is done by the deadline alarm."""
        period = self.settings.monitor.tick_ms / 1000
        last = self.now()
        while True:
            await asyncio.sleep(max(0.0, last + period - self.now()))
            now = self.now()
            self.lag_ms = max(0.0, (now - (last + period)) * 1000)
            with self._lock:
                self._awake(now)
            last = now

    def _arm(self) -> None:
        """Sets the alarm for the earliest deadline, if it is earlier than the one set."""
        due = self._fleet.next_due()
        if due is None or self._loop is None or (self._alarm is not None and self._alarm_due <= due):
            return
        if self._alarm is not None:
            self._alarm.cancel()
        self._alarm_due = due
        self._alarm = self._loop.call_later(max(0.0, due - self.now()) + JUDGE_SLACK_S, self._on_alarm)

    def _on_alarm(self) -> None:
        self._alarm = None
        now = self.now()
        with self._lock:
            self._awake(now)
            self._spy_on(self._fleet.evaluate_due(now))
            self._arm()

    # --- stacks -----------------------------------------------------------------

    def _spy_on(self, changes: list[Transition]) -> None:
        """A local worker that just went silent: py-spy reads where it is stuck, once per
        block, from its first sign (late), so that the move to starved can name it."""
        if self._loop is None or self._spying is None:
            return
        for change in changes:
            if change.to_state not in ("late", "starved"):
                continue
            tracker = self._fleet.trackers.get((change.source, change.worker))
            if (tracker is None or tracker.blocked_since is None or tracker.current_stack() is not None
                    or (tracker.key, tracker.blocked_since) in self._spied or not (pid := self._local_pid(tracker))):
                continue
            if self._py_spy is None:
                if self.settings.monitor.py_spy:  # not installed; turned off says nothing
                    self._note(tracker.key, py_spy.NOT_INSTALLED)
                continue
            if len(self._spied) > 4096:  # blocks long over; only the current ones matter
                self._spied.clear()
            self._spied.add((tracker.key, tracker.blocked_since))
            self._start_spy(tracker.key, pid, self._py_spy)

    def _local_pid(self, tracker: Tracker) -> int | None:
        """The worker's pid if it runs on this machine: one its CPU can be read of, and
        py-spy can read."""
        return tracker.pid if tracker.pid and tracker.host == self.hostname else None

    def _start_spy(self, key: Key, pid: int, command: str, via: str = "py-spy") -> None:
        assert self._loop is not None
        spy = self._loop.create_task(self._spy(key, pid, command, via))
        self._spies.add(spy)
        spy.add_done_callback(self._spies.discard)

    async def _spy(self, key: Key, pid: int, command: str, via: str) -> None:
        assert self._spying is not None
        async with self._spying:
            try:
                frames, more = await py_spy.dump(command, pid, self.settings.monitor.py_spy_timeout_ms / 1000)
            except (py_spy.SpyError, OSError) as exc:
                with self._lock:
                    self._note(key, str(exc))
                return
        now = self.now()
        with self._lock:
            tracker = self._fleet.trackers.get(key)
            since = tracker.blocked_since if tracker is not None else None
            blocked_ms = None if since is None else round((now - since) * 1000, 3)
            self._fleet.stack(now, key, Stack(tuple(frames), now, blocked_ms, via, now, more))

    def asked(self, request: ViewRequest) -> None:
        """What a request asks besides a view: a worker's stack read now."""
        if request.spy is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._spy_asked, request.spy)

    def _spy_asked(self, key: Key) -> None:
        with self._lock:
            tracker = self._fleet.trackers.get(key)
            if tracker is None:
                return
            if not (pid := self._local_pid(tracker)):
                self._fleet.stack_note(key, f"py-spy reads workers on this machine ({self.hostname}) only; "
                                            f"this one runs on {tracker.host or 'a host not known'}")
            elif self._py_spy is None:
                self._note(key, py_spy.NOT_INSTALLED if self.settings.monitor.py_spy else
                           "py-spy is turned off (monitor.py_spy is empty)")
            else:
                self._start_spy(key, pid, self._py_spy, "py-spy, asked")

    def _note(self, key: Key, note: str) -> None:
        """Why a worker's stack could not be read: on its detail screen, and once in the
        log for each distinct reason (the pid left out, so that a fleet says it once)."""
        self._fleet.stack_note(key, note)
        general = re.sub(r"pid \d+", "a pid", note)
        if general not in self._notes:
            self._notes.add(general)
            self._fleet.notice(self.now(), note)

    async def _evidence(self) -> None:
        """Local workers: is the pid still there, is it burning CPU?"""
        m = self.settings.monitor
        every = m.evidence_ms / 1000
        processes: dict[Key, psutil.Process] = {}
        burning = Burning(m.busy_cpu_percent, m.idle_cpu_percent)
        while True:
            await asyncio.sleep(every)
            with self._lock:
                local = [(t.key, pid) for t in self._fleet.trackers.values()
                         if t.state not in ("dead", "unknown") and (pid := self._local_pid(t))]
            readings = [(key, *_read_process(processes, key, pid)) for key, pid in local]
            now = self.now()
            for key, alive, percent in readings:
                self.pid_reading(key, now, alive, burning.reading(key, alive, percent))
            burning.keep(key for key, _ in local)

    def pid_reading(self, key: Key, now: float, alive: bool, burning: bool) -> None:
        """What the evidence loop read of a local worker's pid (a scripted fleet says it by hand)."""
        with self._lock:
            self._spy_on(self._fleet.evidence(now, key, alive, burning))
            self._arm()

    # --- what sources report (called on the ingest loop) --------------------------

    def hub_message(self, source: str, message: object, now: float) -> None:
        """The agent's protocol, relayed by one of heartmon's hubs."""
        fleet = self._fleet
        if type(message) is WorkerBeat:  # nearly every message: the shortest path
            with self._lock:
                if fleet.beat(now, (source, message.worker), message.seq, message.main_blocked_ms,
                              message.loop_lag_ms):
                    self._arm()  # a state changed: a deadline may have moved earlier
            return
        with self._lock:
            match message:
                case WorkerJoined(info=info):
                    self._join(source, info, now, connected=True)
                case WorkerLeft():
                    fleet.left(now, (source, message.worker), message.reason)
                case WorkerProbeStarted():
                    fleet.probe_started(now, (source, message.worker), message.id, message.probe, message.duration_s)
                case WorkerProbeFinished():
                    fleet.probe_finished(now, (source, message.worker), message.id, message.elapsed_s, message.error)
                case WorkerStack():
                    # Taken on the worker's clock; shown on ours, never later than it came.
                    taken = min(now, message.taken_at - self.wall_offset)
                    fleet.stack(now, (source, message.worker), Stack(tuple(message.frames), taken, message.blocked_ms,
                                                                     message.via, now, message.more))
                case Snapshot():
                    self._resync(source, message, now)
            self._arm()

    def joined(self, source: str, info: WorkerInfo, now: float, connected: bool | None) -> None:
        with self._lock:
            self._join(source, info, now, connected)
            self._arm()

    def _join(self, source: str, info: WorkerInfo, now: float, connected: bool | None, heard_at: float | None = None,
              seq: int | None = None) -> None:
        """``heard_at`` and ``seq``: its last beat, when a hub's snapshot says so."""
        self._owner[info.worker] = source
        self._fleet.join(now, (source, info.worker), info.interval_ms / 1000, connected=connected,
                         isolation=info.isolation, pid=info.pid, host=info.host, heard_at=heard_at, seq=seq)

    def judging(self, source: str, name: str) -> bool:
        return self._fleet.state_of((source, name)) not in (None, "dead", "unknown")

    def _resync(self, source: str, snapshot: Snapshot, now: float) -> None:
        """After a (re)connect: the hub's list is the truth. Who left while the monitor was
        disconnected is dead; who is missing after the hub itself was lost may still be
        reconnecting to it, and gets the time to."""
        present = set()
        for info in snapshot.workers:
            present.add(info.worker)
            heard = info.last_beat_at if info.last_beat_at is not None else info.connected_at
            self._join(source, info, now, connected=True, heard_at=now - max(0.0, snapshot.sent_at - heard),
                       seq=info.seq)
            if info.probe:
                self._fleet.probe_running((source, info.worker), info.probe)
        for name, owner in self._owner.items():
            if owner == source and name not in present:
                self._fleet.missing(now, (source, name), "left while the monitor was disconnected")
        self._fleet.evaluate(now)  # judge the snapshot's ages at once

    def source_lost(self, source: str, now: float) -> None:
        """The stream broke: nothing is known of its workers until it is back."""
        with self._lock:
            self._fleet.source_lost(now, source)

    def heard(self, source: str, name: str, now: float, beat: Heard) -> None:
        """A beat of a worker heartmon did not write. Its first beat, or one after it was
        dead or unknown, is its hello: these systems have no other."""
        key = (source, name)
        fleet = self._fleet
        with self._lock:
            # a join revives a dead or unknown worker, and takes a live one's new interval or pid
            fleet.join(now, key, beat.interval_s, connected=None, isolation=beat.kind, pid=beat.pid, host=beat.host)
            fleet.beat(now, key, seq=beat.seq, latency_ms=beat.latency_ms)
            fleet.doing(key, beat.doing)  # after: the beat that ends a silence names what ran during it
            self._arm()

    def listed(self, source: str, name: str, now: float, info: Heard) -> None:
        key = (source, name)
        with self._lock:
            if self._fleet.state_of(key) is None:
                self._fleet.join(now, key, info.interval_s, connected=None, isolation=info.kind, pid=info.pid,
                                 host=info.host)
                self._arm()

    def gone(self, source: str, name: str, now: float, reason: str) -> None:
        with self._lock:
            self._fleet.left(now, (source, name), reason)

    def missing(self, source: str, name: str, now: float, reason: str) -> None:
        with self._lock:
            self._fleet.missing(now, (source, name), reason)
            self._arm()

    def vouch(self, source: str, name: str, now: float, because: str | None) -> None:
        with self._lock:
            self._spy_on(self._fleet.vouch(now, (source, name), because))
            self._arm()


class Burning:
    """Whether each local pid is burning CPU, with hysteresis: burning starts above
    ``busy`` percent and ends only below ``idle``. On a machine with more CPU-bound
    processes than cores, a starved worker's share of a core flickers around any single
    line, and one low reading must not take its evidence of life away (it would be
    called dead while it works)."""

    def __init__(self, busy: float, idle: float) -> None:
        self.busy, self.idle = busy, idle
        self._on: set[Key] = set()

    def reading(self, key: Key, alive: bool, percent: float) -> bool:
        if alive and (percent >= self.busy or (key in self._on and percent >= self.idle)):
            self._on.add(key)
            return True
        self._on.discard(key)
        return False

    def keep(self, keys: Iterable[Key]) -> None:
        """Forgets the pids no longer watched."""
        self._on.intersection_update(keys)


def _read_process(cache: dict[Key, psutil.Process], key: Key, pid: int) -> tuple[bool, float]:
    """(alive, CPU percent since the last reading) for a local pid; a zombie counts as
    gone. A pid of another user (AccessDenied) is alive, its CPU unknown: 0."""
    try:
        proc = cache.get(key)
        if proc is None or proc.pid != pid:
            proc = cache[key] = psutil.Process(pid)
            proc.cpu_percent(None)  # the first reading only starts the measurement
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False, 0.0
        return True, proc.cpu_percent(None)
    except psutil.NoSuchProcess:
        cache.pop(key, None)
        return False, 0.0
    except psutil.AccessDenied:
        return True, 0.0
