"""The hub tried as an attacker on this machine would: a flood on one connection costs
only that connection, bad values are refused and counted, a worker's name cannot be
taken with the token alone, and every HTTP answer is well-formed."""

import asyncio
import json
import socket

import httpx
from websockets.asyncio.client import connect as aconnect
from websockets.sync.client import connect

from heartmon.config import load_settings
from heartmon.monitor import Monitor
from heartmon.view import ViewRequest
from tests.harness import wait_until, workers

HELLO = {"type": "hello", "v": 1, "worker": "w", "isolation": "none", "pid": 1, "host": "test",
         "interval_ms": 1000, "agent": "test"}


def _metric(client: httpx.Client, prefix: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def _taken(client: httpx.Client) -> float:
    """Frames the hub has dealt with: refused with a reply, or dropped by the limit."""
    lines = client.get("/metrics").text.splitlines()
    return sum(float(line.split()[-1]) for line in lines
               if line.startswith(("heartmon_frames_rejected_total{", "heartmon_frames_rate_limited_total ")))


def test_a_flood_on_one_connection_leaves_every_other_worker_on_time(launch):
    hub = launch("mock", "--port", "0", "--interval-ms", "100", "--workers", "none:1,thread:1,process:1")
    with httpx.Client(base_url=hub.http, timeout=10) as client:
        wait_until(lambda: sum(w["available"] for w in workers(client).values()) == 3, 30, "the fleet")
        with Monitor(load_settings(), [hub.url]) as monitor:
            wait_until(lambda: len(monitor.view(ViewRequest(height=10)).rows) == 3, 10, "the monitor")

            async def flood() -> None:
                async with aconnect(f"{hub.url}/connect", compression=None) as ws:
                    for _ in range(20_000):
                        await ws.send('{"type":"x"}')  # 12 bytes, not even a hello
                    while _taken(client) < 20_000:
                        await asyncio.sleep(0.1)  # until the hub has taken in every frame

            asyncio.run(asyncio.wait_for(flood(), 60))
            view = monitor.view(ViewRequest(height=10))
            moves = [(e.worker, e.to_state) for e in view.entries if hasattr(e, "to_state")]
            assert not [m for m in moves if m[1] in ("late", "starved", "dead")], moves
            assert {row.name: row.state for row in view.rows} == {"none-1": "healthy", "thread-1": "healthy",
                                                                  "process-1": "healthy"}
        assert _metric(client, "heartmon_frames_rate_limited_total") > 10_000


def test_a_beat_with_nan_is_refused_at_the_hub_and_counted(launch):
    hub = launch("hub", "--port", "0")
    with httpx.Client(base_url=hub.http, timeout=10) as client, connect(f"{hub.url}/connect") as ws:
        ws.send(json.dumps(HELLO))
        ws.send('{"type":"beat","seq":1,"sent_at":NaN,"loop_lag_ms":0}')
        reply = json.loads(ws.recv(timeout=10))
        assert reply["type"] == "error" and reply["code"] == "invalid_field" and "sent_at" in reply["message"]
        assert _metric(client, 'heartmon_frames_rejected_total{code="invalid_field"}') == 1
        ws.send('{"type":"beat","seq":2,"sent_at":1.0,"loop_lag_ms":0}')  # the connection goes on
        wait_until(lambda: workers(client)["w"]["seq"] == 2, 10, "the good beat")


def test_with_a_token_a_second_hello_for_a_live_name_from_another_instance_is_refused(launch):
    hub = launch("hub", "--port", "0", env={"HEARTMON_TOKEN": "s3cret"})
    auth = {"Authorization": "Bearer s3cret"}
    with httpx.Client(base_url=hub.http, timeout=10, headers=auth) as client, \
            connect(f"{hub.url}/connect", additional_headers=auth) as owner:
        owner.send(json.dumps({**HELLO, "instance": "a1"}))
        wait_until(lambda: "w" in workers(client), 10, "the worker")
        with connect(f"{hub.url}/connect", additional_headers=auth) as thief:
            thief.send(json.dumps({**HELLO, "instance": "b2"}))
            reply = json.loads(thief.recv(timeout=10))
        assert reply["code"] == "name_taken"
        assert _metric(client, 'heartmon_frames_rejected_total{code="name_taken"}') == 1
        owner.send('{"type":"beat","seq":5,"sent_at":1.0,"loop_lag_ms":0}')
        wait_until(lambda: workers(client)["w"]["seq"] == 5, 10, "the owner, still connected")


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _headers(answer: bytes) -> list[str]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode()
    return [line.split(":", 1)[0].lower() for line in head.split("\r\n")[1:]]


def test_every_http_answer_is_well_formed(launch):
    hub = launch("mock", "--port", "0", "--interval-ms", "100", "--workers", "none:1")
    port = int(hub.url.rsplit(":", 1)[1])
    with httpx.Client(base_url=hub.http, timeout=10) as client:
        wait_until(lambda: "none-1" in workers(client), 30, "the worker")
        answer = _raw(port, b"GET /api/workers HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200") and _headers(answer).count("content-type") == 1
        assert _headers(answer).count("connection") == 1
        with_body = _raw(port, b"POST /api/workers/none-1/inject?probe=sync-sleep&duration_s=0.1 HTTP/1.1\r\n"
                               b"Host: x\r\nContent-Length: 4\r\n\r\nabcd")
        assert with_body.startswith(b"HTTP/1.1 400") and b"body_not_accepted" in with_body
        pipelined = _raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert pipelined.startswith(b"HTTP/1.1 200")
        for duration in ("1_0", " 1 ", "1e-320", "0", "-1", "nan", "inf"):
            refused = client.post("/api/workers/none-1/inject", params={"probe": "sync-sleep", "duration_s": duration})
            assert refused.status_code == 400 and refused.json()["error"] == "bad_duration", duration
        escaped = client.post("/api/workers/none%2D1/inject", params={"probe": "sync-sleep", "duration_s": "0.1"})
        assert escaped.status_code == 202 and escaped.json()["worker"] == "none-1"
        for method in ("POST", "PUT", "DELETE"):
            wrong = client.request(method, "/healthz")
            assert wrong.status_code == 405 and wrong.headers["Allow"] == "GET"


def test_a_401_says_how_to_authenticate(launch):
    hub = launch("hub", "--port", "0", env={"HEARTMON_TOKEN": "s3cret"})
    response = httpx.get(f"{hub.http}/api/workers", timeout=10)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_burst_of_injects_gets_429_past_the_pending_limit_and_the_worker_keeps_beating(launch):
    hub = launch("mock", "--port", "0", "--interval-ms", "100", "--workers", "process:1")

    async def burst() -> list[int]:
        # The hub closes each connection after its answer: none is kept to be reused.
        async with httpx.AsyncClient(base_url=hub.http, timeout=30,
                                     limits=httpx.Limits(max_keepalive_connections=0)) as client:
            answers = await asyncio.gather(*(client.post("/api/workers/process-1/inject",
                                                         params={"probe": "sync-sleep", "duration_s": "0.01"})
                                             for _ in range(700)))
        return [a.status_code for a in answers]

    with httpx.Client(base_url=hub.http, timeout=10) as client:
        wait_until(lambda: workers(client).get("process-1", {}).get("available"), 30, "the worker")
        codes = asyncio.run(burst())
        assert set(codes) <= {202, 429} and codes.count(429) > 0, sorted(set(codes))
        seq = workers(client)["process-1"]["seq"]
        wait_until(lambda: workers(client)["process-1"]["seq"] > seq + 10, 20, "process-1 to go on beating")
        wait_until(lambda: workers(client)["process-1"]["state"] in ("healthy", "busy"), 20, "process-1 healthy")
