"""Real processes for the integration tests, and the guarantee that none outlives a test.

Every heartmon process a test starts goes through :class:`Running`: it remembers the
whole process tree (workers and their heartbeat children included) and, on the way
out, stops it, waits for every member to be gone, kills stragglers, and then reports
any that had to be killed or that outlived their parent, so that a leak fails a test
instead of lingering on the machine.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import psutil
from websockets.sync.client import ClientConnection, connect

from heartmon.polling import wait_until
from heartmon.stopping import stop_processes
from heartmon.systems.launch import free_port
from heartmon.urls import auth_headers

__all__ = ["free_port", "wait_until"]  # the tests use heartmon's own helpers

HEARTMON = [sys.executable, "-m", "heartmon"]
CLEANUP_GRACE_S = 15.0
"""Generous: a heartmon process that needs longer than this to stop on SIGTERM is a bug
the test reports, not slowness of a loaded machine."""


def _gone(proc: psutil.Process) -> bool:
    # A zombie has exited; whether its new parent reaps it is not ours to wait for.
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(procs: list[psutil.Process], timeout_s: float = 10.0) -> list[psutil.Process]:
    """Waits for processes to exit; returns those still alive at the deadline."""
    deadline = time.monotonic() + timeout_s
    alive = list(procs)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if not _gone(p)]
        if alive:
            time.sleep(0.05)
    return alive


@dataclass
class Running:
    proc: subprocess.Popen
    url: str = ""
    lines: list[str] = field(default_factory=list)
    tree: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def http(self) -> str:
        return self.url.replace("ws://", "http://")

    def remember_tree(self) -> list[psutil.Process]:
        """Records every descendant seen so far, so that cleanup can find orphans too."""
        return remember_descendants(self.proc.pid, self.tree)

    def read_until(self, pattern: str, timeout_s: float = 20.0) -> re.Match:
        """Reads the process's stdout until a line matches; the lines are kept."""
        regex = re.compile(pattern)
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if selector.select(timeout=max(0.0, deadline - time.monotonic())):
                line = self.proc.stdout.readline()
                if not line:
                    break
                self.lines.append(line.rstrip("\n"))
                if match := regex.search(line):
                    return match
        raise AssertionError(f"no line matching {pattern!r}; output so far: {self.lines}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int | None:
        self.remember_tree()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def cleanup(self) -> list[str]:
        """Stops everything; returns a description of each process that had to be killed."""
        self.remember_tree()
        killed = stop_processes([self.proc], CLEANUP_GRACE_S)
        leaks = [f"pid {self.proc.pid} ignored SIGTERM for {CLEANUP_GRACE_S:g} s"] if killed else []
        alive = wait_gone(list(self.tree.values()))
        for proc in alive:
            leaks.append(f"pid {proc.pid} outlived heartmon: {' '.join(_cmdline(proc))}")
            _kill(proc)
        if self.proc.stdout:
            self.proc.stdout.close()
        return leaks


def remember_descendants(pid: int, tree: dict[int, psutil.Process]) -> list[psutil.Process]:
    """Adds every descendant of ``pid`` alive now to ``tree``; returns all it holds."""
    try:
        for child in psutil.Process(pid).children(recursive=True):
            tree.setdefault(child.pid, child)
    except psutil.NoSuchProcess:
        pass
    return list(tree.values())


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return ["?"]


def _kill(proc: psutil.Process) -> None:
    try:
        proc.kill()
    except psutil.NoSuchProcess:
        pass


def start(*args: str, env: dict[str, str] | None = None) -> Running:
    proc = subprocess.Popen(
        [*HEARTMON, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return Running(proc)


def watch(url: str, token: str | None = None) -> ClientConnection:
    return connect(f"{url}/watch", additional_headers=auth_headers(token), open_timeout=10)


def next_event(ws: ClientConnection, predicate: Callable[[dict], bool], timeout_s: float = 15.0) -> dict:
    """The next event from /watch that satisfies the predicate."""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no matching event within {timeout_s:g} s")
        try:
            event = json.loads(ws.recv(timeout=remaining))
        except TimeoutError:
            continue
        if predicate(event):
            return event


def workers(client: httpx.Client) -> dict[str, dict]:
    return {w["worker"]: w for w in client.get("/api/workers").json()}
