"""Fixtures that start real heartmon processes and always clean them up."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.harness import Running, start, wait_gone, wait_until, workers
from tests.systems import SESSION_TAG, Redis, Services, start_redis

FLEET_ARGS = ("mock", "--port", "0", "--interval-ms", "50", "--workers", "none:1,thread:1,process:1")
NAMES = ("none-1", "thread-1", "process-1")

Launch = Callable[..., Running]


def _launcher() -> tuple[Launch, Callable[[], None]]:
    started: list[Running] = []

    def launch(*args: str, env: dict[str, str] | None = None, ready: str | None = r"hub listening on (\S+)") -> Running:
        running = start(*args, env=env)
        started.append(running)
        if ready:
            running.url = running.read_until(ready).group(1)
            running.remember_tree()
        return running

    def cleanup() -> None:
        leaks = [leak for running in started for leak in running.cleanup()]
        assert not leaks, f"processes outlived their test: {leaks}"

    return launch, cleanup


@pytest.fixture
def launch() -> Iterator[Launch]:
    """Starts heartmon commands; at teardown stops them and fails on any leaked process."""
    launch, cleanup = _launcher()
    yield launch
    cleanup()


def wait_fleet_ready(client: httpx.Client, names=NAMES) -> dict[str, dict]:
    return wait_until(
        lambda: (ws := workers(client)) and all(ws.get(n, {}).get("available") for n in names) and ws,
        30, f"workers {names} to connect and beat",
    )


@pytest.fixture(scope="module")
def fleet() -> Iterator[Running]:
    """One mock fleet (one worker per isolation, 50 ms) shared by a module's tests."""
    launch, cleanup = _launcher()
    running = launch(*FLEET_ARGS)
    with httpx.Client(base_url=running.http, timeout=10) as client:
        wait_fleet_ready(client)
    running.remember_tree()
    yield running
    cleanup()


@pytest.fixture
def client(fleet: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet.http, timeout=10) as c:
        yield c


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The third-party probe package of tests/plugin_probe, installed on its own."""
    target = tmp_path_factory.mktemp("plugin")
    source = Path(__file__).parent / "plugin_probe"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--no-build-isolation", "--target", str(target), str(source)],
        check=True,
    )
    return target


def _session_processes(since: float, tag: str, basetemp: Path) -> list:
    """Processes this test session started, whatever they are (heartmon, redis-server,
    celery, node, nats-server): they inherit the session's tag from its environment.
    Another test session on the same machine has its own tag, and is left alone.
    Chromium's helpers (zygotes, renderers) start with an empty environment, but carry
    their browser's --user-data-dir, which the tests keep under the session's basetemp."""
    profile = f"--user-data-dir={basetemp}{os.sep}"
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
        if proc.info["pid"] == os.getpid() or (proc.info["create_time"] or 0) < since:
            continue
        try:
            if any(a.startswith(profile) for a in proc.info["cmdline"] or ()) or proc.environ().get(SESSION_TAG) == tag:
                found.append(proc)
        except psutil.Error:
            pass
    return found


@pytest.fixture(scope="session", autouse=True)
def state_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """What heartmon keeps (the workers' logs) goes to a directory of this session, not
    to the user's: tests kill mocks, and a killed mock cannot remove its log."""
    path = tmp_path_factory.mktemp("state")
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(path)  # inherited by every process the tests start
    yield path
    if before is None:
        del os.environ["XDG_STATE_HOME"]
    else:
        os.environ["XDG_STATE_HOME"] = before


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_tests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    since = time.time() - 1
    tag = uuid.uuid4().hex
    os.environ[SESSION_TAG] = tag  # inherited by every process the tests start
    yield
    alive = wait_gone(_session_processes(since, tag, tmp_path_factory.getbasetemp()))
    for proc in alive:
        proc.kill()
    assert not alive, f"processes outlived the tests: {[p.info['cmdline'] for p in alive]}"


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    """Starts real third-party processes (redis-server, workers); stops each by pid at
    the end of the test, pass or fail."""
    started = Services(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def redis(services: Services) -> Redis:
    """A real redis-server of this test, on a free loopback port."""
    return start_redis(services)
