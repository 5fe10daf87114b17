"""The experiment: every probe against every isolation mode, measured at the hub.

One worker per isolation mode, one probe at a time injected into all three at once;
each cell is the largest gap between two heartbeats as the hub received them while
the probe ran (the beat that ends the silence included).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass

from heartmon.fleet import Fleet, worker_log
from heartmon.hub import Hub
from heartmon.polling import PollTimeout, until
from heartmon.probes import ProbeRegistry
from heartmon.protocol import ISOLATIONS, Message, WorkerBeat, WorkerProbeFinished

STARVED_AFTER_INTERVALS = 3
"""A cell is starved when its largest gap passed 3 intervals: past the detector's late
threshold (2), so the hub took the worker out of its pool, and short of the starvation
threshold (5), so that a probe of half a second still shows it clearly."""
JOIN_TIMEOUT_S = 30.0
SETTLE_S = 0.3


class MatrixError(RuntimeError):
    pass


@dataclass(frozen=True)
class Cell:
    probe: str
    isolation: str
    max_gap_ms: float
    starved: bool


@dataclass(frozen=True)
class Matrix:
    interval_ms: int
    duration_s: float
    starved_after_ms: float
    cells: list[Cell]

    def as_json(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        probes = list(dict.fromkeys(c.probe for c in self.cells))
        by_key = {(c.probe, c.isolation): c for c in self.cells}
        width = max(len(p) for p in probes) + 2
        lines = [
            f"largest heartbeat gap at the hub; interval {self.interval_ms} ms, probes of {self.duration_s:g} s,"
            f" starved = gap > {self.starved_after_ms:g} ms",
            "",
            ("probe".ljust(width) + "".join(f"{iso:<20}" for iso in ISOLATIONS)).rstrip(),
        ]
        for probe in probes:
            row = probe.ljust(width)
            for iso in ISOLATIONS:
                cell = by_key[(probe, iso)]
                row += f"{cell.max_gap_ms:>7.0f} ms {'STARVED' if cell.starved else 'ok':<9}"
            lines.append(row.rstrip())
        return "\n".join(lines)


class _Recorder:
    """Listens to the hub in-process: beat arrivals and probe ends, on the hub's clock."""

    def __init__(self) -> None:
        self.beats: dict[str, list[float]] = defaultdict(list)
        self.finished: dict[str, float] = {}

    def __call__(self, message: Message) -> None:
        if isinstance(message, WorkerBeat):
            self.beats[message.worker].append(message.recv_at)
        elif isinstance(message, WorkerProbeFinished):
            self.finished[message.id] = message.recv_at

    def max_gap(self, worker: str, start: float, end: float) -> float | None:
        return largest_gap(self.beats[worker], start, end)


def largest_gap(beats: list[float], start: float, end: float) -> float | None:
    """Largest gap between consecutive beats from the last one before `start` to the
    first one after `end`; None until that closing beat has arrived."""
    before = [t for t in beats if t < start][-1:]
    during = [t for t in beats if start <= t <= end]
    after = [t for t in beats if t > end][:1]
    if not after:
        return None
    points = before + during + after
    return max(b - a for a, b in zip(points, points[1:], strict=False))  # neighbours: one pair fewer


async def run_matrix(
    registry: ProbeRegistry,
    duration_s: float,
    interval_ms: int,
    progress: Callable[[str], None] = lambda line: None,
    probes: list[str] | None = None,
) -> Matrix:
    """``probes``: the registry's names to run, all of them by default."""
    hub = Hub(registry, max_duration_s=max(60.0, duration_s))
    recorder = _Recorder()
    hub.listeners.append(recorder)
    starved_after_s = STARVED_AFTER_INTERVALS * interval_ms / 1000
    cells: list[Cell] = []
    async with hub.listen("127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        with worker_log() as log:
            fleet = Fleet(f"ws://127.0.0.1:{port}", interval_ms, log=log)
            names = {iso: f"{iso}-1" for iso in ISOLATIONS}
            try:
                for iso, name in names.items():
                    fleet.spawn(iso, name)
                progress(f"starting {len(names)} workers (one per isolation mode)…")
                await until(lambda: all(len(recorder.beats[n]) >= 3 for n in names.values()),
                            JOIN_TIMEOUT_S, "the workers to connect and beat")
                probes = probes or registry.names()
                for index, probe in enumerate(probes, 1):
                    progress(f"[{index}/{len(probes)}] {probe}: {duration_s:g} s in all three workers…")
                    start = time.time()
                    sent = await asyncio.gather(*(hub.inject(n, probe, duration_s) for n in names.values()))
                    ids = [s["id"] for s in sent]
                    # The lambdas below are awaited within this iteration, so they see its own values.
                    await until(lambda: all(i in recorder.finished for i in ids),  # noqa: B023
                                duration_s * 3 + 10, f"{probe} to finish")
                    ends = {s["worker"]: recorder.finished[s["id"]] for s in sent}
                    await until(lambda: all(recorder.max_gap(w, start, e) is not None  # noqa: B023
                                            for w, e in ends.items()),  # noqa: B023
                                10, "the first beats after the probe")
                    row = []
                    for iso, name in names.items():
                        gap = recorder.max_gap(name, start, ends[name]) or 0.0
                        cell = Cell(probe, iso, round(gap * 1000, 1), gap > starved_after_s)
                        cells.append(cell)
                        row.append(f"{iso} {cell.max_gap_ms:.0f} ms {'STARVED' if cell.starved else 'ok'}")
                    progress(f"[{index}/{len(probes)}] {probe}: " + " · ".join(row))
                    await asyncio.sleep(SETTLE_S)
            except PollTimeout as exc:
                raise MatrixError(str(exc)) from None
            finally:
                await asyncio.to_thread(fleet.stop)
    return Matrix(interval_ms, duration_s, starved_after_s * 1000, cells)
