"""The Probe interface, small on purpose so that a third-party probe is a dozen lines."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar


class ProbeError(Exception):
    """A probe that cannot run as asked (bad parameters, say); reported, never fatal."""


class Probe(ABC):
    """Blocks the calling thread for about ``duration_s`` seconds.

    ``run`` is synchronous and is called on the worker's main thread, exactly where
    user code would run: it must not yield to the event loop, because the point is
    to show what happens to a heartbeat when the loop cannot run.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    """One line: what the probe does."""
    demonstrates: ClassVar[str]
    """One line: which isolation it defeats and why."""

    @abstractmethod
    def run(self, duration_s: float, **params: object) -> None: ...
