"""``heartmon report``: a recording as an incident report, HTML or Markdown.

Times are given as an on-call engineer has them at hand: the wall-clock time from a
log line or an alert (local time, on the recording's day), a full ISO date-time, or a
distance from the recording's start (``+30s``) or end (``-2m``, the last two minutes).
Bad input is one line and exit code 2, as everywhere in heartmon.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path

from heartmon.recording.journal import RecordingError
from heartmon.recording.reading import Recording, named
from heartmon.recording.render import html, markdown
from heartmon.recording.report import gather

TIME_HELP = ("HH:MM[:SS] (local time on the recording's day), an ISO date-time (2026-11-18T12:06:50, local unless "
             "it has an offset), +DURATION after the recording's start or -DURATION before its end (units ms, s, "
             "m, h: +30s, -2m, +1m30s)")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_CLOCK = re.compile(r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?")


class ReportError(Exception):
    """Bad input for a report: one line for the user."""


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    report = sub.add_parser("report", parents=parents, help="write an incident report of a recording (HTML or "
                                                            "Markdown)")
    report.add_argument("file", nargs="?", type=Path, metavar="FILE",
                        help="a recording (default: the newest in $XDG_STATE_HOME/heartmon/recordings)")
    report.add_argument("--since", metavar="TIME", help=f"start of the report: {TIME_HELP} (default: the start)")
    report.add_argument("--until", metavar="TIME", help="end of the report, written as --since (default: the end)")
    report.add_argument("--format", choices=("html", "md"), default="html",
                        help="a standalone HTML page with plots, or Markdown for a ticket (default: html)")
    report.add_argument("-o", "--output", metavar="FILE",
                        help="where to write it, '-' for standard output (default: the recording's name with "
                             ".html or .md, in the current directory)")
    return report


def cmd_report(args: argparse.Namespace) -> int:
    try:
        recording = named(args.file)
        path = recording.path
        try:
            since = parse_time(args.since, recording, "--since") if args.since else recording.start
            until = parse_time(args.until, recording, "--until") if args.until else recording.end
            _check_window(recording, since, until, args)
            report = gather(recording, max(since, recording.start), min(until, recording.end))
        finally:
            recording.close()
        text = html(report) if args.format == "html" else markdown(report)
        if args.output == "-":
            sys.stdout.write(text)
            return 0
        out = Path(args.output) if args.output else Path(path.name).with_suffix(f".{args.format}")
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ReportError(f"cannot write {out}: {exc.strerror or exc}") from None
    except (ReportError, RecordingError) as exc:
        print(f"heartmon: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


def parse_time(text: str, recording: Recording, flag: str) -> float:
    """``text`` on the monitor's clock of ``recording``."""
    text = text.strip()
    if text[:1] in "+-":
        parts = _DURATION.findall(text[1:])
        if not parts or "".join(n + u for n, u in parts) != text[1:]:
            raise ReportError(f"{flag} {text!r}: expected {TIME_HELP}")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
        return recording.start + seconds if text[0] == "+" else recording.end - seconds
    start = datetime.fromtimestamp(recording.wall(recording.start)).astimezone()
    try:
        if _CLOCK.fullmatch(text):
            clock = datetime.strptime(text, "%H:%M:%S.%f" if "." in text else
                                      "%H:%M:%S" if text.count(":") == 2 else "%H:%M").time()
            when = datetime.combine(start.date(), clock).astimezone()
            if when < start - timedelta(minutes=1) and when + timedelta(days=1) <= _end(recording):
                when += timedelta(days=1)  # the recording ran past midnight
        else:
            when = datetime.fromisoformat(text)
            when = when.astimezone() if when.tzinfo is None else when
    except ValueError:
        raise ReportError(f"{flag} {text!r}: expected {TIME_HELP}") from None
    return when.timestamp() - recording.wall_offset


def _end(recording: Recording) -> datetime:
    return datetime.fromtimestamp(recording.wall(recording.end)).astimezone()


def _check_window(recording: Recording, since: float, until: float, args: argparse.Namespace) -> None:
    def clock(t: float) -> str:
        return datetime.fromtimestamp(recording.wall(t)).astimezone().strftime("%Y-%m-%d %H:%M:%S")

    span = f"the recording runs from {clock(recording.start)} to {clock(recording.end)}"
    if since >= recording.end:
        raise ReportError(f"--since {args.since} is not before the recording's end: {span}")
    if until <= recording.start:
        raise ReportError(f"--until {args.until} is not after the recording's start: {span}")
    if since >= until:
        raise ReportError(f"--since {args.since} is not before --until {args.until}")
