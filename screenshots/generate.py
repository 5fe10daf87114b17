"""Regenerates the SVG screenshots of the README from the real app on the real mock fleet.

    make screenshots

Starts `heartmon mock` (six real worker processes), opens the monitor on it headless,
injects real load through the hub and saves what the screen shows at each step. Never
edit the SVGs by hand: run this again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from heartmon.commands import HubClient
from heartmon.config import Settings
from heartmon.mock import EmbeddedMock
from heartmon.monitor_process import MonitorProcess
from heartmon.polling import until
from heartmon.tui.app import HeartmonApp
from heartmon.view import RowView

HERE = Path(__file__).parent
SIZE = (130, 34)


async def main() -> None:
    with EmbeddedMock(["--port", "0", "--workers", "none:2,thread:2,process:2", "--interval-ms", "100"]) as url:
        feed = MonitorProcess(Settings(), [url])
        app = HeartmonApp(feed, HubClient())

        def row(name: str) -> RowView | None:
            return next((r for r in app.view.rows if r.name == name), None)

        def state(name: str) -> str | None:
            return r.state if (r := row(name)) else None

        with feed:
            async with app.run_test(size=SIZE) as pilot:
                await until(lambda: len(app.view.rows) == 6
                             and all(r.state == "healthy" and r.p99_s is not None for r in app.view.rows),
                            30, "a healthy fleet")
                await pilot.pause(10.5)  # a full heartbeat strip
                app.save_screenshot("healthy.svg", str(HERE))

                await app.inject("worker:none-1", "gil-hold", 5)
                await app.inject("worker:process-1", "gil-hold", 5)
                await until(lambda: state("none-1") == "starved" and state("process-1") == "busy",
                            30, "none-1 starved and process-1 busy")
                await pilot.pause(1.0)
                app.save_screenshot("starving.svg", str(HERE))

                await until(lambda: state("none-1") == "healthy" and row("none-1").episodes,
                            30, "none-1 to recover")
                await pilot.press("s")  # by name: none-1 under the cursor
                await pilot.press("enter")
                await pilot.pause(1.0)
                app.save_screenshot("detail.svg", str(HERE))

                await pilot.press("escape", "c")  # gil-hold's function, in none-1 and process-1
                await pilot.pause(1.0)
                app.save_screenshot("culprits.svg", str(HERE))

                await pilot.press("escape", "i")
                await pilot.pause(1.0)
                await pilot.press("down", "down")
                await pilot.pause(0.3)
                app.save_screenshot("inject.svg", str(HERE))
    print(f"wrote {', '.join(sorted(p.name for p in HERE.glob('*.svg')))} to {HERE}")


if __name__ == "__main__":
    asyncio.run(main())
