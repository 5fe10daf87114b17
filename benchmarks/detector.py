"""Detector throughput and memory per worker, on the fleet state alone (no I/O, no
threads): beats applied per second, deadline judgements per second, a full scan's rate
(what a snapshot costs), and the memory a worker costs after 1 min, 10 min and 1 h of
beats at 10 Hz. Workers are keyed (source, name) as everywhere. A benchmark that
prints figures, not a test.

    .venv/bin/python benchmarks/detector.py [--runs 3] [--workers 1000] [--memory-workers 50]
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

from figures import machine, print_machine, spread

from heartmon.detector import Thresholds
from heartmon.fleet_state import FleetState

INTERVAL_S = 0.1
SOURCE = "ws://127.0.0.1:8787"
TARGET_BYTES = 4096
DURATIONS = (("1 min", 60), ("10 min", 600), ("1 h", 3600))


def _fleet(thresholds: Thresholds, workers: int) -> FleetState:
    fleet = FleetState(thresholds)
    for i in range(workers):
        fleet.join(0.0, (SOURCE, f"w{i:05}"), INTERVAL_S, connected=True, isolation="process", pid=0, host="bench")
    return fleet


def throughput(thresholds: Thresholds, workers: int, rounds: int) -> tuple[float, float, float]:
    """(beats/s, deadline judgements/s, full-scan evaluations/s). Each round every worker
    beats once, then the deadlines that fell due are judged, as the monitor's alarm does."""
    fleet = _fleet(thresholds, workers)
    keys = list(fleet.trackers)
    trackers = list(fleet.trackers.values())
    beat_time = judge_time = 0.0
    judged = 0
    for r in range(1, rounds + 1):
        now = r * INTERVAL_S
        start = time.perf_counter()
        for key in keys:
            fleet.beat(now, key, seq=r, main_blocked_ms=1.0, loop_lag_ms=0.1)
        beat_time += time.perf_counter() - start
        judge_at = now + INTERVAL_S / 2
        judged += sum(1 for t in trackers if t.due is not None and t.due <= judge_at)  # outside the timing
        start = time.perf_counter()
        fleet.evaluate_due(judge_at)
        judge_time += time.perf_counter() - start
    scans = 50
    start = time.perf_counter()
    for s in range(scans):
        fleet.evaluate(now + INTERVAL_S / 2 + s * 1e-4)
    scan_rate = scans * workers / (time.perf_counter() - start)
    return rounds * workers / beat_time, judged / judge_time, scan_rate


def bytes_per_worker(seconds: float, workers: int) -> float:
    """Memory held by a fleet after `seconds` of beats at 10 Hz, judged as it goes, per worker."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    fleet = _fleet(Thresholds(), workers)
    keys = list(fleet.trackers)
    for r in range(1, round(seconds / INTERVAL_S) + 1):
        now = r * INTERVAL_S
        for key in keys:
            fleet.beat(now, key, seq=r, main_blocked_ms=1.0, loop_lag_ms=0.1)
        fleet.evaluate_due(now + INTERVAL_S / 2)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del fleet
    return held / workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1000, help="fleet size for throughput")
    parser.add_argument("--rounds", type=int, default=300, help="beats per worker for throughput")
    parser.add_argument("--memory-workers", type=int, default=50, help="fleet size for memory (traced: slow)")
    parser.add_argument("--no-hour", action="store_true", help="skip the 1 h memory figure (the slowest)")
    args = parser.parse_args()
    print_machine(f"detector: {args.workers} workers, {args.rounds} beats each, {args.runs} runs")
    for rule in ("fixed", "phi"):
        figures = [throughput(Thresholds(rule=rule), args.workers, args.rounds) for _ in range(args.runs)]
        beats, judged, scans = zip(*figures, strict=True)  # every run's figure is a triple
        print(f"detector ({rule:5}): beats {spread(list(beats), '{:,.0f}')}/s   deadline judgements"
              f" {spread(list(judged), '{:,.0f}')}/s   full scan {spread(list(scans), '{:,.0f}')} workers/s",
              flush=True)
    for label, seconds in DURATIONS:
        if args.no_hour and seconds >= 3600:
            continue
        size = bytes_per_worker(seconds, args.memory_workers)  # deterministic: one run says it
        verdict = "within" if size <= TARGET_BYTES else "OVER"
        print(f"memory per worker after {label:>6} of beats at 10 Hz: {size:>7,.0f} bytes"
              f"  ({verdict} the target of {TARGET_BYTES:,})", flush=True)

    print(f"at the end: {machine()}")

if __name__ == "__main__":
    main()
