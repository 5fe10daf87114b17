"""Stack capture: what it costs a worker, and how soon the stack is in the monitor's view.

1. Overhead. Each round starts a hub and one real ``none`` worker (its loop stamps
   every 10 ms, the capture re-arms on every stamp), measures the worker process's CPU
   time (user + system) over ``--seconds``, with ``--capture off`` and ``--capture auto``
   alternately (A B A B …, so a drift of the machine falls on both). Also the cost of
   one re-arm (``timer_settime`` through ctypes) on its own, times 100 stamps a second.
2. Time to the stack. A mock fleet (one worker per isolation, 100 ms beats), watched by
   an in-process monitor; each probe runs 2 s on one worker at a time, and the time is
   from the probe's start (its ``probe_started``, as the monitor receives it, sent just
   before the probe begins) to the arrival of the first stack of the block in the
   monitor, read from the views' detail.
   The TUI asks for a view 4 times a second: on screen, add up to 250 ms. With py-spy
   (the default for a local worker) and without it.

    .venv/bin/python benchmarks/capture.py [--runs 3] [--seconds 20]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from multiprocessing.sharedctypes import RawArray

import httpx
import psutil
from figures import print_machine, spread

from heartmon.capture import SLOTS, stack_pipe, start_capture
from heartmon.config import load_settings
from heartmon.monitor import Monitor
from heartmon.stopping import stop_processes
from heartmon.view import ViewRequest

HEARTMON = [sys.executable, "-m", "heartmon"]
CASES = (("none", "gil-hold"), ("none", "busy-python"), ("thread", "gil-hold"), ("thread", "busy-python"),
         ("process", "gil-hold"), ("process", "busy-python"))


def _start(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([*HEARTMON, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if match := re.search(r"hub listening on (\S+)", line):
            return proc, match.group(1)
    raise RuntimeError(f"heartmon {' '.join(args)} did not start")


def _stop(proc: subprocess.Popen) -> None:
    stop_processes([proc], 10)


def worker_cpu(hub: str, capture: str, seconds: float) -> float:
    """Percent of one core the worker process used, settled first."""
    proc = subprocess.Popen([*HEARTMON, "worker", "--hub", hub, "--name", f"bench-{capture}", "--isolation", "none",
                             "--interval-ms", "100", "--capture", capture],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        ps = psutil.Process(proc.pid)
        before = sum(ps.cpu_times()[:2])
        time.sleep(seconds)
        return (sum(ps.cpu_times()[:2]) - before) / seconds * 100
    finally:
        _stop(proc)


def rearm_cost_us() -> float:
    pipe, dumps = stack_pipe()
    capture = start_capture(dumps.fileno(), RawArray("d", SLOTS), 0.2, "auto")
    assert capture is not None
    n = 100_000
    start = time.perf_counter()
    for _ in range(n):
        capture.arm()
    cost = (time.perf_counter() - start) / n * 1e6
    capture.close()
    pipe.close()
    dumps.close()
    return cost


def overhead(args: argparse.Namespace) -> None:
    print_machine("stack capture: CPU of an idle none worker (10 ms stamps), capture off vs on")
    hub, url = _start("hub", "--port", "0")
    off: list[float] = []
    on: list[float] = []
    try:
        for _ in range(args.runs):
            off.append(worker_cpu(url, "off", args.seconds))
            on.append(worker_cpu(url, "auto", args.seconds))
            print(f"  off {off[-1]:.2f} %   on {on[-1]:.2f} %", flush=True)
    finally:
        _stop(hub)
    diffs = [b - a for a, b in zip(off, on, strict=True)]
    print(f"capture off: {spread(off)} % of a core")
    print(f"capture on:  {spread(on)} % of a core")
    print(f"on − off, per pair: {spread(diffs, '{:+.2f}')} points")
    costs = [rearm_cost_us() for _ in range(args.runs)]
    print(f"one re-arm: {spread(costs, '{:.2f}')} µs; at 100 stamps/s: "
          f"{spread([c * 100 / 1e6 * 100 for c in costs], '{:.3f}')} % of a core")


def time_to_stack(monitor: Monitor, http: str, worker: str, probe: str) -> float | None:
    """Seconds from the probe's start to the first view with a stack of its block."""
    key = next(r.key for r in monitor.view(ViewRequest(height=100)).rows if r.name == worker)
    command = httpx.post(f"{http}/api/workers/{worker}/inject", params={"probe": probe, "duration_s": 2}).json()
    deadline = time.monotonic() + 8
    found = None
    while time.monotonic() < deadline:
        view = monitor.view(ViewRequest(height=0, detail=key))
        detail = view.detail
        assert detail is not None
        run = next((r for r in detail.probes if r.id == command["id"]), None)
        stack = detail.stack
        if run is not None and found is None and stack is not None and stack.received_at >= run.started_at:
            # when it came (a none worker's report comes just before the beat that ends
            # the block, and a view a moment later already shows it as the last block's)
            found = stack.received_at - run.started_at
        if run is not None and run.finished_at is not None and detail.row.state == "healthy":
            break
        time.sleep(0.005)
    time.sleep(0.5)  # its beats settle before the next case
    return found


def latency(args: argparse.Namespace) -> None:
    print_machine("stack capture: from the block's start to the stack in the monitor's view")
    fleet, url = _start("mock", "--port", "0", "--interval-ms", "100", "--workers", "none:1,thread:1,process:1")
    http = url.replace("ws://", "http://")
    try:
        time.sleep(3)
        for spy in ("py-spy", ""):
            settings = load_settings(overrides={"monitor": {"py_spy": spy}})
            with Monitor(settings, [url]) as monitor:
                time.sleep(1.5)
                print(f"-- py-spy {'on' if spy else 'off'}")
                for mode, probe in CASES:
                    times = [time_to_stack(monitor, http, f"{mode}-1", probe) for _ in range(args.runs)]
                    got = [t * 1000 for t in times if t is not None]
                    print(f"  {mode:<8} {probe:<12} {spread(got, '{:.0f}')} ms"
                          + (f"  ({len(times) - len(got)} with no stack)" if len(got) < len(times) else ""),
                          flush=True)
    finally:
        _stop(fleet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    overhead(args)
    latency(args)


if __name__ == "__main__":
    main()
