"""The Textual monitor. It shows the fleet state; the monitor's ingest thread computes it.

The screen is redrawn on a fixed tick (a few times a second), never per heartbeat: a
thousand workers beating at 10 Hz cost the UI what one tick costs. The app measures
its own loop's lag, beside the ingest loop's, and shows both in the header.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

from rich.text import Text
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Input, RichLog, Static

from heartmon.detector import Transition
from heartmon.monitor import Monitor
from heartmon.report import clock_time, describe
from heartmon.sources import HubSource
from heartmon.commands import Answer, HubClient
from heartmon.tui.model import SORTS, STATE_STYLE, SYMBOL, WORST_FIRST, order, summarize
from heartmon.tui.screens import DetailScreen, HelpScreen, InjectScreen
from heartmon.tui.widgets import FleetTable

LAG_SAMPLE_S = 0.05
LOG_LINES = 500
_LINK = {"connected": ("●", "green"), "connecting": ("◌", "yellow"), "retrying": ("✕", "red")}


class HeartmonApp(App):
    CSS_PATH = "heartmon.tcss"
    TITLE = "heartmon"
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("i", "inject", "inject"),
        Binding("s", "cycle_sort", "sort"),
        Binding("slash", "filter", "filter"),
        Binding("p", "pause", "pause"),
        Binding("question_mark", "help", "help"),
    ]

    def __init__(self, monitor: Monitor, hub_client: HubClient, *, tick_s: float = 0.25,
                 lag_clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__()
        self.monitor = monitor
        self.hub_client = hub_client
        self.tick_s = tick_s
        self.sort = SORTS[0]
        self.filter_text = ""
        self.paused = False
        self.lag_clock = lag_clock
        self.ui_lags_ms: deque[float] = deque(maxlen=100_000)
        """The UI loop's lateness, sampled every 50 ms: what the benchmark reports."""
        self._seen = 0

    def compose(self) -> ComposeResult:
        yield Static(id="sources")
        yield Static(id="summary")
        yield Input(placeholder="filter by name, isolation or state (esc clears)", id="filter")
        yield FleetTable(id="fleet")
        yield RichLog(id="events", max_lines=LOG_LINES, wrap=False, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_view()
        self.set_interval(self.tick_s, self.refresh_view)
        expected = self.lag_clock() + LAG_SAMPLE_S

        def sample_lag() -> None:
            nonlocal expected
            now = self.lag_clock()
            self.ui_lags_ms.append(max(0.0, (now - expected) * 1000))
            expected = now + LAG_SAMPLE_S

        self.set_interval(LAG_SAMPLE_S, sample_lag)
        self.query_one(FleetTable).focus()

    async def on_unmount(self) -> None:
        await self.hub_client.aclose()

    # --- the tick -----------------------------------------------------------------

    def refresh_view(self) -> None:
        monitor = self.monitor
        now = monitor.now()
        with monitor.lock:
            trackers = list(monitor.fleet.trackers.values())
            summary = summarize(monitor.fleet)
            entries = [] if self.paused else monitor.fleet.new_entries(self._seen)
            if not self.paused:
                self._seen = monitor.fleet.logged
        self._show_sources()
        self._show_summary(summary)
        table = self.query_one(FleetTable)
        table.frozen = self.paused
        if self.paused:
            return  # ingest goes on; the table and the log hold still, and catch up after
        table.show(order(trackers, self.sort, self.filter_text), now)
        log = self.query_one("#events", RichLog)
        for entry in entries:
            style = STATE_STYLE[entry.to_state] if isinstance(entry, Transition) else "magenta"
            log.write(Text.assemble((clock_time(entry.at, monitor.wall) + " ", "dim"), (describe(entry), style)))

    def _show_sources(self) -> None:
        line = Text()
        for source in self.monitor.sources:
            symbol, colour = _LINK[source.status.link]
            line.append(f"{symbol} ", style=colour)
            line.append(f"{source.status.label} ")
            line.append(f"{source.status.link}{': ' + source.status.detail if source.status.detail else ''}   ",
                        style="dim")
        if not self.monitor.sources:
            line.append("no sources ", style="dim")
        if self.monitor.crashed:
            line.append(f"ingest stopped: {self.monitor.crashed!r}   ", style="bold red")
        ui_lag = self.ui_lags_ms[-1] if self.ui_lags_ms else 0.0
        line.append(f"monitor lag: ingest {self.monitor.lag_ms:.0f} ms, ui {ui_lag:.0f} ms", style="dim")
        self.query_one("#sources", Static).update(line)

    def _show_summary(self, summary) -> None:
        widget = self.query_one("#summary", Static)
        widget.set_class(summary.no_available_worker, "alarm")
        line = Text()
        if summary.no_available_worker:
            line.append(" NO AVAILABLE WORKER ", style="bold reverse")
            line.append("  ")
        for state in WORST_FIRST:
            count = summary.counts[state]
            style = ("bold" if summary.no_available_worker else STATE_STYLE[state]) if count else "dim"
            line.append(f"{SYMBOL[state]} {state} {count}   ", style=style)
        line.append(f"available {summary.available}/{summary.total}", style="bold")
        line.append(f" · sort: {self.sort}", style="dim")
        if self.filter_text:
            line.append(f" · filter: {self.filter_text}")
        if self.paused:
            line.append(" · ")
            line.append(" PAUSED ", style="bold reverse")
        widget.update(line)

    # --- actions ------------------------------------------------------------------

    def action_cycle_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self.refresh_view()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True  # at once, not on the next refresh: keys typed right after land in it
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.filter_text = event.value
            self.refresh_view()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.query_one(FleetTable).focus()

    def on_key(self, event) -> None:
        box = self.query_one("#filter", Input)
        if box.display and not box.has_focus and event.is_printable and event.character:
            # typed right behind "/", before the focus moved: it belongs to the filter
            box.insert_text_at_cursor(event.character)
            box.focus()
            event.stop()
            return
        if event.key == "escape" and box.has_focus:
            box.value = ""
            box.display = False
            self.query_one(FleetTable).focus()
            event.stop()

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.refresh_view()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_inject(self) -> None:
        self.push_screen(InjectScreen(self.query_one(FleetTable).selected))

    def action_details(self) -> None:
        if worker := self.query_one(FleetTable).selected:
            self.push_screen(DetailScreen(worker))

    def on_fleet_table_selected(self, message: FleetTable.Selected) -> None:
        self.push_screen(DetailScreen(message.worker))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Inject a probe", "Put real load on a worker's main thread", self.action_inject)
        yield SystemCommand("Worker details", "Gaps, distribution, episodes and probes of the selected worker",
                            self.action_details)
        yield SystemCommand("Cycle the sort", f"Sort by: {', '.join(SORTS)}", self.action_cycle_sort)
        yield SystemCommand("Filter workers", "By name, isolation or state", self.action_filter)
        yield SystemCommand("Pause or resume the display", "Ingest goes on while paused", self.action_pause)
        yield SystemCommand("Help", "States and keys", self.action_help)

    # --- commands to hubs -----------------------------------------------------------

    def hub_for(self, worker: str | None) -> str | None:
        """The hub a worker came from, else the first hub source."""
        hubs = [s.status.label for s in self.monitor.sources if isinstance(s, HubSource)]
        return self.monitor.owner.get(worker or "", hubs[0] if hubs else None)

    async def inject(self, target: str, probe: str, duration_s: float) -> list[Answer]:
        """`worker:NAME`, `any`, or `isolation:MODE` (every live worker of that mode)."""
        if target.startswith("isolation:"):
            mode = target.split(":", 1)[1]
            with self.monitor.lock:
                names = sorted(t.name for t in self.monitor.fleet.trackers.values()
                               if t.isolation == mode and t.state != "dead")
            if not names:
                return [Answer(False, f"no live {mode} worker")]
        else:
            names = [target.removeprefix("worker:")]
        answers = []
        for name in names:
            hub = self.hub_for(None if name == "any" else name)
            if hub is None:
                answers.append(Answer(False, "no hub to send commands to: inject works on hub sources (ws://…)"))
            else:
                answers.append(await self.hub_client.inject(hub, name, probe, duration_s))
        return answers

