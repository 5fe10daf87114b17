"""The ``heartmon`` command. Bad input ends in one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn

import httpx

from heartmon.agent import Agent, AgentConfig
from heartmon.fleet import FleetSpecError, parse_fleet_spec
from heartmon.hub import Hub
from heartmon.lifeline import die_with_parent
from heartmon.matrix import MatrixError, run_matrix
from heartmon.mock import print_events, run_mock
from heartmon.probes import load_registry
from heartmon.protocol import ISOLATIONS
from heartmon.urls import hub_http

DEFAULT_HUB = "ws://127.0.0.1:8787"
DEFAULT_FLEET = "none:2,thread:2,process:2"


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
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heartmon",
        description="A terminal monitor for worker heartbeat health: starved, dead, or busy but isolated. "
        "With no command, runs the mock fleet.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    token_help = "bearer token (default: $HEARTMON_TOKEN)"

    hub = sub.add_parser("hub", help="run a hub alone, for workers started elsewhere")
    mock = sub.add_parser("mock", help="run a hub and a fleet of real worker processes")
    for server in (hub, mock):
        server.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
        server.add_argument("--port", type=int, default=8787, help="port to bind, 0 for any free one (default: 8787)")
        server.add_argument("--max-duration-s", type=_positive_float, default=60.0,
                            help="longest probe the hub accepts (default: 60)")
        server.add_argument("--token", default=os.environ.get("HEARTMON_TOKEN"), help=token_help)
    hub.set_defaults(workers="", interval_ms=0)
    mock.add_argument("--workers", default=DEFAULT_FLEET, help=f"MODE:COUNT,... (default: {DEFAULT_FLEET})")
    mock.add_argument("--interval-ms", type=_positive_int, default=100, help="heartbeat interval (default: 100)")

    worker = sub.add_parser("worker", help="run one worker and connect it to a hub")
    worker.add_argument("--hub", default=DEFAULT_HUB, help=f"hub address (default: {DEFAULT_HUB})")
    worker.add_argument("--isolation", choices=ISOLATIONS, default="none", help="where heartbeats are sent from")
    worker.add_argument("--name", help="worker name (default: MODE-PID)")
    worker.add_argument("--interval-ms", type=_positive_int, default=1000, help="heartbeat interval (default: 1000)")
    worker.add_argument("--token", default=os.environ.get("HEARTMON_TOKEN"), help=token_help)

    sub.add_parser("probes", help="list the load probes that are installed")

    inject = sub.add_parser("inject", help="inject a probe into a worker through the hub")
    inject.add_argument("worker", help="worker name, or 'any' for any available worker")
    inject.add_argument("probe", help="probe name (see 'heartmon probes')")
    inject.add_argument("--duration", type=float, default=2.0, help="seconds (default: 2)")
    inject.add_argument("--hub", default=DEFAULT_HUB, help=f"hub address (default: {DEFAULT_HUB})")
    inject.add_argument("--token", default=os.environ.get("HEARTMON_TOKEN"), help=token_help)

    matrix = sub.add_parser("matrix", help="measure every probe against every isolation mode")
    matrix.add_argument("--duration", type=_positive_float, default=2.0, help="seconds per probe (default: 2)")
    matrix.add_argument("--interval-ms", type=_positive_int, default=50, help="heartbeat interval (default: 50)")
    matrix.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


def _check_exposure(host: str, token: str | None) -> None:
    """Safe by default: a hub that anyone else can reach must ask for a token."""
    if token:
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
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
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        await main

    try:
        asyncio.run(guarded())
    except asyncio.CancelledError:
        pass


def cmd_mock(args: argparse.Namespace) -> int:
    """`heartmon mock`, and `heartmon hub`: the same server with an empty fleet."""
    try:
        spec = parse_fleet_spec(args.workers) if args.command == "mock" else []
    except FleetSpecError as exc:
        raise UsageError(str(exc)) from None
    _check_exposure(args.host, args.token)
    hub = Hub(load_registry(), token=args.token, max_duration_s=args.max_duration_s)
    hub.listeners.append(print_events)

    def ready(url: str, fleet) -> None:
        print(f"hub listening on {url}", flush=True)
        if fleet.procs:
            print(f"started {len(fleet.procs)} workers: {', '.join(fleet.procs)}; Ctrl-C stops them all", flush=True)
            print(f"try: heartmon inject {next(iter(fleet.procs))} gil-hold --duration 2 --hub {url}", flush=True)

    try:
        _run(run_mock(hub, args.host, args.port, spec, args.interval_ms, ready))
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    if parent := os.environ.get("HEARTMON_DIE_WITH"):
        die_with_parent(int(parent))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    name = args.name or f"{args.isolation}-{os.getpid()}"
    config = AgentConfig(hub=args.hub, name=name, isolation=args.isolation,
                         interval_ms=args.interval_ms, token=args.token)
    _run(Agent(config).run())
    return 0


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
    url = f"{hub_http(args.hub)}/api/workers/{args.worker}/inject"
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    try:
        response = httpx.post(url, params={"probe": args.probe, "duration_s": args.duration},
                              headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        print(f"heartmon: cannot reach the hub at {args.hub}: {exc}", file=sys.stderr)
        return 1
    try:
        body = response.json()
    except ValueError:
        body = {"message": response.text.strip()}
    if response.is_success:
        print(f"injected {body['probe']} for {body['duration_s']:g} s into {body['worker']} (id {body['id']})")
        return 0
    print(f"heartmon: hub answered {response.status_code}: {body.get('message', body)}", file=sys.stderr)
    return 1


def cmd_matrix(args: argparse.Namespace) -> int:
    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = None

    async def main() -> None:
        nonlocal result
        result = await run_matrix(load_registry(), args.duration, args.interval_ms, progress)

    try:
        _run(main())
    except MatrixError as exc:
        print(f"heartmon: matrix failed: {exc}", file=sys.stderr)
        return 1
    if result is None:  # interrupted
        return 130
    print(json.dumps(result.as_json()) if args.json else result.table())
    return 0


COMMANDS = {"hub": cmd_mock, "mock": cmd_mock, "worker": cmd_worker, "probes": cmd_probes, "inject": cmd_inject, "matrix": cmd_matrix}


def main(argv: list[str] | None = None) -> NoReturn:
    args = _parser().parse_args(argv)
    if args.command is None:  # the main job: the embedded mock fleet
        args = _parser().parse_args(["mock", *([] if argv is None else argv)])
    try:
        code = COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"heartmon: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)
