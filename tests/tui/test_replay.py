"""`heartmon replay` on a recording of the scripted fleet: the table before, during and
after none-1's starvation episode, reached with the replay's own keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from heartmon.config import Settings
from heartmon.recording.reading import Recording
from heartmon.recording.replay import Replay
from heartmon.tui.replay import ReplayApp
from tests.tui import scripted

WIDE = (130, 34)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s healthy, none-1 starved for 4.3 s under gil-hold with its stack sent, then
    healthy again; thread-2 leaves (dead) at the end."""
    path = tmp_path_factory.mktemp("replay") / "incident.sqlite"
    settings = Settings()
    settings = settings.model_copy(update={"recording": settings.recording.model_copy(update={"file": path})})
    script = scripted.Script(settings=settings)
    script.run(10)
    script.probe("none-1", "gil-hold", 5)
    script.run(0.7, silent=("none-1",))
    script.stack("none-1", scripted.GIL_HOLD, 700)
    script.run(3.5, silent=("none-1",))
    script.probe_done("none-1", 5.0)
    script.run(2)
    script.leave("thread-2")
    script.run(1)
    assert script.monitor.recorder is not None
    script.monitor.recorder.close(script.clock.t)
    return path


def _app(path: Path) -> ReplayApp:
    return ReplayApp(Replay(Recording(path)), lag_clock=lambda: 0.0, play_clock=lambda: 0.0)


def _keys(*keys: str):
    async def press(pilot) -> None:
        await pilot.press(*keys)
        await pilot.pause()
        await pilot.pause(0.1)

    return press


def test_before_the_episode_every_worker_is_healthy(snap_compare, recording: Path):
    """`]` jumps 10 s: 0.3 s before none-1 goes late."""
    assert snap_compare(_app(recording), terminal_size=WIDE, run_before=_keys("right_square_bracket"))


def test_during_the_episode_none_1_is_starved_and_its_stack_is_in_the_log(snap_compare, recording: Path):
    """`e` jumps to the episode's start (late), `→` one second on: starved, stuck in gil-hold."""
    assert snap_compare(_app(recording), terminal_size=WIDE, run_before=_keys("e", "right"))


def test_after_the_episode_none_1_recovered_and_thread_2_is_dead(snap_compare, recording: Path):
    """`G` goes to the end."""
    assert snap_compare(_app(recording), terminal_size=WIDE, run_before=_keys("G"))


def test_replay_makes_the_live_monitors_transitions(recording: Path) -> None:
    replay = Replay(Recording(recording))
    assert replay.verify() == []
    moves = [(m.key[1], m.from_state, m.to_state) for m in replay.recording.transitions()]
    assert moves == [("none-1", "healthy", "late"), ("none-1", "late", "starved"), ("none-1", "starved", "healthy"),
                     ("thread-2", "healthy", "dead")]


def test_stepping_back_rebuilds_the_fleet_as_it_was(recording: Path) -> None:
    replay = Replay(Recording(recording))
    start = replay.recording.start
    replay.seek(start + 11.5)
    assert replay.view().counts["starved"] == 1
    assert replay.seek(start + 5) is True  # back: built again from the first input
    assert replay.view().counts["healthy"] == 6 and replay.view().logged == 0
    assert replay.next_mark(forward=True, episodes=True) == pytest.approx(start + 10.3)
    replay.seek(replay.recording.end)
    assert replay.view().counts["dead"] == 1
