"""Reconnect backoff, shared by both ends of the wire.

The agent reconnects to its hub with it, and the monitor's sources reconnect to hubs
and poll health endpoints with it. It is its own module so that the monitor side can
use it without importing the agent, and with it multiprocessing and the load probes.
"""

from __future__ import annotations

import random

RECONNECT_MAX_S = 5.0
"""The agents' longest wait between reconnects. A monitor that finds a restarted hub
without a worker it knew waits at least this long before that absence means anything:
the worker may be sleeping out its backoff."""


def backoff_delay(attempt: int, initial_s: float, max_s: float) -> float:
    """Capped exponential backoff with jitter: ``initial_s * 2**attempt``, capped at
    ``max_s``, then scaled by a random factor in [0.5, 1], so that a fleet that lost its
    hub does not come back in lockstep."""
    return min(max_s, initial_s * 2**attempt) * random.uniform(0.5, 1.0)
