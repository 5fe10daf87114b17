"""A real Celery solo worker (``--heartbeat-interval 1``) over a real redis-server, seen by
an in-process ``Monitor`` with the default thresholds: how long from its last beat
until heartmon says ``starved`` while a CPU-bound task holds its only thread (the
transition's ``silence_s``: the starved threshold is 5 s, and a local pid's CPU is read
every ``evidence_ms``), and from a SIGKILL until ``dead`` (the pid is seen gone by the
same evidence loop). Each run starts a fresh worker and monitor on one redis-server.
A benchmark that prints figures, not a test.

    .venv/bin/python benchmarks/systems_celery.py [--runs 3]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

from celery import Celery
from figures import print_machine, spread

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the services are started the way the tests start them

from heartmon.config import Settings  # noqa: E402
from heartmon.detector import Transition  # noqa: E402
from heartmon.monitor import Monitor  # noqa: E402
from heartmon.polling import wait_until  # noqa: E402
from heartmon.view import ViewRequest  # noqa: E402
from tests.systems import Redis, Services, python_env, start_redis  # noqa: E402

TASK_S = 9.0
"""Longer than the starved threshold (5 intervals), with room for the judgement."""


def moves(monitor: Monitor, name: str, to: str) -> list[Transition]:
    return [e for e in monitor.view(ViewRequest(height=0)).entries
            if isinstance(e, Transition) and e.worker == name and e.to_state == to]


def one_run(services: Services, redis: Redis) -> tuple[float, float]:
    """(silence when judged starved, seconds from SIGKILL to dead) for a fresh worker."""
    name = f"bench@{socket.gethostname()}"
    worker = services.spawn("celery", [sys.executable, "-m", "celery", "-A", "heartmon.systems.celery_app", "worker",
                                       "--pool=solo", "--heartbeat-interval", "1", "-n", name, "--loglevel=INFO"],
                            env=python_env(CELERY_BROKER_URL=redis.url()), cwd=ROOT)
    source = f"celery+redis://127.0.0.1:{redis.port}/0"
    with Monitor(Settings(), [source]) as monitor:
        def state() -> str | None:
            return next((r.state for r in monitor.view(ViewRequest(height=1000)).rows if r.name == name), None)

        wait_until(lambda: state() == "healthy", 60, f"{name} to beat (log {worker.log})")
        time.sleep(3)  # a few beats first: the gaps are the worker's, not its start's
        with Celery("bench_client", broker=redis.url()) as app:
            app.send_task("heartmon.probe", args=["busy-python", TASK_S])
        starved = wait_until(lambda: moves(monitor, name, "starved"), 60, "starved")[0]
        wait_until(lambda: state() == "healthy", 60, "the recovery")
        time.sleep(2)
        killed_at = time.monotonic()  # the monitor's clock
        worker.kill()
        dead = wait_until(lambda: moves(monitor, name, "dead"), 60, "dead")[0]
    assert starved.silence_s is not None
    return starved.silence_s, dead.at - killed_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print_machine("Celery solo worker, --heartbeat-interval 1, default thresholds")
    starved, dead = [], []
    with tempfile.TemporaryDirectory() as logs:
        services = Services(Path(logs))
        try:
            redis = start_redis(services)
            for run in range(args.runs):
                to_starved, to_dead = one_run(services, redis)
                starved.append(to_starved)
                dead.append(to_dead)
                print(f"run {run + 1}: last beat -> starved {to_starved:.3f} s, SIGKILL -> dead {to_dead:.3f} s",
                      flush=True)
        finally:
            services.stop_all()
    print(f"last beat -> starved: {spread(starved, '{:.3f}')} s")
    print(f"SIGKILL -> dead:      {spread(dead, '{:.3f}')} s")


if __name__ == "__main__":
    main()
