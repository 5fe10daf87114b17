"""heartmon over a real 3-node NATS cluster at fleet scale, against one hub.

Simulated agents are light publishers, not processes of their own: a minimal NATS
client on raw asyncio sockets (INFO, ``CONNECT`` named after the worker's subject stem,
``SUB`` to ``<prefix>.discover`` and ``<stem>.cmd.discover``, ``PUB``, ``PING``/``PONG``),
one TCP connection per worker so that each node's ``/connz`` lists every one, spread
round-robin over the 3 nodes and run in a few child processes so that they do not
starve the monitor. Each says hello at connect (and again when asked to), then beats
(``Beat``: ``seq`` counts interval slots, ``sent_at`` the wall clock) at the rate, the
workers' phases spread evenly over the interval. One ``Monitor`` runs in this process
on the cluster's ``nats://`` source: every node, every node's monitoring endpoint. The
measurement starts once the monitor knows every worker and /connz vouches for each
(a worker still without that evidence a few seconds later is reported, loudly: its
silence would be judged dead, not starved). Also printed: what one /connz reading of
the whole fleet costs, as the monitor takes it every 500 ms.

Two loads, 10,000 workers at 1 Hz and 1,000 at 10 Hz; for each, on NATS and then (the
same agents over WebSocket, one connection per worker, hello then beats as
heartmon/agent.py sends them) on one heartmon hub in its own process, with the monitor
on the hub's ``ws://`` source:

- beats published and beats the monitor took (``Tracker.beats`` summed over the fleet),
  counted after the publishers stopped and the stream drained; published − received
  is what was dropped, and must be 0;
- CPU over the measured window, in % of one core: this process (the monitor) and its
  ingest thread, the nats-servers or the hub, the publishers;
- silence -> starved: 20 workers stop beating at staggered known times, their
  connections open; each ``starved`` transition's ``silence_s`` minus 5 intervals is
  how late the monitor said so. The window lasts past 10 intervals of their silence,
  so a worker wrongly judged dead would be seen; any other worker judged late or worse
  is a false alarm.

Then, on NATS with 1,000 workers at 10 Hz, one node (not the one the monitor is
connected to) is SIGKILLed: its publishers reconnect at once to the next node of
the list, say hello again and send what they published meanwhile (as nats-py buffers
it). How many workers went late, starved or dead (must be 0),
the longest silence any worker had across the kill (on the monitor's clock, from its
last beat before the kill to its first after), and how long until every worker beat
again. Rounds alternate NATS and the hub; every process started is stopped by pid,
also on failure. About a minute a round on 2 cores (the hub takes its 10,000
WebSocket handshakes in some 10 s). A benchmark that prints figures, not a test.

    .venv/bin/python benchmarks/nats_scale.py [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from figures import machine, percentile, print_machine, spread

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the cluster is started the way the tests start it

import httpx  # noqa: E402
import psutil  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from heartmon.bus.evidence import CONNZ_LIMIT, Evidence, stem_names  # noqa: E402
from heartmon.bus.subjects import DISCOVER, Identity  # noqa: E402
from heartmon.config import Settings  # noqa: E402
from heartmon.detector import Transition  # noqa: E402
from heartmon.fleet_state import MonitorStall  # noqa: E402
from heartmon.hub import Hub  # noqa: E402
from heartmon.lifeline import die_with_parent  # noqa: E402
from heartmon.monitor import Monitor  # noqa: E402
from heartmon.polling import wait_until  # noqa: E402
from heartmon.probes import load_registry  # noqa: E402
from heartmon.protocol import PROTOCOL_VERSION, Beat, Hello, encode  # noqa: E402
from heartmon.view import ViewRequest  # noqa: E402
from tests.nats_cluster import Cluster, start_cluster  # noqa: E402
from tests.systems import Services  # noqa: E402

PREFIX = "heartmon"
HOST = "sim"
"""The simulated workers' host: not this machine's name, and pid 0, so the monitor never
reads a local pid for them (their evidence of life is the connection alone)."""
LOADS = ((10_000, 1.0), (1_000, 10.0))
KILL_LOAD = (1_000, 10.0)
MULTIPLE = {"late": 2.0, "starved": 5.0, "dead": 10.0}
"""The default thresholds, in intervals (the monitor runs with the default settings)."""
QUANTILES = (("p50", 0.5), ("p99", 0.99), ("max", 1.0))
SILENT = 20
STAGGER_S = 1.0
"""The silenced workers stop over this long, each at a known offset."""
SLICE_S = 0.01
"""Publishers send every 10 ms the beats that fall due in it, so the pace is smooth."""
SETTLE_S = 1.0
"""Beats once the whole fleet is up (known, and listed by /connz), before measuring."""
UNVOUCHED_S = 3.0
"""Once the monitor knows every worker, how long /connz gets to vouch for all of them
(6 readings) before the measurement goes on without (and says so)."""
KILL_WATCH_S = 3.0
"""Watched after the kill: 30 intervals at 10 Hz, past the dead threshold (10) and the
evidence's grace for an unreadable server (2 readings of /connz, 1 s)."""
PENDING_MAX = 64
"""Beats a reconnecting simulated agent buffers at most (nats-py buffers 2 MB)."""
CONNECTING = {"nats": 256, "hub": 16}
"""Connections each publisher process opens at once: the hub's listen backlog is 100."""


def worker_name(i: int) -> str:
    return f"w{i:05}"


def raise_nofile(needed: int) -> int:
    """The soft limit of open files raised to the hard one; exits when that is too few."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise SystemExit(f"open files: the limit is {soft} (hard {hard}), {needed} are needed: raise `ulimit -Hn`")
    return soft


def _thread_cpu(name: str) -> float:
    """CPU seconds (user + system) of this process's thread called `name`."""
    ident = next(t.native_id for t in threading.enumerate() if t.name == name)
    return next(t.user_time + t.system_time for t in psutil.Process().threads() if t.id == ident)


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


# --- the simulated agents (in the publisher processes) -------------------------------


@dataclass
class Counters:
    """One publisher process's figures, read by the benchmark (one writer each)."""

    connected: object
    published: object
    done: object
    reconnects: object
    rehello: object
    errors: object
    back_at: object
    """When the last reconnected worker's server confirmed its hello (time.monotonic)."""
    skipped: object
    """Beat slots the process fell more than an interval behind on and skipped."""
    lag_ms: object
    """The longest its beat loop ran behind schedule once the measurement began."""
    buffered: object
    """Beats published while reconnecting, sent once connected again."""

    @classmethod
    def make(cls, ctx) -> Counters:
        return cls(ctx.Value("i", 0), ctx.Value("q", 0), ctx.Value("i", 0), ctx.Value("i", 0), ctx.Value("i", 0),
                   ctx.Value("i", 0), ctx.Value("d", 0.0), ctx.Value("q", 0), ctx.Value("d", 0.0), ctx.Value("q", 0))


def _hello(name: str, interval_ms: int) -> str:
    return encode(Hello(v=PROTOCOL_VERSION, worker=name, isolation="thread", pid=0, host=HOST,
                        interval_ms=interval_ms, agent="nats_scale", probes=[]))


class NatsAgent(asyncio.Protocol):
    """One worker's NATS connection, speaking the text protocol itself. On losing it,
    it connects at once to the next server of the list and says hello again; what it
    publishes meanwhile is buffered and sent after CONNECT, as nats-py does."""

    def __init__(self, index: int, fleet: str, interval_ms: int, servers: list[tuple[str, int]],
                 counters: Counters) -> None:
        self.name = worker_name(index)
        identity = Identity(fleet, HOST, self.name)
        stem = identity.stem(PREFIX)
        hello = _hello(self.name, interval_ms).encode()
        self.hello = b"PUB %s %d\r\n%s\r\n" % (identity.subject(PREFIX, "hello").encode(), len(hello), hello)
        options = {"verbose": False, "pedantic": False, "name": stem, "lang": "python", "version": "0",
                   "protocol": 1, "echo": False}
        subscribe = f"SUB {PREFIX}.{DISCOVER} 1\r\nSUB {identity.command(PREFIX, DISCOVER)} 2\r\n"
        self.greeting = (f"CONNECT {json.dumps(options, separators=(',', ':'))}\r\n{subscribe}".encode()
                         + self.hello)
        self.beat_pub = b"PUB " + identity.subject(PREFIX, "beat").encode()
        self.servers, self.node = servers, index % len(servers)
        self.counters = counters
        self.transport: asyncio.Transport | None = None
        self.ready = False
        self.sessions = 0
        self._buffer = b""
        self._payload: int | None = None
        self._greeted = False
        self._pending: list[bytes] = []

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for attempt in range(60):
            host, port = self.servers[self.node]
            try:
                await loop.create_connection(lambda: self, host, port)
                return
            except OSError:
                self.node = (self.node + 1) % len(self.servers)
                if attempt % len(self.servers) == len(self.servers) - 1:
                    await asyncio.sleep(0.05)  # every server refused: the next round a little later
        self.counters.errors.value += 1

    def publish(self, payload: bytes) -> bool:
        """A beat, written at once on a greeted connection. While reconnecting it is
        buffered (up to PENDING_MAX); before the first connection there is nothing to beat."""
        command = b"%s %d\r\n%s\r\n" % (self.beat_pub, len(payload), payload)
        transport = self.transport
        if self._greeted and transport is not None and not transport.is_closing():
            transport.write(command)
            return True
        if self.sessions == 0 or len(self._pending) >= PENDING_MAX:
            return False
        self._pending.append(command)
        self.counters.buffered.value += 1
        return True

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._buffer, self._payload, self._greeted = b"", None, False

    def data_received(self, data: bytes) -> None:
        buffer, pos = self._buffer + data, 0
        while True:
            if self._payload is not None:  # the body of a MSG: only discovery requests come here
                if len(buffer) - pos < self._payload + 2:
                    break
                pos += self._payload + 2
                self._payload = None
                self.transport.write(self.hello)
                self.counters.rehello.value += 1
                continue
            end = buffer.find(b"\r\n", pos)
            if end < 0:
                break
            line, pos = buffer[pos:end], end + 2
            if line.startswith(b"MSG "):
                self._payload = int(line.rsplit(b" ", 1)[1])
            elif line == b"PING":
                self.transport.write(b"PONG\r\n")
            elif line == b"PONG" and not self.ready:
                self._confirmed()
            elif line.startswith(b"INFO") and not self._greeted:
                self._greeted = True
                self.transport.write(b"".join([self.greeting, *self._pending, b"PING\r\n"]))
                self._pending.clear()
            elif line.startswith(b"-ERR"):
                self.counters.errors.value += 1
                print(f"{self.name}: {line.decode(errors='replace')}", file=sys.stderr, flush=True)
        self._buffer = buffer[pos:]

    def _confirmed(self) -> None:
        """The server answered the PING after CONNECT, SUBs and hello: all were taken."""
        self.ready = True
        self.sessions += 1
        if self.sessions == 1:
            self.counters.connected.value += 1
        else:
            self.counters.reconnects.value += 1
            self.counters.back_at.value = max(self.counters.back_at.value, time.monotonic())

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport, self.ready, self._greeted = None, False, False
        self.node = (self.node + 1) % len(self.servers)
        asyncio.ensure_future(self.open())


class HubAgent:
    """One worker's WebSocket to the hub's /connect: hello, then beats."""

    def __init__(self, index: int, interval_ms: int, url: str, counters: Counters) -> None:
        self.name = worker_name(index)
        self.hello = _hello(self.name, interval_ms)
        self.url, self.counters = url, counters
        self.ws: ClientConnection | None = None
        self.ready = False

    async def open(self) -> None:
        try:
            self.ws = await connect(self.url, compression=None, ping_interval=None, open_timeout=120, close_timeout=1,
                                    proxy=None)
            await self.ws.send(self.hello)
        except (OSError, TimeoutError, ConnectionClosed) as exc:
            self.counters.errors.value += 1
            print(f"{self.name}: {exc}", file=sys.stderr, flush=True)
            return
        self.ready = True
        self.counters.connected.value += 1

    async def send(self, text: str) -> bool:
        if not self.ready or self.ws is None:
            return False
        try:
            await self.ws.send(text)
            return True
        except ConnectionClosed:
            self.ready = False
            self.counters.errors.value += 1
            return False


def beat_template() -> tuple[str, str]:
    """A beat's encoding around its seq and sent_at, as heartmon.protocol writes it."""
    head, sep, tail = encode(Beat(seq=0, sent_at=0.0, loop_lag_ms=0)).partition('"seq":0,"sent_at":0.0,')
    assert sep, "the beat encoding changed: fix the template"
    return head, tail


def publishers(kind: str, targets: list, indexes: list[int], workers: int, rate_hz: float, fleet: str,
               silence: dict[int, float], go, stop, base, counters: Counters) -> None:
    """Runs in a publisher process until it is killed. Beat slots are counted from the
    shared `go` (time.monotonic, one clock for every process of the machine); a worker
    beats in its slice of each interval once it is connected. Silence: worker i sends
    nothing more once `base` (0 until the benchmark sets it) plus its offset has passed.
    Everyone stops once `stop` has passed; `counters.done` then says `published` is final."""
    die_with_parent()
    raise_nofile(len(indexes) + 100)
    asyncio.run(_publish(kind, targets, indexes, workers, rate_hz, fleet, silence, go, stop, base, counters))


async def _publish(kind: str, targets: list, indexes: list[int], workers: int, rate_hz: float, fleet: str,
                   silence: dict[int, float], go, stop, base, counters: Counters) -> None:
    interval_s = 1 / rate_hz
    interval_ms = round(interval_s * 1000)
    slices = max(1, round(interval_s / SLICE_S))
    slice_s = interval_s / slices
    agents: list[NatsAgent | HubAgent] = [
        NatsAgent(i, fleet, interval_ms, targets, counters) if kind == "nats"
        else HubAgent(i, interval_ms, f"{targets[0]}/connect", counters) for i in indexes]
    by_slice: list[list[tuple[NatsAgent | HubAgent, float | None]]] = [[] for _ in range(slices)]
    for i, agent in zip(indexes, agents, strict=True):
        by_slice[i * slices // workers].append((agent, silence.get(i)))
    gate = asyncio.Semaphore(CONNECTING[kind])

    async def opened(agent: NatsAgent | HubAgent) -> None:
        async with gate:
            await agent.open()

    _connecting = asyncio.gather(*(opened(a) for a in agents))  # kept referenced while the loop beats
    head, tail = beat_template()
    start = go.value
    slot, count, lag = max(0, int((time.monotonic() - start) / slice_s) + 1), 0, 0.0
    while True:
        await asyncio.sleep(max(0.0, start + slot * slice_s - time.monotonic()))
        now = time.monotonic()
        if stop.value and now >= stop.value:
            break
        if base.value:
            lag = max(lag, now - (start + slot * slice_s))
        due = int((now - start) / slice_s)
        if due > slot + slices:  # more than an interval behind: skip, as an agent does
            counters.skipped.value += due - slot
            slot = due
        text = f'{head}"seq":{slot // slices + 1},"sent_at":{time.time()!r},{tail}'
        payload = text.encode()
        silenced_from = base.value
        for agent, offset in by_slice[slot % slices]:
            if offset is not None and silenced_from and now >= silenced_from + offset:
                continue
            if isinstance(agent, NatsAgent):
                count += agent.publish(payload)
            else:
                count += await agent.send(text)
        counters.published.value = count
        counters.lag_ms.value = lag * 1000
        slot += 1
    counters.published.value = count
    counters.done.value = 1
    await asyncio.Future()  # connections stay open until the benchmark kills the process


class Publishers:
    """The publisher processes of one measurement."""

    def __init__(self, kind: str, targets: list, workers: int, rate_hz: float, fleet: str,
                 silence: dict[int, float], processes: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.go, self.stop, self.base = ctx.Value("d", time.monotonic()), ctx.Value("d", 0.0), ctx.Value("d", 0.0)
        self.counters: list[Counters] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        try:
            for p in range(processes):
                counters = Counters.make(ctx)
                indexes = list(range(p, workers, processes))
                proc = ctx.Process(target=publishers, daemon=True, name=f"publishers-{p}",
                                   args=(kind, targets, indexes, workers, rate_hz, fleet, silence, self.go, self.stop,
                                         self.base, counters))
                proc.start()
                self.counters.append(counters)
                self.procs.append(proc)
        except BaseException:
            self.kill()
            raise

    def total(self, name: str) -> float:
        return sum(getattr(c, name).value for c in self.counters)

    def check(self) -> None:
        for proc in self.procs:
            if proc.exitcode is not None:
                raise SystemExit(f"a publisher process exited ({proc.exitcode})")

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def halt(self) -> int:
        """Stops every beat now; returns the beats published, once every process says so."""
        self.stop.value = time.monotonic()
        wait_until(lambda: self.check() or self.total("done") == len(self.procs), 30, "the publishers to stop")
        return int(self.total("published"))

    def kill(self) -> None:
        for proc in self.procs:
            if proc.pid is not None and proc.exitcode is None:
                proc.kill()  # SIGKILL to its pid
            proc.join(10)


# --- the hub (its own process) -----------------------------------------------------


def run_hub(workers: int, port, ready) -> None:
    die_with_parent()
    raise_nofile(workers + 200)

    async def main() -> None:
        hub = Hub(load_registry())
        async with hub.listen("127.0.0.1", 0) as server:
            port.value = server.sockets[0].getsockname()[1]
            ready.set()
            await asyncio.Future()

    asyncio.run(main())


def start_hub(workers: int) -> tuple[multiprocessing.process.BaseProcess, str]:
    ctx = multiprocessing.get_context("spawn")
    port, ready = ctx.Value("i", 0), ctx.Event()
    proc = ctx.Process(target=run_hub, args=(workers, port, ready), daemon=True, name="hub")
    proc.start()
    if not ready.wait(60):
        proc.kill()
        proc.join(10)
        raise SystemExit("the hub did not start")
    return proc, f"ws://127.0.0.1:{port.value}"


# --- the monitor's side --------------------------------------------------------------


class Log:
    """The monitor's log entries, read as they come (the fleet keeps the last 1,000)."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.seen = 0
        self.entries: list = []
        self.lost = 0

    def collect(self) -> None:
        if self.monitor.crashed:
            raise SystemExit(f"the monitor crashed: {self.monitor.crashed!r}")
        fleet = self.monitor._fleet
        with self.monitor._lock:
            fresh, logged = fleet.new_entries(self.seen), fleet.logged
        self.lost += logged - self.seen - len(fresh)
        self.entries.extend(fresh)
        self.seen = logged

    def reset(self) -> None:
        self.collect()
        self.entries.clear()
        self.lost = 0


def received(monitor: Monitor) -> int:
    with monitor._lock:
        return sum(t.beats for t in monitor._fleet.trackers.values())


def fleet_up(monitor: Monitor, workers: int, pubs: Publishers, cluster: Cluster | None,
             timeout_s: float = 60.0) -> dict:
    """Waits until every worker is known to the monitor and, on NATS (a cluster given),
    vouched for by some node's /connz. Once all are known, the vouching gets UNVOUCHED_S
    more; then the measurement goes on, and what is still missing is returned: how many
    known workers have no evidence of life, and how many of those a /connz lists now."""
    deadline = time.monotonic() + timeout_s
    known_at = None
    while True:
        if monitor.crashed:
            raise SystemExit(f"the monitor crashed: {monitor.crashed!r}")
        with monitor._lock:
            trackers = list(monitor._fleet.trackers.values())
        known = len(trackers)
        unvouched = sorted(t.name for t in trackers if not t.vouched) if cluster is not None else []
        now = time.monotonic()
        if known >= workers and not unvouched:
            return {"unvouched": 0, "listed": 0, "examples": []}
        if known >= workers:
            known_at = known_at or now
            if now - known_at > UNVOUCHED_S:
                assert cluster is not None
                on = {c.get("name") or "" for node in cluster.nodes for c in node.connz()}
                listed = [name for name in unvouched if f"{PREFIX}.{name.replace('/', '.')}" in on]
                return {"unvouched": len(unvouched), "listed": len(listed), "examples": listed[:3]}
        if now > deadline:
            view = monitor.view(ViewRequest(height=0))
            raise SystemExit(f"after {timeout_s:g} s the monitor knows {known} of {workers} workers; publishers:"
                             f" connected {pubs.total('connected'):.0f}, reconnects {pubs.total('reconnects'):.0f},"
                             f" errors {pubs.total('errors'):.0f}; the source: {view.sources[0]}")
        time.sleep(0.05)


def source_connected(monitor: Monitor) -> bool:
    view = monitor.view(ViewRequest(height=0))
    if view.crashed:
        raise SystemExit(f"the monitor crashed: {view.crashed}")
    return view.sources[0].link == "connected"


def drain(monitor: Monitor, published: int, stable_s: float = 2.0) -> tuple[int, float]:
    """Waits until the monitor took every published beat, or took none for `stable_s`;
    returns the beats it took and how long that took."""
    start = time.monotonic()
    last, since = -1, start
    while True:
        got = received(monitor)
        now = time.monotonic()
        if got >= published:
            return got, now - start
        if got != last:
            last, since = got, now
        elif now - since > stable_s:
            return got, since - start
        time.sleep(0.02)


def index_of(worker: str) -> int:
    """``fleet/sim/w00042`` (NATS) or ``w00042`` (hub) -> 42."""
    return int(worker.rsplit("/", 1)[-1][1:])


def connz_cost(cluster: Cluster) -> dict:
    """One reading of every node's /connz as the monitor takes it, timed on this
    thread's CPU: the requests and the search for heartmon's stems
    (heartmon.bus.evidence.stem_names), then Evidence.reading of a fleet it already knows
    (the monitor's steady state: nothing changed since the last one)."""
    evidence = Evidence(PREFIX)
    names = stem_names(PREFIX)
    lists: dict[str, list[str] | None] = {}
    size = 0
    with httpx.Client(timeout=10) as client:
        t0 = time.thread_time()
        for node in cluster.nodes:
            response = client.get(f"http://{node.monitor}/connz", params={"limit": CONNZ_LIMIT})
            size += len(response.content)
            lists[node.monitor] = [m.decode() for m in names.findall(response.content)]
        t1 = time.thread_time()
    evidence.reading(lists, 0.0)  # the first reading: every worker is new
    t2 = time.thread_time()
    evidence.reading(lists, 0.0)
    t3 = time.thread_time()
    return {"fetch_ms": (t1 - t0) * 1000, "reading_ms": (t3 - t2) * 1000, "bytes": size,
            "connections": sum(len(v or ()) for v in lists.values())}


# --- one measurement ------------------------------------------------------------------


def load_run(kind: str, cluster: Cluster, workers: int, rate_hz: float, seed: int, args: argparse.Namespace) -> dict:
    rng = random.Random(seed)
    interval_s = 1 / rate_hz
    step = workers // SILENT
    silence = {k * step + rng.randrange(step): (k + rng.random()) * STAGGER_S / SILENT for k in range(SILENT)}
    fleet = f"{kind}{seed}x{workers}"
    window_s = max(args.window, STAGGER_S + MULTIPLE["dead"] * interval_s + 0.5)
    hub_proc = None
    pubs: Publishers | None = None
    monitor: Monitor | None = None
    try:
        if kind == "hub":
            hub_proc, url = start_hub(workers)
            source, targets, others = url, [url], [hub_proc.pid]
        else:
            source = cluster.source(fleet)
            targets = [("127.0.0.1", node.port) for node in cluster.nodes]
            others = [node.service.pid for node in cluster.nodes]
        monitor = Monitor(Settings(), [source]).start()
        wait_until(lambda: source_connected(monitor), 30, "the monitor's source to connect")
        time.sleep(0.5)  # its subscription's interest reaches every node of the cluster
        t0 = time.monotonic()
        pubs = Publishers(kind, targets, workers, rate_hz, fleet, silence, args.processes)
        wait_until(lambda: pubs.check() or pubs.total("connected") >= workers, 300,
                   f"{workers} simulated workers to connect")
        connected_s = time.monotonic() - t0
        evidence = fleet_up(monitor, workers, pubs, cluster if kind == "nats" else None)
        up_s = time.monotonic() - t0
        time.sleep(SETTLE_S)
        log = Log(monitor)
        log.reset()
        mine = psutil.Process()
        cpu0 = (time.monotonic(), sum(mine.cpu_times()[:2]), _thread_cpu("heartmon-ingest"), _cpu(others),
                _cpu(pubs.pids()))
        pubs.base.value = base = time.monotonic()
        end = base + window_s
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(0.5, left))
            log.collect()
            pubs.check()
        cpu1 = (time.monotonic(), sum(mine.cpu_times()[:2]), _thread_cpu("heartmon-ingest"), _cpu(others),
                _cpu(pubs.pids()))
        view = monitor.view(ViewRequest(height=0))
        connz = connz_cost(cluster) if kind == "nats" else None
        published = pubs.halt()
        got, drained_s = drain(monitor, published)
        refused = monitor.view(ViewRequest(height=0)).sources[0].refused
        rehello, skipped, pub_lag = pubs.total("rehello"), pubs.total("skipped"), max(
            c.lag_ms.value for c in pubs.counters)
        errors = pubs.total("errors")
    finally:
        if pubs is not None:
            pubs.kill()
        if monitor is not None:
            monitor.stop()
        if hub_proc is not None:
            hub_proc.kill()
            hub_proc.join(10)

    wall = cpu1[0] - cpu0[0]
    silent_from = {worker_name(i): base + offset for i, offset in silence.items()}
    late_by: dict[str, list[float]] = {state: [] for state in MULTIPLE}
    flagged: dict[str, set[str]] = {state: set() for state in MULTIPLE}
    false_alarms, stalls = [], []
    for entry in log.entries:
        if isinstance(entry, MonitorStall):
            stalls.append(entry)
        elif isinstance(entry, Transition) and entry.to_state in (*MULTIPLE, "unknown"):
            name = worker_name(index_of(entry.worker))
            heard = entry.at - (entry.silence_s or 0.0)  # its last beat, on the monitor's clock
            if (entry.to_state == "unknown" or name not in silent_from
                    or heard < silent_from[name] - 1.5 * interval_s):
                false_alarms.append(entry)  # never silenced, or still beating then
                continue
            if entry.silence_s is not None:
                late_by[entry.to_state].append((entry.silence_s - MULTIPLE[entry.to_state] * interval_s) * 1000)
                flagged[entry.to_state].add(name)
    return {
        "kind": kind, "workers": workers, "rate": rate_hz, "connected_s": connected_s, "up_s": up_s,
        "published": published, "received": got, "dropped": published - got, "drained_s": drained_s,
        "refused": refused, "rehello": rehello, "skipped": skipped, "pub_lag_ms": pub_lag, "errors": errors,
        "window_s": wall, "cpu_process": (cpu1[1] - cpu0[1]) / wall, "cpu_ingest": (cpu1[2] - cpu0[2]) / wall,
        "cpu_server": (cpu1[3] - cpu0[3]) / wall, "cpu_publishers": (cpu1[4] - cpu0[4]) / wall,
        "late_by": late_by, "not_starved": SILENT - len(flagged["starved"]), "dead": len(flagged["dead"]),
        "false_alarms": false_alarms, "stalls": stalls, "lost": log.lost, "lag_ms": view.ingest_lag_ms,
        "connz": connz, "load": os.getloadavg()[0], "evidence": evidence,
    }


def monitor_node(cluster: Cluster) -> int | None:
    """The node the monitor's own connection is on: the one connection not named after a worker."""
    for index, node in enumerate(cluster.nodes):
        if any(not (c.get("name") or "").startswith(f"{PREFIX}.") for c in node.connz()):
            return index
    return None


def kill_run(cluster: Cluster, seed: int, args: argparse.Namespace) -> dict:
    workers, rate_hz = KILL_LOAD
    fleet = f"kill{seed}"
    targets = [("127.0.0.1", node.port) for node in cluster.nodes]
    pubs: Publishers | None = None
    monitor: Monitor | None = None
    try:
        monitor = Monitor(Settings(), [cluster.source(fleet)]).start()
        wait_until(lambda: source_connected(monitor), 30, "the monitor's source to connect")
        time.sleep(0.5)
        pubs = Publishers("nats", targets, workers, rate_hz, fleet, {}, args.processes)
        wait_until(lambda: pubs.check() or pubs.total("connected") >= workers, 120,
                   f"{workers} simulated workers to connect")
        evidence = fleet_up(monitor, workers, pubs, cluster)
        time.sleep(SETTLE_S)
        on = monitor_node(cluster)
        victim = 0 if on is None else (on + 1) % len(cluster.nodes)
        log = Log(monitor)
        log.reset()
        trackers = monitor._fleet.trackers
        with monitor._lock:
            before = {key: t.last_beat_at or 0.0 for key, t in trackers.items()}
        pubs.base.value = killed_at = time.monotonic()  # nobody is silenced: this only starts the lag's measure
        cluster.nodes[victim].service.kill()
        first_after: dict = {}
        while time.monotonic() < killed_at + KILL_WATCH_S:
            with monitor._lock:
                for key, t in trackers.items():
                    if key not in first_after and t.last_beat_at is not None and t.last_beat_at > killed_at:
                        first_after[key] = t.last_beat_at
            log.collect()
            time.sleep(0.01)
        reconnects, back_at = pubs.total("reconnects"), max(c.back_at.value for c in pubs.counters)
        buffered, pub_lag = pubs.total("buffered"), max(c.lag_ms.value for c in pubs.counters)
        lag_ms = monitor.view(ViewRequest(height=0)).ingest_lag_ms
        published = pubs.halt()
        got, _ = drain(monitor, published)
        with monitor._lock:
            states = {key: t.state for key, t in trackers.items()}
    finally:
        if pubs is not None:
            pubs.kill()
        if monitor is not None:
            monitor.stop()

    victims = {key for key in before if index_of(key[1]) % len(cluster.nodes) == victim}
    gaps = {key: first_after[key] - before[key] for key in first_after}
    moved: dict[str, set[str]] = {state: set() for state in ("late", "starved", "dead", "unknown")}
    recoveries = []
    for entry in log.entries:
        if isinstance(entry, Transition):
            if entry.to_state in moved:
                moved[entry.to_state].add(entry.worker)
            if entry.episode is not None:
                recoveries.append(entry.episode.length_s)
    victim_gaps = [gaps[key] * 1000 for key in victims if key in gaps]
    names = {key[1] for key in victims}
    return {
        "victim": victim, "monitor_on": on, "victims": len(victims), "reconnects": reconnects, "buffered": buffered,
        "evidence": evidence, "pub_lag_ms": pub_lag, "lag_ms": lag_ms,
        "late_elsewhere": len(moved["late"] - names),
        "stalls": sum(1 for e in log.entries if isinstance(e, MonitorStall)),
        "reconnected_s": back_at - killed_at if back_at else float("nan"),
        "late": len(moved["late"]), "starved": len(moved["starved"]), "dead": len(moved["dead"]),
        "unknown": len(moved["unknown"]), "dead_now": sum(1 for s in states.values() if s == "dead"),
        "recoveries": len(recoveries), "longest_recovery_ms": max(recoveries, default=0.0) * 1000,
        "longest_gap_ms": max(gaps.values(), default=float("nan")) * 1000, "victim_gaps_ms": victim_gaps,
        "silent_still": workers - len(first_after),
        "all_back_s": max(first_after.values()) - killed_at if len(first_after) == workers else float("nan"),
        "published": published, "received": got, "lost": log.lost, "workers": workers, "rate": rate_hz,
    }


# --- printing -------------------------------------------------------------------------


def describe_evidence(evidence: dict) -> None:
    if evidence["unvouched"]:
        print(f"    !!! {evidence['unvouched']} workers the monitor knows have no evidence of life after"
              f" {UNVOUCHED_S:g} s, {evidence['listed']} of them on a /connz now (e.g. {evidence['examples']}):"
              f" listed before their hello was heard, they are never vouched for; silent, they go dead at 10"
              f" intervals, not starved !!!")


def describe(run: dict) -> None:
    label = f"{run['kind']:4} {run['workers']:,} × {run['rate']:g} Hz"
    print(f"  {label}: {run['workers']:,} connected in {run['connected_s']:.1f} s, all known"
          + (" and on /connz" if run["kind"] == "nats" else "") + f" at {run['up_s']:.1f} s")
    describe_evidence(run["evidence"])
    loud = "" if run["dropped"] == 0 else f"   <<<<<<<<<< {run['dropped']:,} BEATS DROPPED >>>>>>>>>>"
    print(f"    beats: published {run['published']:,}, received {run['received']:,}, dropped {run['dropped']:,}"
          f" (drained in {run['drained_s'] * 1000:.0f} ms); refused by the source {run['refused']}; hellos asked"
          f" again {run['rehello']}{loud}")
    server = "nats-server ×3" if run["kind"] == "nats" else "hub"
    print(f"    CPU over {run['window_s']:.1f} s, % of a core: monitor process {run['cpu_process']:.1%}"
          f" (ingest thread {run['cpu_ingest']:.1%}), {server} {run['cpu_server']:.1%},"
          f" publishers {run['cpu_publishers']:.1%}; ingest lag {run['lag_ms']:.1f} ms;"
          f" publishers' worst lag {run['pub_lag_ms']:.0f} ms, slots skipped {run['skipped']}")
    for state in ("starved", "late"):
        values = run["late_by"][state]
        figures = "  ".join(f"{label} {percentile(values, q):6.1f}" for label, q in QUANTILES)
        print(f"    silence → {state:7} minus {MULTIPLE[state]:g} intervals (ms): n={len(values):2}  {figures}")
    print(f"    silenced not starved: {run['not_starved']}; silenced judged dead: {run['dead']}; false alarms:"
          f" {len(run['false_alarms'])}; monitor stalls: {len(run['stalls'])}; log entries missed: {run['lost']};"
          f" publisher errors: {run['errors']}")
    for entry in run["false_alarms"][:3]:
        print(f"      e.g. {entry.worker} {entry.from_state} → {entry.to_state}: {entry.reason}")
    if run["connz"]:
        c = run["connz"]
        print(f"    one /connz reading as the monitor takes it ({c['connections']:,} heartmon connections,"
              f" {c['bytes'] / 1e6:.1f} MB): fetch and search {c['fetch_ms']:.0f} ms CPU,"
              f" Evidence.reading {c['reading_ms']:.0f} ms CPU; the monitor does it every 500 ms, or less often"
              " when a reading costs more than a tenth of that", flush=True)


def describe_kill(run: dict) -> None:
    gaps = run["victim_gaps_ms"]
    figures = "  ".join(f"{label} {percentile(gaps, q):.0f}" for label, q in QUANTILES)
    loud = "" if run["dead"] == 0 else f"   <<<<<<<<<< {run['dead']} WORKERS JUDGED DEAD >>>>>>>>>>"
    print(f"  kill: {run['workers']:,} × {run['rate']:g} Hz on NATS, node {run['victim']} SIGKILLed (the monitor is on"
          f" node {run['monitor_on']}); {run['victims']} workers were on it, {run['reconnects']} reconnected,"
          f" the last {run['reconnected_s'] * 1000:.0f} ms after the kill; {run['buffered']} beats buffered meanwhile")
    describe_evidence(run["evidence"])
    print(f"    went late: {run['late']} ({run['late_elsewhere']} of them not on the killed node), starved:"
          f" {run['starved']}, dead: {run['dead']}, unknown: {run['unknown']} (dead at the end: {run['dead_now']});"
          f" publishers' worst lag {run['pub_lag_ms']:.0f} ms, ingest lag {run['lag_ms']:.1f} ms, monitor stalls"
          f" {run['stalls']}{loud}")
    print(f"    silence across the kill, last beat before → first after (ms): killed node's workers {figures};"
          f" longest of all {run['longest_gap_ms']:.0f}; recoveries logged {run['recoveries']}, longest"
          f" {run['longest_recovery_ms']:.0f} ms")
    still = f"; {run['silent_still']} never beat again" if run["silent_still"] else ""
    print(f"    every worker beat again {run['all_back_s'] * 1000:.0f} ms after the kill{still};"
          f" beats published {run['published']:,}, received {run['received']:,}"
          f" (lost in the kill {run['published'] - run['received']:,}); log entries missed: {run['lost']}", flush=True)


def summarize(runs: list[dict], kills: list[dict]) -> None:
    print(f"over {len(kills)} rounds, median (min–max, n) of each round's figure:")
    for workers, rate in LOADS:
        for kind in ("nats", "hub"):
            mine = [r for r in runs if r["kind"] == kind and r["workers"] == workers and r["rate"] == rate]
            if not mine:
                continue
            print(f"  {kind:4} {workers:,} × {rate:g} Hz:")
            print(f"    dropped beats {spread([r['dropped'] for r in mine], '{:,.0f}')}"
                  f" of {spread([r['published'] for r in mine], '{:,.0f}')} published")
            print(f"    monitor process CPU {spread([100 * r['cpu_process'] for r in mine], '{:.1f}')} %, ingest thread"
                  f" {spread([100 * r['cpu_ingest'] for r in mine], '{:.1f}')} %,"
                  f" {'nats-server ×3' if kind == 'nats' else 'hub'}"
                  f" {spread([100 * r['cpu_server'] for r in mine], '{:.1f}')} %")
            cells = "  ".join(f"{label} {spread([percentile(r['late_by']['starved'], q) for r in mine], '{:.1f}')}"
                              for label, q in QUANTILES)
            print(f"    silence → starved minus 5 intervals (ms): {cells}")
            pooled = [v for r in mine for v in r["late_by"]["starved"]]
            print(f"    pooled n={len(pooled)}  " + "  ".join(f"{label} {percentile(pooled, q):.1f}"
                                                          for label, q in QUANTILES)
                  + f"; not starved {sum(r['not_starved'] for r in mine)}, dead {sum(r['dead'] for r in mine)},"
                    f" false alarms {sum(len(r['false_alarms']) for r in mine)}")
    if kills:
        print(f"  node kill, {KILL_LOAD[0]:,} × {KILL_LOAD[1]:g} Hz on NATS:")
        print(f"    late {spread([k['late'] for k in kills], '{:.0f}')},"
              f" starved {spread([k['starved'] for k in kills], '{:.0f}')},"
              f" dead {spread([k['dead'] for k in kills], '{:.0f}')}")
        print(f"    longest silence across the kill {spread([k['longest_gap_ms'] for k in kills], '{:.0f}')} ms;"
              f" every worker beat again after {spread([k['all_back_s'] * 1000 for k in kills], '{:.0f}')} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--processes", type=int, default=4, help="publisher processes")
    parser.add_argument("--window", type=float, default=4.0, help="least seconds CPU is measured over")
    args = parser.parse_args()
    most = max(w for w, _ in LOADS)
    limit = raise_nofile(most + 200)  # the hub holds every worker's socket; children inherit the limit
    print_machine(f"nats_scale: {', '.join(f'{w:,} workers at {r:g} Hz' for w, r in LOADS)} on a 3-node NATS"
                  f" cluster and on one hub, {SILENT} silenced each time; a node killed under"
                  f" {KILL_LOAD[0]:,} at {KILL_LOAD[1]:g} Hz; {args.runs} rounds")
    print(f"open files: soft limit {limit} here and in every process started (the hub needs {most + 200:,});"
          f" {args.processes} publisher processes, one connection per worker")
    started = time.monotonic()
    runs: list[dict] = []
    kills: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="nats-scale-") as log_dir:
        for n in range(1, args.runs + 1):
            services = Services(Path(log_dir))
            try:
                cluster = start_cluster(services, size=3, name=f"scale{n}")
                if n == 1:
                    nofile = psutil.Process(cluster.nodes[0].service.pid).rlimit(psutil.RLIMIT_NOFILE)[0]
                    print(f"nats-server open files: soft limit {nofile}")
                print(f"round {n} (load {os.getloadavg()[0]:.2f}):", flush=True)
                for workers, rate in LOADS:
                    for kind in ("nats", "hub"):
                        run = load_run(kind, cluster, workers, rate, n, args)
                        runs.append(run)
                        describe(run)
                kill = kill_run(cluster, n, args)
                kills.append(kill)
                describe_kill(kill)
            finally:
                services.stop_all()
    if args.runs > 1:
        summarize(runs, kills)
    dropped = sum(r["dropped"] for r in runs)
    dead = sum(r["dead"] for r in runs) + sum(k["dead"] for k in kills)
    if dropped or dead:
        print(f"!!! {dropped:,} beats dropped and {dead} workers judged dead in all: heartmon lost something !!!")
    print(f"took {time.monotonic() - started:.0f} s; at the end: {machine()}")


if __name__ == "__main__":
    main()
