"""The Textual monitor. It shows frozen views of the fleet; the engine computes them.

The engine runs in another process (``heartmon watch`` and bare ``heartmon``) or
in-process (tests, on a scripted fleet): either way the app only sends a
:class:`~heartmon.view.ViewRequest` and draws the :class:`~heartmon.view.FleetView`
that comes back. It asks on a fixed tick (a few times a second, never per heartbeat)
and whenever the rows it needs change (a scroll, a key, the sort). It measures its own
loop's lag, beside the ingest loop's, and shows both in the header.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from rich.text import Text
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Input, RichLog, Static

from heartmon.commands import NO_HUB, Answer, HubClient
from heartmon.detector import Key
from heartmon.report import clock_time, describe
from heartmon.tui.model import SORTS, STATE_STYLE, SYMBOL, WORST_FIRST, entry_style
from heartmon.tui.screens import CulpritsScreen, DetailScreen, HelpScreen, InjectScreen
from heartmon.tui.widgets import FleetTable
from heartmon.view import FleetView, ViewRequest

LAG_SAMPLE_S = 0.05
LOG_LINES = 500
LOG_PER_VIEW = 50
"""A whole fleet going silent at once is a thousand entries; writing them all would
stall the screen for a fifth of a second, so a view writes its newest ones."""
_LINK = {"connected": ("●", "green"), "connecting": ("◌", "yellow"), "retrying": ("✕", "red")}


class Feed(Protocol):
    """Where views come from: :class:`heartmon.monitor.Monitor` in-process, or
    :class:`heartmon.monitor_process.MonitorProcess`, which also needs the UI's loop."""

    def subscribe(self, callback: Callable[[FleetView], None]) -> None: ...
    def request(self, request: ViewRequest) -> None: ...


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
        Binding("c", "culprits", "culprits"),  # last: on a narrow footer it gives way before help does
    ]
    LOG_HINT = ": `heartmon events` has them all"

    def __init__(self, feed: Feed, hub_client: HubClient, *, tick_s: float = 0.25,
                 lag_clock: Callable[[], float] = time.perf_counter,
                 on_quit: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.feed = feed
        self.on_quit = on_quit
        """Called the moment the user quits: stopping the embedded fleet overlaps the
        screen's teardown, and the terminal comes back sooner."""
        self.hub_client = hub_client
        self.tick_s = tick_s
        self.sort = SORTS[0]
        self.filter_text = ""
        self.paused = False
        self.lag_clock = lag_clock
        self.ui_lags_ms: deque[float] = deque(maxlen=100_000)
        """The UI loop's lateness, sampled every 50 ms: what the benchmark reports."""
        self.view = FleetView(at=0.0, wall_offset=0.0)
        """The newest view: everything the screens show comes from here."""
        self._seen = 0
        # Held, not queried: the tick and arriving views use them without a lookup.
        self.table = FleetTable(id="fleet")
        self.log_view = RichLog(id="events", max_lines=LOG_LINES, wrap=False, markup=False)
        self.filter_box = Input(placeholder="filter by name, isolation or state (esc clears)", id="filter")

    def compose(self) -> ComposeResult:
        yield Static(id="sources")
        yield Static(id="summary")
        yield self.filter_box
        yield self.table
        yield self.log_view
        yield Footer()

    def on_mount(self) -> None:
        self.feed.subscribe(self._on_view)
        attach = getattr(self.feed, "attach", None)
        if attach is not None:
            attach(asyncio.get_running_loop())
        self.ask()
        self.set_interval(self.tick_s, self.ask)
        expected = self.lag_clock() + LAG_SAMPLE_S

        def sample_lag() -> None:
            nonlocal expected
            now = self.lag_clock()
            self.ui_lags_ms.append(max(0.0, (now - expected) * 1000))
            expected = now + LAG_SAMPLE_S

        self.set_interval(LAG_SAMPLE_S, sample_lag)
        self.table.focus()

    async def on_unmount(self) -> None:
        await self.hub_client.aclose()

    # --- asking and drawing -------------------------------------------------------

    def ask(self, spy: Key | None = None) -> None:
        """Asks the engine for the view the screen needs now; it arrives in :meth:`_on_view`.
        ``spy``: a worker whose stack py-spy should read now."""
        if not self.is_running:
            return  # quitting: the screens are being torn down, and a tick may still fire
        table, screen = self.table, self.screen
        offset, height = table.rows_wanted
        detail = screen.worker if isinstance(screen, DetailScreen) else None
        self.feed.request(ViewRequest(
            sort=self.sort, filter=self.filter_text, offset=offset, height=height, cursor=table.cursor_key,
            cursor_index=table.cursor, detail=detail, seen=self._seen, strip_width=table.strip_width,
            culprits=isinstance(screen, CulpritsScreen), spy=spy,
        ))

    def refresh_view(self) -> None:
        """Draws the newest view again, and asks for a fresh one."""
        self._on_view(self.view)
        self.ask()

    def _on_view(self, view: FleetView) -> None:
        self.view = view
        if not self.is_running:
            return  # quitting: a view may still arrive while the screens are torn down
        self._show_sources(view)
        self._show_summary(view)
        table, screen = self.table, self.screen
        if isinstance(screen, DetailScreen) and view.detail is not None:
            screen.show(view.detail, view)
        elif isinstance(screen, CulpritsScreen):
            screen.show(view)
        if self.paused:
            return  # ingest goes on; the table and the log hold still, and catch up after
        table.show(view)
        log = self.log_view
        first = view.logged - len(view.entries)  # the number of the view's first entry
        fresh = view.entries[max(0, self._seen - first):]
        if len(fresh) > LOG_PER_VIEW:
            skipped = len(fresh) - LOG_PER_VIEW
            log.write(Text(f"… {skipped} more entries at once, not shown{self.LOG_HINT}", "dim"))
            fresh = fresh[skipped:]
        for entry in fresh:
            when = clock_time(entry.at, view.wall)
            log.write(Text.assemble((when + " ", "dim"), (describe(entry), entry_style(entry))))
        self._seen = max(self._seen, view.logged)

    def _show_sources(self, view: FleetView) -> None:
        line = Text()
        for source in view.sources:
            symbol, colour = _LINK.get(source.link, ("?", "red"))
            line.append(f"{symbol} ", style=colour)
            line.append(f"{source.label} ")
            line.append(f"{source.link}{': ' + source.detail if source.detail else ''}   ", style="dim")
            if source.refused:
                line.append(f"{source.refused} refused (last: {source.last_refused})   ", style="yellow")
        if not view.sources:
            line.append("no sources ", style="dim")
        if view.crashed:
            line.append(f"ingest stopped: {view.crashed}   ", style="bold red")
        if view.recording.startswith("recording to"):
            line.append("● REC   ", style="red")
        elif view.recording.startswith(("recording stopped", "not recording:")):
            line.append(f"{view.recording}   ", style="yellow")
        ui_lag = self.ui_lags_ms[-1] if self.ui_lags_ms else 0.0
        line.append(f"monitor lag: ingest {view.ingest_lag_ms:.0f} ms, ui {ui_lag:.0f} ms", style="dim")
        self.query_one("#sources", Static).update(line, layout=False)  # one line, whatever it says

    def _show_summary(self, view: FleetView) -> None:
        widget = self.query_one("#summary", Static)
        widget.set_class(view.no_available_worker, "alarm")
        line = Text()
        if view.no_available_worker:
            line.append(" NO AVAILABLE WORKER ", style="bold reverse")
            line.append("  ")
        unknown = view.counts.get("unknown", 0)
        if unknown:
            down = sum(1 for s in view.sources if s.link != "connected")
            line.append(f" {unknown} UNKNOWN: {down} source{'s' if down != 1 else ''} down, not counted ",
                        style="bold reverse magenta")
            line.append("  ")
        for state in WORST_FIRST:
            count = view.counts.get(state, 0)
            if state == "unknown":
                continue  # said loudly above when there are any
            style = ("bold" if view.no_available_worker else STATE_STYLE[state]) if count else "dim"
            line.append(f"{SYMBOL[state]} {state} {count}   ", style=style)
        line.append(f"available {view.available}/{view.total - unknown}", style="bold")
        line.append(f" · sort: {self.sort}", style="dim")
        if self.filter_text:
            line.append(f" · filter: {self.filter_text}")
        if self.paused:
            line.append(" · ")
            line.append(" PAUSED ", style="bold reverse")
        widget.update(line, layout=False)

    def on_fleet_table_wants(self, message: FleetTable.Wants) -> None:
        self.ask()

    # --- actions ------------------------------------------------------------------

    async def action_quit(self) -> None:
        if self.on_quit is not None:
            self.on_quit()
        self.exit()

    def action_cycle_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self.refresh_view()

    def action_filter(self) -> None:
        box = self.filter_box
        box.display = True  # at once, not on the next refresh: keys typed right after land in it
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.filter_text = event.value
            self.refresh_view()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.table.focus()

    def on_key(self, event) -> None:
        box = self.filter_box
        if box.display and not box.has_focus and event.is_printable and event.character:
            # typed right behind "/", before the focus moved: it belongs to the filter
            box.insert_text_at_cursor(event.character)
            box.focus()
            event.stop()
            return
        if event.key == "escape" and box.has_focus:
            box.value = ""
            box.display = False
            self.table.focus()
            event.stop()

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.refresh_view()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_inject(self) -> None:
        self.push_screen(InjectScreen(self.table.selected))

    def action_details(self) -> None:
        if worker := self.table.selected:
            self.push_screen(DetailScreen(worker))

    def action_culprits(self) -> None:
        self.push_screen(CulpritsScreen())

    def on_fleet_table_selected(self, message: FleetTable.Selected) -> None:
        self.push_screen(DetailScreen(message.worker))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Inject a probe", "Put real load on a worker's main thread", self.action_inject)
        yield SystemCommand("Worker details", "Gaps, distribution, episodes and probes of the selected worker",
                            self.action_details)
        yield SystemCommand("Top culprits", "The functions main loops were blocked in, most time first",
                            self.action_culprits)
        yield SystemCommand("Cycle the sort", f"Sort by: {', '.join(SORTS)}", self.action_cycle_sort)
        yield SystemCommand("Filter workers", "By name, isolation or state", self.action_filter)
        yield SystemCommand("Pause or resume the display", "Ingest goes on while paused", self.action_pause)
        yield SystemCommand("Help", "States and keys", self.action_help)

    # --- commands to hubs -----------------------------------------------------------

    @property
    def hubs(self) -> list[str]:
        """The sources commands can be sent to."""
        return [s.label for s in self.view.sources if s.kind == "hub"]

    def hub_for(self, worker: Key | None) -> str | None:
        """The hub a worker came from, else the first hub source."""
        hubs = self.hubs
        if worker is not None and worker[0] in hubs:
            return worker[0]
        return hubs[0] if hubs else None

    async def inject(self, target: str, probe: str, duration_s: float) -> list[Answer]:
        """`worker:NAME`, `any`, or `isolation:MODE` (every available worker of that mode,
        as the hub lists them: the hub is the one that must reach them)."""
        hubs = self.hubs
        if not hubs:
            return [Answer(False, NO_HUB)]
        if target.startswith("isolation:"):
            mode = target.split(":", 1)[1]
            sends = []
            for hub in hubs:
                try:
                    listed = await self.hub_client.workers(hub)
                except Exception as exc:  # shown, not raised: the dialog stays usable
                    return [Answer(False, f"cannot list the workers of {hub}: {exc}")]
                sends += [(hub, w["worker"]) for w in listed if w["isolation"] == mode and w["available"]]
            if not sends:
                return [Answer(False, f"no available {mode} worker")]
        elif target == "any":
            sends = [(hubs[0], "any")]
        else:
            key = self.table.selected
            name = target.removeprefix("worker:")
            own = self.hub_for(key if key is not None and key[1] == name else None)
            assert own is not None  # there are hubs
            sends = [(own, name)]
        return [await self.hub_client.inject(hub, name, probe, duration_s) for hub, name in sends]
