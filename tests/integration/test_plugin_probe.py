"""A probe from a separately installed package is listed, injectable, and may fail safely."""

import os
import subprocess

import httpx
import pytest

from tests.harness import HEARTMON, next_event, wait_until, watch, workers


@pytest.fixture
def plugin_env(plugin_path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(plugin_path), os.environ.get("PYTHONPATH")]))}


def test_heartmon_probes_lists_the_third_party_probe(plugin_env):
    listed = subprocess.run([*HEARTMON, "probes"], capture_output=True, text=True, timeout=30,
                            env={**os.environ, **plugin_env})
    assert listed.returncode == 0
    assert "example-spin" in listed.stdout and "A third-party probe: spins in pure Python." in listed.stdout
    assert "gil-hold" in listed.stdout


def test_third_party_probes_are_injected_and_a_failing_one_is_reported(launch, plugin_env):
    hub = launch("mock", "--port", "0", "--interval-ms", "50", "--workers", "thread:1", env=plugin_env)
    with httpx.Client(base_url=hub.http, timeout=10) as client, watch(hub.url) as ws:
        wait_until(lambda: workers(client).get("thread-1", {}).get("available"), 30, "thread-1 to join")
        assert "example-spin" in {p["name"] for p in client.get("/api/probes").json()}

        spin = client.post("/api/workers/thread-1/inject", params={"probe": "example-spin", "duration_s": 0.2})
        assert spin.status_code == 202
        done = next_event(ws, lambda e: e["type"] == "probe_finished" and e["id"] == spin.json()["id"])
        assert done["error"] is None

        boom = client.post("/api/workers/thread-1/inject", params={"probe": "example-explode", "duration_s": 1})
        assert boom.status_code == 202
        failed = next_event(ws, lambda e: e["type"] == "probe_finished" and e["id"] == boom.json()["id"])
        assert failed["error"] == "ProbeError: boom: this probe always fails"
        # The worker goes on beating after its probe failed.
        after = next_event(ws, lambda e: e["type"] == "beat" and e["worker"] == "thread-1")
        assert after["recv_at"] > failed["recv_at"]
        assert workers(client)["thread-1"]["available"]
