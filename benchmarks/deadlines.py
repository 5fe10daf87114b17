"""Detection lateness: how long after a silence crosses a threshold the monitor says so.

A fake hub plays 1,000 workers beating at 10 Hz into an in-process ``Monitor``; HTTP
health endpoints, polled at the same interval, stand beside it. After a warm-up, a
known subset falls silent at staggered times: 100 hub workers (their connection stays
open, so they go late at 2× the interval, then starved at 5×) and 20 HTTP endpoints
(which hang: no evidence of life, so late at 2×, then dead at 10×; a hub worker is
never declared dead for silence alone). Every ``late``/``starved``/``dead`` transition in
the view's log carries the silence it was judged at (``Transition.silence_s``, on the
monitor's clock); ``silence_s − threshold`` is how late the judgement came. Also prints
the ingest thread's CPU use with every worker beating and while they fall silent, and
false alarms: a worker judged late or worse while it was still beating (its last beat,
``at − silence_s``, on the monitor's clock, which is time.monotonic like the sender's
schedule). A benchmark that prints figures, not a test.

    .venv/bin/python benchmarks/deadlines.py [--runs 3] [--workers 1000] [--rate 10] [--silent 100] [--http 20]
"""

from __future__ import annotations

import argparse
import os
import random
import threading
import time
from collections import defaultdict

import fake_hub
import psutil
from figures import machine, percentile, print_machine, spread

from heartmon.config import Settings
from heartmon.fleet_state import MonitorStall
from heartmon.monitor import Monitor
from heartmon.view import ViewRequest

MULTIPLE = {"late": 2.0, "starved": 5.0, "dead": 10.0}
"""The default thresholds, in intervals (the benchmark runs with the default settings)."""
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))


def _thread_cpu(name: str) -> float:
    """CPU seconds (user + system) of this process's thread called `name`."""
    ident = next(t.native_id for t in threading.enumerate() if t.name == name)
    return next(t.user_time + t.system_time for t in psutil.Process().threads() if t.id == ident)


def one_run(args: argparse.Namespace, seed: int) -> dict:
    rng = random.Random(seed)
    interval_s = 1 / args.rate
    step = max(1, args.workers // args.silent)
    silent_hub = {k * step: k * args.stagger / args.silent + rng.uniform(0, interval_s) for k in range(args.silent)}
    silent_http = {j: j * args.stagger / max(1, args.http) + rng.uniform(0, interval_s) for j in range(args.http)}
    last_offset = max([*silent_hub.values(), *silent_http.values(), 0.0])
    judged_by = last_offset + MULTIPLE["dead"] * interval_s + 1.5
    seconds = args.warmup + judged_by + 30  # the stream outlives the run; the run stops it
    sender, url, _sent, base = fake_hub.start_paced(args.workers, args.rate, seconds, silence=silent_hub)
    helpers = [sender]
    http_base = ""
    if args.http:
        endpoints, http_base = fake_hub.start_http(silent_http, base)
        helpers.append(endpoints)
    settings = Settings(monitor={"http_interval_ms": round(interval_s * 1000)})
    http_names = [f"h{j:03}" for j in range(args.http)]
    sources = [url] + [f"{name}={http_base}/h/{j}" for j, name in enumerate(http_names)]
    silenced = {fake_hub.worker_name(i) for i in silent_hub} | {http_names[j] for j in silent_http}
    everyone = args.workers + 1 + args.http  # + the stream's end marker
    entries: list = []
    seen = lost = 0

    def collect() -> None:
        nonlocal seen, lost
        view = monitor.view(ViewRequest(height=0, seen=seen))
        if view.crashed:
            raise SystemExit(f"the monitor crashed: {view.crashed}")
        lost += view.logged - seen - len(view.entries)  # the log holds the last 1,000
        entries.extend(view.entries)
        seen = view.logged

    try:
        monitor = Monitor(settings, sources).start()
        try:
            deadline = time.monotonic() + 60
            while monitor.view(ViewRequest(height=0)).counts["healthy"] < everyone:
                if time.monotonic() > deadline:
                    raise SystemExit("the fleet did not come up healthy in 60 s")
                time.sleep(0.05)
            collect()
            entries.clear()  # what happened while the fleet came up is not measured
            lost = 0
            time.sleep(1.0)
            cpu0, thread0, wall0 = time.process_time(), _thread_cpu("heartmon-ingest"), time.monotonic()
            time.sleep(args.warmup)
            collect()
            cpu1, thread1, wall1 = time.process_time(), _thread_cpu("heartmon-ingest"), time.monotonic()
            base.value = time.monotonic()
            while time.monotonic() < base.value + judged_by:
                time.sleep(0.05)
                collect()
            thread2, wall2 = _thread_cpu("heartmon-ingest"), time.monotonic()
            lag_ms = monitor.view(ViewRequest(height=0)).ingest_lag_ms
        finally:
            monitor.stop()
    finally:
        for helper in helpers:
            helper.kill()
            helper.join()

    silent_from = {fake_hub.worker_name(i): base.value + offset for i, offset in silent_hub.items()}
    silent_from |= {http_names[j]: base.value + offset for j, offset in silent_http.items()}
    late_by: dict[str, list[float]] = defaultdict(list)
    flagged: dict[str, set[str]] = defaultdict(set)
    false_alarms, stalls, drops = [], [], 0
    for entry in entries:
        if isinstance(entry, MonitorStall):
            stalls.append(entry)
        elif entry.worker == fake_hub.END and entry.to_state == "unknown":
            drops += 1  # the monitor lost the hub stream (and made every worker of it unknown)
        elif entry.to_state in MULTIPLE and entry.silence_s is not None:
            heard = entry.at - entry.silence_s  # its last beat, on the monitor's clock (time.monotonic)
            if entry.worker not in silent_from or heard < silent_from[entry.worker] - 1.5 * interval_s:
                false_alarms.append(entry)  # never silenced, or still beating then
                continue
            late_by[entry.to_state].append((entry.silence_s - MULTIPLE[entry.to_state] * interval_s) * 1000)
            flagged[entry.to_state].add(entry.worker)
    expected = {"late": len(silenced), "starved": len(silent_hub), "dead": len(silent_http)}
    return {
        "late_by": late_by,
        "missing": {state: expected[state] - len(flagged[state]) for state in MULTIPLE},
        "false_alarms": false_alarms,
        "stalls": stalls,
        "drops": drops,
        "lost": lost,
        "ingest_cpu_steady": (thread1 - thread0) / (wall1 - wall0),
        "ingest_cpu_silencing": (thread2 - thread1) / (wall2 - wall1),
        "process_cpu_steady": (cpu1 - cpu0) / (wall1 - wall0),
        "lag_ms": lag_ms,
        "load": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=10.0, help="beats per second per worker")
    parser.add_argument("--silent", type=int, default=100, help="hub workers that fall silent")
    parser.add_argument("--http", type=int, default=20, help="HTTP endpoints, all of which fall silent")
    parser.add_argument("--stagger", type=float, default=10.0, help="seconds over which the silences start")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of steady beating before, CPU measured")
    args = parser.parse_args()
    print_machine(f"deadlines: {args.workers} hub workers at {args.rate:g} Hz, {args.silent} of them and"
                  f" {args.http} HTTP endpoints silenced over {args.stagger:g} s, {args.runs} runs")
    print("flagged minus threshold (ms): silence_s at the transition − the threshold it crossed")
    runs = []
    for n in range(1, args.runs + 1):
        run = one_run(args, seed=n)
        runs.append(run)
        print(f"run {n} (load {run['load']:.2f}):")
        for state in MULTIPLE:
            values = run["late_by"][state]
            figures = "  ".join(f"{label} {percentile(values, q):6.2f}" for label, q in QUANTILES)
            lowest = min(values, default=float("nan"))
            print(f"  {state:8} ({MULTIPLE[state]:g}×) n={len(values):4}  {figures}  min {lowest:5.2f}"
                  f"   not flagged: {run['missing'][state]}")
        print(f"  ingest thread CPU: {run['ingest_cpu_steady']:.1%} of a core all beating"
              f" ({args.workers * args.rate:,.0f} hub beats/s + {args.http * args.rate:,.0f} HTTP polls/s),"
              f" {run['ingest_cpu_silencing']:.1%} while silencing; process {run['process_cpu_steady']:.1%};"
              f" ingest lag at the end {run['lag_ms']:.1f} ms")
        http_false = sum(1 for e in run["false_alarms"] if e.worker.startswith("h"))
        print(f"  false alarms (a worker still beating judged late or worse): {len(run['false_alarms'])}"
              f" ({http_false} of them HTTP); monitor stalls logged: {len(run['stalls'])};"
              f" hub stream drops: {run['drops']}; log entries missed: {run['lost']}", flush=True)
        for entry in run["false_alarms"][:3]:
            print(f"    e.g. {entry.worker} {entry.from_state} → {entry.to_state}: {entry.reason}")
    if len(runs) > 1:
        print(f"over {len(runs)} runs, median (min–max) of each run's figure:")
        for state in MULTIPLE:
            cells = "  ".join(f"{label} {spread([percentile(r['late_by'][state], q) for r in runs])}"
                              for label, q in QUANTILES)
            print(f"  {state:8} {cells}")
        print(f"  ingest thread CPU, all beating: {spread([100 * r['ingest_cpu_steady'] for r in runs], '{:.1f}')} %"
              f" of a core; while silencing: {spread([100 * r['ingest_cpu_silencing'] for r in runs], '{:.1f}')} %")
        pooled = {state: [v for r in runs for v in r["late_by"][state]] for state in MULTIPLE}
        for state, values in pooled.items():
            print(f"  pooled {state:8} n={len(values):4}  " + "  ".join(
                f"{label} {percentile(values, q):6.2f}" for label, q in QUANTILES))
        print(f"  false alarms: {sum(len(r['false_alarms']) for r in runs)}; not flagged:"
              f" {sum(sum(r['missing'].values()) for r in runs)}; stalls: {sum(len(r['stalls']) for r in runs)};"
              f" hub stream drops: {sum(r['drops'] for r in runs)}; log entries missed: {sum(r['lost'] for r in runs)}")

    print(f"at the end: {machine()}")

if __name__ == "__main__":
    main()
