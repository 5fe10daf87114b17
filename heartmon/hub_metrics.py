"""The hub's metrics, in Prometheus' own client: a registry per hub (two hubs in one
process, as in tests, count apart) and its standard text exposition.

Counters are counted where things happen; what is a state (workers by state, each
worker's state, watchers) is read from the hub when it is scraped, so it cannot drift.
``heartmon_worker_state{worker,isolation,state}`` is 1 for each worker's current state
and 0 for the others: an alert can page on ``starved`` lasting 30 s, and never on
``busy``, without knowing heartmon's detector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from heartmon.detector import STATES

GAP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Gauges:
    """What the hub is, read at scrape time."""

    workers: Sequence[tuple[str, str, str]]
    """(worker, isolation, state) of each connected worker."""
    available: int
    watchers: int


class HubMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.beats = Counter("heartmon_beats", "Heartbeats received, per worker.", ["worker"], registry=r)
        self.gaps = Histogram("heartmon_beat_gap_seconds", "Time between two beats of a worker, at the hub.",
                              buckets=GAP_BUCKETS, registry=r)
        self.rejected = Counter("heartmon_frames_rejected",
                                "Frames refused with an error reply (malformed, unknown type, wrong version, "
                                "too large, a name taken), by code.", ["code"], registry=r)
        self.rate_limited = Counter("heartmon_frames_rate_limited",
                                    "Frames dropped unread because their connection sent more than its share.",
                                    registry=r)
        self.watchers_dropped = Counter("heartmon_watchers_dropped",
                                        "Monitors dropped for reading too slowly (over the unsent-data cap).",
                                        registry=r)
        self.injects = Counter("heartmon_injects", "Inject commands, by result.", ["result"], registry=r)
        self.unauthorized = Counter("heartmon_http_unauthorized", "Requests refused for a missing or wrong token.",
                                    registry=r)
        self._read: Callable[[], Gauges] | None = None
        r.register(_Collector(self))

    def read_from(self, read: Callable[[], Gauges]) -> None:
        self._read = read

    def beat(self, worker: str, gap_s: float | None) -> None:
        self.beats.labels(worker).inc()
        if gap_s is not None:
            self.gaps.observe(gap_s)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Collector:
    def __init__(self, metrics: HubMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # read at scrape time only

    def collect(self) -> Iterator[Metric]:
        if self.metrics._read is None:
            return
        gauges = self.metrics._read()
        connected = GaugeMetricFamily("heartmon_workers_connected", "Workers with an open /connect session.")
        connected.add_metric([], len(gauges.workers))
        available = GaugeMetricFamily("heartmon_workers_available",
                                      "Connected workers that are healthy or busy: the pool.")
        available.add_metric([], gauges.available)
        by_state = GaugeMetricFamily("heartmon_workers", "Connected workers by detected state.", labels=["state"])
        each = GaugeMetricFamily("heartmon_worker_state", "1 for each worker's current state, 0 for the others.",
                                 labels=["worker", "isolation", "state"])
        for state in STATES:
            by_state.add_metric([state], sum(1 for _, _, s in gauges.workers if s == state))
        for worker, isolation, current in gauges.workers:
            for state in STATES:
                each.add_metric([worker, isolation, state], 1.0 if state == current else 0.0)
        watchers = GaugeMetricFamily("heartmon_watchers_connected", "Monitors subscribed on /watch.")
        watchers.add_metric([], gauges.watchers)
        yield from (connected, available, by_state, each, watchers)
