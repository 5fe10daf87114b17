"""Reusable widgets: the fleet table and the gap plot.

The fleet table uses Textual's Line API (like toolong): it holds the frozen rows of the
last view (the ones on screen, with a margin), renders only the lines on screen, and
keeps rendered strips in an LRU cache keyed by the row's content: a row that did not
change is not formatted again. Scrolling or moving the cursor asks the engine for the
rows now wanted; the table never sorts, counts or reads a tracker.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.cache import LRUCache
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from heartmon.detector import Key
from heartmon.tui.model import COLUMNS, STATE_COLUMN, STRIP_TITLE, cells, fit, fixed_width, layout, strip_width
from heartmon.view import FleetView, RowView


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
    FleetTable > .fleet-table--unknown { color: $secondary; text-style: italic; }
    """
    COMPONENT_CLASSES = {
        "fleet-table--header", "fleet-table--cursor",
        "fleet-table--healthy", "fleet-table--busy", "fleet-table--late", "fleet-table--starved",
        "fleet-table--dead", "fleet-table--unknown",
    }
    BINDINGS = [
        Binding("up", "move(-1)", "up", show=False),
        Binding("down", "move(1)", "down", show=False),
        Binding("pageup", "move(-20)", show=False),
        Binding("pagedown", "move(20)", show=False),
        Binding("home", "move(-1000000000)", show=False),
        Binding("end", "move(1000000000)", show=False),
        Binding("enter", "select", "details"),
    ]

    cursor = reactive(0, always_update=True)

    class Selected(Message):
        def __init__(self, worker: Key) -> None:
            super().__init__()
            self.worker = worker

    class Wants(Message):
        """The rows on screen or the cursor changed: the app asks for a new view."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.view = FleetView(at=0.0, wall_offset=0.0)
        self.cursor_key: Key | None = None
        self.show_source = False
        self._strips: LRUCache[tuple, Strip] = LRUCache(1024)

    # --- data -------------------------------------------------------------------

    def show(self, view: FleetView) -> None:
        """The new frozen rows; drawn lazily, on screen only. The cursor follows its
        worker when the order changes."""
        self.view = view
        # Two sources of one kind (two hubs, two brokers) may each have a worker-1: then a
        # name says its source. Workers of different kinds are told apart by their kind.
        kinds = [source.kind for source in view.sources]
        self.show_source = len(kinds) != len(set(kinds))
        size = Size(fixed_width(layout(self.size.width)) + self.strip_width, view.matching + 1)
        if size != self.virtual_size:
            self.virtual_size = size
        if view.cursor != self.cursor:
            self.cursor = view.cursor
        else:
            self._sync_key()
        self.refresh()

    @property
    def strip_width(self) -> int:
        return strip_width(self.size.width)

    @property
    def rows_wanted(self) -> tuple[int, int]:
        """(offset, count): the rows on screen, with a screen's margin either side, so
        that a step of the cursor or a page is drawn before the engine answers."""
        height = max(1, self.size.height - 1)
        return max(0, int(self.scroll_y) - height), 3 * height

    @property
    def selected(self) -> Key | None:
        return self.cursor_key

    def selected_row(self) -> RowView | None:
        return self.view.row_at(self.cursor)

    def _sync_key(self) -> None:
        row = self.view.row_at(self.cursor)
        if row is not None:
            self.cursor_key = row.key

    def watch_cursor(self, cursor: int) -> None:
        self._sync_key()
        top, height = int(self.scroll_y), max(1, self.size.height - 1)
        if cursor < top:
            self.scroll_to(y=cursor, animate=False)
        elif cursor >= top + height:
            self.scroll_to(y=cursor - height + 1, animate=False)
        self.refresh()

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self.post_message(self.Wants())

    def on_resize(self) -> None:
        self.post_message(self.Wants())

    def action_move(self, delta: int) -> None:
        if self.view.matching:
            self.cursor = max(0, min(self.view.matching - 1, self.cursor + delta))
            if self.view.row_at(self.cursor) is None:
                self.cursor_key = None  # not drawn yet: the engine resolves it by index
            self.post_message(self.Wants())

    def action_select(self) -> None:
        if self.selected:
            self.post_message(self.Selected(self.selected))

    def on_click(self, event: Click) -> None:
        index = int(self.scroll_y) + event.y - 1
        if 0 <= index < self.view.matching:
            self.cursor = index
            self.post_message(self.Wants())
            if event.chain == 2:
                self.action_select()

    # --- drawing ----------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        scroll_x = int(self.scroll_x)
        base = self.rich_style
        if y == 0:
            style = self.get_component_rich_style("fleet-table--header")
            title = " ".join(fit(COLUMNS, layout(width))) + " " + STRIP_TITLE
            strip = Strip([Segment(title, style)])
        else:
            index = int(self.scroll_y) + y - 1
            row = self.view.row_at(index)
            if row is None:
                return Strip.blank(width, base)
            strip = self._row_strip(row, index == self.cursor, base)
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def _row_strip(self, row: RowView, cursor: bool, base: Style) -> Strip:
        """Formats the row's cells (cheap) and looks the strip up by what they say: a row
        whose text did not change since the last view is not rendered again."""
        shown = layout(self.size.width)
        name = f"{row.name}@{_short(row.source)}" if self.show_source else None
        fixed = tuple(fit(cells(row, name), shown))
        key = (fixed, row.state, row.strip, row.strip_tail, cursor, base)
        strip = self._strips.get(key)
        if strip is None:
            strip = self._strips[key] = self._format(row, fixed, shown, cursor, base)
        return strip

    def _format(self, row: RowView, fixed: tuple[str, ...], shown: tuple[int, ...], cursor: bool,
                base: Style) -> Strip:
        if cursor:
            base = base + self.get_component_rich_style("fleet-table--cursor")
        state_style = base + self.get_component_rich_style(f"fleet-table--{row.state}", partial=True)
        at = shown.index(STATE_COLUMN)
        segments = [Segment(" ".join(fixed[:at]) + " ", base), Segment(fixed[at], state_style),
                    Segment(" " + " ".join(fixed[at + 1:]) + " ", base)]
        if row.strip:  # two segments at most: a row's cost to draw does not grow with its beats
            beats = base + self.get_component_rich_style("fleet-table--healthy", partial=True)
            head, tail = row.strip[:len(row.strip) - row.strip_tail], row.strip[len(row.strip) - row.strip_tail:]
            if head:
                segments.append(Segment(head, beats))
            if tail:
                segments.append(Segment(tail, state_style if row.state != "healthy" else beats))
        return Strip(segments)


def _short(source: str) -> str:
    """A source's label without its scheme, to tell two hubs' workers apart in a cell."""
    return source.split("://", 1)[-1].split("=", 1)[0]


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
