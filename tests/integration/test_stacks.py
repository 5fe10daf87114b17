"""Where a blocked worker is stuck, named while it happens: real workers in the three
isolations under real probes, the agent's own stack reports, the monitor's lines and
detail, a third-party probe, a process heartmon did not write read by py-spy, and
py-spy refused by the kernel."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from heartmon.config import load_settings
from heartmon.monitor import Monitor
from heartmon.py_spy import find
from heartmon.view import ViewRequest
from tests.harness import HEARTMON, free_port, next_event, wait_until, watch, workers
from tests.integration.test_http_services import hog
from tests.systems import start_asgi

PROBE_FUNCTIONS = {
    "gil-hold": {"GilHold.run"},
    "busy-python": {"BusyPython.run"},
    "regex-backtrack": {"RegexBacktrack.run"},
    "gc-pause": {"GcPause.run", "_collect_garbage"},  # building the heap, or collecting it
}
MODES = ("none", "thread", "process")


@pytest.fixture
def fleet3(launch):
    hub = launch("mock", "--port", "0", "--interval-ms", "100", "--workers", "none:1,thread:1,process:1")
    with httpx.Client(base_url=hub.http, timeout=10) as client:
        wait_until(lambda: sum(w["available"] for w in workers(client).values()) == 3, 30, "the fleet")
    hub.remember_tree()
    return hub


def _culprit(stack: dict) -> dict:
    """The innermost frame of the app's code, as the monitor names it."""
    return next(f for f in stack["frames"] if f["kind"] == "app")


@pytest.mark.parametrize("probe", list(PROBE_FUNCTIONS))
def test_every_isolation_reports_the_probe_it_is_stuck_in_taken_during_the_block(fleet3, probe):
    with httpx.Client(base_url=fleet3.http, timeout=10) as client, watch(fleet3.url) as ws:
        started = {}
        for mode in MODES:
            answer = client.post(f"/api/workers/{mode}-1/inject", params={"probe": probe, "duration_s": 1.5})
            assert answer.status_code == 202, answer.text
            started[f"{mode}-1"] = answer.json()["id"]
        stacks: dict[str, list[dict]] = {name: [] for name in started}
        finished: dict[str, float] = {}
        deadline = time.monotonic() + 30
        while len(finished) < 3 or any(not s for s in stacks.values()):
            assert time.monotonic() < deadline, (stacks, finished)
            event = next_event(ws, lambda e: e.get("worker") in started and e["type"] in ("stack", "probe_finished"))
            if event["type"] == "stack":
                stacks[event["worker"]].append(event)
            else:
                finished[event["worker"]] = event["recv_at"]
    for name, reports in stacks.items():
        first = reports[0]
        frame = _culprit(first)
        assert frame["function"] in PROBE_FUNCTIONS[probe], (name, first["frames"])
        assert frame["file"].endswith(os.path.join("probes", "builtin.py")), frame
        assert frame["code"], frame  # the source line, read where the worker runs
        assert first["via"] == "signal"
        # taken while the loop was blocked: at the capture threshold (2 intervals), not after the block
        assert 150 <= first["blocked_ms"] <= 1500, first
        assert first["taken_at"] < finished[name], (name, first["taken_at"], finished[name])
        assert [r["blocked_ms"] for r in reports] == sorted(r["blocked_ms"] for r in reports)
    # The process worker's heartbeat child reads its parent's stack live, while the probe runs.
    process = stacks["process-1"][0]
    assert process["recv_at"] < finished["process-1"] - 0.5, process


def _events(hub: str, seconds: float, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([*HEARTMON, "events", hub, "--json", "--for", str(seconds)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def _inject_watched(hub, events: subprocess.Popen, injects: dict[str, str]) -> list[dict]:
    try:
        while "connected" not in events.stderr.readline():
            pass
        for worker, probe in injects.items():
            httpx.post(f"{hub.http}/api/workers/{worker}/inject", params={"probe": probe, "duration_s": 2})
        out, err = events.communicate(timeout=60)
    finally:
        events.kill()
        events.wait()
    return [json.loads(line) for line in out.splitlines()]


def test_the_starved_line_names_the_culprit_while_silent_and_the_episode_keeps_it(fleet3):
    """With py-spy (the default, and permitted here): the move to starved already names
    the function; the busy process worker's move names it from its own report."""
    lines = _inject_watched(fleet3, _events(fleet3.url, 6), {"none-1": "gil-hold", "process-1": "gil-hold"})
    starved = next(e for e in lines if e["worker"] == "none-1" and e["to"] == "starved")
    assert starved["culprit"].startswith("probes/builtin.py:") and starved["culprit"].endswith(" GilHold.run")
    assert starved["stack_via"] == "py-spy" and starved["stack"][0]["function"] == "GilHold.run"
    recovered = next(e for e in lines if e["worker"] == "none-1" and e["event"] == "recovered")
    assert recovered["culprit"].endswith(" GilHold.run"), recovered
    # the agent's own report, taken during the block, came before the beat that ended it
    assert recovered["stack_via"] == "signal" and recovered["stack_blocked_ms"] >= 800, recovered
    busy = next(e for e in lines if e["worker"] == "process-1" and e["to"] == "busy")
    done = next(e for e in lines if e["worker"] == "process-1" and e["from"] == "busy")
    named = busy if "culprit" in busy else next(e for e in lines if e["event"] == "stuck"
                                                and e["worker"] == "process-1")
    assert named["culprit"].endswith(" GilHold.run") and named["stack_via"] == "signal", named
    assert done["culprit"].endswith(" GilHold.run"), done


def test_without_py_spy_the_none_worker_names_its_culprit_when_its_report_arrives(fleet3):
    lines = _inject_watched(fleet3, _events(fleet3.url, 6, {"HEARTMON_MONITOR__PY_SPY": ""}),
                            {"none-1": "busy-python"})
    none = [e for e in lines if e["worker"] == "none-1"]
    events = [e["event"] if e["event"] == "stuck" else e["to"] for e in none]
    assert events == ["late", "starved", "stuck", "healthy"], none
    assert "culprit" not in none[1]  # silent, and nothing could read it meanwhile
    stuck = none[2]
    assert stuck["culprit"].endswith(" BusyPython.run") and stuck["stack_via"] == "signal"
    assert none[3]["culprit"].endswith(" BusyPython.run")


def test_a_third_party_probe_is_named_by_its_own_module(launch, plugin_path):
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(plugin_path), os.environ.get("PYTHONPATH")]))}
    hub = launch("mock", "--port", "0", "--interval-ms", "100", "--workers", "process:1", env=env)
    with httpx.Client(base_url=hub.http, timeout=10) as client, watch(hub.url) as ws:
        wait_until(lambda: workers(client).get("process-1", {}).get("available"), 30, "process-1")
        client.post("/api/workers/process-1/inject", params={"probe": "example-spin", "duration_s": 1})
        stack = next_event(ws, lambda e: e["type"] == "stack" and e["worker"] == "process-1")
    inner = stack["frames"][0]
    assert inner["function"] == "ExampleSpin.run", stack["frames"]
    assert inner["file"].endswith(os.path.join("heartmon_probe_example", "__init__.py"))


def _row(monitor: Monitor, name: str):
    return next((r for r in monitor.view(ViewRequest(height=1000)).rows if r.name == name), None)


def test_py_spy_names_what_a_service_heartmon_did_not_write_is_stuck_in(services):
    port = free_port()
    service = start_asgi(services, port)
    settings = load_settings(overrides={"monitor": {"http_interval_ms": 200, "http_timeout_ms": 400}})
    with Monitor(settings, [f"api=http://127.0.0.1:{port}/healthz"]) as monitor:
        wait_until(lambda: (r := _row(monitor, "api")) and r.state == "healthy", 30, "the service")
        key = _row(monitor, "api").key
        request = hog(port, 4)
        wait_until(lambda: (d := monitor.view(ViewRequest(detail=key)).detail) and d.stuck_now, 20,
                   "a stack of the hogging service")
        detail = monitor.view(ViewRequest(detail=key)).detail
        request.join(30)
        # Read once per block by itself; read again when the user asks, busy or not.
        wait_until(lambda: _row(monitor, "api").state == "healthy", 30, "the service back")
        monitor.request(ViewRequest(spy=key))
        wait_until(lambda: monitor.view(ViewRequest(detail=key)).detail.stack.via == "py-spy, asked", 20,
                   "the stack asked for")
        idle = monitor.view(ViewRequest(detail=key)).detail.stack
    assert detail.pid == service.pid
    culprit = detail.stack.culprit
    assert (culprit.function, Path(culprit.file).name, culprit.kind) == ("hog", "asgi_app.py", "app"), detail.stack
    assert detail.stack.via == "py-spy"
    assert "while time.perf_counter() < end" in (culprit.code or "") or "n += 1" in (culprit.code or "")
    assert "hog" not in {frame.function for frame in idle.frames}, idle  # now it waits for requests


def test_py_spy_without_ptrace_permission_says_what_to_grant(services, tmp_path):
    """A py-spy that runs as nobody may not read a root-owned pid: the kernel refuses, as
    it does wherever ptrace is not permitted."""
    py_spy = find("py-spy")
    assert py_spy is not None, "py-spy is installed with the test extras"
    unprivileged = tmp_path / "py-spy-as-nobody"
    unprivileged.write_text(f'#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups {py_spy} "$@"\n')
    unprivileged.chmod(unprivileged.stat().st_mode | stat.S_IXUSR)
    port = free_port()
    start_asgi(services, port)
    settings = load_settings(overrides={"monitor": {"http_interval_ms": 200, "http_timeout_ms": 400,
                                                    "py_spy": str(unprivileged)}})
    with Monitor(settings, [f"api=http://127.0.0.1:{port}/healthz"]) as monitor:
        wait_until(lambda: (r := _row(monitor, "api")) and r.state == "healthy", 30, "the service")
        key = _row(monitor, "api").key
        hog(port, 3)
        wait_until(lambda: monitor.view(ViewRequest(detail=key)).detail.stack_note, 20, "the note")
        wait_until(lambda: _row(monitor, "api").state == "healthy", 30, "the service back")
        view = monitor.view(ViewRequest(detail=key))
    note = view.detail.stack_note
    assert "ptrace is not permitted" in note and f"setcap cap_sys_ptrace+ep {unprivileged}" in note, note
    notices = [e for e in view.entries if type(e).__name__ == "Notice"]
    assert len(notices) == 1 and "ptrace" in notices[0].text
    assert _row(monitor, "api").state == "healthy"  # nothing else was harmed
