"""``heartmon report`` on a recording of the scripted fleet: every time and gap in it is
fixed by the script, and the time zone by the test, so the report is too."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from heartmon.config import Settings
from heartmon.recording.reading import Recording
from heartmon.recording.render import html, markdown
from heartmon.recording.report import Span, empty_pool, gather
from heartmon.recording.report_cli import add_parser, cmd_report, parse_time
from tests.tui import scripted


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three workers. none-1 and none-2 starve under gil-hold while thread-1's connection
    is lost (dead): for a while no worker is available. Then both speak again."""
    path = tmp_path_factory.mktemp("recordings") / "incident.sqlite"
    settings = Settings()
    settings = settings.model_copy(update={"recording": settings.recording.model_copy(update={"file": path})})
    script = scripted.Script(fleet=scripted.FLEET[:3], settings=settings)
    script.run(3)
    script.probe("none-1", "gil-hold", 2)
    script.probe("none-2", "regex-backtrack", 2, id="b2")
    script.run(0.7, silent=("none-1", "none-2"))
    script.stack("none-1", scripted.GIL_HOLD, 700)
    script.leave("thread-1")
    script.run(1.3, silent=("none-1", "none-2"))
    script.probe_done("none-1", 2.0)
    script.run(0.5, silent=("none-2",))
    script.probe_done("none-2", 2.5, id="b2")
    script.run(1.5)
    script.monitor.recorder.close(script.clock.t)
    return path


@pytest.fixture(autouse=True)
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Wall-clock times are local: the scripted 11:06:40 UTC is 12:06:40 here."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


class Page(HTMLParser):
    """What the tests look at in a report page."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[tuple[str, dict[str, str | None]]] = []
        """The elements open, outermost first: a page whose tags do not nest fails."""
        self.svgs_per_worker: list[int] = []
        self.episode_rows: list[list[str]] = []
        self.urls: list[str] = []
        self.styles: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name not in ("xmlns", "xmlns:xlink") and value and "//" in value:
                self.urls.append(value)
        self.scripts += tag == "script"
        if tag == "section" and dict(attrs).get("class") == "worker":
            self.svgs_per_worker.append(0)
        if tag == "svg" and self._in("section", "worker"):
            self.svgs_per_worker[-1] += 1
        if tag == "tr" and self._in("table", "episodes") and self.open[-1][0] == "tbody":
            self.episode_rows.append([])
        if tag != "meta":  # the page's only void element
            self.open.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self.open.pop()

    def handle_endtag(self, tag: str) -> None:
        assert self.open.pop()[0] == tag, f"</{tag}> closes nothing open"

    def handle_data(self, data: str) -> None:
        if self.open and self.open[-1][0] == "style":
            self.styles.append(data)
        if self.open and self.open[-1][0] == "td" and self._in("table", "episodes"):
            self.episode_rows[-1].append(data)

    def _in(self, tag: str, css: str) -> bool:
        return any(t == tag and a.get("class") == css for t, a in self.open)


def test_the_html_stands_alone_with_one_plot_per_worker_and_a_row_per_episode(recording: Path) -> None:
    page = Page()
    page.feed(html(gather(Recording(recording))))
    assert page.svgs_per_worker == [1, 1, 1]  # none-1, none-2, thread-1
    assert page.scripts == 0
    assert page.urls == []  # no stylesheet, script, font or image from anywhere
    assert not any("url(" in style or "@import" in style for style in page.styles)
    rows = [(r[0], r[1], r[2], r[3], r[5], r[-1]) for r in page.episode_rows]
    assert rows == [  # from the last beat before the silence
        ("none-2", "12:06:42.988", "2.61 s", "starved", "regex-backtrack", "recovered"),
        ("none-1", "12:06:43.000", "2.09 s", "starved", "gil-hold", "recovered"),
        ("thread-1", "12:06:43.700", "3.30 s", "dead", "—", "died (connection lost)"),  # to the end
    ]


def test_the_same_recording_gives_the_same_page(recording: Path) -> None:
    assert html(gather(Recording(recording))) == html(gather(Recording(recording)))


def test_the_markdown_holds_the_summary_episodes_empty_pool_and_workers(recording: Path, snapshot) -> None:
    md = markdown(gather(Recording(recording)))
    assert "**2 workers starved for" in md
    assert md == snapshot


def test_the_pool_was_empty_while_both_starved_and_the_other_was_dead(recording: Path) -> None:
    report = gather(Recording(recording))
    ((start, end),) = report.empty_pool
    assert report.wall(start).strftime("%H:%M:%S.%f")[:-3] == "12:06:43.700"  # both starved, then thread-1 died
    assert end - start == pytest.approx(1.392)  # until none-1's first beat
    assert report.died == 1


def test_a_window_cuts_states_gaps_and_episodes(recording: Path) -> None:
    whole = Recording(recording)
    report = gather(whole, whole.start + 5, whole.end)
    assert [e.key[1] for e in report.episodes] == ["none-2", "none-1", "thread-1"]  # still under way at 5 s
    assert report.episodes[0].length_s == pytest.approx(2.612)  # whole, though it began before the window
    assert all(s.start >= whole.start + 5 for w in report.workers for s in w.spans)
    assert [round(w.time_in("starved"), 3) for w in report.workers] == [0.092, 0.6, 0.0]
    assert [w.beats for w in report.workers] == [20, 15, 0]  # none-1: its first beat's gap began before 5 s
    assert report.empty_pool == [(whole.start + 5, pytest.approx(1005.092))]
    late = gather(whole, whole.start + 6, whole.end)
    assert [e.key[1] for e in late.episodes] == ["thread-1"]  # dead to the end: that episode goes on


@pytest.mark.parametrize(("text", "offset"), [
    ("+2s", 2.0), ("+1m", 60.0), ("+1.5s", 1.5), ("+500ms", 0.5), ("-1s", 7.0 - 1.0),
    ("12:06:43", 3.0), ("12:06:43.25", 3.25), ("2026-11-18T12:06:42", 2.0), ("2026-11-18T11:06:44+00:00", 4.0),
])
def test_times_are_offsets_local_clock_times_or_iso(recording: Path, text: str, offset: float) -> None:
    r = Recording(recording)
    assert parse_time(text, r, "--since") == pytest.approx(r.start + offset)


def report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="heartmon")
    add_parser(parser.add_subparsers(dest="command"), [])
    return cmd_report(parser.parse_args(["report", *argv]))


@pytest.mark.parametrize(("since", "says"), [
    ("25:99", "--since '25:99': expected HH:MM[:SS]"),
    ("+3 parsecs", "--since '+3 parsecs': expected HH:MM[:SS]"),
    ("yesterday", "--since 'yesterday': expected HH:MM[:SS]"),
    ("13:00", "--since 13:00 is not before the recording's end: the recording runs from 2026-11-18 12:06:40 "
              "to 2026-11-18 12:06:47"),
])
def test_a_bad_since_is_one_line_and_exit_2(recording: Path, since: str, says: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert report([str(recording), "--since", since, "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"heartmon: {says}") and err.count("\n") == 1
    assert not (tmp_path / "r.html").exists()


def test_the_default_is_the_newest_recording_beside_the_current_directory(
        recording: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    assert report(["--format", "md"]) == 2
    assert capsys.readouterr().err == f"heartmon: no recordings in {tmp_path}/state/heartmon/recordings: name one " \
                                      "(FILE)\n"
    folder = tmp_path / "state" / "heartmon" / "recordings"
    folder.mkdir(parents=True)
    (folder / recording.name).write_bytes(recording.read_bytes())
    assert report(["--format", "md"]) == 0
    assert capsys.readouterr().out == "incident.md\n"
    assert (tmp_path / "incident.md").read_text().startswith("# heartmon report: this-host, 2026-11-18 12:06:40")


def test_unknown_workers_leave_the_pool_neither_empty_nor_full() -> None:
    a, b = ("hub", "a"), ("hub", "b")
    spans = {a: [Span(0, 10, "healthy"), Span(10, 30, "starved"), Span(30, 40, "healthy")],
             b: [Span(0, 5, "healthy"), Span(5, 20, "unknown"), Span(20, 25, "dead")]}
    assert empty_pool(spans) == [(10, 30)]  # a starved while b was unknown, then dead, then gone
    only_unknown = {b: [Span(0, 5, "unknown")], a: [Span(5, 8, "dead")]}
    assert empty_pool(only_unknown) == [(5, 8)]  # nothing was known before 5
