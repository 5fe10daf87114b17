"""Snapshots of the real app on a scripted fleet (tests/tui/scripted.py). The heartbeat
strip is in each: healthy rows (healthy), a starving one (starvation in progress), a
recovered one (busy after recovery, and the detail screen).

Plain `def` tests: pytest-textual-snapshot runs the app itself. Regenerate after a
deliberate change with `pytest tests/tui --snapshot-update`, then look at the SVGs.
"""

from textual.widgets import Input

from heartmon.detector import Key
from heartmon.tui.screens import DetailScreen
from tests.tui import scripted

WIDE = (130, 34)


async def _settle(pilot) -> None:
    for box in pilot.app.screen.query(Input):
        box.cursor_blink = False
    await pilot.pause()
    await pilot.pause(0.1)


def test_healthy_fleet(snap_compare):
    assert snap_compare(scripted.healthy().app(), terminal_size=WIDE, run_before=_settle)


def test_starvation_in_progress(snap_compare):
    assert snap_compare(scripted.starving().app(), terminal_size=WIDE, run_before=_settle)


def test_a_dead_worker(snap_compare):
    assert snap_compare(scripted.one_dead().app(), terminal_size=WIDE, run_before=_settle)


def test_a_busy_isolated_worker_after_recovery(snap_compare):
    script = scripted.recovered()
    script.probe("process-2", "busy-python", 3, id="e7")
    script.blocked["process-2"] = 0.0
    script.run(0.8)
    assert snap_compare(script.app(), terminal_size=WIDE, run_before=_settle)


def test_no_available_worker_banner(snap_compare):
    assert snap_compare(scripted.none_available().app(), terminal_size=WIDE, run_before=_settle)


def test_detail_screen(snap_compare):
    """After recovery: where none-1 was last stuck, and the episode that names it."""

    async def open_none_1(pilot) -> None:
        await pilot.press("enter")  # the cursor starts on the first row: none-1 after recovery? sorted by worst
        await _settle(pilot)

    app = scripted.recovered().app()
    app.sort = "name"
    assert snap_compare(app, terminal_size=WIDE, run_before=open_none_1)


def test_inject_dialog_targets_the_row_under_the_cursor(snap_compare):
    async def open_dialog(pilot) -> None:
        await pilot.press("down", "down", "i")
        await _settle(pilot)
        await pilot.press("down")
        await _settle(pilot)

    assert snap_compare(scripted.starving().app(), terminal_size=WIDE, run_before=open_dialog)


def test_an_accepted_inject_closes_the_dialog_with_a_toast_at_80x24(snap_compare):
    async def inject(pilot) -> None:
        await pilot.press("i")
        await _settle(pilot)
        await pilot.press("down", "enter")
        await _settle(pilot)

    assert snap_compare(scripted.healthy().app(), terminal_size=(80, 24), run_before=inject)


def test_a_lost_hub_shows_its_workers_unknown(snap_compare):
    assert snap_compare(scripted.hub_down().app(), terminal_size=WIDE, run_before=_settle)


def test_starvation_at_80x24(snap_compare):
    assert snap_compare(scripted.starving().app(), terminal_size=(80, 24), run_before=_settle)


def test_real_systems_beside_heartmons_own_workers(snap_compare):
    assert snap_compare(scripted.systems().app(), terminal_size=WIDE, run_before=_settle)


def _details(worker: Key):
    """Opens a worker's detail screen, wherever its row is."""
    async def open_details(pilot) -> None:
        pilot.app.push_screen(DetailScreen(worker))
        await _settle(pilot)

    return open_details


def test_a_starved_celery_worker_says_what_celery_would_show(snap_compare):
    assert snap_compare(scripted.systems().app(), terminal_size=WIDE,
                        run_before=_details((scripted.CELERY, scripted.SOLO)))


def test_the_detail_screen_says_where_a_starved_worker_is_stuck_now(snap_compare):
    assert snap_compare(scripted.starving().app(), terminal_size=WIDE, run_before=_details((scripted.HUB, "none-1")))


def test_a_worker_py_spy_may_not_read_says_why_it_has_no_stack(snap_compare):
    script = scripted.healthy()
    script.probe("none-2", "gil-hold", 5)
    script.run(0.3, silent=("none-2",))
    script.stack_note("none-2", scripted.NO_PTRACE)  # py-spy is tried once the worker is late
    script.run(0.9, silent=("none-2",))
    assert snap_compare(script.app(), terminal_size=WIDE, run_before=_details((scripted.HUB, "none-2")))


def test_the_culprits_screen_ranks_the_functions_that_blocked_main_loops(snap_compare):
    async def open_culprits(pilot) -> None:
        await pilot.press("c")
        await _settle(pilot)

    assert snap_compare(scripted.two_culprits().app(), terminal_size=WIDE, run_before=open_culprits)
