"""The Celery app the systems experiment (and the tests) start real workers of: one
task, ``probe``, that runs one of heartmon's load probes inside the worker, where a
user's task would run. In a solo pool that is the main process's thread, the one whose
event loop sends Celery's heartbeats; in a threads pool a thread; in prefork a child.

The broker comes from ``CELERY_BROKER_URL``; ``CELERY_EVENT_EXCHANGE`` renames the
event exchange (what heartmon's ``?namespace=`` follows).
"""

from __future__ import annotations

import os

from celery import Celery

from heartmon.probes import load_registry

app = Celery("heartmon_systems", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    event_exchange=os.environ.get("CELERY_EVENT_EXCHANGE", "celeryev"),
    task_acks_late=False,
    worker_prefetch_multiplier=1,
)


@app.task(name="heartmon.probe")
def probe(name: str, seconds: float) -> str:
    """Runs the probe ``name`` for ``seconds`` here, as user code would."""
    load_registry().get(name)().run(seconds)
    return name
