"""A :class:`~heartmon.recording.report.Report` as one HTML file, or as Markdown for a ticket.

The HTML stands alone: its style is inline and its plots are inline SVG drawn by pygal
with its tooltip script left out, so it opens the same from an attachment, offline, in
years. Each worker has one SVG: its states as a band under its gaps between beats,
drawn against its late and starved thresholds, every worker on the same time axis, so
the sections read down the page as one timeline. Nothing in it depends on when or where
it was made (pygal's random chart ids are replaced and its dated comment taken out),
so the same recording gives the same file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import escape
from xml.etree import ElementTree

import pygal
from pygal.etree import etree
from pygal.style import Style

from heartmon.recording.report import EpisodeRow, Report, WorkerReport
from heartmon.report import clock_time

COLOURS = {"healthy": "#2f9e44", "busy": "#1c7ed6", "late": "#f2c200", "starved": "#f76707", "dead": "#c92a2a",
           "unknown": "#868e96"}
GAP, LATE, STARVED = "#343a40", "#e0a800", "#d9480f"
PLOT_BINS = 600
"""Gaps drawn per worker at most: about one per pixel column of the plot."""

PAGE_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1000px; padding: 0 1em; color: #212529; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #dee2e6; }
.summary { font-size: 1.15em; font-weight: 600; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: .25em .6em; }
th { background: #f1f3f5; } tr:nth-child(even) td { background: #f8f9fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } code { font-size: .9em; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .1em 1em; } dt { color: #868e96; }
section.worker h3 { margin-bottom: 0; } section.worker p { margin: .2em 0; color: #495057; }
section.worker svg { width: 100%; height: auto; }
"""


def html(report: Report) -> str:
    title = f"heartmon report: {report.host}, {_span(report)}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', '<head><meta charset="utf-8">', f"<title>{escape(title)}</title>",
        f"<style>{PAGE_STYLE}</style></head>", "<body>", f"<h1>{escape(title)}</h1>",
        f'<p class="summary">{escape(summary(report))}</p>', "<dl>",
        *(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts(report)), "</dl>",
        "<h2>Episodes</h2>", _html_table(("worker", "start", "length", "worst", "beats missed", "probe", "culprit",
                                          "outcome"), (_episode_cells(report, e) for e in report.episodes),
                                         "episodes", numeric=(2, 4)) if report.episodes else "<p>None.</p>",
        "<h2>No available worker</h2>",
        _html_table(("start", "length"), ((_clock(report, a), _length(b - a)) for a, b in report.empty_pool),
                    "empty-pool", numeric=(1,)) if report.empty_pool else "<p>Never: some worker was always healthy "
                                                                          "or busy.</p>",
        "<h2>Workers</h2>",
    ]
    for i, worker in enumerate(report.workers):
        parts += [f'<section class="worker" id="worker-{i}">', f"<h3>{escape(worker.label)}</h3>",
                  f"<p>{escape(worker_line(worker))}</p>", plot(report, worker, f"worker-{i}"), "</section>"]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def markdown(report: Report) -> str:
    lines = [f"# heartmon report: {report.host}, {_span(report)}", "", f"**{summary(report)}**", ""]
    lines += [f"- {k}: {_md(v)}" for k, v in facts(report)]
    lines += ["", "## Episodes", ""]
    if report.episodes:
        lines += _md_table(("worker", "start", "length", "worst", "beats missed", "probe", "culprit", "outcome"),
                           (_episode_cells(report, e) for e in report.episodes))
    else:
        lines.append("None.")
    lines += ["", "## No available worker", ""]
    if report.empty_pool:
        lines += _md_table(("start", "length"), ((_clock(report, a), _length(b - a)) for a, b in report.empty_pool))
    else:
        lines.append("Never: some worker was always healthy or busy.")
    lines += ["", "## Workers", ""]
    lines += [f"- **{_md(w.label)}**: {_md(worker_line(w))}" for w in report.workers]
    return "\n".join(lines) + "\n"


def summary(report: Report) -> str:
    """The one line an on-call engineer reads first."""
    starved = report.starved_workers
    return (f"{_count(starved, 'worker')} starved" + (f" for {_length(report.starved_s)} in total" if starved else "")
            + f"; {report.died} died; " + (f"the pool was empty for {_length(report.empty_s)}" if report.empty_pool
                                           else "the pool was never empty")
            + f"; {_count(len(report.episodes), 'episode')}.")


def facts(report: Report) -> list[tuple[str, str]]:
    t = report.thresholds
    rule = (f"late after {t.late_after:g}, starved after {t.starved_after:g}, dead after {t.dead_after:g} intervals"
            if t.rule == "fixed" else f"phi accrual (suspect at {t.phi.threshold:g})")
    return [("recording", report.name), ("host", report.host), ("sources", ", ".join(report.sources) or "none"),
            ("from", report.wall(report.since).isoformat(" ", "seconds")),
            ("to", report.wall(report.until).isoformat(" ", "seconds")),
            ("length", _length(report.until - report.since)), ("workers", str(len(report.workers))),
            ("rule", rule)]


def worker_line(worker: WorkerReport) -> str:
    stats = f"{_count(worker.beats, 'beat')}"
    if worker.max_gap is not None and worker.p99_gap is not None:
        stats += f", max gap {_length(worker.max_gap)}, p99 gap {_length(worker.p99_gap)}"
    times = [f"{state} {_length(worker.time_in(state))}" for state in ("late", "starved", "busy", "dead", "unknown")
             if worker.time_in(state) > 0]
    return f"{stats}; " + (", ".join(times) if times else "healthy throughout")


def plot(report: Report, worker: WorkerReport, chart_id: str) -> str:
    """One SVG: the worker's states as a band under the zero line, and above it the time
    since its last beat (a sawtooth whose every peak is a gap between beats), with the
    late and starved thresholds as lines (stepping where its interval changed). The x
    axis is seconds since the window's start, labelled in local time."""
    t = report.thresholds
    span = report.until - report.since or 1.0
    peaks = worker.peaks(report.since, report.until, PLOT_BINS)
    lines = ([("late", t.late_after, LATE), ("starved", t.starved_after, STARVED)] if t.rule == "fixed" and
             worker.intervals else [])
    top = max([g for _, g in peaks] + [t.starved_after * i for _, i in worker.intervals] + [0.001]) * 1.1
    band = -0.12 * top
    series: list[tuple[str, list, str, str]] = []
    for state, colour in COLOURS.items():
        points: list[tuple[float | None, float | None]] = []
        for s in worker.spans:
            if s.state == state:
                points += [(s.start - report.since, band), (s.end - report.since, band), (None, None)]
        if points:
            series.append((state, points[:-1], colour, "stroke-width: 14px; stroke-linecap: butt"))
    if peaks:
        teeth = [p for x, g in peaks for p in ((x - g - report.since, 0.0), (x - report.since, g),
                                                (x - report.since, 0.0))]
        series.append(("since last beat", teeth, GAP, "stroke-width: 1px"))
    for name, multiple, colour in lines:
        series.append((f"{name} after {multiple:g}×", _steps(worker.intervals, multiple, report.since, span), colour,
                       "stroke-width: 1.2px; stroke-dasharray: 6,4"))
    y_labels = [0.0]
    for value in [m * worker.intervals[-1][1] for _, m, _ in lines] + [top / 1.1]:
        if all(abs(value - other) > top * 0.08 for other in y_labels):
            y_labels.append(value)
    chart = pygal.XY(
        style=Style(colors=tuple(c for _, _, c, _ in series), background="white", plot_background="white",
                    font_family="system-ui, sans-serif", label_font_size=11, legend_font_size=11),
        css=["file://style.css", "file://graph.css", "inline:" + "".join(
            f"#chart-{chart_id} .serie-{i} .line {{ {stroke} }}" for i, (*_, stroke) in enumerate(series))],
        js=[], disable_xml_declaration=True, show_dots=False, allow_interruptions=True, width=960, height=240,
        xrange=(0, span), range=(2 * band, top), y_labels=y_labels, legend_at_bottom=True, truncate_legend=-1,
        legend_at_bottom_columns=len(series),  # one row: pygal miscounts the rows of a partial one
        x_value_formatter=lambda x: report.wall(report.since + x).strftime("%H:%M:%S"),
        value_formatter=_length, y_title="gap", explicit_size=False, margin=6,
    )
    chart.uuid = chart_id  # pygal's default is random; its CSS is scoped by it
    for name, points, _, _ in series:
        chart.add(name, points)
    etree.to_etree()  # the standard library's, as the tree is serialized below, lxml installed or not
    svg = chart.render_tree()
    for parent in list(svg.iter()):
        for child in list(parent):
            if child.tag == "script" or child.tag is ElementTree.Comment:
                parent.remove(child)  # the config of pygal's tooltip script (left out), and a dated comment
    return ElementTree.tostring(svg, encoding="unicode")


def _steps(intervals: list[tuple[float, float]], multiple: float, since: float, span: float) -> list:
    points: list[tuple[float, float]] = []
    for i, (at, interval) in enumerate(intervals):
        end = intervals[i + 1][0] - since if i + 1 < len(intervals) else span
        points += [(at - since, multiple * interval), (end, multiple * interval)]
    return points


def _episode_cells(report: Report, e: EpisodeRow) -> tuple[str, ...]:
    return (report.label(e.key), _clock(report, e.start), _length(e.length_s), e.worst,
            "—" if e.missed is None else str(e.missed), e.probe or "—", e.culprit or "—", e.outcome)


def _html_table(header: Iterable[str], rows: Iterable[Iterable[str]], css: str, numeric: tuple[int, ...]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{escape(c)}</td>' if i in numeric else f"<td>{escape(c)}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _md_table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    header = list(header)
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] +
            ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows])


def _md(text: str) -> str:
    """Markdown's table and emphasis characters, taken literally."""
    return re.sub(r"([|*_`\\])", r"\\\1", text)


def _clock(report: Report, t: float) -> str:
    return clock_time(t, lambda at: at + report.wall_offset)


def _span(report: Report) -> str:
    start, end = report.wall(report.since), report.wall(report.until)
    return (f"{start:%Y-%m-%d %H:%M:%S} to {end:%H:%M:%S}" if start.date() == end.date() else
            f"{start:%Y-%m-%d %H:%M:%S} to {end:%Y-%m-%d %H:%M:%S}") + f" (UTC{start.isoformat()[-6:]})"


def _length(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
