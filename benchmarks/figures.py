"""What every benchmark prints the same way: the machine's load when it started, and
percentiles. Figures from a noisy 2-core machine mean little without the load beside them."""

from __future__ import annotations

import math
import os
import sqlite3
import statistics
import subprocess
import time
from pathlib import Path


def machine() -> str:
    """`uptime`'s line (load averages over 1, 5, 15 min), the core count and the clock."""
    try:
        line = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        line = f"load average: {load}"
    return f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {os.cpu_count()} cores  uptime: {line}"


def print_machine(title: str) -> None:
    print(f"== {title} ==")
    print(machine(), flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of the values; nan when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """'median (min–max, n)': how a figure is quoted across repeated rounds."""
    if not values:
        return "n/a"
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return f"{fmt.format(statistics.median(values))} ({low}–{high}, n={len(values)})"


def bytes_per_beat(recording: Path) -> float:
    """A closed recording's size over the beats it holds: what recording costs on disk,
    everything in the file counted. Not a number for a recording without beats."""
    with sqlite3.connect(recording) as db:
        beats = db.execute("SELECT count(*) FROM journal WHERE op = 1").fetchone()[0]
    return recording.stat().st_size / beats if beats else float("nan")
