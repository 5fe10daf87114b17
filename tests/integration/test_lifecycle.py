"""No orphans, ever: every process heartmon starts dies with it, however it ends.
And a worker outlives its hub: it reconnects when the hub comes back."""

import signal

import httpx
import psutil
import pytest

from tests.conftest import FLEET_ARGS, wait_fleet_ready
from tests.harness import free_port, next_event, wait_gone, wait_until, watch, workers


def _fleet_tree(running) -> list[psutil.Process]:
    """The mock's workers and, for the process-mode worker, its heartbeat child."""
    with httpx.Client(base_url=running.http, timeout=10) as client:
        wait_fleet_ready(client)
    tree = running.remember_tree()
    assert len(tree) >= 4, f"expected 3 workers and a heartbeat child, got {[p.cmdline() for p in tree]}"
    return tree


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_every_worker_dies_with_the_mock(launch, sig):
    running = launch(*FLEET_ARGS)
    tree = _fleet_tree(running)
    code = running.stop(sig)
    assert code is not None, "the mock did not exit"
    if sig != signal.SIGKILL:
        assert code == 0
    alive = wait_gone(tree)
    assert not alive, [p.pid for p in alive]


def test_a_killed_worker_takes_its_heartbeat_process_with_it_and_the_hub_notices(launch):
    running = launch(*FLEET_ARGS)
    _fleet_tree(running)
    with httpx.Client(base_url=running.http, timeout=10) as client, watch(running.url) as ws:
        pid = workers(client)["process-1"]["pid"]
        worker = psutil.Process(pid)
        children = worker.children(recursive=True)
        assert children, "a process-mode worker has a heartbeat child"
        worker.kill()
        left = next_event(ws, lambda e: e["type"] == "worker_left" and e["worker"] == "process-1")
        assert left["reason"] in ("connection lost", "connection closed")
        alive = wait_gone(children)
        assert not alive
        assert set(workers(client)) == {"none-1", "thread-1"}


def test_a_standalone_worker_stops_cleanly_on_sigterm_child_included(launch):
    hub = launch("hub", "--port", "0")
    worker = launch("worker", "--hub", hub.url, "--isolation", "process", "--name", "solo", "--interval-ms", "50",
                    ready=None)
    with httpx.Client(base_url=hub.http, timeout=10) as client:
        wait_until(lambda: workers(client).get("solo", {}).get("available"), 30, "the worker to join")
        children = worker.remember_tree()
        assert children
        assert worker.stop(signal.SIGTERM) == 0
        alive = wait_gone(children)
        assert not alive
        wait_until(lambda: "solo" not in workers(client), 10, "the hub to see the worker leave")


@pytest.mark.parametrize("isolation", ["none", "thread", "process"])
def test_a_worker_reconnects_when_its_hub_comes_back(launch, isolation):
    port = str(free_port())
    hub = launch("hub", "--port", port)
    launch("worker", "--hub", hub.url, "--isolation", isolation, "--name", "w", "--interval-ms", "50", ready=None)
    with httpx.Client(base_url=hub.http, timeout=10) as client:
        wait_until(lambda: "w" in workers(client), 30, "the worker to join")
    assert hub.stop() == 0
    again = launch("hub", "--port", port)
    with httpx.Client(base_url=again.http, timeout=10) as client:
        joined = wait_until(lambda: workers(client).get("w"), 30, "the worker to reconnect")
        assert joined["isolation"] == isolation
        wait_until(lambda: workers(client)["w"]["available"], 10, "beats after the reconnect")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["quit", "crash"])
def test_bare_heartmon_takes_its_mock_fleet_with_it(launch, sig):
    """`heartmon` starts a mock (hub and six workers, two with heartbeat children) and
    the monitor; however it ends, all of them end with it."""
    running = launch("--port", "0", ready=None)
    tree = wait_until(lambda: len(t := running.remember_tree()) >= 9 and t, 30,
                      "the mock, its six workers and their heartbeat children")
    running.stop(sig)
    alive = wait_gone(tree)
    assert not alive, [p.pid for p in alive]
