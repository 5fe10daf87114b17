"""A fleet on a real NATS cluster (nats-server processes routed to each other, started
here on free loopback ports): agents in every isolation mode spread over the nodes,
judged by a monitor with no hub in between, and commands by request/reply, straight
or through a hub that bridges the fleet."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from urllib.parse import quote

import httpx
import pytest

from heartmon.config import load_settings
from heartmon.detector import Transition
from heartmon.monitor import Monitor
from heartmon.view import RowView, ViewRequest
from tests.harness import HEARTMON, wait_until
from tests.nats_cluster import Cluster, start_cluster

INTERVAL_MS = "100"
TOKEN = "s3cret-nats-token"
MODES = ("none", "thread", "process")


def _rows(monitor: Monitor) -> dict[str, RowView]:
    return {row.name: row for row in monitor.view(ViewRequest(height=1000)).rows}


def _moves(monitor: Monitor, worker: str) -> list[tuple[str, str]]:
    entries = monitor.view(ViewRequest(height=0)).entries
    return [(e.from_state, e.to_state) for e in entries if isinstance(e, Transition) and e.worker == worker]


def _workers(launch, cluster: Cluster, env: dict[str, str] | None = None, *, pin: bool = True) -> list[str]:
    """One worker per isolation mode, the i-th on node i (it learns the others from the
    cluster), each on a "machine" of its own; returns their names."""
    names = []
    for i, mode in enumerate(MODES):
        node = cluster.nodes[i % len(cluster.nodes)]
        launch("worker", "--nats", node.url if pin else cluster.urls, "--isolation", mode, "--name", f"{mode}-1",
               "--host-name", f"machine-{i}", "--interval-ms", INTERVAL_MS, env=env, ready=None)
        names.append(f"default/machine-{i}/{mode}-1")
    return names


def _inject(cluster: Cluster, worker: str, probe: str, *extra: str, env: dict[str, str] | None = None,
            duration: str = "2") -> subprocess.CompletedProcess:
    return subprocess.run([*HEARTMON, "inject", worker, probe, "--duration", duration, "--nats", cluster.urls, *extra],
                          capture_output=True, text=True, timeout=30, env={**os.environ, **(env or {})})


def _vouched(monitor: Monitor, names: list[str]) -> bool:
    """Every worker listed by some server's /connz, as the monitor last read them."""
    rows = {r.name: r.key for r in monitor.view(ViewRequest(height=1000)).rows}
    return all(name in rows and (detail := monitor.view(ViewRequest(height=0, detail=rows[name])).detail)
               is not None and (detail.vouched or "").startswith("NATS connection open") for name in names)


def _healthy(monitor: Monitor, names: list[str]) -> bool:
    rows = _rows(monitor)
    return all(n in rows and rows[n].state == "healthy" and rows[n].p99_s is not None for n in names)


@pytest.fixture
def cluster(services) -> Cluster:
    return start_cluster(services, 3)


def test_a_fleet_on_a_cluster_is_starved_busy_and_dead_as_on_a_hub(cluster, launch):
    names = _workers(launch, cluster)
    none, thread, process = names
    with Monitor(load_settings(), [cluster.source()]) as monitor:
        wait_until(lambda: _healthy(monitor, names) and _vouched(monitor, names), 30,
                   f"{names} healthy on the monitor, and on /connz")
        for worker in (none, process):
            sent = _inject(cluster, worker, "gil-hold", "--insecure")
            assert sent.returncode == 0 and f"into {worker}" in sent.stdout, sent.stderr
        wait_until(lambda: _rows(monitor)[none].state == "starved", 10, "none-1 starved while silent")
        assert _rows(monitor)[none].silence_s >= 0.5
        wait_until(lambda: ("starved", "healthy") in _moves(monitor, none), 10, "none-1 to recover")
        episode = next(e for e in monitor.view(ViewRequest(height=0)).entries
                       if isinstance(e, Transition) and e.worker == none and e.to_state == "healthy")
        assert episode.episode is not None and 1.5 <= episode.episode.length_s <= 3.0
        assert episode.episode.probe == "gil-hold"
        wait_until(lambda: ("busy", "healthy") in _moves(monitor, process), 10, "process-1 busy, then free")
        assert _moves(monitor, none)[:3] == [("healthy", "late"), ("late", "starved"), ("starved", "healthy")]
        assert _moves(monitor, process)[:2] == [("healthy", "busy"), ("busy", "healthy")]
        # The thread worker's process dies for real: NATS drops its connection and it is dead.
        pid = next(r for r in monitor.view(ViewRequest(height=100)).rows if r.name == thread)
        detail = monitor.view(ViewRequest(height=100, detail=pid.key)).detail
        assert detail is not None and detail.pid is not None
        os.kill(detail.pid, signal.SIGKILL)
        wait_until(lambda: _rows(monitor)[thread].state == "dead", 10, "thread-1 dead")
        assert all(to != "dead" for _, to in _moves(monitor, none) + _moves(monitor, process))


def test_killing_a_node_kills_no_worker_and_every_worker_is_back_within_2_s(cluster, launch):
    names = _workers(launch, cluster)
    survivors = cluster.nodes[1:]
    # The monitor itself is on the nodes that stay; it reads every node's /connz.
    source = ",".join(n.url for n in survivors) + "?" + "&".join(f"monitor={m}" for m in cluster.monitors)
    with Monitor(load_settings(), [source]) as monitor:
        wait_until(lambda: _healthy(monitor, names) and _vouched(monitor, names), 30,
                   f"{names} healthy on the monitor, and on /connz")
        on_first = [c["name"] for c in cluster.nodes[0].connz()]
        assert any("machine-0" in name for name in on_first), on_first
        cluster.nodes[0].service.kill()
        killed = time.monotonic()
        back = {}
        while len(back) < len(names) and time.monotonic() - killed < 10:
            rows = _rows(monitor)
            for name in names:
                row = rows[name]
                if name not in back and row.state == "healthy" and row.silence_s is not None \
                        and row.silence_s < time.monotonic() - killed:
                    back[name] = time.monotonic() - killed
            time.sleep(0.05)
        moved = [c["name"] for n in survivors for c in n.connz() if "machine-0" in (c.get("name") or "")]
    assert moved, "the worker of the killed node did not reconnect to another"
    assert sorted(back) == sorted(names) and max(back.values()) <= 2.0, back
    assert all(to != "dead" for name in names for _, to in _moves(monitor, name))


@pytest.fixture
def secured(services) -> Cluster:
    return start_cluster(services, 2, token=TOKEN)


def test_injects_over_nats_answer_as_a_hub_does_straight_and_through_a_bridge(secured, launch):
    env = {"HEARTMON_NATS__TOKEN": TOKEN}
    for i in range(2):
        launch("worker", "--nats", secured.nodes[i].url, "--isolation", "process", "--name", "worker-1",
               "--host-name", f"machine-{i}", "--interval-ms", INTERVAL_MS, env=env, ready=None)
    hub = launch("hub", "--nats", secured.urls, "--port", "0", env=env)
    key = "default/machine-1/worker-1"
    with httpx.Client(base_url=hub.http, timeout=10) as client:
        def listed() -> dict:
            return {w["worker"]: w for w in client.get("/api/workers").json()}

        wait_until(lambda: all(listed().get(f"default/machine-{i}/worker-1", {}).get("available") for i in range(2)),
                   30, "both worker-1s (two machines, two rows) available on the bridge")
        straight = _inject(secured, key, "busy-python", env=env, duration="0.2")
        assert straight.returncode == 0 and f"into {key}" in straight.stdout, straight.stderr
        bridged = client.post(f"/api/workers/{quote(key, safe='')}/inject",
                              params={"probe": "busy-python", "duration_s": "0.2"})
        assert bridged.status_code == 202 and bridged.json()["worker"] == key
        anywhere = client.post("/api/workers/any/inject", params={"probe": "busy-python", "duration_s": "0.2"})
        assert anywhere.status_code == 202 and anywhere.json()["worker"] in listed()
        # The same refusals, in the same words, straight and through the bridge.
        for target, probe, duration, status in ((key, "no-such-probe", "1", 400), (key, "busy-python", "100", 400),
                                                ("default/machine-9/worker-1", "busy-python", "1", 404)):
            answer = _inject(secured, target, probe, env=env, duration=duration)
            via = client.post(f"/api/workers/{quote(target, safe='')}/inject",
                              params={"probe": probe, "duration_s": duration})
            assert answer.returncode == 1 and via.status_code == status
            if status == 404:  # the bridge can add who is there; a request on the bus hears only that nobody is
                unknown = f"heartmon: 404: unknown worker {target!r}; "
                assert answer.stderr.startswith(unknown) and f"{status}: {via.json()['message']}".startswith(
                    unknown.removeprefix("heartmon: ")), (answer.stderr, via.text)
            else:
                assert answer.stderr.strip() == f"heartmon: {status}: {via.json()['message']}", via.text
        assert "unknown probe 'no-such-probe'" in _inject(secured, key, "no-such-probe", env=env).stderr
        assert "duration_s must be > 0 and <= 60" in _inject(secured, key, "busy-python", env=env,
                                                               duration="100").stderr
        assert "accepted" in client.get("/metrics").text


def test_commands_on_a_cluster_anyone_may_join_need_insecure(cluster, launch):
    names = _workers(launch, cluster)
    refused = _inject(cluster, names[2], "busy-python", duration="0.2")
    assert refused.returncode == 2 and "lets anyone connect" in refused.stderr and "--insecure" in refused.stderr
    assert "Traceback" not in refused.stderr
    hub = launch("hub", "--nats", cluster.urls, "--port", "0")
    with httpx.Client(base_url=hub.http, timeout=10) as client:
        wait_until(lambda: len(client.get("/api/workers").json()) == 3, 30, "the bridge to hear the fleet")
        answer = client.post(f"/api/workers/{quote(names[2], safe='')}/inject",
                             params={"probe": "busy-python", "duration_s": "0.2"})
        assert answer.status_code == 403 and answer.json()["error"] == "insecure_cluster"
    insecure = launch("hub", "--nats", cluster.urls, "--port", "0", "--insecure")
    with httpx.Client(base_url=insecure.http, timeout=10) as client:
        wait_until(lambda: len(client.get("/api/workers").json()) == 3, 30, "the second bridge to hear the fleet")
        assert client.post("/api/workers/any/inject", params={"probe": "busy-python", "duration_s": "0.2"}
                           ).status_code == 202
    assert _inject(cluster, names[2], "busy-python", "--insecure", duration="0.2").returncode == 0


def test_malformed_payloads_are_counted_and_dropped_and_a_publisher_without_credentials_is_refused(secured, launch):
    env = {"HEARTMON_NATS__TOKEN": TOKEN}
    launch("worker", "--nats", secured.nodes[0].url, "--isolation", "thread", "--name", "good", "--host-name", "m",
           "--interval-ms", INTERVAL_MS, env=env, ready=None)
    stranger = launch("worker", "--nats", secured.nodes[1].url, "--name", "stranger", "--host-name", "m",
                      "--interval-ms", INTERVAL_MS, ready=None)  # no token
    hub = launch("hub", "--nats", secured.urls, "--port", "0", env=env)
    settings = load_settings(overrides={"nats": {"token": TOKEN}})
    source = secured.source()
    bad = [
        ("heartmon.default.m.good.beat", b"{not json"),
        ("heartmon.default.m.good.beat", b"\xff\xfe"),
        ("heartmon.default.m.good.beat", json.dumps({"type": "beat", "seq": -1, "sent_at": 1.0,
                                                     "loop_lag_ms": 0}).encode()),
        ("heartmon.default.m.good.hello", json.dumps({"type": "beat", "seq": 1, "sent_at": 1.0,
                                                      "loop_lag_ms": 0}).encode()),
        ("heartmon.default.m.good.hello", json.dumps({
            "type": "hello", "v": 1, "worker": "someone-else", "isolation": "none", "pid": 1, "host": "m",
            "interval_ms": 100, "agent": "x"}).encode()),
        ("heartmon.default.m.good.nonsense", b"{}"),
    ]

    async def publish() -> str | None:
        import nats

        nc = await nats.connect(secured.nodes[0].url, token=TOKEN)
        for subject, payload in bad:
            await nc.publish(subject, payload)
        await nc.flush()
        await nc.close()
        try:
            anonymous = await nats.connect(secured.nodes[0].url, allow_reconnect=False, max_reconnect_attempts=0,
                                           connect_timeout=2, error_cb=_quiet)
        except Exception as exc:
            return str(exc)
        await anonymous.close()
        return None

    with Monitor(settings, [source]) as monitor, httpx.Client(base_url=hub.http, timeout=10) as client:
        wait_until(lambda: _healthy(monitor, ["default/m/good"]), 30, "the good worker healthy")
        wait_until(lambda: "default/m/good" in {w["worker"] for w in client.get("/api/workers").json()}, 30,
                   "the bridge to hear the good worker")
        refusal = asyncio.run(publish())
        wait_until(lambda: monitor.view().sources[0].refused == len(bad), 10, "every bad message counted")
        metrics = client.get("/metrics").text
        time.sleep(1.0)
        assert _rows(monitor)["default/m/good"].state == "healthy"
        assert _moves(monitor, "default/m/good") == []
        assert "default/m/stranger" not in _rows(monitor)
    assert refusal is not None and "authorization" in refusal.lower()
    rejected = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith("heartmon_frames_rejected_total{"))
    assert rejected == len(bad), metrics
    assert stranger.proc.poll() is None  # it keeps trying, and says why it cannot get in


async def _quiet(exc: Exception) -> None:
    pass


def test_two_bridges_and_a_monitor_agree_and_an_old_style_monitor_watches_a_bridge(cluster, launch):
    names = _workers(launch, cluster, pin=False)
    connz = [arg for m in cluster.monitors for arg in ("--nats-monitor", m)]
    hubs = [launch("hub", "--nats", cluster.urls, "--port", "0", "--insecure", *connz) for _ in range(2)]

    def pools() -> list[dict]:
        return [{w["worker"]: (w["state"], w["available"]) for w in httpx.get(f"{hub.http}/api/workers").json()}
                for hub in hubs]

    with Monitor(load_settings(), [hubs[0].url]) as watching:  # through /watch, as any hub's monitor
        wait_until(lambda: _healthy(watching, names), 30, "the fleet through the bridge's /watch")
        time.sleep(1.5)  # three readings of /connz by each bridge, which says nothing of them over HTTP
        _inject(cluster, names[0], "gil-hold", "--insecure", duration="3")
        wait_until(lambda: _rows(watching)[names[0]].state == "starved", 10, "starved through the bridge")
        def both_starved() -> list[dict] | None:
            seen = pools()
            return seen if all(p.get(names[0]) == ("starved", False) for p in seen) else None

        starved = wait_until(both_starved, 5, "both bridges to judge it starved")
        wait_until(lambda: _rows(watching)[names[0]].state == "healthy", 10, "recovered through the bridge")
        moves = _moves(watching, names[0])
    assert starved[0] == starved[1] and starved[0][names[2]] == ("healthy", True)
    assert moves[:3] == [("healthy", "late"), ("late", "starved"), ("starved", "healthy")], moves


async def test_the_tuis_ingest_process_carries_the_nats_credentials(secured, launch):
    """The TUI's engine runs in a process of its own, handed the settings: a secret that
    did not survive the trip (pydantic's JSON masks it as '**********') would leave the
    monitor refused by the cluster it was told how to join."""
    from heartmon.commands import HubClient
    from heartmon.monitor_process import MonitorProcess
    from heartmon.polling import until
    from heartmon.tui.app import HeartmonApp

    launch("worker", "--nats", secured.nodes[0].url, "--name", "w", "--host-name", "m", "--interval-ms", INTERVAL_MS,
           env={"HEARTMON_NATS__TOKEN": TOKEN}, ready=None)
    feed = MonitorProcess(load_settings(overrides={"nats": {"token": TOKEN}}), [secured.source()])
    app = HeartmonApp(feed, HubClient())
    with feed:
        async with app.run_test(size=(130, 34)):
            await until(lambda: [r.name for r in app.view.rows] == ["default/m/w"], 20, "the worker, over NATS")
            assert app.view.sources[0].link == "connected"


def test_the_monitors_own_node_dying_makes_its_workers_unknown_for_a_moment_never_dead(cluster, launch):
    """The source's connection is lost with its node: what its workers do is not known
    until the client is on another node, which it learns from the cluster itself; then
    every worker says hello again when asked, and none was judged meanwhile."""
    names = _workers(launch, cluster, pin=False)
    first = cluster.nodes[0]
    source = f"{first.url}?" + "&".join(f"monitor={m}" for m in cluster.monitors)
    with Monitor(load_settings(), [source]) as monitor:
        wait_until(lambda: _healthy(monitor, names), 30, f"{names} healthy on the monitor")
        first.service.kill()
        wait_until(lambda: any(to == "unknown" for name in names for _, to in _moves(monitor, name)), 10,
                   "the monitor to notice its node is gone")
        wait_until(lambda: _healthy(monitor, names) and monitor.view().sources[0].link == "connected", 10,
                   "the monitor on another node, and every worker healthy again")
        moves = {name: _moves(monitor, name) for name in names}
    assert all(to not in ("dead", "late", "starved") for m in moves.values() for _, to in m), moves


def test_a_bridge_whose_node_dies_judges_no_worker_meanwhile(cluster, launch):
    names = _workers(launch, cluster, pin=False)
    connz = [arg for m in cluster.monitors for arg in ("--nats-monitor", m)]
    hub = launch("hub", "--nats", cluster.nodes[0].url, "--port", "0", *connz)
    with httpx.Client(base_url=hub.http, timeout=10) as client:
        def states() -> dict[str, str]:
            return {w["worker"]: w["state"] for w in client.get("/api/workers").json()}

        wait_until(lambda: all(states().get(n) == "healthy" for n in names), 30, "the fleet healthy on the bridge")
        cluster.nodes[0].service.kill()
        seen: set[str] = set()
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            seen |= set(states().values())
            time.sleep(0.05)
        wait_until(lambda: all(states().get(n) == "healthy" for n in names), 10, "the fleet healthy again")
    assert not seen & {"dead", "starved"}, seen


def test_a_wedged_node_leaves_no_worker_dead_and_the_monitor_moves_to_another(cluster, launch):
    """A stopped nats-server keeps its sockets open: nothing but pings tells. The monitor
    on it notices within about a second and a half (at 100 ms beats its workers look
    starved until then: silent, their connections listed) and moves on, its workers
    unknown while it does; the worker on it leaves it when its pings go unanswered, and until then
    it was connected as far as anyone could tell: never dead."""
    names = _workers(launch, cluster)  # the i-th on node i: one of them on the node that stops
    first = cluster.nodes[0]
    source = f"{first.url}?" + "&".join(f"monitor={m}" for m in cluster.monitors)
    with Monitor(load_settings(), [source]) as monitor:
        wait_until(lambda: _healthy(monitor, names) and _vouched(monitor, names), 30,
                   f"{names} healthy on the monitor, and on /connz")
        first.service.proc.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: _healthy(monitor, names[1:]) and monitor.view().sources[0].link == "connected"
                       and any(to == "unknown" for _, to in _moves(monitor, names[1])), 20,
                       "the monitor on another node, with the workers of the others healthy")
            wait_until(lambda: _healthy(monitor, names), 40, f"{names[0]} back through another node")
        finally:
            first.service.proc.send_signal(signal.SIGCONT)
        moves = {name: _moves(monitor, name) for name in names}
    assert all(to != "dead" for m in moves.values() for _, to in m), moves
