"""Inngest Connect: heartmon serves the gateway, and real SDK workers (the Node SDK
``inngest@4`` installed by npm, the Python SDK ``inngest[connect]``) connect to it.

A Node worker whose heartbeat shares its spinning main thread is starved, not dead, and
recovers with its episode; with the SDK's default isolation it stays healthy through the
same spin. A killed or stopped worker is dead at once, its socket closed. The Python SDK
beats at its own interval, which heartmon measures. Bad input is refused one line at a
time while a real worker goes on unaffected; a token is required the way the SDKs send
a signing key; a gateway that may not bind is refused before it tries.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from inngest.connect._internal import connect_pb2 as pb
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

import heartmon.systems
from heartmon.config import load_settings
from heartmon.detector import Transition
from heartmon.monitor import Monitor
from heartmon.sources import SourceError, parse_source
from heartmon.sources.inngest import from_url
from heartmon.view import RowView, ViewRequest
from tests.harness import free_port, wait_until
from tests.node import NodeSdk, install_node_sdk
from tests.systems import PYTHON, Service, Services, python_env

pytestmark = pytest.mark.timeout(300)  # the first test also waits for npm install

APPS = Path(heartmon.systems.__file__).parent
APP = "heartmon-tests"
INTERVAL_MS = 200
"""Asked of the workers: starved after 5 intervals (1 s) of silence with the socket open."""
SPIN_S = 3.0


@pytest.fixture(scope="session")
def node_sdk() -> NodeSdk:
    try:
        return install_node_sdk()
    except RuntimeError as exc:
        pytest.fail(str(exc))


def settings(**overrides):
    return load_settings(overrides={"systems": {"inngest_heartbeat_ms": INTERVAL_MS}, **overrides})


def start_node(services: Services, sdk: NodeSdk, port: int, instance: str, spin_file: Path, *,
               isolate: bool = True, env: dict[str, str] | None = None) -> Service:
    return services.spawn(f"node-{instance}", [sdk.node, str(APPS / "inngest_worker.mjs"), str(sdk.prefix), APP,
                                               instance, "true" if isolate else "false", str(spin_file)],
                          env={"INNGEST_BASE_URL": f"http://127.0.0.1:{port}", "INNGEST_DEV": "1", **sdk.env,
                               **(env or {})})


def start_python(services: Services, port: int, instance: str, spin_file: Path, *, heartbeat_s: int = 1,
                 env: dict[str, str] | None = None) -> Service:
    return services.spawn(f"python-{instance}", [PYTHON, "-m", "heartmon.systems.inngest_worker", f"http://127.0.0.1:{port}",
                                                 APP, instance, str(spin_file), str(heartbeat_s)],
                          env=python_env(**{"INNGEST_DEV": "1", **(env or {})}))


def spin(spin_file: Path, seconds: float) -> None:
    """Tells a worker to spin its main thread; written whole, then moved into place."""
    part = spin_file.with_suffix(".part")
    part.write_text(f"busy-python {seconds}")
    os.replace(part, spin_file)


def rows(monitor: Monitor) -> dict[str, RowView]:
    return {row.name: row for row in monitor.view(ViewRequest(height=1000)).rows}


def moves(monitor: Monitor, name: str) -> list[Transition]:
    return [e for e in monitor.view(ViewRequest(height=0)).entries if isinstance(e, Transition) and e.worker == name]


def wait_beating(monitor: Monitor, name: str, worker: Service) -> RowView:
    """Until the worker is healthy and has beaten at least twice (it has gaps)."""
    def beating() -> RowView | None:
        assert worker.proc.poll() is None, f"{worker.name} exited: {worker.output()}"
        row = rows(monitor).get(name)
        return row if row and row.state == "healthy" and row.p99_s is not None else None

    return wait_until(beating, 60, f"{name} to connect and beat")


def assert_one_connection(worker: Service) -> None:
    """The SDK never had to reconnect: every heartbeat was answered (it gives up on a
    connection after two unanswered ones). "Connection established" is the SDK's own log
    line, once per connection; the state lines are the app's."""
    out = worker.output()
    assert out.count("Connection established") == 1 and "state ACTIVE" in out and "RECONNECTING" not in out, out


def states_until(monitor: Monitor, name: str, done: Callable[[list[str]], bool], timeout_s: float) -> list[str]:
    """The worker's state every 50 ms until ``done(states so far)``, in order, repeats dropped."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while not done(seen):
        assert time.monotonic() < deadline, f"timed out; {name} was {seen}"
        state = rows(monitor)[name].state
        if not seen or seen[-1] != state:
            seen.append(state)
        time.sleep(0.05)
    return seen


def test_a_node_worker_spinning_its_only_thread_is_starved_not_dead_then_recovers(services, node_sdk, tmp_path):
    port, name, spin_file = free_port(), f"{APP}/same-thread", tmp_path / "spin"
    with Monitor(settings(), [f"inngest://127.0.0.1:{port}"]) as monitor:
        worker = start_node(services, node_sdk, port, "same-thread", spin_file, isolate=False)
        row = wait_beating(monitor, name, worker)
        assert row.interval_s == pytest.approx(INTERVAL_MS / 1000) and row.isolation == "inngest"
        spin(spin_file, SPIN_S)
        seen = states_until(monitor, name, lambda seen: seen[-2:] == ["starved", "healthy"], 60)
        assert "dead" not in seen, seen
        log = moves(monitor, name)
        assert_one_connection(worker)
    starved = next(m for m in log if m.to_state == "starved")
    assert "Connect socket open" in starved.reason, starved
    assert starved.silence_s is not None and starved.silence_s < 5 * INTERVAL_MS / 1000 + 1.0, starved
    recovered = next(m for m in log if m.from_state == "starved")
    assert recovered.to_state == "healthy" and recovered.episode is not None
    assert recovered.episode.length_s >= SPIN_S - 0.5, recovered.episode
    print(f"\nlast beat -> starved: {starved.silence_s * 1000:.0f} ms; episode {recovered.episode.length_s:.2f} s")


def test_a_node_worker_with_isolated_execution_stays_healthy_through_the_same_spin(services, node_sdk, tmp_path):
    port, name, spin_file = free_port(), f"{APP}/isolated", tmp_path / "spin"
    with Monitor(settings(), [f"inngest://127.0.0.1:{port}"]) as monitor:
        worker = start_node(services, node_sdk, port, "isolated", spin_file)
        wait_beating(monitor, name, worker)
        spin(spin_file, SPIN_S)
        wait_until(lambda: "spinning" in worker.output(), 10, "the spin to start")
        seen = states_until(monitor, name, lambda _: "spin done" in worker.output(), 30)
        assert seen == ["healthy"], seen
        assert [(m.from_state, m.to_state) for m in moves(monitor, name)] == [], moves(monitor, name)
        assert_one_connection(worker)


def test_a_killed_node_worker_is_dead_at_once(services, node_sdk, tmp_path):
    port, name = free_port(), f"{APP}/killed"
    with Monitor(settings(), [f"inngest://127.0.0.1:{port}"]) as monitor:
        worker = start_node(services, node_sdk, port, "killed", tmp_path / "spin")
        wait_beating(monitor, name, worker)
        killed = time.monotonic()
        worker.kill()
        wait_until(lambda: rows(monitor)[name].state == "dead", 10, f"{name} to be dead")
        dead = moves(monitor, name)[-1]
    assert dead.to_state == "dead" and dead.reason.startswith("Connect socket closed"), dead
    assert dead.silence_s is None, "dead by its closed socket, not by silence"
    assert dead.at - killed < 1.0, dead.at - killed
    print(f"\nSIGKILL -> dead: {(dead.at - killed) * 1000:.0f} ms ({dead.reason})")


def test_a_stopped_node_worker_is_dead_at_once(services, node_sdk, tmp_path):
    port, name = free_port(), f"{APP}/stopped"
    with Monitor(settings(), [f"inngest://127.0.0.1:{port}"]) as monitor:
        worker = start_node(services, node_sdk, port, "stopped", tmp_path / "spin")
        wait_beating(monitor, name, worker)
        stopped = time.monotonic()
        worker.stop(signal.SIGTERM)  # the SDK pauses, then closes its socket
        assert worker.proc.returncode == 0, worker.output()
        wait_until(lambda: rows(monitor)[name].state == "dead", 10, f"{name} to be dead")
        dead = moves(monitor, name)[-1]
    assert dead.reason.startswith("Connect socket closed ("), dead  # with a close frame: a clean stop
    assert dead.silence_s is None and dead.at - stopped < 2.0, (dead, dead.at - stopped)


def test_a_python_worker_is_healthy_at_its_own_interval_and_pure_python_does_not_starve_it(services, tmp_path):
    """The Python SDK ignores the asked interval: it is taken as 10 s (its default) until
    two heartbeats measure it (1 s here); its heartbeat thread survives pure Python."""
    port, name, spin_file = free_port(), f"{APP}/python", tmp_path / "spin"
    with Monitor(settings(), [f"inngest://127.0.0.1:{port}"]) as monitor:
        worker = start_python(services, port, "python", spin_file, heartbeat_s=1)
        first = wait_until(lambda: rows(monitor).get(name), 60, f"{name} to connect")
        assert first.state == "healthy" and first.interval_s == 10.0, first
        row = wait_until(lambda: (r := rows(monitor)[name]).interval_s < 10.0 and r, 30, "two heartbeats")
        assert row.state == "healthy" and 0.9 <= row.interval_s <= 1.2, row
        spin(spin_file, SPIN_S)
        wait_until(lambda: "running busy-python" in worker.output(), 10, "the probe to start")
        seen = states_until(monitor, name, lambda _: "probe done" in worker.output(), 30)
        assert seen == ["healthy"], seen
        worker.stop(signal.SIGTERM)
        wait_until(lambda: rows(monitor)[name].state == "dead", 10, f"{name} to be dead")
        assert moves(monitor, name)[-1].reason.startswith("Connect socket closed"), moves(monitor, name)


# --- bad input ------------------------------------------------------------------------


@contextmanager
def _open(port: int) -> Iterator[ClientConnection]:
    """A raw WebSocket to the gateway, past its GATEWAY_HELLO."""
    with connect(f"ws://127.0.0.1:{port}/v0/connect", subprotocols=[Subprotocol("v0.connect.inngest.com")],
                 open_timeout=10) as ws:
        hello = pb.ConnectMessage()
        hello.ParseFromString(ws.recv(timeout=10))
        assert hello.kind == pb.GATEWAY_HELLO
        yield ws


def _refused_with(port: int, frame: bytes | str) -> int:
    """A new connection's first frame, and the close code the gateway answers it with."""
    with _open(port) as ws:
        return _closed_with(ws, frame)


def _closed_with(ws: ClientConnection, frame: bytes | str) -> int:
    """Sends a frame and returns the close code the gateway answers with."""
    ws.send(frame)
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code


def _message(kind: int, payload: bytes = b"") -> bytes:
    return pb.ConnectMessage(kind=kind, payload=payload).SerializeToString()


def _worker_connect(connection_id: str, session_token: str, instance: str, language: str = "py") -> bytes:
    """As an SDK of ``language`` would send it ("typescript": it beats at the asked interval from its first beat)."""
    data = pb.WorkerConnectRequestData(connection_id=connection_id, instance_id=instance, sdk_language=language,
                                       auth_data=pb.AuthData(session_token=session_token),
                                       apps=[pb.AppConfiguration(app_name="raw")])
    return _message(pb.WORKER_CONNECT, data.SerializeToString())


def _start(port: int, **headers: str) -> pb.StartResponse:
    answer = httpx.post(f"http://127.0.0.1:{port}/v0/connect/start", headers=headers, timeout=10,
                        content=pb.StartRequest(exclude_gateways=["elsewhere"]).SerializeToString())
    assert answer.status_code == 200, answer.text
    start = pb.StartResponse()
    start.ParseFromString(answer.content)
    return start


def test_bad_input_is_refused_one_line_each_and_a_real_worker_is_unaffected(services, node_sdk, tmp_path):
    port, name = free_port(), f"{APP}/bystander"
    with Monitor(settings(), [f"inngest://127.0.0.1:{port}"]) as monitor:
        worker = start_node(services, node_sdk, port, "bystander", tmp_path / "spin")
        wait_beating(monitor, name, worker)

        def refused(count: int, words: str) -> None:
            source = monitor.view().sources[0]
            assert (source.refused, words in source.last_refused) == (count, True), source
            assert "\n" not in source.last_refused

        assert _refused_with(port, _message(pb.WORKER_HEARTBEAT)) == 1002
        refused(1, "frame before the handshake: WORKER_HEARTBEAT before WORKER_CONNECT")
        assert _refused_with(port, _message(99)) == 1002
        refused(2, "unknown message kind 99")
        assert _refused_with(port, b"\x0a\xff") == 1002
        refused(3, "does not decode")
        assert _refused_with(port, "hello") == 1003
        refused(4, "text frame")
        assert _refused_with(port, _worker_connect("made-up", "made-up", "raw-0")) == 1008
        refused(5, "without the session token")

        # A worker that does the handshake right, then sends a kind no SDK has.
        start = _start(port)
        assert start.gateway_endpoint == f"ws://127.0.0.1:{port}/v0/connect"
        with _open(port) as ws:
            ws.send(_worker_connect(start.connection_id, start.session_token, "raw-1"))
            ready, ready_data = pb.ConnectMessage(), pb.GatewayConnectionReadyData()
            ready.ParseFromString(ws.recv(timeout=10))
            ready_data.ParseFromString(ready.payload)
            assert (ready.kind, ready_data.heartbeat_interval) == (pb.GATEWAY_CONNECTION_READY, f"{INTERVAL_MS}ms")
            ws.send(_message(pb.WORKER_HEARTBEAT))
            answer = pb.ConnectMessage()
            answer.ParseFromString(ws.recv(timeout=10))
            assert answer.kind == pb.GATEWAY_HEARTBEAT
            wait_until(lambda: "raw/raw-1" in rows(monitor), 10, "the raw worker's row")
            assert _closed_with(ws, _message(99)) == 1002
        refused(6, "unknown message kind 99")
        wait_until(lambda: rows(monitor)["raw/raw-1"].state == "dead", 10, "the raw worker to be dead")
        assert "unknown message kind 99" in moves(monitor, "raw/raw-1")[-1].reason

        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/v0/connect/start", timeout=10).status_code == 405
        refused(7, "use POST")
        assert httpx.post(f"{base}/v0/connect/start", content=b"\x0a\xff", timeout=10).status_code == 400
        refused(8, "bad start request")
        assert httpx.post(f"{base}/elsewhere", timeout=10).status_code == 404
        refused(9, "'/elsewhere'")

        assert rows(monitor)[name].state == "healthy"
        assert moves(monitor, name) == [], "the real worker never left healthy"
        assert_one_connection(worker)


# --- a token ----------------------------------------------------------------------------


def test_with_a_token_workers_must_carry_it_as_their_signing_key(services, node_sdk, tmp_path):
    token = secrets.token_hex(32)
    port = free_port()
    key = {"INNGEST_SIGNING_KEY": f"signkey-prod-{token}", "INNGEST_DEV": "0"}  # cloud mode: the key is sent
    with Monitor(settings(token=token), [f"inngest://127.0.0.1:{port}"]) as monitor:
        node = start_node(services, node_sdk, port, "keyed-node", tmp_path / "n", env=key)
        python = start_python(services, port, "keyed-python", tmp_path / "p", env=key)
        wait_beating(monitor, f"{APP}/keyed-node", node)
        wait_until(lambda: rows(monitor).get(f"{APP}/keyed-python"), 60, "the Python worker to connect")
        assert python.proc.poll() is None
        assert monitor.view().sources[0].refused == 0

        base = f"http://127.0.0.1:{port}/v0/connect/start"
        assert httpx.post(base, timeout=10).status_code == 401
        wrong = secrets.token_hex(32)
        assert httpx.post(base, headers={"Authorization": f"Bearer {wrong}"}, timeout=10).status_code == 401
        source = monitor.view().sources[0]
        assert source.refused == 2 and "signing key" in source.last_refused, source
        start = _start(port, Authorization=f"Bearer {_hashed(token)}")  # what the Python SDK sends
        assert start.session_token


def _hashed(token: str) -> str:
    return hashlib.sha256(bytes.fromhex(token)).hexdigest()


def test_the_gateway_address_and_token_are_checked_before_anything_binds():
    def client() -> httpx.AsyncClient:
        raise AssertionError("the Inngest source uses no HTTP client")

    with pytest.raises(SourceError, match="HEARTMON_TOKEN"):
        parse_source("inngest://0.0.0.0:8289", load_settings(overrides={"token": None}), client)
    exposed = parse_source("inngest://0.0.0.0:8289", load_settings(overrides={"token": "ab" * 16}), client)
    assert exposed.kind == "inngest"
    with pytest.raises(SourceError, match="hex"):
        parse_source("inngest://127.0.0.1:8289", load_settings(overrides={"token": "not-hex"}), client)
    for bad in ("inngest://127.0.0.1", "inngest://127.0.0.1:99999", "inngest://127.0.0.1:8289/path",
                "inngest://user@127.0.0.1:8289", "inngest://:8289"):
        with pytest.raises(ValueError):
            from_url(bad, load_settings(), client)
    with socket.socket() as taken:  # parsing binds nothing: the UI process parses sources only to check them
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        source = from_url(f"inngest://127.0.0.1:{taken.getsockname()[1]}", load_settings(), client)
        assert source.status.link == "connecting"


def test_a_port_in_use_is_retried_until_it_is_free():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with Monitor(settings(), [f"inngest://127.0.0.1:{port}"]) as monitor:
            wait_until(lambda: monitor.view().sources[0].link == "retrying", 10, "the bind to fail")
            assert "cannot listen on" in monitor.view().sources[0].detail
            taken.close()
            wait_until(lambda: monitor.view().sources[0].link == "connected", 20, "the gateway to bind")
            _start(port)
    finally:
        taken.close()


# --- one client against the others --------------------------------------------------------


@contextmanager
def _gateway(port: int) -> Iterator[Monitor]:
    """A monitor whose gateway is listening (the raw clients do not retry as SDKs do)."""
    with Monitor(settings(), [f"inngest://127.0.0.1:{port}"]) as monitor:
        wait_until(lambda: monitor.view().sources[0].link == "connected", 10, "the gateway to bind")
        yield monitor


def _handshake(port: int, ws: ClientConnection, instance: str) -> None:
    """WORKER_CONNECT with a fresh session, and the gateway's GATEWAY_CONNECTION_READY. As
    the Node SDK: its row is judged by the asked interval at once, not after measuring."""
    start = _start(port)
    ws.send(_worker_connect(start.connection_id, start.session_token, instance, "typescript"))
    ready = pb.ConnectMessage()
    ready.ParseFromString(ws.recv(timeout=10))
    assert ready.kind == pb.GATEWAY_CONNECTION_READY


def _beat(ws: ClientConnection) -> None:
    ws.send(_message(pb.WORKER_HEARTBEAT))
    answer = pb.ConnectMessage()
    answer.ParseFromString(ws.recv(timeout=10))
    assert answer.kind == pb.GATEWAY_HEARTBEAT


FLOOD = """
import asyncio, sys, time
import httpx
from inngest.connect._internal import connect_pb2 as pb
from websockets.asyncio.client import connect

async def main(port, seconds):
    start = pb.StartResponse()
    start.ParseFromString(httpx.post(f"http://127.0.0.1:{port}/v0/connect/start", timeout=10).content)
    hello = pb.WorkerConnectRequestData(connection_id=start.connection_id, instance_id="flood", sdk_language="py",
                                        auth_data=pb.AuthData(session_token=start.session_token),
                                        apps=[pb.AppConfiguration(app_name="raw")])
    async with connect(f"ws://127.0.0.1:{port}/v0/connect", subprotocols=["v0.connect.inngest.com"],
                       max_size=None, ping_interval=None) as ws:
        await ws.recv()
        await ws.send(pb.ConnectMessage(kind=pb.WORKER_CONNECT, payload=hello.SerializeToString()).SerializeToString())
        await ws.recv()
        async def read():
            async for _ in ws:
                pass
        reader = asyncio.ensure_future(read())
        beat = pb.ConnectMessage(kind=pb.WORKER_HEARTBEAT).SerializeToString()
        print("flooding", flush=True)
        end, sent = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            await ws.send(beat)
            sent += 1
            if sent % 100 == 0:
                await asyncio.sleep(0)
        print(f"sent {sent}", flush=True)
        reader.cancel()

asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
"""
"""A worker that beats as fast as it can (and reads the answers), in a process of its own."""


def test_a_flooding_client_cannot_keep_a_silent_worker_from_turning_late(services):
    """Without a share per connection and a turn of the loop after each frame, the
    flood's frames were handled back to back: the loop stalled, the stall excused every
    worker's silence, and a worker silent for 20 s stayed healthy."""
    port, name = free_port(), "raw/victim"
    with _gateway(port) as monitor:
        with _open(port) as big:  # the largest frame the gateway reads, all tiny fields, and no session
            assert _closed_with(big, b"\x08\x01" * (128 * 1024 - 8)) == 1002
        assert "fields" in monitor.view().sources[0].last_refused
        flood = services.spawn("flood", [PYTHON, "-c", FLOOD, str(port), "15"], env=python_env())
        with _open(port) as ws:
            _handshake(port, ws, "victim")
            wait_until(lambda: "flooding" in flood.output(), 30, "the flood to start")
            for _ in range(5):
                _beat(ws)
                time.sleep(INTERVAL_MS / 1000)
            assert rows(monitor)[name].state == "healthy"
            silent = time.monotonic()
            states_until(monitor, name, lambda seen: "late" in seen, 2.0)  # 0.4 s; 4 s unlimited
            print(f"\nsilent -> late under a flood: {(time.monotonic() - silent) * 1000:.0f} ms")
            assert flood.proc.poll() is None, flood.output()
        source = monitor.view().sources[0]
        assert "frames a second" in source.last_refused and "dropped unread" in source.last_refused, source


def test_a_second_connection_with_a_workers_name_cannot_silence_it():
    """An SDK opens its new connection before closing the old: a name's row is fed by
    any of its connections, so a client that takes the name and never beats does not
    hide the real worker's beats; the worker is gone when its last connection closes."""
    port, name = free_port(), "raw/twin"
    with _gateway(port) as monitor, _open(port) as real:
        _handshake(port, real, "twin")
        _beat(real)
        with _open(port) as impostor:
            _handshake(port, impostor, "twin")
            until = time.monotonic() + 10 * INTERVAL_MS / 1000  # starved after 5 intervals of silence
            while time.monotonic() < until:
                _beat(real)
                time.sleep(INTERVAL_MS / 1000)
            assert rows(monitor)[name].state == "healthy" and moves(monitor, name) == [], moves(monitor, name)
            real.close()
            wait_until(lambda: rows(monitor)[name].state == "starved", 10, "the silent impostor to starve")
        wait_until(lambda: rows(monitor)[name].state == "dead", 10, "the last connection's close")


def test_a_close_reason_is_cut_to_123_bytes_not_characters():
    """A refusal quoting the client's text in emoji (four bytes each) once exceeded what a
    close frame may carry: websockets raised, and the client got 1011 instead of 1008."""
    port = free_port()
    with _gateway(port) as monitor, _open(port) as ws:
        ws.send(_worker_connect("😀" * 40, "made-up", "raw-0"))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008, closed.value
        reason = closed.value.rcvd.reason
        assert 100 < len(reason.encode()) <= 123 and reason.startswith("WORKER_CONNECT for connection"), reason
        assert "😀" * 40 in monitor.view().sources[0].last_refused


@pytest.mark.parametrize("instance", ["forged\n12:00:00 raw/real healthy -> dead", "\x1b[2Jcleared", "x" * 600],
                         ids=["newline", "escape", "long"])
def test_worker_names_that_would_reach_the_terminal_are_refused(instance):
    port = free_port()
    with _gateway(port) as monitor, _open(port) as ws:
        start = _start(port)
        assert _closed_with(ws, _worker_connect(start.connection_id, start.session_token, instance)) == 1008
        source = monitor.view().sources[0]
        assert source.refused == 1 and "worker name" in source.last_refused, source
        assert "\n" not in source.last_refused and "\x1b" not in source.last_refused
        assert len(source.last_refused) < 200, source.last_refused
        assert rows(monitor) == {}
