"""Hub-to-monitor beats per second beside the raw websockets receive rate, in
alternating rounds (raw, pipeline, raw, pipeline, …) so that both see the same machine.

A sender process plays a hub's /watch stream as fast as it can, to every connection:
a snapshot of 1,000 workers and two markers, then ``bench-start`` leaving, the beat
frames (exactly as the hub encodes them), and ``bench-end`` leaving. A raw round is a
bare websockets client that only counts frames (the ceiling). A pipeline round is
heartmon's in-process ``Monitor`` (receive, decode, detector, on its ingest thread),
read only through ``Monitor.view``: the two markers' ``dead`` transitions carry the
monitor's own clock when it took each frame, so the rate is measured between them
without polling. Both rounds time the same frames: from ``bench-start`` to ``bench-end``.
Beats lost on the way show as the rows' ``missed`` (gaps in each worker's ``seq``).
A benchmark that prints figures, not a test.

    .venv/bin/python benchmarks/pipeline.py [--pairs 5] [--beats 300000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import fake_hub
from figures import machine, print_machine, spread
from websockets.asyncio.client import connect

from heartmon.config import Settings
from heartmon.detector import Transition
from heartmon.monitor import Monitor
from heartmon.protocol import PROTOCOL_VERSION, Snapshot, WorkerBeat, WorkerInfo, WorkerLeft, encode
from heartmon.view import ViewRequest

WORKERS = 1000
START, END = "bench-start", "bench-end"
TARGET = 0.9


def _frames(beats: int) -> list[str]:
    now = time.time()
    names = [f"w{i:04}" for i in range(WORKERS)] + [START, END]
    infos = [WorkerInfo(worker=name, isolation="process", pid=0, host="bench", interval_ms=100, agent="bench",
                        probes=[], connected_at=now, last_beat_at=now, seq=0) for name in names]
    frames = [encode(Snapshot(v=PROTOCOL_VERSION, hub="bench", sent_at=now, workers=infos)),
              encode(WorkerLeft(worker=START, reason="the timed frames start", at=now))]
    frames += [encode(WorkerBeat(worker=names[n % WORKERS], seq=n // WORKERS + 1, sent_at=now, recv_at=now,
                                 loop_lag_ms=0.2, main_blocked_ms=3.0)) for n in range(beats)]
    frames.append(encode(WorkerLeft(worker=END, reason="the timed frames end", at=now)))
    return frames


def _sender(beats: int, port, ready) -> None:
    frames = _frames(beats)

    async def stream(ws) -> None:
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()  # the reader hangs up when it has seen the end

    fake_hub.serve_stream(stream, port, ready)


async def _raw(url: str, beats: int) -> float:
    """Frames per second, bench-start excluded, bench-end included: beats + 1 frames."""
    async with connect(f"{url}/watch", compression=None, max_size=None) as ws:
        await ws.recv()  # the snapshot
        await ws.recv()  # bench-start
        start = time.perf_counter()
        count = 0
        async for _frame in ws:
            count += 1
            if count == beats + 1:
                break
        return count / (time.perf_counter() - start)


def _pipeline(url: str, beats: int) -> tuple[float, int]:
    """(frames per second between the markers as the monitor took them, beats missed)."""
    monitor = Monitor(Settings(), [url])
    stamps: dict[str, float] = {}
    seen = 0
    deadline = time.monotonic() + 300
    with monitor:
        while END not in stamps:
            if time.monotonic() > deadline:
                raise SystemExit("the pipeline round did not finish in 300 s")
            view = monitor.view(ViewRequest(height=0, seen=seen))
            if view.crashed:
                raise SystemExit(f"the monitor crashed: {view.crashed}")
            seen = view.logged
            for entry in view.entries:
                if isinstance(entry, Transition) and entry.to_state == "dead" and entry.worker in (START, END):
                    stamps[entry.worker] = entry.at
            time.sleep(0.1)
        rows = monitor.view(ViewRequest(sort="name", height=WORKERS + 2)).rows
    missed = sum(row.missed for row in rows)
    return (beats + 1) / (stamps[END] - stamps[START]), missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5, help="raw/pipeline round pairs (at least 3)")
    parser.add_argument("--beats", type=int, default=300_000, help="beat frames per round")
    args = parser.parse_args()
    if args.pairs < 3:
        parser.error("--pairs must be at least 3: one pair says nothing on a noisy machine")
    print_machine(f"pipeline: {WORKERS} workers, {args.beats:,} beats a round, {args.pairs} raw/pipeline pairs")
    sender, url = fake_hub.start(_sender, args.beats)
    raws, pipes, ratios, missed = [], [], [], []
    try:
        for pair in range(1, args.pairs + 1):
            raw = asyncio.run(_raw(url, args.beats))
            pipe, lost = _pipeline(url, args.beats)
            raws.append(raw)
            pipes.append(pipe)
            ratios.append(pipe / raw)
            missed.append(lost)
            print(f"pair {pair}: raw {raw:>9,.0f} frames/s   pipeline {pipe:>9,.0f} beats/s"
                  f" ({1e6 / pipe:5.1f} µs/beat)   ratio {pipe / raw:.2f}   missed {lost}   load {os.getloadavg()[0]:.2f}",
                  flush=True)
    finally:
        sender.kill()
        sender.join()
    print(f"raw websockets receive:  {spread(raws, '{:,.0f}')} frames/s")
    print(f"hub-to-monitor pipeline: {spread(pipes, '{:,.0f}')} beats/s  (receive + decode + detector)")
    verdict = "meets" if statistics.median(ratios) >= TARGET else "MISSES"
    print(f"pipeline / raw:          {spread(ratios)}  median {verdict} the target of {TARGET}")
    print(f"beats missed:            {sum(missed)} in all rounds")

    print(f"at the end: {machine()}")

if __name__ == "__main__":
    main()
