"""The detail screen, the culprits screen, the inject dialog and the help screen."""

from __future__ import annotations

from itertools import groupby
from typing import TYPE_CHECKING

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from heartmon.commands import NO_HUB
from heartmon.detector import Key
from heartmon.fleet_state import ProbeRun
from heartmon.protocol import ISOLATIONS, Frame
from heartmon.report import clock_time, describe
from heartmon.stacks import Stack, where
from heartmon.tui.model import STATE_STYLE, SYMBOL, age, ms
from heartmon.tui.widgets import GapPlot
from heartmon.view import BUCKETS, CulpritView, DetailView, FleetView

if TYPE_CHECKING:
    from heartmon.tui.app import HeartmonApp


class OfHeartmon:
    """Screens that read the app's views and call its commands."""

    @property
    def heartmon(self) -> HeartmonApp:
        return self.app  # type: ignore[attr-defined]  # a mixin: the Screen it is mixed into has .app


class DetailScreen(OfHeartmon, Screen):
    """One worker: its gaps over time against the thresholds, where its main thread is
    (or last was) stuck beside its episodes, then their distribution and the probes it
    ran. While it is open, the app's requests ask for this worker's details, and every
    view that comes back is shown here."""

    BINDINGS = [Binding("escape", "app.pop_screen", "back"), Binding("i", "app.inject", "inject"),
                Binding("r", "read_stack", "read its stack now")]

    def __init__(self, worker: Key) -> None:
        super().__init__()
        self.worker = worker

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail"):
            yield Static(id="detail-title")
            yield GapPlot([], 0.2, 0.5, id="detail-plot")
            with Horizontal(classes="detail-columns"):
                yield Static(id="detail-stuck")
                yield Static(id="detail-episodes")
            with Horizontal(classes="detail-columns"):
                yield Static(id="detail-distribution")
                yield Static(id="detail-probes")
        yield Footer()

    def on_mount(self) -> None:
        self.heartmon.ask()  # this worker's details, now rather than on the next tick

    def action_read_stack(self) -> None:
        """py-spy reads a local worker once per block by itself; this reads it now, busy or not."""
        self.heartmon.ask(spy=self.worker)

    def show(self, d: DetailView, view: FleetView) -> None:
        r = d.row
        title = Text.assemble(
            (f"{r.name}", "bold"), f"  {r.isolation or 'http'}  pid {d.pid or '–'} on {d.host or '–'}  ",
            (f"{SYMBOL[r.state]} {r.state}", STATE_STYLE[r.state]),
            f"  last beat {age(r.silence_s)} ago  every {ms(r.interval_s)}  "
            f"p50 {ms(d.p50_s)}  p99 {ms(r.p99_s)}  max {ms(r.max_s)}  "
            f"jitter {ms(d.jitter_s)}  missed {r.missed}  episodes {r.episodes}"
            + (f"  loop lag {d.loop_lag_ms:.0f}ms" if d.loop_lag_ms is not None else "")
            + (f"  answer {d.latency_ms:.0f}ms" if d.latency_ms is not None else ""),
        )
        # What a system heartmon did not write says besides its beats, and what its own
        # tooling concludes: the reason the dashboard already on screen disagrees. (An
        # agent's running probe is in the probes column instead.)
        notes = [(f"doing: {d.doing}", "") if d.doing and not d.probes else None,
                 (f"alive because: {d.vouched}", "bold") if d.vouched else None,
                 (d.native, "bold red" if d.native.endswith("offline") else "green") if d.native else None]
        for note in filter(None, notes):
            title.append("\n")
            title.append(*note)
        self.query_one("#detail-title", Static).update(title)
        self.query_one(GapPlot).update(list(d.gaps), d.late_s, d.starved_s)
        self.query_one("#detail-stuck", Static).update(_stuck_in(d, view))
        self.query_one("#detail-distribution", Static).update(_distribution(d.distribution, d.window))
        self.query_one("#detail-episodes", Static).update(self._episodes(d.entries, view))
        self.query_one("#detail-probes", Static).update(_probes(d.probes, view))

    def _episodes(self, entries: tuple, view: FleetView) -> Text:
        text = Text("episodes\n", style="bold")
        for entry in entries:
            text.append(f"{clock_time(entry.at, view.wall)} ", style="dim")
            text.append(describe(entry).removeprefix(f"{self.worker[1]} ") + "\n")
        if not entries:
            text.append("none yet\n", style="dim")
        return text


NO_STACK = "no stack yet: one is taken when the main loop is blocked past the late threshold"
DIMMED = {"python": "Python", "heartmon": "heartmon"}
"""Frames of the interpreter and of heartmon's machinery, by the name a fold says: they
surround the culprit, and are rarely what the on-call engineer can change."""


def _stuck_in(d: DetailView, view: FleetView) -> Group | Text:
    """Where the main thread is stuck in the block under way, or was in the last one:
    when and how the stack was read, then its frames. Frames are cut at the panel's
    edge rather than wrapped, so that each stays one line under its location; like the
    other columns, it ends with a blank line."""
    stack = d.stack
    head = Text()
    title = ("stuck in (now)" if d.stuck_now else "stuck in" if stack is None
             else "read on request" if stack.via.endswith("asked") else "last stuck in")
    head.append(title, style="bold red" if d.stuck_now else "bold")
    if stack is not None:
        blocked = ms(stack.blocked_ms / 1000 if stack.blocked_ms is not None else None)
        head.append(f"\ntaken {clock_time(stack.taken_at, view.wall)} · blocked {blocked} · read by {stack.via}",
                    style="dim")
    if d.stack_note:
        head.append(f"\n{d.stack_note}", style="yellow")
    elif stack is None:
        head.append(f"\n{NO_STACK}", style="dim")
    return Group(head, _frames(stack)) if stack is not None else head.append("\n")


def _frames(stack: Stack) -> Text:
    """Innermost first, and runs of two or more dimmed frames folded into one line (never
    the culprit: a worker stuck in the interpreter's own code is named there)."""
    text = Text(no_wrap=True, overflow="ellipsis")
    culprit = stack.culprit if stack.frames else None
    for folded, run in groupby(stack.frames, key=lambda frame: frame.kind in DIMMED and frame is not culprit):
        frames = list(run)
        if folded and len(frames) > 1:
            kinds = {frame.kind for frame in frames}
            owners = " and ".join(name for kind, name in DIMMED.items() if kind in kinds)
            text.append(f"  … {len(frames)} frames of {owners}\n", style="dim")
            continue
        for frame in frames:
            _frame(text, frame, _frame_style(frame, culprit))
    if stack.more:
        text.append(f"  … at least {stack.more} outer frames not sent\n", style="dim")
    return text


def _frame_style(frame: Frame, culprit: Frame | None) -> str:
    """The culprit in reverse, the app's other frames bold, libraries' plain, the rest dim."""
    if frame is culprit:
        return "bold reverse"
    if frame.kind in DIMMED:
        return "dim"
    return "bold" if frame.kind == "app" else ""


def _frame(text: Text, frame: Frame, style: str) -> None:
    """Its location, and its source line under it."""
    text.append(where(frame), style=style)
    text.append("\n")
    if frame.code:
        text.append(f"    {frame.code}\n", style="dim" if style == "dim" else "italic")


def _probes(runs: tuple[ProbeRun, ...], view: FleetView) -> Text:
    text = Text("probes\n", style="bold")
    for run in runs[-12:]:
        when = clock_time(run.started_at, view.wall)
        outcome = ("running…" if run.elapsed_s is None else f"{run.elapsed_s:.2f} s"
                   + (f", error: {run.error}" if run.error else ""))
        text.append(f"{when} ", style="dim")
        text.append(f"{run.probe} {run.duration_s:g} s: {outcome}\n")
    if not runs:
        text.append("none yet\n", style="dim")
    return text


def _distribution(counts: tuple[int, ...], window: int) -> Text:
    text = Text(f"gap distribution ({window} gaps, × interval)\n", style="bold")
    top = max(counts, default=0) or 1
    for (_, label), count in zip(BUCKETS, counts, strict=True):  # a count per bucket (view.detail_of)
        bar = "█" * round(20 * count / top)
        style = "red" if "starved" in label else "yellow" if "late" in label else "green"
        text.append(f"{label:>13} ")
        text.append(f"{bar:<20}", style=style)
        text.append(f" {count}\n")
    return text


class CulpritsScreen(OfHeartmon, Screen):
    """The functions the fleet's main loops were blocked in, most time first. While it is
    open, the app's requests ask for them (a sort no other screen pays for), and every
    view that comes back is shown here."""

    BINDINGS = [Binding("escape", "app.pop_screen", "back"),
                Binding("c", "app.pop_screen", "back", show=False)]  # c again closes it, as ? closes help

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="culprits"):
            yield Static(Text.assemble(
                ("top culprits", "bold"), ": the functions main loops were blocked in, most time blocked first\n",
                ("each block with a stack taken during it counts once, for the whole of its length", "dim"),
            ), id="culprits-title")
            yield Static(id="culprits-list")
        yield Footer()

    def on_mount(self) -> None:
        self.heartmon.ask()  # the culprits, now rather than on the next tick

    def show(self, view: FleetView) -> None:
        self.query_one("#culprits-list", Static).update(_culprits(view.culprits, view))


TOP_CULPRITS = 50
"""Rows the culprits screen shows; the rest are counted in one line."""
NO_CULPRIT = "no culprit yet: a function is counted when a block with a stack taken during it ends"


def _culprits(culprits: tuple[CulpritView, ...], view: FleetView) -> Text:
    """One culprit a row, its code line under its function; the workers it blocked are
    cut at the screen's edge."""
    text = Text(no_wrap=True, overflow="ellipsis")
    if not culprits:
        text.append(NO_CULPRIT, style="dim")
        return text
    shown = culprits[:TOP_CULPRITS]
    width = min(60, max(len(where(c.frame)) for c in shown))
    lead = f"{'blocked':>9} {'blocks':>6}  {'last':<12}  "  # the function column starts after it
    text.append(f"{lead}{'function':<{width}}  workers it blocked\n", style="bold")
    for c in shown:
        text.append(f"{c.total_s:>7.1f} s {c.blocks:>6}  ")
        text.append(f"{clock_time(c.last_at, view.wall)}  ", style="dim")
        text.append(f"{where(c.frame):<{width}}", style="bold")
        text.append(f"  {', '.join(c.workers)}\n")
        if c.frame.code:
            text.append(f"{'':{len(lead)}}{c.frame.code}\n", style="dim")
    if len(culprits) > len(shown):
        text.append(f"… {len(culprits) - len(shown)} more, each blocked for less\n", style="dim")
    return text


class InjectScreen(OfHeartmon, ModalScreen[None]):
    """Pick a probe, a duration and a target (the row under the cursor first). When the
    hub accepts, the dialog closes and a toast says so, so that the worker can be seen
    starving; a refusal stays in the dialog, with the hub's reason."""

    BINDINGS = [Binding("escape", "dismiss", "close")]

    def __init__(self, selected: Key | None) -> None:
        super().__init__()
        self.selected = selected

    def compose(self) -> ComposeResult:
        name = self.selected[1] if self.selected else None
        targets = ([(f"{name} (selected)", f"worker:{name}")] if name else [])
        targets += [("any available worker", "any")]
        targets += [(f"every {mode} worker", f"isolation:{mode}") for mode in ISOLATIONS]
        with Vertical(id="inject-dialog"):
            yield Label("Inject load into a worker's main thread", id="inject-title")
            yield OptionList(id="inject-probes")
            with Horizontal(classes="inject-row"):
                yield Label("duration (s)")
                yield Input("5", id="inject-duration", restrict=r"[0-9.]*")
                yield Label("target")
                yield Select(targets, value=targets[0][1], allow_blank=False, id="inject-target")
            with Horizontal(classes="inject-row"):
                yield Button("Inject", variant="primary", id="inject-send")
                yield Button("Close", id="inject-close")
            yield Static("loading the hub's probes…", id="inject-answer")

    async def on_mount(self) -> None:
        self.run_worker(self._load_probes(), exclusive=True)

    async def _load_probes(self) -> None:
        answer = self.query_one("#inject-answer", Static)
        hub = self.heartmon.hub_for(self.selected)
        if hub is None:
            answer.update(NO_HUB)
            return
        try:
            probes = await self.heartmon.hub_client.probes(hub)
        except Exception as exc:  # shown, not raised: the dialog stays usable
            answer.update(Text(f"cannot list the hub's probes: {exc}", style="red"))
            return
        options = self.query_one("#inject-probes", OptionList)
        for probe in probes:
            options.add_option(Option(Text.assemble((probe["name"], "bold"), "\n  ", (probe["description"], "dim")),
                                      id=probe["name"]))
        options.highlighted = 0
        options.focus()
        answer.update(f"hub {hub}: {len(probes)} probes")

    async def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        await self.send()  # enter on a probe sends it

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "inject-close":
            self.dismiss()
        elif event.button.id == "inject-send":
            await self.send()

    async def send(self) -> None:
        answer = self.query_one("#inject-answer", Static)
        options = self.query_one("#inject-probes", OptionList)
        if options.highlighted is None:
            answer.update(Text("choose a probe first", style="red"))
            return
        probe = options.get_option_at_index(options.highlighted).id
        try:
            duration = float(self.query_one("#inject-duration", Input).value)
        except ValueError:
            answer.update(Text("the duration must be a number of seconds", style="red"))
            return
        target = str(self.query_one("#inject-target", Select).value)
        answers = await self.heartmon.inject(target, str(probe), duration)
        if answers and all(one.ok for one in answers):
            self.app.notify("\n".join(one.text for one in answers), title="injected", timeout=4)
            self.dismiss()
            return
        text = Text()
        for one in answers:
            text.append(one.text + "\n", style="green" if one.ok else "red")
        answer.update(text)


HELP_STATES = """\
[b]States[/b]
  ● healthy   beats arrive on time
  ◑ busy      beats on time, main loop blocked: isolated heavy work (only thread/process agents can say)
  ◌ late      silent past the late threshold
  ▲ starved   silent past the starvation threshold while alive (connection open, or pid burning CPU)
  ✕ dead      connection closed, process gone, or silent past dead_after with no evidence of life
  ? unknown   its source (a hub) is unreachable: nothing is known, it is not counted in the pool
"""

HELP = f"""\
[b]heartmon[/b]: which workers are starved, which are dead, which are busy but isolated.

{HELP_STATES}
[b]Keys[/b]
  enter  a worker's details: gaps over time, where it is stuck, episodes, distribution, probes
         (there, r reads its stack now with py-spy: a local worker, whatever it is doing)
  i      inject a probe (load) into a worker, any worker, or every worker of a mode
  c      the top culprits: the functions main loops were blocked in, most time first
  s      cycle the sort: worst first, name, max gap, missed
  /      filter by name, isolation or state (esc clears)
  p      pause the display (ingest goes on)
  ctrl+p the command palette
  q      quit (and stop every process heartmon started)
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "dismiss", "close"), Binding("question_mark", "dismiss", "close")]

    def __init__(self, text: str = HELP) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static(self.text)
            yield Label("esc to close", classes="dim")
