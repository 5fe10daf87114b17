"""N workers beating at R Hz for S seconds into the monitor as ``heartmon watch`` runs
it: the engine in its child process (``MonitorProcess``), the real ``HeartmonApp``
headless at 160×50 (it lays out and renders every frame as in a terminal, minus the
terminal). A fake hub process plays the /watch stream (a snapshot, then each worker's
beats, numbered, in 10 ms slices, then a marker worker leaves: when the app's view shows
it dead, the engine has taken every beat before it).

Prints, over the steady part of each run (from the whole fleet in view to the marker):
the UI loop's lag (``app.ui_lags_ms``, sampled every 50 ms) p50/p99/max, the UI
process's CPU per tick and the time the app spends taking each view, beats dropped
(gaps in each worker's ``seq``: the rows' ``missed``, read from a full view once the
app is done), and the resident memory of the UI process and of the ingest child.

``--idle``: no ingest at all. The snapshot's workers have a one-hour interval and never
beat, so the engine has nothing to do and the app only redraws; run it at 1,000 and
10,000 workers (``--workers 1000,10000``, sizes alternate) to see whether the UI's
per-tick cost grows with the fleet. ``--burn N``: N processes spinning ``while True:
pass`` for the whole benchmark. Each run is a fresh interpreter, so memory figures do
not carry over. The monitor records, as every monitor does by default, to a temporary
file (``--no-record``: it does not); the recording's writer process's CPU and the
file's bytes per beat are printed. A benchmark that prints figures, not a test.

    .venv/bin/python benchmarks/tui.py [--workers 1000 --rate 10 | --workers 10000 --rate 1]
                                       [--seconds 30] [--runs 3] [--burn N] [--idle] [--no-record]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import multiprocessing
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import fake_hub
import psutil
from figures import bytes_per_beat, machine, percentile, print_machine, spread

from heartmon.commands import HubClient
from heartmon.config import Settings
from heartmon.lifeline import die_with_parent
from heartmon.monitor_process import MonitorProcess
from heartmon.tui.app import HeartmonApp
from heartmon.view import FleetView, ViewRequest

SIZE = (160, 50)
LAG_TARGET_MS = 16.0
IDLE_RATE_HZ = 1 / 3600


class Tap:
    """Between the feed and the app: passes everything through, times the app's taking
    of each view, and once the app is done takes views for the benchmark instead."""

    def __init__(self, feed: MonitorProcess) -> None:
        self.feed = feed
        self.app_callbacks: list[Callable[[FleetView], None]] = []
        self.take_ms: list[float] = []
        self.app_done = False
        self._mine: asyncio.Future | None = None
        feed.subscribe(self._deliver)

    def subscribe(self, callback: Callable[[FleetView], None]) -> None:
        self.app_callbacks.append(callback)

    def request(self, request: ViewRequest) -> None:
        self.feed.request(request)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.feed.attach(loop)

    def _deliver(self, view: FleetView) -> None:
        if self.app_done:
            if self._mine is not None and not self._mine.done():
                self._mine.set_result(view)
            return
        for callback in self.app_callbacks:
            start = time.perf_counter()
            callback(view)
            self.take_ms.append((time.perf_counter() - start) * 1000)

    async def whole_fleet(self) -> FleetView:
        """Every row, once the app is done: a view the app never asked for (no strips)."""
        for _ in range(20):
            self._mine = asyncio.get_running_loop().create_future()
            self.feed.request(ViewRequest(sort="missed", height=10**7))
            view = await asyncio.wait_for(self._mine, 60)
            if len(view.rows) == view.total and all(not row.strip for row in view.rows):
                return view
        raise SystemExit("no whole-fleet view came back")


def _child() -> psutil.Process:
    for child in psutil.Process().children():
        if "heartmon.monitor_process" in " ".join(child.cmdline()):
            return child
    raise SystemExit("the ingest child process is not running")


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def _until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _writer(child: psutil.Process) -> psutil.Process | None:
    """The ingest child's recording writer, if it records."""
    return next((p for p in child.children() if "heartmon.recording.writer" in " ".join(p.cmdline())), None)


async def one_run(workers: int, rate: float, seconds: float, idle: bool, record: Path | None) -> dict:
    sender, url, sent, _ = fake_hub.start_paced(workers, IDLE_RATE_HZ if idle else rate, seconds, beating=not idle)
    try:
        settings = Settings()
        recording = settings.recording.model_copy(update={"file": record, "enabled": record is not None})
        feed = MonitorProcess(settings.model_copy(update={"recording": recording}), [url])
        tap = Tap(feed)
        app = HeartmonApp(tap, HubClient())
        with feed:
            async with app.run_test(size=SIZE):
                await _until(lambda: app.view.total >= workers + 1, 120, "the whole fleet in the app's view")
                me, child, hub = psutil.Process(), _child(), psutil.Process(sender.pid)
                writer = _writer(child)
                first, takes0 = len(app.ui_lags_ms), len(tap.take_ms)
                cpu0, child0, hub0, wall0 = _cpu(me), _cpu(child), _cpu(hub), time.monotonic()
                writer0 = _cpu(writer) if writer else 0.0
                if idle:
                    await asyncio.sleep(seconds)
                else:
                    await _until(lambda: app.view.counts.get("dead", 0) >= 1, seconds + 120, "the end of the stream")
                cpu1, child1, hub1, wall1 = _cpu(me), _cpu(child), _cpu(hub), time.monotonic()
                writer1 = _cpu(writer) if writer else 0.0
                last = len(app.ui_lags_ms)
                lags, startup = list(app.ui_lags_ms)[first:last], list(app.ui_lags_ms)[:first]
                takes = tap.take_ms[takes0:]
                rss, child_rss = me.memory_info().rss, child.memory_info().rss
                tick_s, ingest_lag = app.tick_s, app.view.ingest_lag_ms
                not_healthy = workers - app.view.counts.get("healthy", 0)
            tap.app_done = True
            whole = await tap.whole_fleet()
    finally:
        sender.kill()
        sender.join()
    window = wall1 - wall0
    rows = [row for row in whole.rows if row.name != fake_hub.END]
    return {
        "workers": workers, "window_s": window, "samples": len(lags),
        "p50": percentile(lags, 0.5), "p99": percentile(lags, 0.99), "max": max(lags, default=float("nan")),
        "startup_max": max(startup, default=0.0),
        "ui_cpu_ms_per_tick": (cpu1 - cpu0) * 1000 / (window / tick_s), "ui_cpu": (cpu1 - cpu0) / window,
        "take_ms_p50": percentile(takes, 0.5), "take_ms_max": max(takes, default=float("nan")),
        "child_cpu": (child1 - child0) / window, "hub_cpu": (hub1 - hub0) / window,
        "writer_cpu": (writer1 - writer0) / window, "bytes_per_beat": _bytes_per_beat(record),
        "rss_mib": rss / 2**20, "child_rss_mib": child_rss / 2**20,
        "sent": max(0, sent.value), "dropped": sum(row.missed for row in rows),
        "not_healthy": not_healthy, "ingest_lag_ms": ingest_lag, "load": os.getloadavg()[0],
    }


def _bytes_per_beat(record: Path | None) -> float:
    """The recording's bytes per beat recorded, once the monitor has closed it."""
    if record is None or not record.exists():
        return float("nan")
    size = bytes_per_beat(record)
    shutil.rmtree(record.parent)
    return size


def _burn() -> None:
    die_with_parent()
    while True:
        pass


def _line(r: dict, idle: bool) -> str:
    head = (f"{r['workers']:>6} workers: UI lag p50 {r['p50']:5.1f}  p99 {r['p99']:5.1f}  max {r['max']:6.1f} ms"
            f" ({r['samples']} samples; start-up max {r['startup_max']:.0f} ms)"
            f"   UI CPU {r['ui_cpu_ms_per_tick']:5.1f} ms/tick"
            f"  view taken in {r['take_ms_p50']:.1f} ms (max {r['take_ms_max']:.1f})")
    ingest = "" if idle else (f"   {r['sent']:,} beats sent, {r['dropped']:,} dropped,"
                              f" {r['not_healthy']} not healthy at the marker")
    return (f"{head}\n{'':>15}load {r['load']:.2f}; RSS UI {r['rss_mib']:.0f} MiB,"
            f" ingest child {r['child_rss_mib']:.0f} MiB;"
            f" CPU UI {r['ui_cpu']:.0%}, ingest child {r['child_cpu']:.0%}, fake hub {r['hub_cpu']:.0%},"
            f" recording writer {r['writer_cpu']:.1%} ({r['bytes_per_beat']:.1f} bytes/beat){ingest}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1000", help="fleet size; several, comma-separated, alternate")
    parser.add_argument("--rate", type=float, default=10.0, help="beats per second per worker")
    parser.add_argument("--seconds", type=float, default=30.0, help="of beats (or, with --idle, of redrawing)")
    parser.add_argument("--runs", type=int, default=3, help="runs per fleet size, each a fresh process")
    parser.add_argument("--burn", type=int, default=0, help="CPU-burning processes for the whole benchmark")
    parser.add_argument("--idle", action="store_true", help="no ingest: a snapshot of workers that never beat")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", metavar="FILE", help="one run in this process under cProfile, stats to FILE")
    parser.add_argument("--no-record", dest="record", action="store_false", help="the monitor records nothing")
    args = parser.parse_args()
    sizes = [int(size) for size in args.workers.split(",")]
    if args.one or args.profile:  # one run, in this fresh process (for the orchestrating parent)
        profile = cProfile.Profile() if args.profile else None
        if profile is not None:
            profile.enable()
        record = Path(tempfile.mkdtemp(prefix="heartmon-tui-")) / "bench.sqlite" if args.record else None
        result = asyncio.run(one_run(sizes[0], args.rate, args.seconds, args.idle, record))
        if profile is not None:
            profile.disable()
            profile.dump_stats(args.profile)
            pstats.Stats(args.profile).sort_stats("cumulative").print_stats(40)
        print(json.dumps(result))
        return
    what = "idle fleet, no ingest" if args.idle else f"{args.rate:g} Hz for {args.seconds:g} s"
    print_machine(f"tui: {args.workers} workers, {what}, {SIZE[0]}×{SIZE[1]}, {args.runs} runs,"
                  f" {args.burn} CPU burners, {'recording' if args.record else 'not recording'}")
    ctx = multiprocessing.get_context("spawn")
    burners = [ctx.Process(target=_burn, daemon=True) for _ in range(args.burn)]
    results: dict[int, list[dict]] = defaultdict(list)
    try:
        for burner in burners:
            burner.start()
        for n in range(1, args.runs + 1):
            for size in sizes:  # sizes alternate, so each sees the same machine
                command = [sys.executable, str(Path(__file__).resolve()), "--one", "--workers", str(size),
                           "--rate", str(args.rate), "--seconds", str(args.seconds)]
                command += (["--idle"] if args.idle else []) + ([] if args.record else ["--no-record"])
                done = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + 600)
                if done.returncode != 0:
                    print(done.stdout, done.stderr, sep="\n", file=sys.stderr)
                    raise SystemExit(f"run {n} at {size} workers failed")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                results[size].append(result)
                print(f"run {n}: {_line(result, args.idle)}", flush=True)
    finally:
        for burner in burners:
            burner.kill()
            burner.join()
    if args.runs > 1:
        print("median (min–max) over the runs:")
    for size, runs in results.items():
        def s(key: str, fmt: str = "{:.1f}") -> str:
            return spread([r[key] for r in runs], fmt)  # noqa: B023 -- called only within this iteration
        p99 = statistics.median(r["p99"] for r in runs)
        print(f"{size:>6} workers: UI lag p50 {s('p50')}  p99 {s('p99')}  max {s('max')} ms"
              f"  [p99 target ≤ {LAG_TARGET_MS:g} ms: {'met' if p99 <= LAG_TARGET_MS else 'MISSED'}]")
        print(f"{'':>15}UI CPU {s('ui_cpu_ms_per_tick')} ms/tick; view taken in {s('take_ms_p50')} ms;"
              f" RSS UI {s('rss_mib', '{:.0f}')} MiB, ingest child {s('child_rss_mib', '{:.0f}')} MiB;"
              f" CPU (of a core): ingest child {s('child_cpu', '{:.2f}')}, fake hub {s('hub_cpu', '{:.2f}')},"
              f" recording writer {s('writer_cpu', '{:.3f}')}; {s('bytes_per_beat')} bytes/beat")
        if not args.idle:
            print(f"{'':>15}dropped {s('dropped', '{:.0f}')} of {s('sent', '{:,.0f}')} beats sent;"
                  f" not healthy at the marker {s('not_healthy', '{:.0f}')}")

    print(f"at the end: {machine()}")

if __name__ == "__main__":
    main()
