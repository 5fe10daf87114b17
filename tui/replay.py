"""The monitor's screens on a recording: ``heartmon replay FILE``.

The app is the live one, fed by a :class:`~heartmon.recording.replay.Replay` instead of
the engine: the table, the log, the detail and culprits screens show the fleet as it
was at the replay's time cursor. What changes is the header (REPLAY, the recorded time,
play or pause, the speed) and the keys, which move the cursor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from rich.text import Text
from textual.binding import Binding
from textual.widgets import Static

from heartmon.commands import HubClient
from heartmon.recording.replay import Replay
from heartmon.tui.app import HeartmonApp
from heartmon.tui.screens import HELP_STATES, HelpScreen
from heartmon.view import FleetView

PLAY_TICK_S = 0.1
STEP_S, JUMP_S = 1.0, 10.0

REPLAY_HELP = f"""\
[b]heartmon replay[/b]: the fleet as the monitor saw it, judged again by the same code.

{HELP_STATES}
[b]Keys[/b]
  space  play or pause          + -    faster or slower (1× to 100×)
  → ←    1 s forward or back    ] [    10 s forward or back
  n N    next or previous state change
  e E    next or previous episode (a worker leaving the pool: late, starved or dead)
  g G    the start or the end of the recording
  enter  a worker's details, as they were;  c the top culprits;  s sort;  / filter
  q      quit
"""


class ReplayApp(HeartmonApp):
    TITLE = "heartmon replay"
    BINDINGS = [
        Binding("space", "play", "play/pause"),
        Binding("right", "step(1)", "+1 s", show=False),
        Binding("left", "step(-1)", "-1 s", show=False),
        Binding("right_square_bracket", f"step({JUMP_S})", "+10 s", show=False),
        Binding("left_square_bracket", f"step({-JUMP_S})", "-10 s", show=False),
        Binding("n", "mark(True, False)", "next change"),
        Binding("N", "mark(False, False)", "previous change", show=False),
        Binding("e", "mark(True, True)", "next episode"),
        Binding("E", "mark(False, True)", "previous episode", show=False),
        Binding("plus", "speed(True)", "faster"),
        Binding("minus", "speed(False)", "slower", show=False),
        Binding("g", "go(False)", "start", show=False),
        Binding("G", "go(True)", "end", show=False),
        Binding("i", "inject", show=False),
        Binding("p", "play", show=False),
    ]
    LOG_HINT = ""

    def __init__(self, replay: Replay, *, play_clock: Callable[[], float] = time.monotonic, **kwargs) -> None:
        super().__init__(replay, HubClient(None), **kwargs)
        self.replay = replay
        self.play_clock = play_clock
        self._played_at = play_clock()

    def on_mount(self) -> None:
        super().on_mount()
        self.set_interval(PLAY_TICK_S, self._play)

    def _play(self) -> None:
        now = self.play_clock()
        elapsed, self._played_at = now - self._played_at, now
        if self.replay.playing:
            self._moved(self.replay.advance(elapsed))

    def _moved(self, rebuilt: bool) -> None:
        """The cursor moved. Moving back rebuilt the fleet from the start: the log shown
        is of a later time, so it is written again from what the fleet holds now."""
        if rebuilt:
            self.log_view.clear()
            self._seen = 0
        self.refresh_view()

    # --- keys -----------------------------------------------------------------------

    def action_play(self) -> None:
        replay = self.replay
        if not replay.playing and replay.at >= replay.recording.end:
            self._moved(replay.seek(replay.recording.start))  # at the end, play starts over
        replay.playing = not replay.playing
        self._played_at = self.play_clock()
        self.refresh_view()

    def action_step(self, seconds: float) -> None:
        self._moved(self.replay.step(seconds))

    def action_mark(self, forward: bool, episodes: bool) -> None:
        t = self.replay.next_mark(forward, episodes)
        if t is None:
            self.notify(f"no {'later' if forward else 'earlier'} {'episode' if episodes else 'state change'}",
                        timeout=2)
            return
        self._moved(self.replay.seek(t))

    def action_speed(self, up: bool) -> None:
        self.replay.faster(up)
        self.refresh_view()

    def action_go(self, end: bool) -> None:
        recording = self.replay.recording
        self._moved(self.replay.seek(recording.end if end else recording.start))

    def action_inject(self) -> None:
        self.notify("a replay shows a recording: there is no worker to inject into", timeout=3)

    def action_pause(self) -> None:
        self.action_play()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(REPLAY_HELP))

    # --- the header -----------------------------------------------------------------

    def _show_sources(self, view: FleetView) -> None:
        replay, recording = self.replay, self.replay.recording
        at = datetime.fromtimestamp(recording.wall(replay.at)).astimezone()
        line = Text()
        line.append(" REPLAY ", style="bold reverse")
        line.append(f" {at:%Y-%m-%d %H:%M:%S}.{at.microsecond // 1000:03d} {at:%Z}  ", style="bold")
        line.append("▶ " if replay.playing else "❚❚ ")
        line.append(f"{replay.speed}×   ")
        line.append(f"{_clock(replay.at - recording.start)} / {_clock(recording.end - recording.start)}   ",
                    style="dim")
        sources = ", ".join(s.label for s in view.sources) or "no sources"
        line.append(f"{recording.path.name}: {sources}", style="dim")
        self.query_one("#sources", Static).update(line, layout=False)


def _clock(seconds: float) -> str:
    minutes, rest = divmod(max(0.0, seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{rest:04.1f}" if hours else f"{minutes}:{rest:04.1f}"
