"""The built-in probes: found through entry points, on time, and blocking the way they claim."""

import threading
import time

import pytest

from heartmon.probes import Probe, load_registry

BUILTINS = ["busy-python", "gc-pause", "gil-hold", "regex-backtrack", "sync-sleep"]
HOLDS_THE_GIL = {"gil-hold", "regex-backtrack", "gc-pause"}


def test_registry_finds_the_builtins_through_entry_points():
    registry = load_registry()
    assert set(BUILTINS) <= set(registry.names())
    assert not registry.broken
    for entry in registry.describe():
        assert entry["description"] and entry["demonstrates"]


def test_unknown_probe_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown probe 'nope'; known probes: .*gil-hold"):
        load_registry().get("nope")


class _ThreadTicker:
    """A thread that wants to run every 10 ms, as a heartbeat thread would."""

    def __init__(self) -> None:
        self.max_gap = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.monotonic()
        while not self.stop.wait(0.01):
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last)
            last = now

    def __enter__(self) -> "_ThreadTicker":
        self.thread.start()
        time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.05)
        self.stop.set()
        self.thread.join()


@pytest.mark.parametrize("name", BUILTINS)
def test_probe_lasts_its_duration_and_blocks_a_thread_only_if_it_holds_the_gil(name):
    probe: Probe = load_registry().get(name)()
    probe.run(0.1)  # calibrations are cached per process, as in a long-lived worker
    duration = 1.0
    with _ThreadTicker() as ticker:
        start = time.monotonic()
        probe.run(duration)
        elapsed = time.monotonic() - start
    assert duration * 0.8 <= elapsed <= duration * 1.2
    if name in HOLDS_THE_GIL:
        assert ticker.max_gap > 0.15, f"{name} let a thread run every {ticker.max_gap * 1000:.0f} ms"
    else:
        assert ticker.max_gap < 0.1, f"{name} blocked a thread for {ticker.max_gap * 1000:.0f} ms"
