"""The bindings, driven with Textual's Pilot: on the scripted fleet, and one inject
through the dialog to a real hub that reaches a real worker."""

import asyncio

import httpx

from heartmon.config import Settings
from heartmon.monitor import Monitor
from heartmon.tui.app import HeartmonApp
from heartmon.commands import HubClient
from heartmon.tui.screens import DetailScreen, HelpScreen, InjectScreen
from heartmon.tui.widgets import FleetTable
from tests.harness import wait_until, workers
from tests.tui import scripted


def _order(app: HeartmonApp) -> list[str]:
    return [t.name for t in app.query_one(FleetTable)._trackers]


async def test_worst_first_then_s_cycles_the_sort():
    script = scripted.starving()
    app = script.app()
    async with app.run_test(size=(130, 34)) as pilot:
        await pilot.pause()
        assert _order(app)[:2] == ["none-1", "process-1"]  # starved, then busy
        await pilot.press("s")
        assert app.sort == "name" and _order(app) == sorted(_order(app))
        await pilot.press("s")
        assert app.sort == "max gap"
        await pilot.press("s", "s")
        assert app.sort == "worst first"


async def test_slash_filters_by_name_isolation_or_state_and_escape_clears():
    app = scripted.starving().app()
    async with app.run_test(size=(130, 34)) as pilot:
        await pilot.press("slash", *"thread")
        await pilot.pause()
        assert _order(app) == ["thread-1", "thread-2"]
        await pilot.press(*"-1")
        assert _order(app) == ["thread-1"]
        await pilot.press("escape")
        await pilot.pause()
        assert len(_order(app)) == 6 and app.filter_text == ""
        await pilot.press("slash", *"starved")
        await pilot.pause()
        assert _order(app) == ["none-1"]


async def test_p_pauses_the_display_while_ingest_goes_on():
    script = scripted.starving()
    app = script.app()
    async with app.run_test(size=(130, 34)) as pilot:
        await pilot.press("p")
        assert app.paused
        assert "PAUSED" in str(app.query_one("#summary").render())
        shown = list(app.query_one(FleetTable)._trackers)
        script.leave("thread-1")  # the monitor still takes this in
        script.run(0.5, silent=("none-1",))
        app.refresh_view()
        assert app.query_one(FleetTable)._trackers == shown
        assert script.monitor.fleet.trackers["thread-1"].state == "dead"
        await pilot.press("p")
        assert not app.paused and _order(app)[:3] == ["none-1", "thread-1", "process-1"]


async def test_enter_opens_details_escape_returns_and_question_mark_helps():
    app = scripted.recovered().app()
    async with app.run_test(size=(130, 34)) as pilot:
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen)
        await pilot.press("escape")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("i")
        assert isinstance(app.screen, InjectScreen)


async def test_the_command_palette_knows_the_actions():
    app = scripted.healthy().app()
    async with app.run_test(size=(130, 34)) as pilot:
        titles = [command.title for command in app.get_system_commands(app.screen)]
        for expected in ("Inject a probe", "Worker details", "Cycle the sort", "Filter workers",
                         "Pause or resume the display", "Help"):
            assert expected in titles
        await pilot.press("ctrl+p", *"cycle the sort", "enter")
        await pilot.pause()
        assert app.sort == "name"


async def _until(predicate, what: str, timeout_s: float = 20.0):
    """Polls without blocking the app's loop; generous, as a person would wait."""
    for _ in range(int(timeout_s / 0.05)):
        if value := predicate():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


async def test_an_inject_from_the_dialog_reaches_a_real_worker(launch):
    hub = launch("mock", "--port", "0", "--interval-ms", "50", "--workers", "thread:1,process:1")
    with httpx.Client(base_url=hub.http, timeout=10) as client:
        wait_until(lambda: len(workers(client)) == 2, 30, "the workers")
    monitor = Monitor(Settings(), [hub.url])
    app = HeartmonApp(monitor, HubClient())
    with monitor:
        async with app.run_test(size=(130, 34)) as pilot:
            await _until(lambda: len(monitor.fleet.trackers) == 2, "the monitor to see both workers")
            await pilot.press("s")  # by name: process-1 first, under the cursor
            await pilot.press("i")
            await _until(lambda: app.screen.query_one("#inject-probes").option_count, "the hub's probe list")
            await pilot.press("enter")  # the first probe, busy-python, for 5 s, into process-1
            answer = await _until(lambda: (text := str(app.screen.query_one("#inject-answer").render()))
                                  .startswith("202") and text, "the hub's answer")
            assert answer.startswith("202: busy-python for 5 s into process-1")
            runs = await _until(lambda: list(monitor.fleet.probes["process-1"]), "the worker to report the probe")
            assert runs[-1].probe == "busy-python"  # it really ran there
