"""Detection on deadlines: each silence is judged when it crosses its threshold, not on
a tick; a lost source makes its workers unknown, never dead; workers are (source, name)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heartmon.backoff import RECONNECT_MAX_S
from heartmon.detector import PhiSettings, Thresholds, Tracker, phi, phi_silence
from heartmon.fleet_state import FleetState

INTERVAL = 0.1
HUB = "ws://hub-a:8787"


def test_a_silent_worker_is_judged_at_each_threshold_and_not_before():
    fleet = FleetState(Thresholds())
    fleet.join(0.0, (HUB, "w"), INTERVAL, connected=True)
    fleet.beat(1.0, (HUB, "w"), seq=1)
    assert fleet.evaluate_due(1.0) == []  # the deadline set at the join falls due, and moves
    assert fleet.next_due() == pytest.approx(1.0 + 2 * INTERVAL, abs=1e-5)  # late: 2 intervals of silence
    assert fleet.evaluate_due(1.19) == []
    (late,) = fleet.evaluate_due(fleet.next_due())
    assert (late.to_state, late.silence_s) == ("late", pytest.approx(2 * INTERVAL, abs=1e-5))
    assert fleet.next_due() == pytest.approx(1.0 + 5 * INTERVAL, abs=1e-5)  # starved next (the connection is open)
    (starved,) = fleet.evaluate_due(fleet.next_due())
    assert starved.to_state == "starved"
    assert fleet.next_due() is None  # alive: silence alone never makes it dead


def test_beats_move_the_deadline_without_touching_the_heap_for_every_beat():
    fleet = FleetState(Thresholds())
    fleet.join(0.0, (HUB, "w"), INTERVAL, connected=True)
    for i in range(1, 50):
        fleet.beat(i * INTERVAL, (HUB, "w"), seq=i)
        assert fleet.evaluate_due(i * INTERVAL) == []
    assert len(fleet._due) <= 2
    assert fleet.next_due() <= 49 * INTERVAL + 2 * INTERVAL + 1e-5


def test_without_evidence_of_life_silence_ends_in_dead_at_its_threshold():
    fleet = FleetState(Thresholds())
    fleet.join(0.0, ("api=http://x", "api"), INTERVAL, connected=None)  # an HTTP endpoint: no connection to see
    states = []
    while (due := fleet.next_due()) is not None:
        states += [(t.to_state, round(t.silence_s, 3)) for t in fleet.evaluate_due(due)]
    assert states == [("late", 0.2), ("dead", 1.0)]


@given(st.floats(0.5, 12), st.floats(0.01, 5), st.floats(0.001, 2))
def test_phi_silence_is_the_inverse_of_phi(threshold, mean, std):
    silence = phi_silence(threshold, mean, std)
    assert phi(silence, mean, std) == pytest.approx(threshold, rel=1e-6)


def test_the_phi_rule_is_judged_at_the_silence_where_phi_crosses():
    t = Tracker("w", INTERVAL, Thresholds(rule="phi", phi=PhiSettings(threshold=8)), 0.0, connected=True)
    for i in range(1, 30):
        t.beat(i * INTERVAL, seq=i)
    due = t.next_deadline(29 * INTERVAL)
    assert t.evaluate(due - 0.002) == []
    assert [x.to_state for x in t.evaluate(due)] == ["late"]


def test_a_lost_source_makes_its_workers_unknown_never_dead_and_the_snapshot_brings_them_back():
    fleet = FleetState(Thresholds())
    fleet.join(0.0, (HUB, "w"), INTERVAL, connected=True)
    fleet.join(0.0, ("ws://hub-b:8787", "w"), INTERVAL, connected=True)  # same name, another hub
    fleet.beat(0.1, (HUB, "w"), seq=1)
    (lost,) = fleet.source_lost(0.15, HUB)
    assert (lost.to_state, lost.source) == ("unknown", HUB)
    assert fleet.next_due() is not None  # hub-b's worker is still judged
    changes = fleet.evaluate(60.0)
    assert [(c.source, c.to_state) for c in changes] == [("ws://hub-b:8787", "starved")]
    assert fleet.counts()["unknown"] == 1 and (HUB, "w") not in fleet.available()
    (back,) = fleet.join(61.0, (HUB, "w"), INTERVAL, connected=True, heard_at=60.95, seq=600)
    assert (back.from_state, back.to_state) == ("unknown", "healthy")
    assert fleet.evaluate(61.0) == [] and fleet.state_of((HUB, "w")) == "healthy"


def test_a_worker_missing_from_a_returned_source_has_its_backoff_then_dead_after_to_come_back():
    """At 100 ms beats dead_after alone is 1 s, but an agent may be sleeping out a
    reconnect backoff of up to 5 s: coming back 4.9 s after the hub is not a death."""
    fleet = FleetState(Thresholds())
    for name in ("back", "gone"):
        fleet.join(0.0, (HUB, name), INTERVAL, connected=True)
    fleet.source_lost(0.1, HUB)
    for name in ("back", "gone"):  # the restarted hub lists neither yet
        assert fleet.missing(5.0, (HUB, name), "left while the monitor was disconnected") == []
    assert fleet.evaluate_due(5.0 + RECONNECT_MAX_S - 0.1) == []
    fleet.join(9.9, (HUB, "back"), INTERVAL, connected=True)
    for seq in range(1, 11):
        fleet.beat(9.9 + seq * INTERVAL, (HUB, "back"), seq=seq)
        assert fleet.evaluate_due(9.9 + seq * INTERVAL) == []
    (dead,) = fleet.evaluate_due(5.0 + RECONNECT_MAX_S + 10 * INTERVAL + 0.01)
    assert (dead.worker, dead.from_state, dead.to_state) == ("gone", "unknown", "dead")
    assert fleet.state_of((HUB, "back")) == "healthy"


def test_a_worker_missing_from_a_snapshot_while_its_source_was_up_is_dead_at_once():
    fleet = FleetState(Thresholds())
    fleet.join(0.0, (HUB, "w"), INTERVAL, connected=True)
    (dead,) = fleet.missing(0.5, (HUB, "w"), "left while the monitor was disconnected")
    assert dead.to_state == "dead"


def test_an_interval_learned_shorter_brings_the_deadline_forward():
    """A worker joins assumed to beat every 10 s (the Python Inngest SDK's default) and
    is measured at 1 s: its silence must be judged at 2 s, not at the 20 s set at the join."""
    fleet = FleetState(Thresholds())
    key = ("inngest://127.0.0.1:8289", "shop/py")
    fleet.join(0.0, key, 10.0, connected=None)
    fleet.beat(0.0, key)
    fleet.join(1.0, key, 1.0, connected=None)
    fleet.beat(1.0, key)
    due = fleet.next_due()
    assert due is not None and due <= 1.0 + 2 * 1.0 + 1e-5
    fleet.evaluate_due(due)
    (late,) = fleet.evaluate_due(fleet.next_due())
    assert late.to_state == "late" and late.at == pytest.approx(3.0, abs=1e-5)
