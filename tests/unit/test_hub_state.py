"""The hub's core without processes or sockets: joins, beats, routing and every refusal."""

import pytest

from heartmon.detector import Thresholds
from heartmon.hub_state import BadInject, HubState, NoAvailableWorker, TooManyPending, UnknownWorker
from heartmon.protocol import (
    Beat,
    Hello,
    ProbeFinished,
    ProbeStarted,
    ProtocolError,
    WorkerJoined,
    WorkerLeft,
    decode_from_worker,
)

INTERVAL = 0.1


def hello(name: str, instance: str | None = None, probes=("gil-hold", "sync-sleep")) -> Hello:
    return Hello(v=1, worker=name, isolation="none", pid=1, host="h", interval_ms=100, agent="t",
                 probes=list(probes), instance=instance)


def state(**kwargs) -> HubState:
    return HubState(Thresholds(), ["gil-hold", "sync-sleep", "busy-python"], wall_offset=1_000_000.0, **kwargs)


def beats(hub: HubState, name: str, start: float, count: int) -> float:
    record = hub.records[name]
    for i in range(count):
        hub.message(record, Beat(seq=i + 1, sent_at=0, loop_lag_ms=0), start + i * INTERVAL)
    return start + (count - 1) * INTERVAL


def test_a_join_publishes_the_worker_and_a_beat_its_wall_clock_time():
    hub = state()
    joined = hub.join(hello("a"), "conn-a", 5.0)
    assert [type(m) for m in joined.publish] == [WorkerJoined] and joined.replaced is None
    last = beats(hub, "a", 5.1, 3)
    info = hub.snapshot(last).workers[0]
    assert (info.worker, info.seq, info.last_beat_at, info.connected_at) == ("a", 3, 1_000_000.0 + last, 1_000_005.0)


def test_the_first_frame_must_be_a_hello():
    with pytest.raises(ProtocolError) as refused:
        state().join(Beat(seq=1, sent_at=0, loop_lag_ms=0), "conn", 0.0)
    assert refused.value.code == "hello_required"


def test_a_second_hello_replaces_the_connection_and_the_old_one_leaving_says_nothing():
    hub = state()
    hub.join(hello("a"), "old", 0.0)
    old = hub.records["a"]
    joined = hub.join(hello("a"), "new", 1.0)
    assert joined.replaced == "old" and [type(m) for m in joined.publish] == [WorkerLeft, WorkerJoined]
    assert hub.left(old, "connection closed", 2.0) == []
    assert hub.records["a"].conn == "new"


def test_with_a_token_a_live_name_can_only_be_taken_by_the_same_agent_instance():
    hub = state(identity_required=True)
    hub.join(hello("a", instance="i1"), "c1", 0.0)
    for other in ("i2", None):
        with pytest.raises(ProtocolError) as refused:
            hub.join(hello("a", instance=other), "c2", 1.0)
        assert refused.value.code == "name_taken"
    assert hub.join(hello("a", instance="i1"), "c3", 2.0).replaced == "c1"  # the same agent, reconnecting


def test_routing_to_a_named_worker_and_every_refusal():
    hub = state()
    hub.join(hello("a"), "conn-a", 0.0)
    beats(hub, "a", 0.1, 3)
    routed = hub.route_inject("a", "gil-hold", 2.0, 0.35, "id1")
    command = routed.command
    assert (routed.conn, routed.worker, command.probe, command.duration_s) == ("conn-a", "a", "gil-hold", 2.0)
    with pytest.raises(UnknownWorker) as unknown:
        hub.route_inject("b", "gil-hold", 2.0, 0.35, "id2")
    assert unknown.value.status == 404 and "connected: a" in unknown.value.message
    with pytest.raises(BadInject) as probe:
        hub.route_inject("a", "busy-python", 2.0, 0.35, "id3")  # the hub knows it, this worker does not
    assert probe.value.status == 400 and "known probes: gil-hold, sync-sleep" in probe.value.message
    for duration in (0.0, -1.0, 61.0, float("nan"), float("inf")):
        with pytest.raises(BadInject):
            hub.route_inject("a", "gil-hold", duration, 0.35, "id4")


def test_any_routes_to_an_available_worker_with_the_fewest_pending_and_503_when_none_is():
    hub = state()
    for name in ("a", "b"):
        hub.join(hello(name), f"conn-{name}", 0.0)
    first = hub.route_inject("any", "gil-hold", 1.0, 0.05, "id1")
    second = hub.route_inject("any", "gil-hold", 1.0, 0.05, "id2")
    assert {first.worker, second.worker} == {"a", "b"}
    with pytest.raises(NoAvailableWorker) as none:
        hub.route_inject("any", "gil-hold", 1.0, 5.0, "id3")  # both silent for 5 s: starved
    assert none.value.status == 503 and "2 starved" in none.value.message


def test_injects_pending_in_a_worker_are_bounded_and_freed_when_they_finish():
    hub = state(max_pending=3)
    hub.join(hello("a"), "conn-a", 0.0)
    for n in range(3):
        hub.route_inject("a", "sync-sleep", 0.01, 0.01, f"id{n}")
    with pytest.raises(TooManyPending) as full:
        hub.route_inject("a", "sync-sleep", 0.01, 0.01, "id3")
    assert full.value.status == 429
    record = hub.records["a"]
    hub.message(record, ProbeStarted(id="id0", probe="sync-sleep", duration_s=0.01), 0.02)
    hub.message(record, ProbeFinished(id="id0", elapsed_s=0.01), 0.03)
    routed = hub.route_inject("a", "sync-sleep", 0.01, 0.04, "id4")
    with pytest.raises(TooManyPending):
        hub.route_inject("a", "sync-sleep", 0.01, 0.05, "id5")
    hub.unsent(routed)  # the worker was gone before it could be sent: not pending
    assert hub.route_inject("a", "sync-sleep", 0.01, 0.06, "id6").command.id == "id6"


def test_reading_the_pool_or_the_listing_changes_nothing_only_judging_does():
    hub = state()
    hub.join(hello("a"), "conn-a", 0.0)
    last = beats(hub, "a", 0.1, 2)
    later = last + 10 * INTERVAL  # silent past every threshold
    assert hub.listing()[0]["state"] == "healthy" and hub.available()
    assert hub.listing()[0]["state"] == "healthy"  # reading twice, long after: no judgement
    next_due = hub.judge(later)
    assert hub.listing()[0]["state"] == "starved" and not hub.available() and next_due is None


def test_a_beat_with_nan_or_infinity_is_refused_before_it_reaches_the_detector():
    for value in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(ProtocolError) as refused:
            decode_from_worker(f'{{"type":"beat","seq":1,"sent_at":{value},"loop_lag_ms":0}}')
        assert refused.value.code == "invalid_field"


def test_a_refused_inject_does_not_end_the_probe_that_runs():
    hub = state()
    hub.join(hello("a"), "conn-a", 0.0)
    record = hub.records["a"]
    hub.message(record, ProbeStarted(id="run", probe="gil-hold", duration_s=5), 0.1)
    hub.message(record, ProbeFinished(id="extra", elapsed_s=0, error="refused: 32 injects pending"), 0.2)
    assert hub.snapshot(0.3).workers[0].probe == "gil-hold"
    hub.message(record, ProbeFinished(id="run", elapsed_s=5), 5.1)
    assert hub.snapshot(5.2).workers[0].probe is None
