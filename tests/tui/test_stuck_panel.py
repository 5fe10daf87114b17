"""The detail screen's "stuck in" panel on views the scripted fleet does not make: a
py-spy stack with no blocked time and no source lines, a note beside an old stack, a
stack wholly of the interpreter's frames, a library between the app's frames."""

import io
from dataclasses import replace

from rich.console import Console
from textual.widgets import Static

from heartmon.protocol import Frame
from heartmon.stacks import Stack
from heartmon.tui.screens import NO_STACK, DetailScreen
from heartmon.view import ViewRequest
from tests.tui import scripted

PYTHON = [Frame(file="/usr/lib/python3.11/threading.py", line=line, function="Condition.wait", kind="python")
          for line in (320, 331, 622)]
LIBRARY = Frame(file="/srv/venv/lib/python3.11/site-packages/pandas/core/frame.py", line=1700,
                function="DataFrame.apply", code="return op.apply()", kind="library")


async def _shown(*cases: dict) -> list[str]:
    """The panel's text for each case (a stack, stuck_now, a note). The screen is opened on
    a worker the fleet does not have, so that no arriving view draws over the cases."""
    script = scripted.starving()
    real = script.monitor.view(ViewRequest(detail=(scripted.HUB, "none-1"))).detail
    assert real is not None
    app = script.app()
    texts = []
    async with app.run_test(size=(130, 34)) as pilot:
        screen = DetailScreen((scripted.HUB, "nobody"))
        await app.push_screen(screen)
        for case in cases:
            screen.show(replace(real, **case), app.view)
            await pilot.pause()
            panel = screen.query_one("#detail-stuck", Static)
            console = Console(width=panel.size.width, file=io.StringIO(), record=True)
            console.print(panel.content)
            texts.append(console.export_text())
    return texts


def _case(stack: Stack | None = None, stuck_now: bool = False, note: str | None = None) -> dict:
    return {"stack": stack, "stuck_now": stuck_now, "stack_note": note}


def _stack(frames, blocked_ms: float | None = 700.0, via: str = "signal", more: int = 0) -> Stack:
    return Stack(tuple(frames), scripted.START + 1, blocked_ms, via, scripted.START + 1, more)


async def test_the_panel_says_what_it_knows_whatever_is_missing():
    nothing, noted, spied, old_and_noted, empty = await _shown(
        _case(),
        _case(note=scripted.NO_PTRACE),
        _case(_stack([frame.model_copy(update={"code": None}) for frame in scripted.GIL_HOLD], None, "py-spy", 3),
              stuck_now=True),
        _case(_stack(scripted.GIL_HOLD), note="py-spy timed out"),
        _case(_stack([])),
    )
    assert " ".join(nothing.split()) == f"stuck in {NO_STACK}"
    assert "ptrace is not permitted" in noted and NO_STACK not in noted
    assert spied.splitlines()[:3] == ["stuck in (now)", "taken 11:06:41.000 · blocked – · read by py-spy",
                                      "probes/builtin.py:43 GilHold.run"]
    assert "… at least 3 outer frames not sent" in spied and "any(map" not in spied
    assert old_and_noted.splitlines()[:3] == ["last stuck in", "taken 11:06:41.000 · blocked 700ms · read by signal",
                                              "py-spy timed out"]
    assert empty.splitlines()[:2] == ["last stuck in", "taken 11:06:41.000 · blocked 700ms · read by signal"]


async def test_the_culprit_is_never_folded_and_libraries_are_shown():
    interpreter, library = await _shown(
        _case(_stack(PYTHON)),
        _case(_stack([*PYTHON[:2], LIBRARY, scripted.GIL_HOLD[0], *scripted.OUTER])),
    )
    # nothing of the app's or a library's: the innermost frame is named, the two below it folded
    assert interpreter.splitlines()[2:4] == ["python3.11/threading.py:320 Condition.wait",
                                             "  … 2 frames of Python"]
    assert library.splitlines()[2:] == [
        "  … 2 frames of Python",
        "core/frame.py:1700 DataFrame.apply",
        "    return op.apply()",
        "probes/builtin.py:43 GilHold.run",
        "    any(map(deadline.__lt__, starmap(time.monotonic, repeat(()))))",
        "  … 4 frames of Python and heartmon",
        "app/main.py:12 <module>",
        "    asyncio.run(main())",
        "",
    ]
