"""Real systems heartmon did not write, each seen by an in-process ``Monitor`` with the
default thresholds (``Settings()``: late after 2 intervals, starved after 5, dead after
10), and two figures for each:

(a) last beat -> starved: from the last beat heartmon received from a worker to the
    ``starved`` transition, while CPU-bound code holds the thread that beats. It is the
    transition's ``at`` minus the worker's last beat, both on the monitor's clock (the
    last beat read from the worker's row while it is starved: the view's time minus the
    row's silence). The transition's own ``silence_s`` is printed beside it: the silence
    it was judged at, less any the monitor excused as its own stall. The floor is the
    starved threshold, 5 intervals; what is above it is how late heartmon said so.
(b) SIGKILL -> dead: from ``os.kill`` (``Service.kill``) to the ``dead`` transition's
    ``at``, both ``time.monotonic``, the clock ``Monitor`` uses by default. A SIGKILLed
    worker can say nothing: how soon heartmon knows is all its own evidence (a local
    pid seen gone by the evidence loop, or a socket the kernel closed).

Why: the claim that heartmon tells a starved worker from a dead one, and how soon, holds
only as far as it holds on the systems people run, at their own rhythms:

- Celery solo worker (``--heartbeat-interval 1``), app ``heartmon.systems.celery_app``,
  task ``heartmon.probe`` running ``busy-python``, over a real redis-server;
- RQ ``SimpleWorker`` (``--worker-ttl 16``: idle beats every second), job
  ``tests.apps.rq_jobs.burn``, over a real redis-server;
- Inngest Connect Node SDK worker with ``isolateExecution: false`` (its heartbeat on
  the main thread), heard through heartmon's gateway at its default interval
  (``systems.inngest_heartbeat_ms``, 1 s), spinning its main thread;
- a plain HTTP service (Starlette on uvicorn, ``/hog?s=N`` holds its one event loop),
  polled at ``/healthz`` every second with a 2 s timeout.

Each run starts a fresh worker and a fresh monitor; every process is started through
``tests.systems.Services`` and stopped by pid at the end, also on failure. A benchmark
that prints figures, not a test: it fails loudly when a system does not behave (a
worker dies under load, a transition never comes).

    .venv/bin/python benchmarks/systems.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from figures import machine, print_machine, spread

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the services are started the way the tests start them

import httpx  # noqa: E402
import rq  # noqa: E402
from celery import Celery  # noqa: E402

import heartmon.systems  # noqa: E402
from heartmon.config import Settings  # noqa: E402
from heartmon.detector import Transition  # noqa: E402
from heartmon.monitor import Monitor  # noqa: E402
from heartmon.polling import PollTimeout, wait_until  # noqa: E402
from heartmon.view import RowView, ViewRequest  # noqa: E402
from tests.harness import free_port  # noqa: E402
from tests.node import install_node_sdk  # noqa: E402
from tests.systems import Redis, Service, Services, python_env, start_asgi, start_redis  # noqa: E402

LOAD_S = 9.0
"""How long each worker's beating thread is held: past the starved threshold (5 s at a
1 s interval), with room for the judgement, and short of dead (10 s) in case evidence of
life were missing (the run then fails: a worker judged dead under load)."""
SETTLE_S = 3.0
"""Beats before the load, and after the recovery before the kill: the gaps measured are
the worker's steady rhythm, not its start's."""
WAIT_S = 60.0
APP = "heartmon-bench"
RQ_WORKER_TTL = 16
"""RQ's idle rhythm is max(1, worker_ttl - 15): one beat a second."""


@dataclass(frozen=True)
class Figures:
    to_starved: float
    """(a): the starved transition's ``at`` minus the last beat."""
    silence: float
    """The starved transition's ``silence_s``."""
    to_dead: float
    """(b): SIGKILL to the dead transition's ``at``."""
    starved_reason: str
    dead_reason: str


class Watch:
    """One worker in one monitor: its row and its transitions, read as the log grows."""

    def __init__(self, monitor: Monitor, name: str, worker: Service) -> None:
        self.monitor, self.name, self.worker = monitor, name, worker
        self.seen = 0
        self.moves: list[Transition] = []
        self.row: RowView | None = None
        self.at = 0.0

    def look(self) -> None:
        assert self.monitor.crashed is None, f"the monitor crashed: {self.monitor.crashed}"
        view = self.monitor.view(ViewRequest(height=1000, seen=self.seen))
        self.seen, self.at = view.logged, view.at
        self.moves += [e for e in view.entries if isinstance(e, Transition) and e.worker == self.name]
        self.row = next((r for r in view.rows if r.name == self.name), None)

    def first(self, to: str, since: int = 0) -> Transition | None:
        return next((m for m in self.moves[since:] if m.to_state == to), None)

    def until(self, predicate: Callable[[], object], what: str, *, alive: bool = True) -> None:
        """Looks every 20 ms until ``predicate()``; fails with the worker's log tail if it
        does not come, if the worker exits while it should be running, or if it is
        judged dead before it is killed."""
        def check() -> object:
            self.look()
            if alive:
                assert self.worker.proc.poll() is None, f"{self.worker.name} exited:\n{self.worker.output()[-3000:]}"
                assert self.first("dead") is None, f"{self.name} judged dead before the kill: {self.first('dead')}"
            return predicate()

        try:
            wait_until(check, WAIT_S, f"{self.name}: {what}", every_s=0.02)
        except PollTimeout as exc:
            moves = [(m.from_state, m.to_state, m.reason) for m in self.moves]
            raise AssertionError(f"{exc}; row {self.row}; moves {moves}\n"
                                 f"--- {self.worker.name}\n{self.worker.output()[-3000:]}") from None


def measure(monitor: Monitor, name: str, worker: Service, load: Callable[[], None]) -> Figures:
    """Healthy and beating, then ``load()`` holds its beating thread: (a); then, recovered
    and beating again, SIGKILL: (b)."""
    watch = Watch(monitor, name, worker)
    watch.until(lambda: watch.row is not None and watch.row.state == "healthy" and watch.row.p99_s is not None,
                "healthy with a few beats")
    time.sleep(SETTLE_S)
    watch.until(lambda: watch.row is not None and watch.row.state == "healthy", "still healthy before the load")
    before = len(watch.moves)
    load()
    last_beat: float | None = None

    def starved_seen() -> bool:
        nonlocal last_beat
        if watch.first("starved", before) is None:
            return False
        row = watch.row
        assert row is not None and row.state == "starved" and row.silence_s is not None, \
            f"{name} beat again before its starved row was read: {row}"
        last_beat = watch.at - row.silence_s  # no beat since the silence began: the same last beat
        return True

    watch.until(starved_seen, "starved")
    starved = watch.first("starved", before)
    assert starved is not None and last_beat is not None and starved.silence_s is not None, starved
    watch.until(lambda: any(m.from_state == "starved" and m.to_state == "healthy" for m in watch.moves[before:]),
                "recovered after the load")
    episode = next(m.episode for m in watch.moves[before:] if m.from_state == "starved")
    assert episode is not None and abs(episode.started_at - last_beat) < 1e-6, (episode, last_beat)
    time.sleep(SETTLE_S)
    watch.until(lambda: watch.row is not None and watch.row.state == "healthy", "healthy before the kill")
    killed = len(watch.moves)
    killed_at = time.monotonic()  # the monitor's clock
    worker.kill()
    watch.until(lambda: watch.first("dead", killed) is not None, "dead after SIGKILL", alive=False)
    dead = watch.first("dead", killed)
    assert dead is not None
    return Figures(starved.at - last_beat, starved.silence_s, dead.at - killed_at, starved.reason, dead.reason)


# --- the systems --------------------------------------------------------------------------


@dataclass
class Context:
    services: Services
    work: Path
    redis: Redis | None = None

    def shared_redis(self) -> Redis:
        """One redis-server for the Celery and RQ runs (each worker has its own name)."""
        if self.redis is None:
            self.redis = start_redis(self.services)
        return self.redis


def celery_run(ctx: Context, run: int) -> Figures:
    redis = ctx.shared_redis()
    name = f"bench{run}@{socket.gethostname()}"
    worker = ctx.services.spawn("celery", [sys.executable, "-m", "celery", "-A", "heartmon.systems.celery_app",
                                           "worker", "--pool=solo", "--heartbeat-interval", "1", "-n", name,
                                           "--loglevel=INFO"],
                                env=python_env(CELERY_BROKER_URL=redis.url()), cwd=ROOT)

    def load() -> None:
        with Celery("bench_client", broker=redis.url()) as app:
            app.send_task("heartmon.probe", args=["busy-python", LOAD_S])

    try:
        with Monitor(Settings(), [f"celery+redis://127.0.0.1:{redis.port}/0"]) as monitor:
            return measure(monitor, name, worker, load)
    finally:
        worker.stop()


def rq_run(ctx: Context, run: int) -> Figures:
    redis = ctx.shared_redis()
    name, queue = f"bench-{os.getpid()}-{run}", f"bench-{run}"  # a SIGKILLed worker stays listed for a while
    worker = ctx.services.spawn("rq", [sys.executable, "-m", "rq.cli", "worker", "--url", redis.url(1),
                                       "--worker-ttl", str(RQ_WORKER_TTL), "--name", name,
                                       "-w", "rq.worker.SimpleWorker", queue],
                                env=python_env())

    def load() -> None:
        rq.Queue(queue, connection=redis.client(1)).enqueue("tests.apps.rq_jobs.burn", LOAD_S)

    try:
        with Monitor(Settings(), [f"rq+redis://127.0.0.1:{redis.port}/1"]) as monitor:
            return measure(monitor, name, worker, load)
    finally:
        worker.stop()


def inngest_run(ctx: Context, run: int) -> Figures:
    sdk = install_node_sdk()
    port, instance = free_port(), f"same-thread-{run}"
    spin_file = ctx.work / f"spin-{run}"
    settings = Settings()
    try:
        with Monitor(settings, [f"inngest://127.0.0.1:{port}"]) as monitor:
            worker = ctx.services.spawn("node", [sdk.node, str(Path(heartmon.systems.__file__).parent
                                                               / "inngest_worker.mjs"),
                                                 str(sdk.prefix), APP, instance, "false", str(spin_file)],
                                        env={"INNGEST_BASE_URL": f"http://127.0.0.1:{port}", "INNGEST_DEV": "1",
                                             **sdk.env})
            try:
                def load() -> None:
                    part = spin_file.with_suffix(".part")  # written whole, then moved into place
                    part.write_text(f"busy-python {LOAD_S}")
                    os.replace(part, spin_file)

                figures = measure(monitor, f"{APP}/{instance}", worker, load)
                out = worker.output()
                assert out.count("Connection established") == 1 and "RECONNECTING" not in out, \
                    f"the SDK had to reconnect: the figures are not of one connection\n{out[-3000:]}"
                return figures
            finally:
                worker.stop()
    finally:
        spin_file.unlink(missing_ok=True)


def http_run(ctx: Context, run: int) -> Figures:
    port = free_port()
    hogs: list[threading.Thread] = []
    service = start_asgi(ctx.services, port)

    def load() -> None:
        def hog() -> None:
            try:
                httpx.get(f"http://127.0.0.1:{port}/hog?s={LOAD_S}", timeout=LOAD_S + 30)
            except httpx.HTTPError:
                pass  # the measurement says what happened; the answer itself does not matter

        hogs.append(threading.Thread(target=hog, name="hog", daemon=True))
        hogs[-1].start()

    try:
        with Monitor(Settings(), [f"api=http://127.0.0.1:{port}/healthz"]) as monitor:
            return measure(monitor, "api", service, load)
    finally:
        service.stop()
        for thread in hogs:
            thread.join(LOAD_S + 30)


@dataclass(frozen=True)
class System:
    short: str
    title: str
    run: Callable[[Context, int], Figures]


SYSTEMS = (
    System("Celery", "Celery solo worker, --heartbeat-interval 1, busy-python task", celery_run),
    System("RQ", f"RQ SimpleWorker {rq.__version__}, --worker-ttl {RQ_WORKER_TTL} (1 s idle beats), burn job",
           rq_run),
    System("Inngest Node", f"Inngest Node SDK worker, isolateExecution: false, gateway interval "
           f"{Settings().systems.inngest_heartbeat_ms} ms, main thread spinning", inngest_run),
    System("HTTP", f"HTTP service (uvicorn + Starlette), /healthz polled every "
           f"{Settings().monitor.http_interval_ms} ms, {Settings().monitor.http_timeout_ms} ms timeout, "
           f"/hog on its loop", http_run),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    thresholds = Settings().detector
    print_machine(f"systems: default thresholds (late {thresholds.late_after:g}, starved "
                  f"{thresholds.starved_after:g}, dead {thresholds.dead_after:g} intervals), "
                  f"{LOAD_S:g} s of CPU on the beating thread, {args.runs} runs each")
    summary: list[str] = []
    with tempfile.TemporaryDirectory() as work:
        services = Services(Path(work))
        ctx = Context(services, Path(work))
        try:
            for system in SYSTEMS:
                print(f"-- {system.title}", flush=True)
                runs: list[Figures] = []
                for run in range(args.runs):
                    figures = system.run(ctx, run)
                    runs.append(figures)
                    print(f"run {run + 1}: last beat -> starved {figures.to_starved:.3f} s "
                          f"(silence_s {figures.silence:.3f} s), SIGKILL -> dead {figures.to_dead:.3f} s  "
                          f"[{figures.starved_reason}; {figures.dead_reason}]", flush=True)
                lines = [f"   last beat -> starved: {spread([f.to_starved for f in runs], '{:.3f}')} s",
                         f"   its silence_s:        {spread([f.silence for f in runs], '{:.3f}')} s",
                         f"   SIGKILL -> dead:      {spread([f.to_dead for f in runs], '{:.3f}')} s"]
                print("\n".join(lines), flush=True)
                summary.append(f"{system.short:<13} last beat -> starved "
                               f"{statistics.median(f.to_starved for f in runs):.3f} s, SIGKILL -> dead "
                               f"{statistics.median(f.to_dead for f in runs):.3f} s")
        finally:
            services.stop_all()
    print("-- medians")
    print("\n".join(summary))
    print(f"at the end: {machine()}")


if __name__ == "__main__":
    main()
