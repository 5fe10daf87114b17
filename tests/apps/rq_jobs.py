"""Jobs for the RQ integration tests, imported by the workers the tests start (the
repository is on their PYTHONPATH, see :func:`tests.systems.python_env`).

``burn`` holds the interpreter in pure Python: in a ``SimpleWorker`` the job runs on the
worker's only thread, so no heartbeat is written until it returns (the starved case).
In a forking ``Worker`` it runs in the work horse while the main process keeps beating.
"""

from __future__ import annotations

import time


def burn(seconds: float) -> int:
    """Spins for ``seconds`` without I/O or sleep, and returns how many times it spun."""
    deadline = time.monotonic() + seconds
    spins = 0
    while time.monotonic() < deadline:
        spins += 1
    return spins


def nap(seconds: float) -> None:
    """Only sleeps: the thread is blocked but burns no CPU."""
    time.sleep(seconds)
