"""A small Celery app for the integration tests: a task that holds the worker's CPU in
pure Python (what starves a solo worker's heartbeat timer) and one that only sleeps.

The broker comes from ``CELERY_BROKER_URL``, set by the test for its own redis-server;
``CELERY_EVENT_EXCHANGE`` renames the event exchange (heartmon's ``?namespace=``).
"""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery("heartmon_tests", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    event_exchange=os.environ.get("CELERY_EVENT_EXCHANGE", "celeryev"),
)


@app.task
def burn(seconds: float) -> int:
    """Spins the interpreter for ``seconds`` without yielding: no I/O, no sleep, so the
    worker's event loop (and its heartbeat timer) cannot run in a solo pool."""
    deadline = time.monotonic() + seconds
    spins = 0
    while time.monotonic() < deadline:
        spins += 1
    return spins


@app.task
def nap(seconds: float) -> None:
    """Sleeps: the worker is busy in a task but its CPU is idle."""
    time.sleep(seconds)
