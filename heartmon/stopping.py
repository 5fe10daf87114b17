"""Stopping child processes: ask once, wait briefly, then insist.

A process that handles SIGTERM cleans up and exits; one that cannot (its main thread
is inside a long C call that holds the GIL, so Python never gets to run its signal
handler) would keep whoever waits for it waiting for as long as that call lasts. So
every stop has a deadline, after which SIGKILL ends what is left.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable


def stop_processes(procs: Iterable[subprocess.Popen], grace_s: float, *, asked: bool = False) -> list[subprocess.Popen]:
    """SIGTERMs every process that still runs (unless ``asked`` already), waits for all
    of them together until one deadline ``grace_s`` from now, SIGKILLs those still
    running, and reaps them all.

    One deadline for all, not one grace each: stopping N stuck processes takes
    ``grace_s``, not N times it. Asking early (``proc.terminate()`` while other things
    are torn down) and passing ``asked=True`` overlaps the two waits; a second SIGTERM
    would interrupt the first one's cleanup. Returns the processes that had to be killed.
    """
    procs = list(procs)
    for proc in procs if not asked else ():
        proc.terminate()  # a no-op for a process that has already exited
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    killed = [proc for proc in procs if proc.poll() is None]
    for proc in killed:
        proc.kill()
    for proc in killed:
        proc.wait()
    return killed
