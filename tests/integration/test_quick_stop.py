"""Quitting is quick even while a probe holds a worker's GIL: a worker that cannot run
its SIGTERM handler is killed after a short grace instead of being waited for, and no
process of the mock's tree is left behind. The workers' log goes with a clean exit."""

import os
import signal
import time

import httpx
import psutil

from tests.harness import wait_gone, wait_until, workers

NAMES = ("none-1", "process-1")
STOP_BOUND_S = 5.0
"""Generous, for a loaded machine; the target (the terminal back within 1 s) is
measured, not asserted. Without the escalation the mock waits for the 10 s probes."""


def _start_mock(launch, tmp_path):
    running = launch("mock", "--port", "0", "--interval-ms", "50", "--workers", "none:1,process:1",
                     env={"XDG_STATE_HOME": str(tmp_path)})
    with httpx.Client(base_url=running.http, timeout=10) as client:
        wait_until(lambda: all(w.get("available") for w in workers(client).values()) and len(workers(client)) == 2,
                   30, f"workers {NAMES} to connect and beat")
    return running


def test_the_mock_stops_at_once_while_its_workers_hold_the_gil(launch, tmp_path):
    running = _start_mock(launch, tmp_path)
    with httpx.Client(base_url=running.http, timeout=10) as client:
        for name in NAMES:
            answer = client.post(f"/api/workers/{name}/inject", params={"probe": "gil-hold", "duration_s": 10})
            assert answer.status_code == 202, answer.text
        wait_until(lambda: all(workers(client)[n]["probe"] == "gil-hold" for n in NAMES), 10,
                   "both workers to report the probe started")
    tree = running.remember_tree()
    assert len(tree) >= 3, f"expected 2 workers and a heartbeat child, got {[p.cmdline() for p in tree]}"
    mock = psutil.Process(running.proc.pid)

    started = time.monotonic()
    code = running.stop(signal.SIGTERM, timeout_s=STOP_BOUND_S)
    alive = wait_gone([mock, *tree], timeout_s=max(0.0, STOP_BOUND_S - (time.monotonic() - started)))
    elapsed = time.monotonic() - started

    assert code == 0, f"the mock did not exit cleanly within {STOP_BOUND_S:g} s (code {code})"
    assert not alive, f"still running {elapsed:.1f} s after SIGTERM: {[p.pid for p in alive]}"


def test_the_workers_log_is_one_file_per_run_under_the_state_dir_gone_after_a_clean_exit(launch, tmp_path):
    logs = tmp_path / "heartmon"
    logs.mkdir()
    for age in range(1, 8):  # seven logs of earlier runs that did not end cleanly
        stale = logs / f"workers-old-{age}.log"
        stale.write_text("earlier run\n")
        os.utime(stale, (time.time() - age * 3600,) * 2)

    running = _start_mock(launch, tmp_path)
    current = [p for p in logs.glob("workers-*.log") if not p.name.startswith("workers-old-")]
    assert len(current) == 1, current
    assert "connected" in current[0].read_text(), "the workers write to it"
    assert sorted(p.name for p in logs.glob("workers-old-*.log")) == [f"workers-old-{age}.log" for age in range(1, 6)]

    assert running.stop(signal.SIGTERM) == 0
    assert not current[0].exists()
