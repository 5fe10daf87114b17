"""What a system's own tooling concludes from the same silence, so that the on-call
engineer sees why the dashboard they already have disagrees with heartmon.

Celery's ``State`` (what Flower and ``celery events`` show) calls a worker offline once
its last heartbeat is older than twice its ``freq`` (``heartbeat_expires`` with the
default 200 % expire window): a worker whose only thread is busy in a long task is
shown offline while it is alive. Pure: the silence and interval come in, words go out.
"""

from __future__ import annotations

CELERY_EXPIRE_WINDOW = 2.0
"""celery.events.state: a heartbeat expires after ``freq * 200 / 100`` seconds."""


def would_show(kind: str | None, silence_s: float, interval_s: float) -> str | None:
    """The system's own verdict for a worker of this kind, or None when it has no rule."""
    if kind == "celery":
        online = silence_s < CELERY_EXPIRE_WINDOW * interval_s
        return f"Celery/Flower would show: {'online' if online else 'offline'}"
    return None
