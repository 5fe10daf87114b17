"""Reusable widgets: the fleet table and the gap plot.

The fleet table uses Textual's Line API (like toolong): it renders only the lines on
screen, from the trackers it was handed on the last tick, and keeps each row's strip
by worker key until one of its cells changes. A thousand workers cost what thirty do.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from heartmon.detector import Tracker
from heartmon.tui.model import COLUMNS, WIDTHS, Row, row

_WIDTH = sum(WIDTHS) + len(WIDTHS) - 1


def _cells(cells: tuple[str, ...]) -> list[str]:
    return [cell[:width].ljust(width) for cell, width in zip(cells, WIDTHS)]


class FleetTable(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    FleetTable { height: 1fr; }
    FleetTable > .fleet-table--header { text-style: bold; background: $panel; }
    FleetTable > .fleet-table--cursor { background: $accent 40%; }
    FleetTable > .fleet-table--healthy { color: $success; }
    FleetTable > .fleet-table--busy { color: $primary; text-style: bold; }
    FleetTable > .fleet-table--late { color: $warning; text-style: bold; }
    FleetTable > .fleet-table--starved { color: $error; text-style: bold reverse; }
    FleetTable > .fleet-table--dead { color: $text-muted; text-style: strike; }
    """
    COMPONENT_CLASSES = {
        "fleet-table--header", "fleet-table--cursor",
        "fleet-table--healthy", "fleet-table--busy", "fleet-table--late", "fleet-table--starved", "fleet-table--dead",
    }
    BINDINGS = [
        Binding("up", "move(-1)", "up", show=False),
        Binding("down", "move(1)", "down", show=False),
        Binding("pageup", "move(-20)", show=False),
        Binding("pagedown", "move(20)", show=False),
        Binding("home", "move(-1000000)", show=False),
        Binding("end", "move(1000000)", show=False),
        Binding("enter", "select", "details"),
    ]

    cursor = reactive(0, always_update=True)

    class Selected(Message):
        def __init__(self, worker: str) -> None:
            super().__init__()
            self.worker = worker

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._trackers: list[Tracker] = []
        self._now = 0.0
        self._rows: dict[str, tuple[Row, bool, Strip]] = {}
        self.cursor_key: str | None = None
        self.frozen = False
        """Paused: rows already drawn are redrawn as they were, even on scroll."""

    # --- data -------------------------------------------------------------------

    def show(self, trackers: list[Tracker], now: float) -> None:
        """The new order and the time to judge ages by; drawn lazily, on screen only."""
        self._trackers, self._now = trackers, now
        keys = [t.name for t in trackers]
        if self.cursor_key in keys:
            self.cursor = keys.index(self.cursor_key)
        else:
            self.cursor = min(self.cursor, max(0, len(keys) - 1))
        self.virtual_size = Size(_WIDTH, len(trackers) + 1)
        if len(self._rows) > 2 * len(keys) + 64:  # workers that went away keep no strips
            live = set(keys)
            self._rows = {key: cached for key, cached in self._rows.items() if key in live}
        self.refresh()

    @property
    def selected(self) -> str | None:
        return self._trackers[self.cursor].name if self._trackers else None

    def watch_cursor(self, cursor: int) -> None:
        if self._trackers:
            self.cursor_key = self._trackers[min(cursor, len(self._trackers) - 1)].name
            top, height = int(self.scroll_y), max(1, self.size.height - 1)
            if cursor < top:
                self.scroll_to(y=cursor, animate=False)
            elif cursor >= top + height:
                self.scroll_to(y=cursor - height + 1, animate=False)
        self.refresh()

    def action_move(self, delta: int) -> None:
        if self._trackers:
            self.cursor = max(0, min(len(self._trackers) - 1, self.cursor + delta))

    def action_select(self) -> None:
        if self.selected:
            self.post_message(self.Selected(self.selected))

    def on_click(self, event: Click) -> None:
        index = int(self.scroll_y) + event.y - 1
        if 0 <= index < len(self._trackers):
            self.cursor = index
            if event.chain == 2:
                self.action_select()

    # --- drawing ----------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        scroll_x = int(self.scroll_x)
        if y == 0:
            style = self.get_component_rich_style("fleet-table--header")
            strip = Strip([Segment(" ".join(_cells(COLUMNS)), style)])
        else:
            index = int(self.scroll_y) + y - 1
            if index >= len(self._trackers):
                return Strip.blank(width, self.rich_style)
            strip = self._row_strip(self._trackers[index], index == self.cursor)
        return strip.crop_extend(scroll_x, scroll_x + width, self.rich_style)

    def _row_strip(self, tracker: Tracker, cursor: bool) -> Strip:
        cached = self._rows.get(tracker.name)
        if self.frozen and cached is not None and cached[1] == cursor:
            return cached[2]
        current = row(tracker, self._now)
        if cached is not None and cached[0] == current and cached[1] == cursor:
            return cached[2]
        base = self.rich_style + (self.get_component_rich_style("fleet-table--cursor") if cursor else Style())
        state_style = base + self.get_component_rich_style(f"fleet-table--{current.state}", partial=True)
        cells = _cells(current.cells)
        segments = [Segment(" ".join(cells[:2]) + " ", base), Segment(cells[2], state_style),
                    Segment(" " + " ".join(cells[3:]), base)]
        strip = Strip(segments)
        self._rows[current.key] = (current, cursor, strip)
        return strip


class GapPlot(Widget):
    """A worker's recent gaps as bars, with the late and starvation thresholds drawn."""

    DEFAULT_CSS = """
    GapPlot { height: 12; }
    """

    def __init__(self, gaps: list[float], late_s: float, starved_s: float, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.gaps, self.late_s, self.starved_s = gaps, late_s, starved_s

    def update(self, gaps: list[float], late_s: float, starved_s: float) -> None:
        self.gaps, self.late_s, self.starved_s = gaps, late_s, starved_s
        self.refresh()

    def render(self) -> Text:
        """A log scale from an eighth of the late threshold up: ordinary gaps and a
        starvation of seconds are both readable on one plot."""
        height = max(3, self.size.height - 1)
        width = max(10, self.size.width - 26)  # the axis and the threshold labels
        gaps = self.gaps[-width:]
        bottom = self.late_s / 8
        top = max([self.starved_s * 2, *gaps])
        bounds = [bottom * (top / bottom) ** (k / height) for k in range(height + 1)]
        rows = []
        for level in range(height, 0, -1):
            low, high = bounds[level - 1], bounds[level]
            line = Text(f"{high * 1000:>7.0f}ms ", style="dim")
            marker = "starved" if low <= self.starved_s < high else "late" if low <= self.late_s < high else None
            for gap in gaps:
                colour = "red" if gap >= self.starved_s else "yellow" if gap >= self.late_s else "green"
                if gap >= high:
                    line.append("█", style=colour)
                elif gap > low:
                    line.append("▄", style=colour)
                elif marker:
                    line.append("─", style="red" if marker == "starved" else "yellow")
                else:
                    line.append(" ")
            if marker:
                line.append(f" {marker} {(self.starved_s if marker == 'starved' else self.late_s) * 1000:.0f}ms",
                            style="red" if marker == "starved" else "yellow")
            rows.append(line)
        rows.append(Text(f"{'':>10}{len(gaps)} most recent gaps, oldest left (log scale)", style="dim"))
        return Text("\n").join(rows)
