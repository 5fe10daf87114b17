"""Detector throughput and memory per worker. A benchmark that prints figures, not a test.

    .venv/bin/python benchmarks/detector.py
"""

from __future__ import annotations

import time
import tracemalloc

from heartmon.detector import Thresholds
from heartmon.fleet_state import FleetState

WORKERS = 1000
INTERVAL_S = 0.1


def updates_per_second(thresholds: Thresholds, beats: int = 500_000) -> tuple[float, float]:
    fleet = FleetState(thresholds)
    for i in range(WORKERS):
        fleet.join(0.0, f"w{i}", INTERVAL_S, connected=True)
    names = list(fleet.trackers)
    start = time.perf_counter()
    for n in range(beats):
        now = (n // WORKERS + 1) * INTERVAL_S
        fleet.beat(now, names[n % WORKERS], seq=n // WORKERS, main_blocked_ms=1.0, loop_lag_ms=0.1)
    beat_rate = beats / (time.perf_counter() - start)
    rounds = 200
    start = time.perf_counter()
    for r in range(rounds):
        fleet.evaluate(now + r * 0.001)
    evaluate_rate = rounds * WORKERS / (time.perf_counter() - start)
    return beat_rate, evaluate_rate


def bytes_per_worker(beats_each: int, workers: int = 50) -> float:
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    fleet = FleetState(Thresholds())
    for i in range(workers):
        fleet.join(0.0, f"w{i}", INTERVAL_S, connected=True)
    for seq in range(beats_each):
        now = (seq + 1) * INTERVAL_S
        for tracker in fleet.trackers.values():
            tracker.beat(now, seq=seq, main_blocked_ms=1.0, loop_lag_ms=0.1)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    size = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return size / workers


def main() -> None:
    for rule in ("fixed", "phi"):
        beat_rate, evaluate_rate = updates_per_second(Thresholds(rule=rule))
        print(f"detector ({rule:5}): {beat_rate:>10,.0f} beats/s   {evaluate_rate:>10,.0f} worker evaluations/s")
    for label, beats in (("1 min", 600), ("10 min", 6_000), ("1 h", 36_000)):
        print(f"memory per worker after {label:>6} of beats at 10 Hz: {bytes_per_worker(beats):>8,.0f} bytes")


if __name__ == "__main__":
    main()
