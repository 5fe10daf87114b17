"""``heartmon matrix --systems``: the seed incident's table with the seed's own software.

heartmon's matrix runs its own agents; this runs the same probes through real Celery
workers (solo, threads, prefork pools) and real Inngest Connect SDK workers (Python;
Node with ``isolateExecution`` on and off when ``node`` is on this machine), all on
loopback: a redis-server of its own, heartmon's Connect gateway. Each system is heard
through the very source ``heartmon watch`` uses, with a recorder in the monitor's
place, so a cell is the largest gap between two beats as heartmon received them while
the probe ran, judged against that worker's own interval.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from heartmon.config import Settings
from heartmon.matrix import STARVED_AFTER_INTERVALS, Matrix, largest_gap
from heartmon.polling import PollTimeout, until
from heartmon.sources import Heard, Source, no_client
from heartmon.systems.launch import Processes, SystemsError, free_port, node_sdk, redis_server

SYSTEMS_DURATION_S = 5.0
"""Probes long enough to show against Celery's 1 s heartbeats (3 s to be called starved)."""
CELERY_POOLS = ("solo", "threads", "prefork")
CELERY_INTERVAL_S = 1
"""Celery's shortest heartbeat interval: ``--heartbeat-interval`` takes whole seconds."""
INNGEST_PYTHON_HEARTBEAT_S = 1
"""The Python SDK beats every 10 s and has no public setting; the experiment uses the
SDK's own test hook for 1 s beats, to be compared with Celery's (its table says so)."""
READY_TIMEOUT_S = 90.0
"""Workers of real systems start slowly on a loaded machine (Celery imports, Node)."""


@dataclass(frozen=True)
class Row:
    label: str
    interval_ms: float
    cells: dict[str, float | None]
    """Probe -> largest gap in ms; None where the worker cannot run that probe."""

    def starved(self, probe: str) -> bool | None:
        gap = self.cells.get(probe)
        return None if gap is None else gap > STARVED_AFTER_INTERVALS * self.interval_ms


@dataclass(frozen=True)
class SystemsMatrix:
    duration_s: float
    probes: list[str]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    """What the reader must know: workers left out here and why (no ``node``), settings
    that are not a system's default."""

    def as_json(self) -> dict:
        return asdict(self)

    def beside(self, own: Matrix) -> SystemsMatrix:
        """heartmon's own agents first (one row per isolation mode), then the systems."""
        agents = [Row(f"heartmon {iso}", own.interval_ms,
                      {c.probe: c.max_gap_ms for c in own.cells if c.isolation == iso})
                  for iso in dict.fromkeys(c.isolation for c in own.cells)]
        return SystemsMatrix(self.duration_s, self.probes, agents + self.rows, self.notes)

    def table(self) -> str:
        width = max(len(r.label) for r in self.rows) + 2
        lines = [f"largest heartbeat gap as heartmon received it; probes of {self.duration_s:g} s, "
                 f"starved = gap > {STARVED_AFTER_INTERVALS} × the worker's own interval", "",
                 ("worker".ljust(width) + "interval  " + "".join(f"  {p:<18}" for p in self.probes)).rstrip()]
        for row in self.rows:
            line = row.label.ljust(width) + f"{row.interval_ms:>6.0f} ms "
            for probe in self.probes:
                gap, starved = row.cells.get(probe), row.starved(probe)
                line += f"{'–':>8}{'':12}" if gap is None else f"{gap:>8.0f} ms {'STARVED' if starved else 'ok':<8}"
            lines.append(line.rstrip())
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


class Recorder:
    """Stands where the monitor would: the sources tell it every beat, on its clock."""

    def __init__(self) -> None:
        self.beats: dict[str, list[float]] = defaultdict(list)
        self.intervals: dict[str, float] = {}

    def now(self) -> float:
        return time.monotonic()

    def heard(self, source: str, name: str, now: float, beat: Heard) -> None:
        self.beats[name].append(now)
        self.intervals[name] = beat.interval_s

    def find(self, prefix: str) -> str | None:
        return next((name for name in self.beats if name.startswith(prefix)), None)

    # what else a source may say: nothing in it changes a gap
    def hub_message(self, source: str, message: object, now: float) -> None: ...
    def joined(self, source: str, info: object, now: float, connected: bool | None) -> None: ...
    def judging(self, source: str, name: str) -> bool:
        return True
    def source_lost(self, source: str, now: float) -> None: ...
    def listed(self, source: str, name: str, now: float, info: Heard) -> None: ...
    def gone(self, source: str, name: str, now: float, reason: str) -> None: ...
    def missing(self, source: str, name: str, now: float, reason: str) -> None: ...
    def vouch(self, source: str, name: str, now: float, because: str | None) -> None: ...


@dataclass
class Subject:
    """One worker of the experiment."""

    label: str
    prefix: str
    """Its name as its source reports it, or the start of it."""
    log: str
    """The name its process's output is kept under (:meth:`Processes.output`)."""
    send: Callable[[str, float], Awaitable[None]]
    probes: frozenset[str] | None = None
    """The probes it can run; None for all of heartmon's."""


@dataclass
class Run:
    """One run's processes, the recorder its sources tell, and what the table will say."""

    processes: Processes
    work: Path
    node_prefix: Path
    progress: Callable[[str], None]
    recorder: Recorder = field(default_factory=Recorder)
    tasks: list[asyncio.Task] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    async def follow(self, source: Source) -> None:
        """Starts hearing a source and returns once it is ready (subscribed, listening):
        workers started after it find it there, instead of retrying with a backoff that
        on a busy machine outlasts the wait for their first beats."""
        self.tasks.append(asyncio.ensure_future(source.run(self.recorder)))
        try:
            await until(lambda: source.status.link == "connected", READY_TIMEOUT_S, f"{source.status.label}")
        except PollTimeout as exc:
            raise SystemsError(f"{exc}: {source.status.detail}") from None


async def run_systems(probes: list[str], duration_s: float, work: Path, node_prefix: Path,
                      progress: Callable[[str], None] = lambda line: None) -> SystemsMatrix:
    """Starts every system's workers, runs each probe in all of them at once, and
    measures each one's largest gap. ``node_prefix``: where the Node SDK is installed
    (once) when node and npm are here."""
    run = Run(Processes(work), work, node_prefix, progress)
    run.notes.append(f"inngest python beats every {INNGEST_PYTHON_HEARTBEAT_S} s through the SDK's test hook "
                     "(its default, 10 s, has no public setting)")
    recorder = run.recorder
    try:
        subjects = [*await _start_celery(run), *await _start_inngest(run)]
        progress(f"starting {len(subjects)} workers of real systems…")
        try:
            await until(lambda: all((n := recorder.find(s.prefix)) and len(recorder.beats[n]) >= 2 for s in subjects),
                        READY_TIMEOUT_S, "the workers of real systems to connect and beat")
        except PollTimeout as exc:
            missing = [s for s in subjects if not recorder.find(s.prefix)]
            said = "; ".join(f"{s.label} said: {run.processes.output(s.log)[-400:]!r}" for s in missing)
            raise SystemsError(f"{exc}; not heard: {said}") from None
        names = {s.label: recorder.find(s.prefix) or "" for s in subjects}
        gaps: dict[str, dict[str, float | None]] = {s.label: {} for s in subjects}
        for index, probe in enumerate(probes, 1):
            progress(f"[{index}/{len(probes)}] {probe}: {duration_s:g} s in every worker…")
            start = time.monotonic()
            running = [s for s in subjects if s.probes is None or probe in s.probes]
            await asyncio.gather(*(s.send(probe, duration_s) for s in running))
            end = start + duration_s
            try:
                await until(lambda: all(largest_gap(recorder.beats[names[s.label]], start, end) is not None  # noqa: B023
                                        for s in running),  # noqa: B023
                            duration_s * 3 + 30, f"the first beats after {probe}")
            except PollTimeout as exc:
                raise SystemsError(str(exc)) from None
            for s in subjects:
                gap = largest_gap(recorder.beats[names[s.label]], start, end) if s in running else None
                gaps[s.label][probe] = None if gap is None else round(gap * 1000, 1)
            await asyncio.sleep(1.0)  # the last beats of a probe never count for the next one
        rows = [Row(s.label, recorder.intervals[names[s.label]] * 1000, gaps[s.label]) for s in subjects]
        return SystemsMatrix(duration_s, probes, rows, run.notes)
    finally:
        for task in run.tasks:
            task.cancel()
        await asyncio.gather(*run.tasks, return_exceptions=True)
        await asyncio.to_thread(run.processes.stop)


async def _start_celery(run: Run) -> list[Subject]:
    """A redis-server of the run's own, and one Celery worker per pool, each on its own
    queue so that a probe reaches exactly one of them."""
    from heartmon.sources.celery import from_url
    from heartmon.systems.celery_app import app

    port = free_port()
    run.processes.spawn("redis", [redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no"])
    await run.follow(from_url(f"celery+redis://127.0.0.1:{port}/0", Settings(), no_client))
    broker = f"redis://127.0.0.1:{port}/0"
    app.conf.broker_url = broker
    host = socket.gethostname()
    subjects = []
    for pool in CELERY_POOLS:
        queue, log = f"heartmon-{pool}", f"celery-{pool}"
        run.processes.spawn(log, [
            sys.executable, "-m", "celery", "-A", "heartmon.systems.celery_app", "worker", f"--pool={pool}",
            "--concurrency=1", "-Q", queue, "-n", f"{pool}@{host}", "--heartbeat-interval", str(CELERY_INTERVAL_S),
            "--without-gossip", "--without-mingle", "--loglevel=WARNING"], env={"CELERY_BROKER_URL": broker})
        subjects.append(Subject(f"celery {pool}", f"{pool}@{host}", log, _celery_sender(app, queue)))
    return subjects


async def _start_inngest(run: Run) -> list[Subject]:
    """heartmon's Connect gateway, a Python SDK worker and, when node is here, Node SDK
    workers with ``isolateExecution`` on and off. Each runs a probe when its probe file
    appears (function execution through Inngest is not needed to starve a heartbeat)."""
    from heartmon.sources.inngest import from_url

    port = free_port()
    await run.follow(from_url(f"inngest://127.0.0.1:{port}", Settings(), no_client))
    base = f"http://127.0.0.1:{port}"
    probe_file = run.work / "inngest-python.probe"
    run.processes.spawn("inngest-python", [
        sys.executable, "-m", "heartmon.systems.inngest_worker", base, "heartmon-python", "worker", str(probe_file),
        str(INNGEST_PYTHON_HEARTBEAT_S)], env={"INNGEST_DEV": "1"})
    subjects = [Subject("inngest python", "heartmon-python/", "inngest-python", _file_sender(probe_file))]
    if not (shutil.which("node") and shutil.which("npm")):
        run.notes.append("the Inngest Node SDK workers are left out: node and npm are not on this machine")
        return subjects
    run.progress("the Node Inngest SDK: npm install once, then reused…")
    sdk = await asyncio.to_thread(node_sdk, run.node_prefix)
    assert sdk is not None
    script = Path(__file__).with_name("inngest_worker.mjs")
    for isolate in ("true", "false"):
        app = f"heartmon-node-isolate-{isolate}"
        probe_file = run.work / f"{app}.probe"
        run.processes.spawn(app, [sdk.node, str(script), str(sdk.prefix), app, "worker", isolate, str(probe_file)],
                            env={"INNGEST_BASE_URL": base, "INNGEST_DEV": "1", **sdk.env})
        label = f"inngest node, isolateExecution {'on' if isolate == 'true' else 'off'}"
        subjects.append(Subject(label, f"{app}/", app, _file_sender(probe_file), frozenset({"busy-python"})))
    return subjects


def _celery_sender(app, queue: str) -> Callable[[str, float], Awaitable[None]]:
    async def send(probe: str, seconds: float) -> None:
        await asyncio.to_thread(app.send_task, "heartmon.probe", args=[probe, seconds], queue=queue)
    return send


def _file_sender(path: Path) -> Callable[[str, float], Awaitable[None]]:
    """Tells an SDK worker to run a probe: the file is written whole, then moved into place."""
    async def send(probe: str, seconds: float) -> None:
        part = path.with_suffix(".part")
        part.write_text(f"{probe} {seconds}")
        os.replace(part, path)
    return send
