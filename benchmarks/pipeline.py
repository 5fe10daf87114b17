"""Hub-to-monitor beats per second beside the raw websockets receive rate, in one run.

A sender process plays a hub's /watch stream as fast as it can: a snapshot of 1,000
workers, then beat frames exactly as the hub encodes them. The same stream is read
twice on this machine: once by a bare websockets client that only counts frames (the
ceiling), once by heartmon's Monitor (receive, decode, detector update, under its
lock, on its ingest thread). A benchmark that prints figures, not a test.

    .venv/bin/python benchmarks/pipeline.py
"""

from __future__ import annotations

import asyncio
import time

import fake_hub
from websockets.asyncio.client import connect

from heartmon.config import load_settings
from heartmon.monitor import Monitor
from heartmon.protocol import PROTOCOL_VERSION, Snapshot, WorkerBeat, WorkerInfo, encode

WORKERS = 1000
BEATS = 300_000


def _frames() -> list[str]:
    now = time.time()
    infos = [WorkerInfo(worker=f"w{i}", isolation="process", pid=0, host="bench", interval_ms=100, agent="bench",
                        probes=[], connected_at=now, last_beat_at=now, seq=0) for i in range(WORKERS)]
    frames = [encode(Snapshot(v=PROTOCOL_VERSION, hub="bench", sent_at=now, workers=infos))]
    frames += [encode(WorkerBeat(worker=f"w{n % WORKERS}", seq=n // WORKERS + 1, sent_at=now, recv_at=now,
                                 loop_lag_ms=0.2, main_blocked_ms=3.0)) for n in range(BEATS)]
    return frames


def _sender(port, ready) -> None:
    frames = _frames()

    async def stream(ws) -> None:
        for frame in frames:
            await ws.send(frame)
        await ws.close()

    fake_hub.serve_stream(stream, port, ready)


async def _raw(url: str) -> float:
    count = 0
    async with connect(url, compression=None, max_size=None) as ws:
        start = time.perf_counter()
        async for _frame in ws:
            count += 1
    return (count - 1) / (time.perf_counter() - start)


def _monitor(url: str) -> float:
    monitor = Monitor(load_settings(), [url])
    with monitor:
        deadline = time.monotonic() + 120
        while not monitor.fleet.trackers and time.monotonic() < deadline:
            time.sleep(0.001)
        start = time.perf_counter()
        while sum(t.beats for t in list(monitor.fleet.trackers.values())) < BEATS and time.monotonic() < deadline:
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        done = sum(t.beats for t in list(monitor.fleet.trackers.values()))
    return done / elapsed


def main() -> None:
    sender, url = fake_hub.start(_sender)
    try:
        raw = asyncio.run(_raw(f"{url}/watch"))
        pipeline = _monitor(url)
    finally:
        sender.kill()
        sender.join()
    print(f"raw websockets receive:        {raw:>10,.0f} frames/s")
    print(f"hub-to-monitor pipeline:       {pipeline:>10,.0f} beats/s  (receive + decode + detector)")
    print(f"pipeline / raw:                {pipeline / raw:>10.2f}")


if __name__ == "__main__":
    main()
