"""`any` routes to an available worker, and fails with "no available worker" when none is:
the incident heartmon exists for (work refused while a worker is alive but starved),
reproduced with a worker whose loop is really starved."""

import httpx

from tests.harness import wait_until, workers


def test_no_available_worker_while_the_only_worker_is_starved(launch):
    hub = launch("mock", "--port", "0", "--interval-ms", "50", "--workers", "none:1")
    with httpx.Client(base_url=hub.http, timeout=10) as client:
        wait_until(lambda: workers(client).get("none-1", {}).get("available"), 30, "none-1 to be available")
        routed = client.post("/api/workers/any/inject", params={"probe": "sync-sleep", "duration_s": 0.1})
        assert routed.status_code == 202 and routed.json()["worker"] == "none-1"

        client.post("/api/workers/none-1/inject", params={"probe": "gil-hold", "duration_s": 4})
        wait_until(lambda: not workers(client)["none-1"]["available"], 10, "the starved worker to be unavailable")
        refused = client.post("/api/workers/any/inject", params={"probe": "sync-sleep", "duration_s": 0.1})
        assert refused.status_code == 503
        assert refused.json()["error"] == "no_available_worker"
        assert refused.json()["message"].startswith("no available worker")
        # Starved is not dead: the connection stays, and the worker comes back on its own.
        assert "none-1" in workers(client)
        wait_until(lambda: workers(client)["none-1"]["available"], 15, "the worker to recover")
        accepted = client.post("/api/workers/any/inject", params={"probe": "sync-sleep", "duration_s": 0.1})
        assert accepted.status_code == 202
        metrics = client.get("/metrics").text
        assert 'heartmon_injects_total{result="no_available_worker"} 1' in metrics


def test_any_on_a_hub_with_no_workers_is_no_available_worker(launch):
    hub = launch("hub", "--port", "0")
    with httpx.Client(base_url=hub.http, timeout=10) as client:
        refused = client.post("/api/workers/any/inject", params={"probe": "gil-hold", "duration_s": 1})
        assert refused.status_code == 503 and refused.json()["error"] == "no_available_worker"
        wrong_method = client.get("/api/workers/any/inject")
        assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
