"""Malformed, unknown, old-version and oversized frames: an error reply, a count in
/metrics, and every other connection untouched."""

import json

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from heartmon.protocol import MAX_FRAME_BYTES
from tests.conftest import NAMES
from tests.harness import next_event, wait_until, watch, workers

HELLO = {"type": "hello", "v": 1, "worker": "rogue", "isolation": "none", "pid": 1, "host": "test",
         "interval_ms": 1000, "agent": "test"}


def _rejected(client: httpx.Client, code: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'heartmon_frames_rejected_total{{code="{code}"}}'):
            return float(line.split()[-1])
    return 0.0


def _error(ws) -> dict:
    reply = json.loads(ws.recv(timeout=10))
    assert reply["type"] == "error"
    return reply


def test_bad_frames_get_an_error_reply_and_the_connection_stays(fleet, client: httpx.Client):
    codes = ("malformed_json", "unknown_type", "too_large", "hello_required")
    before = {code: _rejected(client, code) for code in codes}
    with watch(fleet.url) as monitor, connect(f"{fleet.url}/connect") as ws:
        ws.send("{not json")
        assert _error(ws)["code"] == "malformed_json"
        ws.send(json.dumps({"type": "teleport"}))
        reply = _error(ws)
        assert reply["code"] == "unknown_type" and "'teleport'" in reply["message"]
        ws.send(json.dumps({"type": "beat", "seq": 1, "sent_at": 0, "loop_lag_ms": 0}))
        assert _error(ws)["code"] == "hello_required"
        ws.send(json.dumps({**HELLO, "pad": "x" * MAX_FRAME_BYTES}))
        assert _error(ws)["code"] == "too_large"
        # Still connected: a proper hello now joins.
        ws.send(json.dumps(HELLO))
        wait_until(lambda: "rogue" in workers(client), 10, "the rogue connection to join after its errors")
        # The monitor saw nothing but ordinary traffic, and the fleet kept beating.
        for name in NAMES:
            next_event(monitor, lambda e, n=name: e["type"] == "beat" and e["worker"] == n)
    fleet_now = workers(client)
    assert all(fleet_now[n]["available"] for n in NAMES)
    for code, count in before.items():
        assert _rejected(client, code) == count + 1, code


def test_a_wrong_protocol_version_is_refused_and_closed(fleet, client: httpx.Client):
    before = _rejected(client, "unsupported_version")
    with connect(f"{fleet.url}/connect") as ws:
        ws.send(json.dumps({**HELLO, "v": 99}))
        reply = _error(ws)
        assert reply["code"] == "unsupported_version" and "99" in reply["message"]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1002
    assert _rejected(client, "unsupported_version") == before + 1


def test_a_frame_past_the_hard_limit_closes_only_that_connection(fleet, client: httpx.Client):
    before = _rejected(client, "too_large")
    with connect(f"{fleet.url}/connect", max_size=None) as ws:
        ws.send("x" * (2 * 1024 * 1024))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1009
    wait_until(lambda: _rejected(client, "too_large") == before + 1, 5, "the oversized frame to be counted")
    assert all(workers(client)[n]["available"] for n in NAMES)


def test_monitors_may_not_send(fleet, client: httpx.Client):
    with watch(fleet.url) as ws:
        ws.send(json.dumps({"type": "beat"}))
        reply = next_event(ws, lambda e: e["type"] == "error")
        assert reply["code"] == "unexpected"


def test_a_bad_stack_report_is_refused_and_counted_and_a_good_one_is_relayed(fleet, client: httpx.Client):
    frame = {"file": "/srv/app/jobs.py", "line": 3, "function": "run", "code": None, "kind": "app"}
    stack = {"type": "stack", "v": 1, "taken_at": 1.0, "blocked_ms": 200.0, "via": "signal", "frames": [frame]}
    before = _rejected(client, "invalid_field")
    with watch(fleet.url) as monitor, connect(f"{fleet.url}/connect") as ws:
        ws.send(json.dumps({**HELLO, "worker": "stacker"}))
        wait_until(lambda: "stacker" in workers(client), 10, "the stacker to join")
        for bad, where in (({"frames": [frame] * 65}, "frames"), ({"frames": [{**frame, "kind": "mine"}]}, "kind"),
                           ({"blocked_ms": -1}, "blocked_ms"), ({"frames": []}, "frames"),
                           ({"frames": [{**frame, "locals": {"password": "x"}}]}, "locals"),
                           ({"taken_at": -1e308}, "taken_at"), ({"more": 10**40}, "more"),
                           ({"frames": [{**frame, "line": 10**30}]}, "line"),
                           ({"frames": [{**frame, "function": "run\x1b[2J"}]}, "function")):
            ws.send(json.dumps({**stack, **bad}))
            reply = _error(ws)
            assert reply["code"] == "invalid_field" and where in reply["message"], (bad, reply)
        ws.send(json.dumps(stack))  # still connected: a good one goes through
        relayed = next_event(monitor, lambda e: e["type"] == "stack" and e["worker"] == "stacker")
    assert relayed["frames"] == [frame] and relayed["blocked_ms"] == 200.0
    assert _rejected(client, "invalid_field") == before + 9
    assert all(workers(client)[n]["available"] for n in NAMES)
