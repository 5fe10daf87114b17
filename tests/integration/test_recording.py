"""Recordings of real monitors on a real fleet: what they hold, what survives a kill -9,
what happens when they cannot be written, and that a replay judges as the live monitor did."""

from __future__ import annotations

import os
import resource
import signal
import sqlite3
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from heartmon.polling import wait_until
from heartmon.recording.journal import RecordingError
from heartmon.recording.reading import Recording
from tests.conftest import Launch
from tests.harness import HEARTMON, Running


def _events(launch: Launch, url: str, *args: str, env: dict[str, str] | None = None) -> Running:
    return launch("events", url, *args, env=env, ready=None)


def _recorded(path: Path) -> None:
    """Waits until the recording holds the fleet's workers: the monitor is watching."""

    def workers() -> int:
        try:
            return len(Recording(path).workers)
        except RecordingError:  # not there yet, or its tables not yet written
            return 0

    wait_until(lambda: workers() >= 3, 30, "the fleet in the recording")


def _starve(fleet: Running, worker: str = "none-1", seconds: float = 1.5) -> None:
    answer = httpx.post(f"{fleet.http}/api/workers/{worker}/inject", params={"probe": "gil-hold",
                                                                               "duration_s": seconds})
    assert answer.status_code == 202, answer.text


def test_a_starvation_episode_is_recorded_and_replays_as_it_was_judged(launch: Launch, fleet: Running,
                                                                        tmp_path: Path) -> None:
    path = tmp_path / "incident.sqlite"
    events = _events(launch, fleet.url, "--record", str(path))
    _recorded(path)
    _starve(fleet)
    events.read_until(r"none-1 starved → healthy: .*during gil-hold", 30)
    time.sleep(0.6)  # one more flush: the recovery is on disk
    assert events.stop(signal.SIGINT) == 0

    recording = Recording(path)
    moves = [(m.key[1], m.from_state, m.to_state) for m in recording.transitions()]
    assert ("none-1", "healthy", "late") in moves
    assert ("none-1", "late", "starved") in moves
    recovery = next(m for m in recording.transitions() if m.key[1] == "none-1" and m.episode_s is not None)
    assert recovery.to_state == "healthy" and recovery.probe == "gil-hold"
    assert 1.0 < recovery.episode_s < 10 and recovery.missed and recovery.missed > 5
    assert {name for _, name in recording.workers.values()} >= {"none-1", "thread-1", "process-1"}
    assert "ended" in recording.meta  # a clean stop says when

    # The same code, fed the journal, makes every one of the live monitor's judgements.
    check = subprocess.run([*HEARTMON, "replay", str(path), "--verify"], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{len(moves)} state changes, all replayed as recorded" in check.stdout

    # The report of the real run: a page that parses, one plot per worker, the episode's row.
    page = tmp_path / "incident.html"
    done = subprocess.run([*HEARTMON, "report", str(path), "-o", str(page)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    parsed = _Page()
    parsed.feed(page.read_text())
    assert parsed.svgs_per_worker == {name: 1 for _, name in recording.workers.values()}
    row = next(cells for cells in parsed.rows if cells and cells[0] == "none-1")
    assert "gil-hold" in row and "recovered" in row and "starved" in row
    assert "http://" not in page.read_text().replace("http://www.w3.org", "")  # nothing to fetch


class _Page(HTMLParser):
    """The report's worker sections (with the SVGs in each) and its table rows."""

    def __init__(self) -> None:
        super().__init__()
        self.svgs_per_worker: dict[str, int] = {}
        self.rows: list[list[str]] = []
        self._worker: str | None = None
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section" and ("class", "worker") in attrs:
            self._worker = ""
            self._in = "section"
        elif tag == "h3" and self._worker == "":
            self._in = "h3"
        elif tag == "svg" and self._worker:
            self.svgs_per_worker[self._worker] += 1
        elif tag == "tr":
            self.rows.append([])
        elif tag == "td":
            self._in = "td"

    def handle_data(self, data: str) -> None:
        if self._in == "h3" and self._worker == "" and data.strip():
            self._worker = data.strip()
            self.svgs_per_worker[self._worker] = 0
        elif self._in == "td" and self.rows:
            self.rows[-1].append(data.strip())

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._worker = None
        if tag in ("h3", "td"):
            self._in = None


def test_a_recording_survives_a_kill_9_and_loses_at_most_its_last_flush(launch: Launch, fleet: Running,
                                                                        tmp_path: Path) -> None:
    path = tmp_path / "killed.sqlite"
    events = _events(launch, fleet.url, "--record", str(path))
    _recorded(path)
    time.sleep(3)
    killed_at = time.monotonic()  # the monitor's clock is this machine's monotonic clock
    events.proc.kill()
    events.proc.wait(10)

    recording = Recording(path)  # opening takes in the WAL the killed writer left
    assert recording.db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert "ended" not in recording.meta
    beats = recording.db.execute("SELECT count(*) FROM journal WHERE op = 1").fetchone()[0]
    assert beats > 3 * 20 * 2  # three workers at 50 ms, for more than two of the last three seconds
    # flush_ms is 500: what was lost is the last flush's worth, on a loaded machine a little more
    assert killed_at - recording.end < 2.0
    check = subprocess.run([*HEARTMON, "replay", str(path), "--verify"], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_recording_that_cannot_be_written_is_said_once_and_the_monitor_goes_on(launch: Launch, fleet: Running,
                                                                                 tmp_path: Path) -> None:
    events = _events(launch, fleet.url, "--record", "/proc/heartmon/recording.sqlite")
    line = events.read_until(r"not recording: cannot write /proc/heartmon/recording.sqlite", 20).string
    assert "Traceback" not in line
    _starve(fleet, seconds=1.0)
    events.read_until(r"none-1 starved → healthy", 30)  # still watching, and judging


def _no_bigger_than(size: int):
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def test_a_full_disk_stops_the_recording_not_the_monitor(fleet: Running, tmp_path: Path) -> None:
    """The file system refuses the writes (the process may not grow a file past 192 KiB):
    the recording stops with one line, and the monitor keeps judging."""
    path = tmp_path / "full.sqlite"
    events = subprocess.Popen([*HEARTMON, "events", fleet.url, "--record", str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, preexec_fn=_no_bigger_than(192 * 1024))
    running = Running(events)
    try:
        running.read_until(r"recording stopped: cannot write .*full\.sqlite", 90)
        _starve(fleet, seconds=1.0)
        running.read_until(r"none-1 starved → healthy", 30)
    finally:
        running.cleanup()
        events.stderr.close()
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_the_size_limit_stops_a_recording_with_one_line(launch: Launch, fleet: Running, tmp_path: Path) -> None:
    path = tmp_path / "capped.sqlite"
    events = _events(launch, fleet.url, "--record", str(path), env={"HEARTMON_RECORDING__MAX_MB": "0.07"})
    line = events.read_until(r"recording stopped: .*size limit", 60).string
    assert "recording.max_mb" in line
    assert Recording(path).transitions() is not None  # what was written before the limit reads back


def test_old_recordings_are_pruned_when_a_monitor_starts(launch: Launch, fleet: Running, tmp_path: Path) -> None:
    folder = tmp_path / "state" / "heartmon" / "recordings"
    folder.mkdir(parents=True)
    old, recent = folder / "2026-01-01_00-00-00_1.sqlite", folder / "2026-12-01_00-00-00_2.sqlite"
    for path in (old, recent):
        path.write_bytes(b"x" * 1000)
    os.utime(old, (time.time() - 9 * 86400,) * 2)  # older than the default 7 days
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    events = _events(launch, fleet.url, env=env)
    wait_until(lambda: not old.exists(), 10, "the 9-day-old recording to be pruned")
    assert recent.exists()
    new = wait_until(lambda: [p for p in folder.iterdir() if p.suffix == ".sqlite" and p not in (recent,)], 10,
                     "this monitor's own recording")
    _recorded(new[0])
    events.stop(signal.SIGINT)


@pytest.mark.parametrize("args, message", [
    (["replay", "/nonexistent.sqlite"], "/nonexistent.sqlite: no such recording"),
    (["replay", "--verify"], "no recordings in"),
])
def test_replay_of_nothing_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    done = subprocess.run([*HEARTMON, *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "XDG_STATE_HOME": str(tmp_path)})
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_file_that_is_no_recording_and_a_recording_over_a_file_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database")
    done = subprocess.run([*HEARTMON, "replay", str(junk)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "is not a heartmon recording" in done.stderr
    done = subprocess.run([*HEARTMON, "events", "ws://127.0.0.1:1", "--record", str(junk)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and "the file exists" in done.stderr
    assert junk.read_text() == "not a database"  # nothing recorded over it
