"""The ``heartmon`` command. Bad input ends in one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import math
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Annotated, Any, NoReturn

from pydantic import Field, TypeAdapter, ValidationError

from heartmon.agent import Agent, AgentConfig
from heartmon.commands import Answer, HubClient
from heartmon.config import ConfigError, Settings, load_settings
from heartmon.detector import AVAILABLE
from heartmon.fleet import FleetSpecError, parse_fleet_spec, state_dir
from heartmon.hub import Hub
from heartmon.lifeline import die_with_parent
from heartmon.matrix import Matrix, MatrixError, run_matrix
from heartmon.mock import EmbeddedMock, MockError, print_events, run_mock
from heartmon.monitor import Monitor
from heartmon.monitor_process import MonitorProcess
from heartmon.probes import load_registry
from heartmon.protocol import ISOLATIONS, Hello, WorkerName
from heartmon.recording import files as recording_files
from heartmon.recording import reading as recording
from heartmon.recording.journal import RecordingError
from heartmon.recording.replay import Replay
from heartmon.recording.report_cli import add_parser as add_report_parser
from heartmon.recording.report_cli import cmd_report
from heartmon.report import as_json, clock_time, describe
from heartmon.serve import add_parser as add_serve_parser
from heartmon.serve import cmd_serve
from heartmon.sources import SourceError
from heartmon.systems.experiment import SYSTEMS_DURATION_S, SystemsMatrix
from heartmon.systems.launch import SystemsError
from heartmon.urls import check_address
from heartmon.view import FleetView, ViewRequest

DEFAULT_HUB = "ws://127.0.0.1:8787"

SETTING_FLAGS = {
    "token": "token",
    "host": "hub.host",
    "port": "hub.port",
    "max_duration_s": "hub.max_duration_s",
    "workers": "mock.workers",
    "interval_ms": "mock.interval_ms",
    "http_interval_ms": "monitor.http_interval_ms",
    "rule": "detector.rule",
    "late_after": "detector.late_after",
    "starved_after": "detector.starved_after",
    "dead_after": "detector.dead_after",
    "busy_after": "detector.busy_after",
    "fleet": "nats.fleet",
    "insecure": "nats.insecure",
    "nats_monitor": "nats.monitor",
    "record": "recording.file",
    "record_enabled": "recording.enabled",
}
"""Command-line flags that set a key of the settings: flags win over env and file."""


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    """A duration or a threshold: ``inf`` would wait, or hold a probe, forever."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _hub_address(text: str) -> str:
    try:
        return check_address(text, ("ws", "wss", "http", "https"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heartmon",
        description="A terminal monitor for worker heartbeat health: starved, dead, or busy but isolated. "
        "With no command, runs the mock fleet and the monitor on it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    token_help = "bearer token (default: $HEARTMON_TOKEN, else 'token' in the config file)"

    configured = argparse.ArgumentParser(add_help=False)
    configured.add_argument("--config", type=Path, help="TOML settings file (default: ~/.config/heartmon/config.toml)")
    configured.add_argument("--token", help=token_help)
    detection = argparse.ArgumentParser(add_help=False)
    detection.add_argument("--rule", choices=("fixed", "phi"), help="detector rule (default: fixed)")
    for flag, default in (("late-after", 2), ("starved-after", 5), ("dead-after", 10), ("busy-after", 2)):
        detection.add_argument(f"--{flag}", type=_positive_float, metavar="N",
                               help=f"{flag.replace('-', ' ')} N intervals (default: {default})")

    recorded = argparse.ArgumentParser(add_help=False)
    recorded.add_argument("--record", type=Path, metavar="FILE",
                          help="record to this new file (default: one per run under "
                               "$XDG_STATE_HOME/heartmon/recordings, for 'heartmon replay' and 'heartmon report')")
    recorded.add_argument("--no-record", dest="record_enabled", action="store_false", default=None,
                          help="record nothing")

    run = sub.add_parser("run", parents=[configured, detection, recorded],
                         help="the embedded mock fleet and the monitor on it (what bare 'heartmon' does)")
    watch = sub.add_parser("watch", parents=[configured, detection, recorded],
                           help="the monitor, on hubs, HTTP endpoints, Celery, RQ and Inngest Connect")
    hub = sub.add_parser("hub", parents=[configured, detection],
                         help="run a hub alone, for workers started elsewhere")
    mock = sub.add_parser("mock", parents=[configured, detection],
                          help="run a hub and a fleet of real worker processes")
    for server in (hub, mock):
        server.add_argument("--host", help="address to bind (default: 127.0.0.1)")
        server.add_argument("--port", type=int, help="port to bind, 0 for any free one (default: 8787)")
        server.add_argument("--max-duration-s", type=_positive_float,
                            help="longest probe the hub accepts (default: 60)")
    for fleet in (run, mock):
        fleet.add_argument("--workers", help="MODE:COUNT,... (default: none:2,thread:2,process:2)")
        fleet.add_argument("--interval-ms", type=_positive_int, help="heartbeat interval (default: 100)")
    run.add_argument("--port", type=int, help="port of the embedded hub (default: 8787)")
    mock.add_argument("--quiet", action="store_true", help="print only the hub's address, no events")

    source_help = ("ws://HOST:PORT (a hub), [NAME=]http(s)://… (a health endpoint), celery+redis://HOST:PORT/DB, "
                   "rq+redis://HOST:PORT/DB or inngest://HOST:PORT; default: 'sources' of the config")
    events = sub.add_parser("events", parents=[configured, detection, recorded],
                            help="print every state change and recovery as it happens")
    events.add_argument("sources", nargs="*", metavar="SOURCE", help=source_help)
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.add_argument("--for", dest="for_s", type=_positive_float, metavar="SECONDS", help="stop after this long")
    check = sub.add_parser("check", parents=[configured, detection, recorded],
                           help="exit 0 if every worker is healthy or busy, 1 otherwise")
    check.add_argument("sources", nargs="*", metavar="SOURCE", help=source_help)
    check.add_argument("--within", type=_positive_float, default=3.0, metavar="SECONDS",
                       help="how long to wait for a healthy fleet (default: 3)")
    watch.add_argument("sources", nargs="*", metavar="SOURCE", help=source_help)
    for command in (events, check, watch):
        command.add_argument("--http-interval-ms", type=_positive_int,
                             help="poll interval of HTTP sources (default: 1000)")

    worker = sub.add_parser("worker", parents=[configured], help="run one worker and connect it to a hub")
    worker.add_argument("--hub", type=_hub_address, default=DEFAULT_HUB, help=f"hub address (default: {DEFAULT_HUB})")
    worker.add_argument("--isolation", choices=ISOLATIONS, default="none", help="where heartbeats are sent from")
    worker.add_argument("--name", help="worker name (default: MODE-PID)")
    worker.add_argument("--interval-ms", type=_positive_int, default=1000, help="heartbeat interval (default: 1000)")
    nats_help = ("NATS servers, nats://HOST:PORT[,nats://HOST:PORT…]; credentials come from settings "
                 "([nats] user/password or token) or HEARTMON_NATS__…, never from the command line")
    worker.add_argument("--nats", metavar="SERVERS", help=f"publish to NATS instead of a hub: {nats_help}")
    worker.add_argument("--fleet", help="the fleet on NATS (default: 'default', or nats.fleet)")
    worker.add_argument("--host-name", help="the host the worker says it runs on (default: this machine's name)")
    worker.add_argument("--capture", choices=("auto", "sampler", "off"), default="auto",
                        help="how the main thread's stack is taken while its loop is blocked: by a signal handler "
                             "that needs no GIL (auto, default), by a sampling thread, or not at all")

    sub.add_parser("probes", help="list the load probes that are installed")

    inject = sub.add_parser("inject", parents=[configured], help="inject a probe into a worker through the hub")
    inject.add_argument("worker", help="worker name, or 'any' for any available worker")
    inject.add_argument("probe", help="probe name (see 'heartmon probes')")
    inject.add_argument("--duration", type=_positive_float, default=2.0, help="seconds (default: 2)")
    inject.add_argument("--hub", type=_hub_address, default=DEFAULT_HUB, help=f"hub address (default: {DEFAULT_HUB})")
    hub.add_argument("--nats", metavar="SERVERS",
                     help=f"serve a fleet on NATS instead of accepting workers: {nats_help}")
    hub.add_argument("--fleet", help="with --nats, serve only this fleet (default: every fleet under the prefix)")
    hub.add_argument("--nats-monitor", action="append", metavar="HOST:PORT",
                     help="with --nats, a server's monitoring endpoint (repeat for each server): its /connz tells a "
                          "silent worker that is still connected (starved) from a gone one (default: nats.monitor)")
    for command in (hub, inject):
        command.add_argument("--insecure", action="store_true", default=None,
                             help="send commands on a NATS cluster that lets anyone connect")
    inject.add_argument("--nats", metavar="SERVERS",
                        help=f"send to a worker on NATS (WORKER is FLEET/HOST/NAME), not through a hub: {nats_help}")

    replay = sub.add_parser("replay", help="the monitor's screens on a recording, with a time cursor")
    replay.add_argument("file", nargs="?", type=Path, metavar="FILE",
                        help="a recording (default: the newest in $XDG_STATE_HOME/heartmon/recordings)")
    replay.add_argument("--verify", action="store_true",
                        help="replay it all and check every state change against the live monitor's, then exit")

    matrix = sub.add_parser("matrix", help="measure every probe against every isolation mode")
    matrix.add_argument("--duration", type=_positive_float,
                        help=f"seconds per probe (default: 2, with --systems {SYSTEMS_DURATION_S:g})")
    matrix.add_argument("--probe", action="append", dest="probes", metavar="NAME",
                        help="run only this probe (repeat for more; default: every probe)")
    matrix.add_argument("--systems", action="store_true",
                        help="also run the probes through real Celery (solo, threads, prefork) and Inngest SDK "
                             "workers, beside heartmon's own (needs heartmon[systems]; Node rows need node)")
    matrix.add_argument("--interval-ms", type=_positive_int, default=50, help="heartbeat interval (default: 50)")
    matrix.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_serve_parser(sub, [configured])
    add_report_parser(sub, [])
    return parser


def _check_exposure(host: str, token: str | None) -> None:
    """Safe by default: a hub that anyone else can reach must ask for a token."""
    if token:
        return
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}  # IP text for AF_INET(6)
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve --host {host!r}: {exc.strerror}") from None
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise UsageError(
            f"refusing to bind {host} without a token: anyone who can reach it could burn this machine's CPU. "
            "Pass --token T (or set HEARTMON_TOKEN), or bind 127.0.0.1."
        )


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Runs until done or until SIGINT/SIGTERM, which cancel it so that cleanups run."""

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None  # asyncio.run runs this coroutine as a task
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        await main

    try:
        asyncio.run(guarded())
    except asyncio.CancelledError:
        pass


def settings_from(args: argparse.Namespace, flags: Iterable[str] = SETTING_FLAGS) -> Settings:
    """Flags over environment over file over defaults; an invalid value is a UsageError.
    ``flags`` are those of the command that set settings (a worker's --interval-ms is its
    own, not the mock's)."""
    overrides: dict[str, Any] = {}
    for flag in flags:
        key = SETTING_FLAGS[flag]
        value = getattr(args, flag, None)
        if value is not None:
            *sections, leaf = key.split(".")
            target = overrides
            for section in sections:
                target = target.setdefault(section, {})
            target[leaf] = value
    try:
        return load_settings(getattr(args, "config", None), overrides)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def cmd_mock(args: argparse.Namespace) -> int:
    """`heartmon mock`, and `heartmon hub`: the same server with an empty fleet."""
    settings = settings_from(args)
    try:
        spec = parse_fleet_spec(settings.mock.workers) if args.command == "mock" else []
    except FleetSpecError as exc:
        raise UsageError(str(exc)) from None
    host, port = settings.hub.host, settings.hub.port
    _check_exposure(host, settings.token)
    hub = Hub(load_registry(), token=settings.token, max_duration_s=settings.hub.max_duration_s,
              thresholds=settings.detector)
    if not getattr(args, "quiet", False):
        hub.listeners.append(print_events)

    def ready(url: str, fleet) -> None:
        print(f"hub listening on {url}", flush=True)
        if fleet.procs and hub.listeners:
            print(f"started {len(fleet.procs)} workers: {', '.join(fleet.procs)}; Ctrl-C stops them all", flush=True)
            print(f"try: heartmon inject {next(iter(fleet.procs))} gil-hold --duration 2 --hub {url}", flush=True)

    try:
        if getattr(args, "nats", None):
            _run(_bridge(hub, host, port, args, settings))
        else:
            _run(run_mock(hub, host, port, spec, settings.mock.interval_ms, ready))
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return 0


async def _bridge(hub: Hub, host: str, port: int, args: argparse.Namespace, settings: Settings) -> None:
    from heartmon.bus.bridge import run_bridge
    from heartmon.bus.connect import BusError

    def ready(url: str) -> None:
        fleet = f"fleet {args.fleet!r}" if args.fleet else "every fleet"
        print(f"hub listening on {url} (serving {fleet} on NATS at {args.nats})", flush=True)
        if not settings.nats.monitor:
            print("no NATS monitoring endpoint (--nats-monitor HOST:PORT): a silent worker is judged on its "
                  "silence alone, and is dead after dead_after intervals", file=sys.stderr, flush=True)

    try:
        await run_bridge(hub, host, port, _nats_servers(args.nats), settings.nats, args.fleet, ready)
    except BusError as exc:
        raise UsageError(str(exc)) from None


def _sources(args: argparse.Namespace, settings: Settings) -> list[str]:
    sources = args.sources or settings.sources
    if not sources:
        raise UsageError("no sources: name a hub (ws://HOST:PORT), an endpoint (http://…), a system "
                         "(celery+redis://…, rq+redis://…, inngest://…), or set 'sources' in the config")
    return sources


def _recording(settings: Settings) -> Settings:
    """Where this monitor records: the file the user named, which must be new (nothing
    is recorded over), or a new one in the default directory (whose older recordings
    its writer prunes)."""
    r = settings.recording
    if not r.enabled:
        return settings
    if r.file is not None:
        if r.file.exists():
            raise UsageError(f"--record {r.file}: the file exists; a recording goes to a new file")
        return settings
    return settings.model_copy(update={"recording": r.model_copy(update={"file": recording_files.new_file()})})


def _monitor(args: argparse.Namespace) -> Monitor:
    """``events`` and ``check`` run the engine on a thread: they draw no screen."""
    settings = _recording(settings_from(args))
    try:
        return Monitor(settings, _sources(args, settings))
    except SourceError as exc:
        raise UsageError(str(exc)) from None


def cmd_events(args: argparse.Namespace) -> int:
    monitor = _monitor(args)
    links: dict[str, tuple[str, str]] = {}
    refused: dict[str, int] = {}
    seen = 0
    deadline = time.monotonic() + args.for_s if args.for_s else None
    if monitor.recorder is not None:
        print(f"heartmon: {monitor.recording}", file=sys.stderr)
    with monitor:
        try:
            while deadline is None or time.monotonic() < deadline:
                view = monitor.view(ViewRequest(height=0, seen=seen))
                for source in view.sources:  # connection changes, for people, on stderr
                    if links.get(source.label) != (source.link, source.detail):
                        links[source.label] = (source.link, source.detail)
                        print(f"heartmon: {source.label}: {source.link} {source.detail}".rstrip(), file=sys.stderr)
                    if source.refused > refused.get(source.label, 0):  # bad input: dropped, counted, said
                        new = source.refused - refused.get(source.label, 0)
                        refused[source.label] = source.refused
                        print(f"heartmon: {source.label}: refused {new} input{'s' if new > 1 else ''} "
                              f"({source.refused} in all), last: {source.last_refused}", file=sys.stderr)
                if view.crashed:
                    print(f"heartmon: the monitor stopped: {view.crashed}", file=sys.stderr)
                    return 1
                seen = view.logged
                for entry in view.entries:
                    if args.json:
                        print(json.dumps(as_json(entry, view.wall)), flush=True)
                    else:
                        print(f"{clock_time(entry.at, view.wall)} {describe(entry)}", flush=True)
                time.sleep(0.05)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    monitor = _monitor(args)
    deadline = time.monotonic() + args.within
    with monitor:
        while True:
            view = monitor.view(ViewRequest(height=1_000_000))
            if view.crashed:
                print(f"heartmon: the monitor stopped: {view.crashed}", file=sys.stderr)
                return 1
            problems = _unhealthy(view)
            if not problems:
                print(f"ok: all {view.total} workers healthy or busy")
                return 0
            if time.monotonic() >= deadline:
                for line in problems:
                    print(line)
                return 1
            time.sleep(0.1)


def _unhealthy(view: FleetView) -> list[str]:
    """One line per source that is not connected and per worker that is not available."""
    problems = [f"{s.label}: {s.link} {s.detail}".rstrip() for s in view.sources if s.link != "connected"]
    for row in view.rows:
        if row.state not in AVAILABLE:
            silent = f"silent for {row.silence_s:.1f} s" if row.silence_s is not None else "dead"
            problems.append(f"{row.name}: {row.state}, {silent}" + (f" ({row.isolation})" if row.isolation else ""))
    if not view.rows and not problems:
        problems.append("no workers: the sources report none")
    return problems


def cmd_run(args: argparse.Namespace) -> int:
    """Bare `heartmon`: the mock fleet in a child process, the monitor on it."""
    settings = _recording(settings_from(args))
    mock_args = ["--host", settings.hub.host, "--port", str(settings.hub.port), "--workers", settings.mock.workers,
                 "--interval-ms", str(settings.mock.interval_ms)]
    if args.config:
        mock_args += ["--config", str(args.config)]
    # The hub judges its pool with exactly the monitor's thresholds (flags included,
    # resolved into one variable) and asks for the same token.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTMON_DETECTOR__")}
    env["HEARTMON_DETECTOR"] = settings.detector.model_dump_json()
    if settings.token:
        env["HEARTMON_TOKEN"] = settings.token
    try:
        mock = EmbeddedMock(mock_args, env)
        with mock as url:
            return _tui(settings, [url], on_quit=mock.begin_stop)
    except MockError as exc:
        raise UsageError(f"the mock fleet did not start: {exc.args[0].removeprefix('heartmon: ')}") from None


def cmd_watch(args: argparse.Namespace) -> int:
    settings = _recording(settings_from(args))
    return _tui(settings, _sources(args, settings))


def _tui(settings: Settings, sources: list[str], on_quit: Callable[[], None] | None = None) -> int:
    """The app on its engine's child process. ``on_quit`` runs as soon as the user quits,
    so that what the caller must stop stops while the screen is torn down; the engine
    stops first, so that its recording ends on the fleet the user last saw, not on the
    demo fleet being stopped."""
    from heartmon.tui.app import HeartmonApp  # Textual only where a screen is wanted

    try:
        feed = MonitorProcess(settings, sources)
    except SourceError as exc:
        raise UsageError(str(exc)) from None

    def quitting() -> None:
        feed.stop()
        if on_quit is not None:
            on_quit()

    app = HeartmonApp(feed, HubClient(settings.token), on_quit=quitting)
    signal.signal(signal.SIGTERM, lambda *_: app.exit())
    with feed:
        app.run()
    recorded = settings.recording.file
    if settings.recording.enabled and recorded is not None and recorded.exists():
        print(f"heartmon: recorded to {recorded}: 'heartmon replay' and 'heartmon report' read it", file=sys.stderr)
    return 0


HELLO_RULES: dict[str, TypeAdapter[Any]] = {
    "--name": TypeAdapter(WorkerName),
    "--host-name": TypeAdapter(Annotated[str, Hello.model_fields["host"],
                                         Field(min_length=1, pattern=r"^[^/\x00-\x1f\x7f]+$")]),
    "--interval-ms": TypeAdapter(Annotated[int, Hello.model_fields["interval_ms"]]),
}
"""The protocol's own rules for what a worker says in its hello, by the flag that sets it."""


def _check_hello(**flags: object) -> None:
    """A hello the hub would refuse fails only once connected: a traceback in the
    worker, or, isolated in a process, a heartbeat child that dies while the worker
    goes on as if nothing happened. So the worker checks it first, by the same rules."""
    for flag, value in flags.items():
        try:
            HELLO_RULES[flag].validate_python(value)
        except ValidationError as exc:
            raise UsageError(f"invalid {flag} {value!r}: {exc.errors()[0]['msg']}") from None


def cmd_worker(args: argparse.Namespace) -> int:
    name = args.name or f"{args.isolation}-{os.getpid()}"
    _check_hello(**{"--name": name, "--interval-ms": args.interval_ms})
    settings = settings_from(args, flags=("token", "fleet"))
    servers = _nats_servers(args.nats) if args.nats else []
    if args.host_name is not None and not servers:
        raise UsageError("--host-name is the host a worker says it runs on over NATS: it needs --nats")
    if args.host_name is not None:
        _check_hello(**{"--host-name": args.host_name})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = AgentConfig(hub=args.hub, name=name, isolation=args.isolation, interval_ms=args.interval_ms,
                         token=settings.token, capture=args.capture, nats=tuple(servers), bus=settings.nats,
                         host=args.host_name)
    _run(Agent(config).run())
    return 0


def _nats_servers(spec: str) -> list[str]:
    from heartmon.bus.connect import BusError, parse_servers

    try:
        import nats  # noqa: F401 - only whether it is installed
    except ModuleNotFoundError:
        raise UsageError("NATS needs nats-py: pip install 'heartmon[nats]'") from None
    try:
        return parse_servers(spec)
    except BusError as exc:
        raise UsageError(f"--nats: {exc}") from None


def cmd_probes(args: argparse.Namespace) -> int:
    registry = load_registry()
    width = max((len(n) for n in registry.names()), default=0) + 2
    for entry in registry.describe():
        print(f"{entry['name']:<{width}}{entry['description']}")
        print(f"{'':<{width}}{entry['demonstrates']}")
    for name, reason in sorted(registry.broken.items()):
        print(f"{name:<{width}}BROKEN: {reason}", file=sys.stderr)
    return 0


def cmd_inject(args: argparse.Namespace) -> int:
    if args.nats:
        return _inject_on_bus(args)
    settings = settings_from(args, flags=("token",))

    async def send() -> Answer:
        client = HubClient(settings.token)
        try:
            return await client.inject(args.hub, args.worker, args.probe, args.duration)
        finally:
            await client.aclose()

    answer = asyncio.run(send())
    if answer.sent is not None:
        sent = answer.sent
        print(f"injected {sent['probe']} for {sent['duration_s']:g} s into {sent['worker']} (id {sent['id']})")
        return 0
    print(f"heartmon: {'hub answered ' if answer.status else ''}{answer.text}", file=sys.stderr)
    return 1


def _inject_on_bus(args: argparse.Namespace) -> int:
    """Straight to the worker over NATS. ``any`` needs a judge of the pool, which a hub
    that bridges the fleet is (``heartmon hub --nats``)."""
    from heartmon.bus.commands import new_inject, request_inject
    from heartmon.bus.connect import WATCHING, BusError, check_commands_allowed, open_bus
    from heartmon.hub_state import RouteError

    settings = settings_from(args, flags=("insecure",))
    servers = _nats_servers(args.nats)
    if args.worker == "any":
        raise UsageError("'any' needs the pool judged: run 'heartmon hub --nats …' and inject through it "
                         "('heartmon inject any PROBE --hub ws://HOST:PORT'), or name a worker as FLEET/HOST/NAME")

    async def send() -> dict:
        command = new_inject(args.probe, args.duration, settings.hub.max_duration_s)
        await check_commands_allowed(servers, settings.nats)
        nc = await open_bus(servers, settings.nats, WATCHING)
        try:
            return await request_inject(nc, settings.nats.prefix, args.worker, command)
        finally:
            await nc.close()

    try:
        sent = asyncio.run(send())
    except BusError as exc:
        raise UsageError(str(exc)) from None
    except RouteError as exc:
        print(f"heartmon: {exc.status.value}: {exc.message}", file=sys.stderr)
        return 1
    print(f"injected {sent['probe']} for {sent['duration_s']:g} s into {sent['worker']} (id {sent['id']})")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    try:
        replay = Replay(recording.named(args.file))
    except RecordingError as exc:
        raise UsageError(str(exc)) from None
    if args.verify:
        mismatches = replay.verify()
        for m in mismatches[:10]:
            print(f"state change {m.index + 1}: live {m.live}, replayed {m.replayed}")
        count = len(replay.recording.transitions())
        print(f"{replay.recording.path}: {count} state changes, " +
              (f"{len(mismatches)} differ when replayed" if mismatches else "all replayed as recorded"))
        return 1 if mismatches else 0
    from heartmon.tui.replay import ReplayApp  # Textual only where a screen is wanted

    app = ReplayApp(replay)
    signal.signal(signal.SIGTERM, lambda *_: app.exit())
    app.run()
    return 0


def cmd_matrix(args: argparse.Namespace) -> int:
    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result: Matrix | SystemsMatrix | None = None
    registry = load_registry()
    unknown = [name for name in args.probes or () if name not in registry.names()]
    if unknown:
        raise UsageError(f"unknown probe {unknown[0]!r}; known: {', '.join(registry.names())}")
    probes = list(dict.fromkeys(args.probes or registry.names()))

    async def main() -> None:
        nonlocal result
        duration = args.duration or (SYSTEMS_DURATION_S if args.systems else 2.0)
        result = await run_matrix(registry, duration, args.interval_ms, progress, probes)
        if args.systems:
            from heartmon.systems.experiment import run_systems  # imports Celery: only when asked

            with tempfile.TemporaryDirectory(prefix="heartmon-systems-") as work:
                # the Node SDK is kept with heartmon's other state, and reused by the next run
                systems = await run_systems(probes, duration, Path(work), state_dir() / "node", progress)
            result = systems.beside(result)

    try:
        _run(main())
    except (MatrixError, SystemsError) as exc:
        print(f"heartmon: matrix failed: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        print(f"heartmon: matrix --systems needs {exc.name}: pip install 'heartmon[systems]'", file=sys.stderr)
        return 1
    if result is None:  # interrupted
        return 130
    print(json.dumps(result.as_json()) if args.json else result.table())
    return 0


COMMANDS = {
    "run": cmd_run, "watch": cmd_watch, "hub": cmd_mock, "mock": cmd_mock, "events": cmd_events, "check": cmd_check,
    "worker": cmd_worker, "probes": cmd_probes, "inject": cmd_inject, "matrix": cmd_matrix, "replay": cmd_replay,
    "serve": cmd_serve, "report": cmd_report,
}


def main(argv: list[str] | None = None) -> NoReturn:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]  # the main job: the embedded mock fleet and the monitor
    args = _parser().parse_args(argv)
    if parent := os.environ.get("HEARTMON_DIE_WITH"):  # started by another heartmon: die with it
        die_with_parent(int(parent))
    try:
        code = COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"heartmon: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)
