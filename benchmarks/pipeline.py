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
Each pair runs the pipeline twice, recording (as every monitor does by default) and
not, so that the recording's cost is measured on the same machine at the same time;
the recording's size gives its bytes per beat. A benchmark that prints figures, not a test.

    .venv/bin/python benchmarks/pipeline.py [--pairs 5] [--beats 300000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import fake_hub
import psutil
from figures import bytes_per_beat, machine, print_machine, spread
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from heartmon.config import Settings
from heartmon.detector import Transition
from heartmon.monitor import Monitor
from heartmon.protocol import WorkerBeat, WorkerInfo, WorkerLeft, encode
from heartmon.view import ViewRequest

WORKERS = 1000
BATCH, WINDOW = 2000, 3
"""Frames per acknowledged batch, and batches in flight: about 60 ms of frames."""
START, END = "bench-start", "bench-end"
TARGET = 0.9


def _frames(beats: int) -> list[str]:
    now = time.time()
    names = [f"w{i:04}" for i in range(WORKERS)] + [START, END]
    infos = [WorkerInfo(worker=name, isolation="process", pid=0, host="bench", interval_ms=100, agent="bench",
                        probes=[], connected_at=now, last_beat_at=now, seq=0) for name in names]
    frames = [fake_hub.snapshot(infos, now),
              encode(WorkerLeft(worker=START, reason="the timed frames start", at=now))]
    frames += [encode(WorkerBeat(worker=names[n % WORKERS], seq=n // WORKERS + 1, sent_at=now, recv_at=now,
                                 loop_lag_ms=0.2, main_blocked_ms=3.0)) for n in range(beats)]
    frames.append(encode(WorkerLeft(worker=END, reason="the timed frames end", at=now)))
    return frames


def _sender(beats: int, port, ready) -> None:
    frames = _frames(beats)

    async def stream(ws) -> None:
        """As fast as the reader takes them, but never more than WINDOW batches ahead of
        what it has parsed (a ping after each batch; its pong says the reader got there).
        Unbounded, the backlog would sit in socket buffers for seconds, and the monitor
        drops a hub stream whose pong is that late (its keepalive)."""
        acks: deque = deque()
        try:
            for start in range(0, len(frames), BATCH):
                for frame in frames[start:start + BATCH]:
                    await ws.send(frame)
                acks.append(await ws.ping())
                if len(acks) >= WINDOW:
                    await acks.popleft()
            await ws.wait_closed()  # the reader hangs up when it has seen the end
        except ConnectionClosed:
            pass

    fake_hub.serve_stream(stream, port, ready)


async def _raw(url: str, beats: int) -> tuple[float, float]:
    """(frames per second, CPU seconds per frame), bench-start excluded, bench-end
    included: beats + 1 frames."""
    async with connect(f"{url}/watch", compression=None, max_size=None) as ws:
        await ws.recv()  # the snapshot
        await ws.recv()  # bench-start
        start, cpu = time.perf_counter(), time.thread_time()
        count = 0
        async for _frame in ws:
            count += 1
            if count == beats + 1:
                break
        return count / (time.perf_counter() - start), (time.thread_time() - cpu) / count


def _thread_cpu(name: str) -> float:
    """CPU seconds (user + system) of this process's thread called `name`."""
    ident = next(t.native_id for t in threading.enumerate() if t.name == name)
    return next(t.user_time + t.system_time for t in psutil.Process().threads() if t.id == ident)


def _pipeline(url: str, beats: int, record: Path | None) -> tuple[float, float, int, int]:
    """(frames per second between the markers as the monitor took them, the ingest
    thread's CPU seconds per frame, beats missed, times the stream was dropped). A dropped
    stream is replayed from the start on the reconnect: the markers of the last, whole pass
    are the ones that count. ``record``: the file to record to, if any."""
    settings = Settings()
    if record is not None:
        settings = settings.model_copy(update={"recording": settings.recording.model_copy(update={"file": record})})
    monitor = Monitor(settings, [url])
    stamps: dict[str, float] = {}
    cpu: dict[str, float] = {}
    seen = drops = 0
    deadline = time.monotonic() + 300
    with monitor:
        while END not in stamps:
            if time.monotonic() > deadline:
                raise SystemExit("the pipeline round did not finish in 300 s")
            view = monitor.view(ViewRequest(height=0, seen=seen))
            if view.crashed:
                raise SystemExit(f"the monitor crashed: {view.crashed}")
            if view.logged - seen > len(view.entries):
                raise SystemExit("log entries were lost between two reads: read more often")
            seen = view.logged
            for entry in view.entries:
                if not isinstance(entry, Transition) or entry.worker not in (START, END):
                    continue
                if entry.to_state == "dead":
                    stamps[entry.worker] = entry.at
                    cpu[entry.worker] = _thread_cpu("heartmon-ingest")  # within a poll of the frame
                elif entry.worker == END and entry.to_state == "unknown":
                    drops += 1  # the source was lost mid-pass
            time.sleep(0.02)
        rows = monitor.view(ViewRequest(sort="name", height=WORKERS + 2)).rows
    missed = sum(row.missed for row in rows)
    return (beats + 1) / (stamps[END] - stamps[START]), (cpu[END] - cpu[START]) / (beats + 1), missed, drops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5, help="raw/pipeline round pairs (at least 3)")
    parser.add_argument("--beats", type=int, default=300_000, help="beat frames per round")
    args = parser.parse_args()
    if args.pairs < 3:
        parser.error("--pairs must be at least 3: one pair says nothing on a noisy machine")
    print_machine(f"pipeline: {WORKERS} workers, {args.beats:,} beats a round, {args.pairs} raw/pipeline pairs")
    sender, url = fake_hub.start(_sender, args.beats)
    raws, missed, drops = [], [], []
    pipes: dict[bool, list[float]] = {True: [], False: []}
    ratios: dict[bool, list[float]] = {True: [], False: []}
    costs: dict[bool, list[float]] = {True: [], False: []}
    sizes = []
    folder = Path(tempfile.mkdtemp(prefix="heartmon-pipeline-"))
    try:
        for pair in range(1, args.pairs + 1):
            raw, raw_cpu = asyncio.run(_raw(url, args.beats))
            raws.append(raw)
            line = f"pair {pair}: raw {raw:>9,.0f} frames/s"
            for recording in (pair % 2 == 1, pair % 2 == 0):  # which goes first alternates
                path = folder / f"pair-{pair}.sqlite" if recording else None
                pipe, pipe_cpu, lost, dropped = _pipeline(url, args.beats, path)
                pipes[recording].append(pipe)
                ratios[recording].append(pipe / raw)
                costs[recording].append(raw_cpu / pipe_cpu)
                missed.append(lost)
                drops.append(dropped)
                line += (f"   {'recording' if recording else 'not recording'} {pipe:>9,.0f} beats/s"
                         f" ({pipe / raw:.2f}, {pipe_cpu * 1e6:4.1f} µs CPU)")
                if path is not None:
                    sizes.append(bytes_per_beat(path))
            print(f"{line}   raw CPU {raw_cpu * 1e6:4.1f} µs   missed {sum(missed[-2:])}"
                  f"   stream drops {sum(drops[-2:])}   load {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        sender.kill()
        sender.join()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"raw websockets receive:  {spread(raws, '{:,.0f}')} frames/s")
    for recording in (True, False):
        what = "recording" if recording else "not recording"
        verdict = "meets" if statistics.median(ratios[recording]) >= TARGET else "MISSES"
        print(f"pipeline, {what + ':':<15}{spread(pipes[recording], '{:,.0f}')} beats/s; / raw "
              f"{spread(ratios[recording])}, median {verdict} the target of {TARGET}; raw CPU / pipeline CPU "
              f"{spread(costs[recording])}")
    print("  (receive + decode + detector [+ recording]; the CPU ratio is the same in CPU time, which other"
          " processes on the machine disturb less than wall time)")
    print(f"recording size:          {spread(sizes)} bytes per beat (the whole file: beats, judgements, workers)")
    print(f"beats missed:            {sum(missed)} in all rounds; streams dropped by the monitor: {sum(drops)}")
    print(f"at the end: {machine()}")

if __name__ == "__main__":
    main()
