"""The bindings, driven with Textual's Pilot: on the scripted fleet, and one inject
through the dialog to a real hub that reaches a real worker."""


import httpx
from textual.widgets import Select

from heartmon.commands import HubClient
from heartmon.config import Settings
from heartmon.monitor_process import MonitorProcess
from heartmon.polling import until
from heartmon.tui.app import HeartmonApp
from heartmon.tui.screens import CulpritsScreen, DetailScreen, HelpScreen, InjectScreen
from heartmon.tui.widgets import FleetTable
from tests.harness import wait_until, workers
from tests.tui import scripted


def _order(app: HeartmonApp) -> list[str]:
    """The names in the table, top to bottom, as the app was last handed them."""
    return [row.name for row in app.query_one(FleetTable).view.rows]


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
        shown = app.query_one(FleetTable).view.rows
        script.leave("thread-1")  # the monitor still takes this in
        script.run(0.5, silent=("none-1",))
        app.refresh_view()
        assert app.query_one(FleetTable).view.rows == shown
        assert script.state("thread-1") == "dead"
        await pilot.press("p")
        assert not app.paused and _order(app)[:3] == ["none-1", "thread-1", "process-1"]


async def test_enter_opens_details_escape_returns_and_question_mark_helps():
    app = scripted.recovered().app()
    async with app.run_test(size=(130, 34)) as pilot:
        main = app.screen
        await pilot.press("down", "enter")  # the second row's details
        assert isinstance(app.screen, DetailScreen) and app.screen.worker == app.view.rows[1].key
        await pilot.pause()
        assert app.view.detail is not None and app.view.detail.row.key == app.screen.worker
        await pilot.press("escape")
        assert app.screen is main
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert app.screen is main
        await pilot.press("i")
        assert isinstance(app.screen, InjectScreen)
        await pilot.pause()
        target = app.screen.query_one("#inject-target", Select).value
        assert target == f"worker:{app.view.rows[1].name}"  # the row under the cursor, by default


async def test_c_shows_the_culprits_asked_for_only_while_open_and_escape_returns():
    app = scripted.recovered().app()
    async with app.run_test(size=(130, 34)) as pilot:
        main = app.screen
        assert app.view.culprits == ()  # not asked for: they cost a sort
        await pilot.press("c")
        assert isinstance(app.screen, CulpritsScreen)
        await pilot.pause()
        shown = str(app.screen.query_one("#culprits-list").render())
        assert "probes/builtin.py:43 GilHold.run" in shown and "none-1, process-1" in shown
        await pilot.press("escape")
        assert app.screen is main
        app.ask()
        assert app.view.culprits == ()


async def test_the_command_palette_knows_the_actions():
    app = scripted.healthy().app()
    async with app.run_test(size=(130, 34)) as pilot:
        titles = [command.title for command in app.get_system_commands(app.screen)]
        for expected in ("Inject a probe", "Worker details", "Top culprits", "Cycle the sort", "Filter workers",
                         "Pause or resume the display", "Help"):
            assert expected in titles
        await pilot.press("ctrl+p", *"cycle the sort", "enter")
        await pilot.pause()
        assert app.sort == "name"


async def test_an_inject_from_the_dialog_reaches_a_real_worker(launch):
    hub = launch("mock", "--port", "0", "--interval-ms", "50", "--workers", "thread:1,process:1")
    with httpx.Client(base_url=hub.http, timeout=10) as client:
        wait_until(lambda: len(workers(client)) == 2, 30, "the workers")
    feed = MonitorProcess(Settings(), [hub.url])  # the engine in its own process, as `heartmon watch` runs it
    app = HeartmonApp(feed, HubClient())
    with feed:
        async with app.run_test(size=(130, 34)) as pilot:
            await until(lambda: len(app.view.rows) == 2, 20, "the monitor to see both workers")
            await pilot.press("s")  # by name: process-1 first, under the cursor
            await pilot.press("i")
            await until(lambda: app.screen.query_one("#inject-probes").option_count, 20, "the hub's probe list")
            await pilot.press("enter")  # the first probe, busy-python, for 5 s, into process-1
            await until(lambda: not isinstance(app.screen, InjectScreen), 20, "the dialog to close on the hub's 202")
            (toast,) = app._notifications
            assert toast.title == "injected" and toast.message.startswith("202: busy-python for 5 s into process-1")
            await pilot.press("enter")  # the details of process-1 show the run the worker reported
            runs = await until(lambda: app.view.detail and app.view.detail.probes, 20, "the worker to report the probe")
            assert runs[-1].probe == "busy-python"  # it really ran there
