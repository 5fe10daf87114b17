"""Which block a stack belongs to, which lines name it, and the culprits it adds up to:
the fleet state with plain numbers for time."""

from __future__ import annotations

from heartmon.detector import Thresholds, Transition
from heartmon.fleet_state import FleetState, Stuck
from heartmon.protocol import Frame
from heartmon.report import as_json, describe
from heartmon.stacks import Stack
from heartmon.view import Viewer, ViewRequest

KEY = ("hub", "w1")
OTHER = ("hub", "w2")


def _stack(at: float, function: str = "Report.render", blocked_ms: float | None = 200.0) -> Stack:
    frames = (Frame(file="/srv/app/reports.py", line=7, function=function, code="total = crunch()", kind="app"),
              Frame(file="/usr/lib/python3.11/asyncio/events.py", line=80, function="Handle._run", kind="python"))
    return Stack(frames, at, blocked_ms, "signal", at)


def _fleet(*keys) -> FleetState:
    fleet = FleetState(Thresholds())
    for key in keys or (KEY,):
        fleet.join(0.0, key, 0.1, connected=True, isolation="none")
    return fleet


def _beats(fleet: FleetState, key, start: float, end: float, blocked_ms: float | None = None) -> list[Transition]:
    moves, t = [], start
    while t <= end + 1e-9:
        moves += fleet.beat(t, key, main_blocked_ms=blocked_ms)
        t = round(t + 0.1, 6)
    return moves


def test_a_stack_heard_during_a_silence_names_the_starved_move_and_the_recovery():
    fleet = _fleet()
    _beats(fleet, KEY, 0.1, 1.0)
    fleet.evaluate_due(1.25)  # late
    assert fleet.stack(1.3, KEY, _stack(1.3)) == []  # late is not announced as stuck: starved will say it
    (starved,) = fleet.evaluate_due(1.55)
    assert starved.to_state == "starved" and starved.stack is not None
    assert describe(starved).endswith("— in app/reports.py:7 Report.render")
    (recovery,) = fleet.beat(3.0, KEY)
    assert recovery.episode is not None and recovery.stack is not None
    assert describe(recovery).endswith("— was in app/reports.py:7 Report.render")
    record = as_json(recovery, lambda t: t + 1_700_000_000)
    assert record["culprit"] == "app/reports.py:7 Report.render"
    assert [f["function"] for f in record["stack"]] == ["Report.render", "Handle._run"]


def test_a_stack_of_an_earlier_block_names_nothing_in_the_next_one():
    fleet = _fleet()
    _beats(fleet, KEY, 0.1, 1.0)
    fleet.evaluate_due(1.25)
    fleet.stack(1.3, KEY, _stack(1.3))
    fleet.beat(1.4, KEY)  # recovered from late
    _beats(fleet, KEY, 1.5, 3.0)
    moves = fleet.evaluate_due(3.25) + fleet.evaluate_due(3.55)
    assert [m.to_state for m in moves] == ["late", "starved"]
    assert all(m.stack is None for m in moves)
    view = Viewer(fleet).view(ViewRequest(detail=KEY), 3.6, 0.0)
    assert view.detail is not None and view.detail.stack is not None and not view.detail.stuck_now


def test_the_first_stack_of_a_starved_block_is_a_line_of_its_own():
    fleet = _fleet()
    _beats(fleet, KEY, 0.1, 1.0)
    fleet.evaluate_due(1.25)
    fleet.evaluate_due(1.55)
    (stuck,) = fleet.stack(2.0, KEY, _stack(2.0))
    assert isinstance(stuck, Stuck)
    assert describe(stuck) == "w1 stuck in app/reports.py:7 Report.render (blocked 200 ms, read by signal)"
    assert fleet.stack(2.1, KEY, _stack(2.1, blocked_ms=400.0)) == []  # later samples replace it quietly
    assert fleet.trackers[KEY].current_stack().blocked_ms == 400.0


def test_a_busy_worker_s_stack_that_comes_before_its_busy_beat_still_names_it():
    fleet = _fleet()
    _beats(fleet, KEY, 0.1, 1.0, blocked_ms=1.0)
    fleet.stack(1.05, KEY, _stack(1.05))  # its heartbeat child read it at 200 ms of block
    (busy,) = fleet.beat(1.1, KEY, main_blocked_ms=250.0)
    assert busy.to_state == "busy" and busy.stack is not None
    _beats(fleet, KEY, 1.2, 2.0, blocked_ms=1200.0)
    (free,) = fleet.beat(2.1, KEY, main_blocked_ms=1.0)
    assert free.to_state == "healthy" and free.stack is not None
    assert abs(free.blocked_s - 1.25) < 1e-6  # from 1.1 - 0.25 to 2.1


def test_culprits_add_up_blocks_workers_and_time_most_time_first():
    fleet = _fleet(KEY, OTHER)
    for key, start, function in ((KEY, 0.1, "Report.render"), (OTHER, 0.1, "Report.render"),
                                 (KEY, 5.0, "Parser.feed")):
        _beats(fleet, key, start, start + 0.5)
        fleet.evaluate_due(start + 0.75)
        fleet.stack(start + 0.8, key, _stack(start + 0.8, function))
        fleet.beat(start + 1.5, key)
    idle = Stack((Frame(file="/usr/lib/python3.11/selectors.py", line=468, function="EpollSelector.select",
                        kind="python"),), 7.6, None, "py-spy", 7.6)
    _beats(fleet, OTHER, 7.0, 7.5)  # a loop waiting for work, silent because the machine was: no culprit
    fleet.evaluate_due(7.75)
    fleet.stack(7.8, OTHER, idle)
    fleet.beat(8.0, OTHER)
    view = Viewer(fleet).view(ViewRequest(culprits=True), 8.0, 0.0)
    ranked = [(c.frame.function, c.workers, c.blocks, round(c.total_s, 3)) for c in view.culprits]
    assert ranked == [("Report.render", ("w1", "w2"), 2, 2.0), ("Parser.feed", ("w1",), 1, 1.0)]
    assert Viewer(fleet).view(ViewRequest(), 8.0, 0.0).culprits == ()  # only when asked


def test_a_block_that_goes_on_busy_after_its_silence_is_counted_once_when_it_ends():
    fleet = _fleet()
    _beats(fleet, KEY, 0.1, 1.0, blocked_ms=1.0)
    fleet.evaluate_due(1.25)  # a thread worker whose block held the GIL: silent first
    fleet.stack(1.3, KEY, _stack(1.3))
    (busy,) = fleet.beat(1.6, KEY, main_blocked_ms=600.0)  # then beating, its loop still blocked
    assert busy.to_state == "busy" and busy.blocked_s is None and describe(busy).endswith("— in app/reports.py:7 "
                                                                                           "Report.render")
    _beats(fleet, KEY, 1.7, 2.5, blocked_ms=1500.0)
    fleet.beat(2.6, KEY, main_blocked_ms=1.0)
    (culprit,) = Viewer(fleet).view(ViewRequest(culprits=True), 3.0, 0.0).culprits
    assert culprit.blocks == 1 and abs(culprit.total_s - 1.6) < 1e-6  # from 1.0 (600 ms before 1.6) to 2.6


def test_a_sample_time_from_a_wrong_clock_is_kept_within_its_block():
    fleet = _fleet()
    _beats(fleet, KEY, 0.1, 1.0)
    fleet.evaluate_due(1.25)
    skewed = Stack(_stack(0.0).frames, -500.0, 200.0, "signal", 1.3)  # the worker's clock is 8 minutes behind
    fleet.stack(1.3, KEY, skewed)
    assert abs(fleet.trackers[KEY].stack.taken_at - 1.2) < 1e-6  # its block began at 1.0, blocked 200 ms
