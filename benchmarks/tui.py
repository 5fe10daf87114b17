"""1,000 workers beating at 10 Hz for 30 s into the monitor and its Textual app.

A sender process plays a hub's /watch stream at that pace (a snapshot, then 10,000
beat frames a second, exactly as the hub encodes them). The real Monitor ingests it on
its thread; the real HeartmonApp runs headless (it lays out and renders every frame as
in a terminal, minus the terminal). Prints the UI loop's lag (sampled every 50 ms),
beats dropped between sender and fleet state, and resident memory. A benchmark that
prints figures, not a test.

    .venv/bin/python benchmarks/tui.py [--seconds 30] [--workers 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time

import fake_hub
import psutil

from heartmon.config import Settings
from heartmon.monitor import Monitor
from heartmon.protocol import PROTOCOL_VERSION, Snapshot, WorkerBeat, WorkerInfo, encode
from heartmon.tui.app import HeartmonApp
from heartmon.commands import HubClient

RATE_HZ = 10


def _sender(workers: int, seconds: float, sent, port, ready) -> None:
    async def stream(ws) -> None:
        now = time.time()
        infos = [WorkerInfo(worker=f"w{i:04}", isolation=("none", "thread", "process")[i % 3], pid=0, host="bench",
                            interval_ms=1000 // RATE_HZ, agent="bench", probes=[], connected_at=now,
                            last_beat_at=now, seq=0) for i in range(workers)]
        await ws.send(encode(Snapshot(v=PROTOCOL_VERSION, hub="bench", sent_at=now, workers=infos)))
        start = time.monotonic()
        count, slot = 0, 0
        slices = 10  # each interval is sent in ten slices, so the pace is smooth
        while slot < seconds * RATE_HZ * slices:
            seq = slot // slices + 1
            part = range(slot % slices, workers, slices)
            for i in part:
                await ws.send(encode(WorkerBeat(worker=f"w{i:04}", seq=seq, sent_at=0, recv_at=0,
                                                loop_lag_ms=0.1, main_blocked_ms=2.0)))
            count += len(part)
            slot += 1
            await asyncio.sleep(max(0.0, start + slot / (RATE_HZ * slices) - time.monotonic()))
        sent.value = count
        await asyncio.Future()  # keep the stream open: the workers are still "connected"

    fake_hub.serve_stream(stream, port, ready)


async def _run(workers: int, seconds: float) -> None:
    sent = multiprocessing.get_context("spawn").Value("q", -1)
    sender, url = fake_hub.start(_sender, workers, seconds, sent)
    try:
        monitor = Monitor(Settings(), [url])
        app = HeartmonApp(monitor, HubClient())
        with monitor:
            async with app.run_test(size=(160, 50)) as pilot:
                while sent.value < 0:
                    await asyncio.sleep(0.1)
                received = 0
                for _ in range(100):  # let the ingest thread drain its socket
                    with monitor.lock:
                        received = sum(t.beats for t in monitor.fleet.trackers.values())
                    if received >= sent.value:
                        break
                    await asyncio.sleep(0.1)
                await pilot.pause()
                lags = sorted(app.ui_lags_ms)
                rss = psutil.Process().memory_info().rss
    finally:
        sender.kill()
        sender.join()
    print(f"{workers} workers at {RATE_HZ} Hz for {seconds:g} s: {sent.value:,} beats sent, {received:,} received,"
          f" {sent.value - received:,} dropped")
    print(f"UI loop lag over {len(lags)} samples: p50 {statistics.median(lags):.1f} ms,"
          f" p99 {lags[int(0.99 * (len(lags) - 1))]:.1f} ms, max {lags[-1]:.1f} ms  (one frame: 16.7 ms)")
    print(f"resident memory: {rss / 2**20:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--workers", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(_run(args.workers, args.seconds))


if __name__ == "__main__":
    main()
