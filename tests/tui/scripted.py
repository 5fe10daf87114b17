"""A scripted fleet for snapshot tests: the real Monitor, never started, fed the frames
a hub would send at times on a fake clock. Every pixel then depends only on the script."""

from __future__ import annotations

import httpx

from heartmon.commands import HubClient
from heartmon.config import Settings
from heartmon.detector import Key
from heartmon.monitor import Monitor
from heartmon.protocol import (
    Frame,
    Snapshot,
    WorkerBeat,
    WorkerInfo,
    WorkerLeft,
    WorkerProbeFinished,
    WorkerProbeStarted,
    WorkerStack,
)
from heartmon.sources import Heard
from heartmon.tui.app import HeartmonApp
from heartmon.view import ViewRequest

HUB = "ws://127.0.0.1:8787"
START = 1000.0
EPOCH = 1_795_000_000.0 - START  # the fake clock's 1000.0 is 2026-11-18 11:06:40 UTC
INTERVAL = 0.1
FLEET = [("none-1", "none"), ("none-2", "none"), ("thread-1", "thread"), ("thread-2", "thread"),
         ("process-1", "process"), ("process-2", "process")]
PROBES = [
    {"name": "busy-python", "description": "A pure-Python loop: bytecode runs without a break.", "demonstrates": "."},
    {"name": "gil-hold", "description": "One long C call that never releases the GIL.", "demonstrates": "."},
    {"name": "sync-sleep", "description": "A blocking call that releases the GIL.", "demonstrates": "."},
]

OUTER = (
    Frame(file="/srv/app/heartmon/agent.py", line=337, function="ProbeRunner._handle",
          code="self.registry.get(inject.probe)().run(inject.duration_s, **inject.params)", kind="heartmon"),
    Frame(file="/usr/lib/python3.11/asyncio/events.py", line=80, function="Handle._run",
          code="self._context.run(self._callback, *self._args)", kind="python"),
    Frame(file="/usr/lib/python3.11/asyncio/base_events.py", line=1922, function="BaseEventLoop._run_once",
          code="handle._run()", kind="python"),
    Frame(file="/usr/lib/python3.11/asyncio/base_events.py", line=607, function="BaseEventLoop.run_forever",
          code="self._run_once()", kind="python"),
    Frame(file="/srv/app/main.py", line=12, function="<module>", code="asyncio.run(main())", kind="app"),
)
"""Below a probe: the agent runs it from its loop. Fixed paths: the same SVG on every machine."""
GIL_HOLD = (Frame(file="/srv/app/probes/builtin.py", line=43, function="GilHold.run",
                  code="any(map(deadline.__lt__, starmap(time.monotonic, repeat(()))))", kind="app"), *OUTER)
BUSY_PYTHON = (Frame(file="/srv/app/probes/builtin.py", line=29, function="BusyPython.run",
                     code="while time.monotonic() < deadline:", kind="app"), *OUTER)
"""Main threads stuck in a probe, innermost first, as the agents would send them."""
NO_PTRACE = ("py-spy may not read pid 4001: ptrace is not permitted. Run heartmon as the worker's user with "
             "kernel.yama.ptrace_scope=0, or as root, or grant it: sudo setcap cap_sys_ptrace+ep /usr/bin/py-spy")


class FakeClock:
    def __init__(self) -> None:
        self.t = START

    def __call__(self) -> float:
        return self.t


class Script:
    def __init__(self, fleet=FLEET, systems: tuple[str, ...] = (), settings: Settings | None = None) -> None:
        """``settings``: where a recording goes, say; by default nothing is recorded."""
        self.clock = FakeClock()
        self.monitor = Monitor(settings or Settings(), [HUB, *systems], clock=self.clock, epoch_offset=EPOCH,
                               hostname="this-host")
        for source in self.monitor.sources:
            source.status.link = "connected"  # a scripted link: nothing really connects
        self.foreign: dict[Key, tuple[Heard, float]] = {}
        """Workers of other systems: what each beat says, and when the next one is due."""
        self.seq = {name: 0 for name, _ in fleet}
        self.blocked: dict[str, float] = {}
        infos = [WorkerInfo(worker=name, isolation=iso, pid=4000 + i, host="fleet-host", interval_ms=100,
                            agent="heartmon/0.1.0", probes=[p["name"] for p in PROBES], connected_at=START,
                            last_beat_at=START, seq=0) for i, (name, iso) in enumerate(fleet)]
        self.feed(Snapshot(v=1, sent_at=START, workers=infos))

    def feed(self, message) -> None:
        self.monitor.hub_message(HUB, message, self.clock.t)

    def run(self, seconds: float, silent: tuple[str, ...] = ()) -> None:
        """Every worker but the silent ones beats every interval, with a little
        deterministic jitter; the detector is evaluated as the ingest tick would."""
        for _ in range(round(seconds / INTERVAL)):
            self.clock.t = round(self.clock.t + INTERVAL, 6)
            gone = self.gone
            for key, (heard, due) in self.foreign.items():
                if self.clock.t >= due and key[1] not in silent:
                    self.monitor.heard(*key, self.clock.t, heard)
                self.foreign[key] = heard, due + heard.interval_s if self.clock.t >= due else due
            for i, name in enumerate(self.seq):
                self.seq[name] += 1
                if name in silent or name in gone:
                    continue
                wobble = ((self.seq[name] * 7 + i * 3) % 5) * 0.004
                isolated = not name.startswith("none")
                blocked = self.blocked.get(name)
                beat = WorkerBeat(worker=name, seq=self.seq[name], sent_at=0, recv_at=0, loop_lag_ms=0.2,
                                  main_blocked_ms=(blocked or 1.0) if isolated else None)
                self.monitor.hub_message(HUB, beat, self.clock.t - wobble)
                if blocked is not None:
                    self.blocked[name] = blocked + INTERVAL * 1000
            self.monitor.judge(self.clock.t)

    @property
    def gone(self) -> set[str]:
        view = self.monitor.view(ViewRequest(height=len(self.seq)))
        return {row.name for row in view.rows if row.state == "dead"}

    def state(self, name: str) -> str | None:
        view = self.monitor.view(ViewRequest(height=len(self.seq)))
        return next((row.state for row in view.rows if row.name == name), None)

    def join(self, source: str, name: str, heard: Heard) -> None:
        """A worker of another system, beating from now on at its interval."""
        self.monitor.heard(source, name, self.clock.t, heard)
        self.foreign[(source, name)] = heard, self.clock.t + heard.interval_s

    def probe(self, worker: str, probe: str, duration: float, id: str = "a1b2c3") -> None:
        self.feed(WorkerProbeStarted(worker=worker, id=id, probe=probe, duration_s=duration, recv_at=0))

    def probe_done(self, worker: str, elapsed: float, id: str = "a1b2c3") -> None:
        self.feed(WorkerProbeFinished(worker=worker, id=id, elapsed_s=elapsed, recv_at=0))

    def stack(self, worker: str, frames: tuple[Frame, ...], blocked_ms: float, via: str = "signal") -> None:
        """The worker's agent sends its main thread's stack, taken now."""
        self.feed(WorkerStack(worker=worker, recv_at=0, v=1, taken_at=self.clock.t + EPOCH, blocked_ms=blocked_ms,
                              via=via, frames=list(frames), more=0))

    def stack_note(self, worker: str, note: str) -> None:
        """What the monitor says when py-spy cannot read a worker: on its detail screen,
        and once in the log."""
        with self.monitor._lock:
            self.monitor._note((HUB, worker), note)

    def leave(self, worker: str, reason: str = "connection lost") -> None:
        self.feed(WorkerLeft(worker=worker, reason=reason, at=0))

    def app(self) -> HeartmonApp:
        async def hub(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/api/probes":
                return httpx.Response(200, json=PROBES)
            return httpx.Response(202, json={"id": "feedc0ffee12", "worker": "none-1", "probe": "gil-hold",
                                             "duration_s": 5})

        return HeartmonApp(self.monitor, HubClient(transport=httpx.MockTransport(hub)), lag_clock=lambda: 0.0)


def healthy() -> Script:
    script = Script()
    script.run(10)
    return script


def starving() -> Script:
    """none-1 under gil-hold for 1.5 s so far; process-1 under the same probe, busy. The
    agents' stacks come once each is stuck: none-1's after it was found starved."""
    script = healthy()
    script.probe("none-1", "gil-hold", 5)
    script.probe("process-1", "gil-hold", 5, id="d4e5f6")
    script.blocked["process-1"] = 0.0
    script.run(0.7, silent=("none-1",))
    script.stack("none-1", GIL_HOLD, 700)
    script.stack("process-1", GIL_HOLD, script.blocked["process-1"])
    script.run(0.8, silent=("none-1",))
    return script


def recovered() -> Script:
    script = starving()
    script.run(3.5, silent=("none-1",))
    script.probe_done("none-1", 5.0)
    script.probe_done("process-1", 5.0, id="d4e5f6")
    del script.blocked["process-1"]
    script.run(2)
    return script


def two_culprits() -> Script:
    """After the recovery, process-2 busy for a second in busy-python: two functions have
    blocked main loops, gil-hold's in two workers."""
    script = recovered()
    script.probe("process-2", "busy-python", 1, id="e7")
    script.blocked["process-2"] = 0.0
    script.run(0.5)
    script.stack("process-2", BUSY_PYTHON, script.blocked["process-2"])
    script.run(0.6)
    script.probe_done("process-2", 1.0, id="e7")
    del script.blocked["process-2"]
    script.run(0.5)
    return script


def one_dead() -> Script:
    script = healthy()
    script.leave("thread-2")
    script.run(1)
    return script


def hub_down() -> Script:
    """The hub was lost 3 s ago: its workers are unknown, neither late nor dead."""
    script = healthy()
    script.monitor.sources[0].status.link = "retrying"
    script.monitor.sources[0].status.detail = "[Errno 111] Connect call failed ('127.0.0.1', 8787)"
    script.monitor.source_lost(HUB, script.clock.t)
    script.run(3, silent=tuple(script.seq))
    return script


def none_available() -> Script:
    script = Script(fleet=FLEET[:2])
    script.run(5)
    script.probe("none-1", "gil-hold", 5)
    script.probe("none-2", "regex-backtrack", 5, id="b2")
    script.run(1.2, silent=("none-1", "none-2"))
    return script


CELERY = "celery+redis://127.0.0.1:6379/0"
INNGEST = "inngest://127.0.0.1:8289"
SOLO = "solo@fleet-host"


def systems() -> Script:
    """heartmon's own workers beside real systems: a Celery solo worker 6 s into a long
    CPU-bound task (starved: its pid burns CPU, while Celery's own rule already says
    offline), a prefork worker running the same task, and two Node Inngest workers 6 s
    into a spin of their main thread, one with isolated execution (healthy) and one
    without (starved: its Connect socket is open)."""
    script = Script(fleet=FLEET[:2], systems=(CELERY, INNGEST))
    for name, pid in ((SOLO, 5001), ("prefork@fleet-host", 5002)):
        script.join(CELERY, name, Heard(1.0, "celery", pid=pid, host="this-host"))
    for name in ("shop/isolated", "shop/same-thread"):
        script.join(INNGEST, name, Heard(1.0, "inngest", host="127.0.0.1"))
        script.monitor.vouch(INNGEST, name, script.clock.t, "Connect socket open")
    script.run(10)
    script.monitor.pid_reading((CELERY, SOLO), script.clock.t, True, True)
    script.run(6, silent=(SOLO, "shop/same-thread"))
    return script
