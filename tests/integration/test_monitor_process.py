"""The monitor's engine in its own process: the UI is fed through it, a crash of either
side is said in one line, and no process outlives the one that started it."""

import signal
import subprocess
import sys

import psutil

from heartmon.commands import HubClient
from heartmon.config import Settings
from heartmon.monitor_process import MonitorProcess
from heartmon.polling import until
from heartmon.tui.app import HeartmonApp
from tests.harness import wait_gone, wait_until


def _ingest_children(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True)
            if "heartmon.monitor_process" in " ".join(p.cmdline())]


async def test_a_dead_ingest_process_is_said_in_one_line_in_the_header(launch):
    hub = launch("mock", "--port", "0", "--interval-ms", "100", "--workers", "thread:1")
    feed = MonitorProcess(Settings(), [hub.url])
    app = HeartmonApp(feed, HubClient())
    with feed:
        async with app.run_test(size=(130, 34)) as pilot:
            await until(lambda: len(app.view.rows) == 1, 20, "the worker, through the ingest process")
            (child,) = _ingest_children(psutil.Process().pid)
            child.kill()
            await until(lambda: app.view.crashed, 20, "the app to notice")
            await pilot.pause()
            header = str(app.query_one("#sources").render())
    assert "ingest stopped: the ingest process exited (code -9)" in header
    assert header.count("\n") == 0


def test_the_ingest_process_dies_with_the_process_that_started_it(tmp_path):
    script = tmp_path / "ui.py"
    script.write_text(
        "import time\n"
        "from heartmon.config import Settings\n"
        "from heartmon.monitor_process import MonitorProcess\n"
        "feed = MonitorProcess(Settings(), ['ws://127.0.0.1:9']).start()\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    ui = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert ui.stdout.readline().strip() == "started"
        children = wait_until(lambda: _ingest_children(ui.pid), 10, "the ingest process")
        ui.send_signal(signal.SIGKILL)  # a crash: no cleanup code runs
        ui.wait(10)
        assert wait_gone(children, 5) == []
    finally:
        ui.kill()
        ui.wait()
