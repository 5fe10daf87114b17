"""The hub's HTTP API and /watch stream against a real fleet (one worker per mode, 50 ms)."""

import httpx

from tests.conftest import NAMES
from tests.harness import next_event, watch, workers


def test_the_fleet_joins_with_one_worker_per_isolation(client: httpx.Client):
    fleet = workers(client)
    assert {n: fleet[n]["isolation"] for n in NAMES} == {"none-1": "none", "thread-1": "thread", "process-1": "process"}
    assert all(fleet[n]["available"] and fleet[n]["seq"] is not None for n in NAMES)
    assert client.get("/healthz").json() == {"status": "ok", "workers": 3}


def test_watch_starts_with_a_snapshot_then_streams_beats_with_the_hub_clock(fleet):
    with watch(fleet.url) as ws:
        snapshot = next_event(ws, lambda e: True)
        assert snapshot["type"] == "snapshot" and snapshot["v"] == 1
        assert {w["worker"] for w in snapshot["workers"]} >= set(NAMES)
        beat = next_event(ws, lambda e: e["type"] == "beat" and e["worker"] == "process-1")
        assert beat["recv_at"] >= beat["sent_at"] - 1
        assert beat["main_blocked_ms"] is not None  # an isolated agent reports its main loop


def test_an_inject_reaches_the_worker_and_its_probe_reports_back(fleet, client: httpx.Client):
    with watch(fleet.url) as ws:
        response = client.post("/api/workers/thread-1/inject", params={"probe": "busy-python", "duration_s": 0.3})
        assert response.status_code == 202
        sent = response.json()
        assert sent["worker"] == "thread-1" and sent["probe"] == "busy-python"
        started = next_event(ws, lambda e: e["type"] == "probe_started" and e["id"] == sent["id"])
        finished = next_event(ws, lambda e: e["type"] == "probe_finished" and e["id"] == sent["id"])
    assert started["worker"] == "thread-1" and started["duration_s"] == 0.3
    assert finished["error"] is None and 0.2 < finished["elapsed_s"] < 1.0


def test_a_busy_isolated_worker_reports_its_blocked_main_loop(fleet, client: httpx.Client):
    with watch(fleet.url) as ws:
        client.post("/api/workers/process-1/inject", params={"probe": "gil-hold", "duration_s": 1.0})
        busy = next_event(ws, lambda e: e["type"] == "beat" and e["worker"] == "process-1"
                          and (e["main_blocked_ms"] or 0) > 500)
        assert busy["main_blocked_ms"] < 1500
        next_event(ws, lambda e: e["type"] == "probe_finished" and e["worker"] == "process-1")


def test_unknown_worker_is_404_and_named(client: httpx.Client):
    response = client.post("/api/workers/ghost-7/inject", params={"probe": "gil-hold", "duration_s": 1})
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "unknown_worker"
    assert "'ghost-7'" in body["message"] and "none-1" in body["message"]


def test_unknown_probe_is_400_and_lists_the_known_ones(client: httpx.Client):
    response = client.post("/api/workers/none-1/inject", params={"probe": "nope", "duration_s": 1})
    assert response.status_code == 400
    assert response.json()["error"] == "unknown_probe"
    assert "known probes: busy-python, gc-pause, gil-hold, regex-backtrack, sync-sleep" in response.json()["message"]


def test_durations_out_of_range_are_400(client: httpx.Client):
    for duration in ("0", "-1", "61", "abc", "nan"):
        response = client.post("/api/workers/none-1/inject", params={"probe": "sync-sleep", "duration_s": duration})
        assert response.status_code == 400, duration
        assert response.json()["error"] == "bad_duration"
    missing = client.post("/api/workers/none-1/inject", params={"probe": "sync-sleep"})
    assert missing.status_code == 400 and "duration_s" in missing.json()["message"]


def test_wrong_method_and_unknown_path(client: httpx.Client):
    assert client.get("/api/workers/none-1/inject", params={"probe": "x", "duration_s": 1}).status_code == 405
    assert client.post("/api/workers").status_code == 405
    assert client.get("/nowhere").status_code == 404


def test_probes_endpoint_describes_each_probe(client: httpx.Client):
    probes = {p["name"]: p for p in client.get("/api/probes").json()}
    assert "separate process" in probes["gil-hold"]["demonstrates"]
    assert probes["busy-python"]["description"].startswith("A pure-Python loop")


def test_metrics_are_prometheus_text(client: httpx.Client):
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE heartmon_beats_total counter" in text
    assert 'heartmon_beats_total{worker="none-1"}' in text
    assert "heartmon_workers_connected 3" in text
