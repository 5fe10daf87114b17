"""Waiting for a condition a person would check, with a deadline and a sentence that
says what did not happen: one way for the matrix, the tests, the screenshots and the
benchmarks, in a blocking and an asyncio form."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class PollTimeout(TimeoutError):
    pass


def wait_until(predicate: Callable[[], T], timeout_s: float, what: str, every_s: float = 0.05) -> T:
    """Polls until ``predicate()`` is truthy and returns its value."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise PollTimeout(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)
    return value


async def until(predicate: Callable[[], T], timeout_s: float, what: str, every_s: float = 0.05) -> T:
    """The same, without blocking the event loop it runs on."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise PollTimeout(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(every_s)
    return value
