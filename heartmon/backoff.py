"""Reconnect backoff, shared by both ends of the wire.

The agent reconnects to its hub with it, and the monitor's sources reconnect to hubs
and poll health endpoints with it. It is its own module so that the monitor side can
use it without importing the agent, and with it multiprocessing and the load probes.
"""

from __future__ import annotations

import random


def backoff_delay(attempt: int, initial_s: float, max_s: float) -> float:
    """Capped exponential backoff with jitter: ``initial_s * 2**attempt``, capped at
    ``max_s``, then scaled by a random factor in [0.5, 1], so that a fleet that lost its
    hub does not come back in lockstep."""
    return min(max_s, initial_s * 2**attempt) * random.uniform(0.5, 1.0)
