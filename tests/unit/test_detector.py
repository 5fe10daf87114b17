"""The detector with plain numbers: no sleeps, no sockets, time is a parameter."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heartmon.detector import Gaps, PhiSettings, Thresholds, Tracker, phi
from heartmon.fleet_state import FleetState

W = ("hub", "w")
"""A worker is (source, name)."""
INTERVAL = 0.1  # a 100 ms interval
FIXED = Thresholds()
PHI = Thresholds(rule="phi")


def tracker(thresholds=FIXED, connected=True) -> Tracker:
    return Tracker("w", INTERVAL, thresholds, joined_at=0.0, connected=connected)


def beats(t: Tracker, start: float, end: float, every: float = INTERVAL, seq0: int = 0):
    changes, now, seq = [], start, seq0
    while now <= end + 1e-9:
        changes += t.beat(now, seq=seq)
        changes += t.evaluate(now)
        now, seq = round(now + every, 9), seq + 1
    return changes


def test_regular_beats_stay_healthy():
    t = tracker()
    assert beats(t, 0.1, 10.0) == []
    assert t.state == "healthy" and t.gaps.max == pytest.approx(INTERVAL)


def test_a_silent_connected_worker_goes_late_then_starved_never_dead():
    t = tracker()
    beats(t, 0.1, 1.0)
    assert t.evaluate(1.15) == []
    late = t.evaluate(1.21)
    assert [(c.from_state, c.to_state) for c in late] == [("healthy", "late")]
    starved = t.evaluate(1.51)
    assert [(c.from_state, c.to_state) for c in starved] == [("late", "starved")]
    assert "connection open" in starved[0].reason
    assert t.evaluate(1000.0) == [] and t.state == "starved"


def test_recovery_carries_the_episode():
    t = tracker()
    beats(t, 0.1, 1.0, seq0=1)  # last beat at 1.0 with seq 10
    t.probe = "gil-hold"
    t.evaluate(1.6)
    recovered = t.beat(3.05, seq=30, main_blocked_ms=None)
    assert len(recovered) == 1
    change = recovered[0]
    assert (change.from_state, change.to_state) == ("starved", "healthy")
    assert change.episode.started_at == pytest.approx(1.0)
    assert change.episode.length_s == pytest.approx(2.05)
    assert change.episode.missed == 19
    assert change.episode.probe == "gil-hold"
    assert t.episodes == 1


def test_silence_without_evidence_of_life_is_late_then_dead():
    t = tracker(connected=None)
    beats(t, 0.1, 1.0)
    assert t.evaluate(1.51)[0].to_state == "late"  # no evidence: not starved
    dead = t.evaluate(2.01)
    assert dead[0].to_state == "dead" and "no evidence of life" in dead[0].reason


def test_cpu_evidence_makes_a_silent_local_worker_starved():
    t = tracker(connected=None)
    beats(t, 0.1, 1.0)
    t.evidence(1.1, alive=True, cpu_busy=True)
    assert t.evaluate(1.51)[0].to_state == "starved"
    assert t.evaluate(100.0) == []


def test_closed_connection_or_gone_process_is_dead_at_once_and_only_hello_revives():
    t = tracker()
    beats(t, 0.1, 1.0)
    assert t.disconnected(1.05, "connection lost")[0].to_state == "dead"
    assert t.beat(1.1, seq=11) == []  # a beat in flight changes nothing
    assert t.evaluate(5.0) == []
    assert t.hello(6.0, INTERVAL, connected=True)[0].to_state == "healthy"
    local = tracker(connected=None)
    assert local.evidence(0.5, alive=False, cpu_busy=False)[0].reason == "process gone"
    connected = tracker()  # an open connection outranks a pid that looks gone
    assert connected.evidence(0.5, alive=False, cpu_busy=False) == [] and connected.state == "healthy"


def test_a_revived_worker_keeps_the_age_its_snapshot_gives():
    fleet = FleetState(FIXED)
    fleet.join(0.0, W, INTERVAL, connected=True)
    fleet.left(1.0, W, "left while the monitor was disconnected")
    fleet.join(5.0, W, INTERVAL, connected=True, heard_at=2.0, seq=20)  # its last beat was 3 s ago
    assert fleet.evaluate(5.0)[-1].to_state == "starved"


def test_busy_is_on_time_beats_with_a_blocked_main_loop():
    t = tracker()
    assert t.beat(0.1, seq=1, main_blocked_ms=5) == []  # 5 ms is under busy_after (2 intervals)
    busy = t.beat(0.2, seq=2, main_blocked_ms=250)
    assert [(c.from_state, c.to_state) for c in busy] == [("healthy", "busy")]
    assert t.evaluate(0.25) == []
    free = t.beat(0.3, seq=3, main_blocked_ms=1)
    assert [(c.from_state, c.to_state, c.reason) for c in free] == [("busy", "healthy", "main loop free again")]


def test_the_monitor_stalling_is_not_blamed_on_workers():
    fleet = FleetState(FIXED)
    fleet.join(0.0, W, INTERVAL, connected=True)
    for i in range(1, 11):
        fleet.beat(i * INTERVAL, W, seq=i)
    fleet.monitor_stalled(1.0, 3.0)  # the monitor could not read for 2 s
    assert fleet.evaluate(3.05) == []
    assert fleet.evaluate(3.21)[0].to_state == "late"  # silence after the stall counts


def test_fleet_counts_pool_and_probe_history():
    fleet = FleetState(FIXED)
    a, b, c = (("hub", name) for name in "abc")
    for key in (a, b, c):
        fleet.join(0.0, key, INTERVAL, connected=True)
    fleet.left(0.5, c, "connection lost")
    fleet.beat(0.1, a, seq=1)
    fleet.beat(0.1, b, seq=1, main_blocked_ms=900)
    fleet.probe_started(0.2, b, "id1", "gil-hold", 2.0)
    fleet.probe_finished(2.2, b, "id1", 2.0, None)
    assert fleet.counts() == {"dead": 1, "starved": 0, "late": 0, "busy": 1, "healthy": 1, "unknown": 0}
    assert sorted(fleet.available()) == [a, b]
    run = fleet.probes[b][-1]
    assert (run.probe, run.elapsed_s, run.finished_at) == ("gil-hold", 2.0, 2.2)
    assert fleet.beat(1.0, ("hub", "ghost"), seq=1) == [] and ("hub", "ghost") not in fleet.trackers


def test_invalid_thresholds_name_the_rule():
    with pytest.raises(ValueError, match="late_after <= starved_after <= dead_after"):
        Thresholds(late_after=5, starved_after=2)


def test_phi_grows_with_silence_and_never_overflows():
    values = [phi(s, 0.1, 0.1) for s in (0.0, 0.1, 0.3, 0.7, 5.0, 1e6)]
    assert values == sorted(values)
    assert values[1] == pytest.approx(-math.log10(0.5))
    assert all(math.isfinite(v) for v in values)
    assert phi(-1e6, 0.1, 0.1) >= 0


def test_gaps_keep_a_bounded_window_with_exact_stats():
    gaps = Gaps(4)
    for g in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):
        gaps.push(g)
    assert gaps.recent() == [3.0, 4.0, 5.0, 6.0]
    assert gaps.mean == pytest.approx(4.5)
    assert gaps.std == pytest.approx(math.sqrt(1.25))
    assert gaps.percentile(0.99) == 6.0 and gaps.max == 6.0


# --- properties -------------------------------------------------------------------

intervals = st.sampled_from([0.05, 0.1, 0.5, 1.0])
rules = st.sampled_from([FIXED, PHI])


@settings(max_examples=60, deadline=None)
@given(interval=intervals, thresholds=rules, count=st.integers(3, 400),
       jitter=st.lists(st.floats(-0.2, 0.2), min_size=1, max_size=50))
def test_regular_beats_are_never_flagged(interval, thresholds, count, jitter):
    t = Tracker("w", interval, thresholds, joined_at=0.0, connected=True)
    now = 0.0
    for i in range(count):
        now += interval * (1 + jitter[i % len(jitter)])
        assert t.beat(now, seq=i) == []  # an on-time beat of a healthy worker changes nothing
        assert t.evaluate(now + interval * 0.5) == []
    assert t.state == "healthy" and t.episodes == 0 and t.missed == 0


events = st.lists(
    st.one_of(
        st.tuples(st.just("beat"), st.floats(0.0, 3.0)),
        st.tuples(st.just("wait"), st.floats(0.0, 3.0)),
        st.tuples(st.just("left"), st.just(0.0)),
        st.tuples(st.just("hello"), st.floats(0.0, 1.0)),
        st.tuples(st.just("evidence"), st.booleans()),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(script=events, thresholds=rules, connected=st.sampled_from([True, None]))
def test_episodes_never_overlap_and_dead_only_leaves_by_hello(script, thresholds, connected):
    t = Tracker("w", INTERVAL, thresholds, joined_at=0.0, connected=connected)
    now, seq, in_episode = 0.0, 0, False
    for action, value in script:
        now += value if isinstance(value, float) else 0.01
        if action == "beat":
            seq += 1
            changes = t.beat(now, seq=seq)
        elif action == "wait":
            changes = t.evaluate(now)
        elif action == "left":
            changes = t.disconnected(now, "connection lost")
        elif action == "hello":
            changes = t.hello(now, INTERVAL, connected=connected)
        else:
            changes = t.evidence(now, alive=True, cpu_busy=value)
        for change in changes:
            assert change.from_state != change.to_state or change.episode
            if change.from_state == "dead":
                assert action == "hello", f"left dead on {action}"
            if change.episode is not None:
                assert in_episode and change.from_state in ("late", "starved")
                assert change.episode.length_s >= 0
            entering = change.to_state in ("late", "starved") and change.from_state not in ("late", "starved")
            assert not (entering and in_episode), "a new episode began before the last one ended"
            if entering:
                in_episode = True
            if change.to_state in ("healthy", "busy", "dead"):
                in_episode = False


@settings(max_examples=80, deadline=None)
@given(interval=intervals, silence=st.floats(0.0, 1.0), connected=st.sampled_from([True, None]))
def test_the_two_rules_agree_on_clear_cut_cases(interval, silence, connected):
    """Well inside the regular rhythm both say healthy; far past it both suspect."""
    results = {}
    for thresholds in (FIXED, Thresholds(rule="phi", phi=PhiSettings(min_std_dev_ms=interval * 100))):
        t = Tracker("w", interval, thresholds, joined_at=0.0, connected=connected)
        assert beats(t, interval, interval * 50, every=interval) == []
        last = t.last_beat_at
        near = t.evaluate(last + interval * 0.5 * silence)
        results[thresholds.rule] = near, t.state
        t.evaluate(last + interval * 50)
        results[thresholds.rule + "-far"] = t.state
    assert results["fixed"] == results["phi"] == ([], "healthy")
    assert results["fixed-far"] == results["phi-far"] == ("starved" if connected else "dead")


@given(capacity=st.integers(1, 20), pushes=st.integers(0, 60), n=st.integers(0, 25))
def test_gaps_last_is_the_tail_of_recent(capacity, pushes, n):
    gaps = Gaps(capacity)
    for i in range(pushes):
        gaps.push(float(i))
    assert gaps.last(n) == gaps.recent()[len(gaps.recent()) - min(n, gaps.count):]
