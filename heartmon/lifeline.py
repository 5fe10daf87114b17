"""Ties a child's life to its parent's, so that no heartmon process is ever orphaned.

A graceful stop is not enough: the parent can be SIGKILLed or crash. On Linux the
kernel delivers a signal to the child when its parent dies (PR_SET_PDEATHSIG); the
callers also watch a pipe or the parent pid where that is not available.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(expected_parent: int | None = None, sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` when the parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    # The parent may have died between fork and prctl: then we were re-parented.
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)
