"""Stacks, pure: faulthandler's text in, frames out; whose code a frame is; the culprit.

A worker's stack is captured while its loop is blocked by code that may hold the GIL,
so nothing that captures it can be Python code of that process: faulthandler's
signal handler writes it as text (``heartmon.capture``), and py-spy reads it from
outside (``heartmon.py_spy``). This module turns either into :class:`Frame` values and
says which frame to name: the innermost frame of the app's own code, since the
interpreter's, the libraries' and heartmon's frames around it are rarely what the
on-call engineer can change.
"""

from __future__ import annotations

import linecache
import os
import re
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import CodeType

from heartmon.protocol import MAX_STACK_FRAMES, Frame, FrameKind

DUMP_HEADER = re.compile(r"^Stack (?:sampled at (?P<at>[0-9.]+) )?\(most recent call first\):$", re.MULTILINE)
"""faulthandler's header for one thread's stack (``all_threads=False``); the sampler
that stands in for it adds the monotonic time it took the sample."""
_DUMP_FRAME = re.compile(r'^  File "(?P<file>.*)", line (?P<line>\d+) in (?P<function>.*)$')
_OUTERMOST = frozenset({"<module>", "_run_module_as_main", "_run_code", "_bootstrap", "_bootstrap_inner"})
"""Functions that start a thread's stack: a dump that ends with one of them is complete."""

_HEARTMON = str(Path(__file__).resolve().parent) + os.sep
_PROBES = str(Path(__file__).resolve().parent.parent / "probes") + os.sep
"""heartmon's own modules, and its probes. The probes are the load, like the app's own
code, so they are named; in an editable install they live beside the package."""
_PYTHON = tuple({sysconfig.get_paths()[key] + os.sep for key in ("stdlib", "platstdlib")})
_SITE = re.compile(r"[/\\](?:site|dist)-packages[/\\]")
_HEARTMON_INSTALLED = re.compile(r"[/\\](?:site|dist)-packages[/\\]heartmon[/\\](?!probes[/\\])")
_PYTHON_ELSEWHERE = re.compile(r"[/\\]lib[/\\]python3\.\d+[/\\]")
"""Another interpreter's library (py-spy reads processes of any install)."""
MAX_COMPILE_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Stack:
    """A worker's main thread while its loop was blocked, as the monitor keeps it."""

    frames: tuple[Frame, ...]
    """Innermost first."""
    taken_at: float
    """On the monitor's clock."""
    blocked_ms: float | None
    """How long the loop had been blocked when it was taken; None for a py-spy read of
    a worker that was not blocked."""
    via: str
    """``signal`` or ``sampler`` (the worker's agent), ``py-spy`` (the monitor, once per
    block) or ``py-spy, asked`` (the monitor, when the user asked)."""
    received_at: float
    """On the monitor's clock: which block a stack belongs to is judged by when it came."""
    more: int = 0

    @property
    def culprit(self) -> Frame:
        return culprit(self.frames)


def classify(path: str) -> FrameKind:
    if path.startswith("<frozen "):
        return "python"
    if path.startswith(_PROBES) or "heartmon/probes/" in path:
        return "app"
    if path.startswith(_HEARTMON) or _HEARTMON_INSTALLED.search(path):
        return "heartmon"
    if _SITE.search(path):
        return "library"
    if path.startswith(_PYTHON) or _PYTHON_ELSEWHERE.search(path):
        return "python"
    return "app"


def culprit(frames: Iterable[Frame]) -> Frame:
    """The frame to name: the innermost of the app's code; failing that, of an installed
    library (a third-party probe, or a library running on a thread the app does not
    own); failing that, the innermost."""
    frames = tuple(frames)
    for kind in ("app", "library"):
        for frame in frames:
            if frame.kind == kind:
                return frame
    return frames[0]


def short_path(path: str) -> str:
    """The last two parts of a path (``probes/builtin.py``): enough to find the file."""
    parts = path.replace("\\", "/").rsplit("/", 2)
    return "/".join(parts[-2:])


def where(frame: Frame) -> str:
    """``probes/builtin.py:48 GilHold.run``"""
    return f"{short_path(frame.file)}:{frame.line} {frame.function}"


# --- faulthandler's text ---------------------------------------------------------


def split_dumps(text: str, complete: bool) -> tuple[list[tuple[float | None, str]], str]:
    """Cuts a stream of dumps into ``(sampled_at, body)`` pairs and the rest. A dump is
    whole once another starts after it; the last one is whole when ``complete`` (the
    reader runs on the thread the handler writes on, so the handler is not mid-way) or
    when it ends with a thread's first frame."""
    heads = list(DUMP_HEADER.finditer(text))
    dumps: list[tuple[float | None, str]] = []
    for index, head in enumerate(heads):
        end = heads[index + 1].start() if index + 1 < len(heads) else len(text)
        body = text[head.end():end].removeprefix("\n")
        last = index + 1 == len(heads)
        if last and not (complete or _ends_stack(body)):
            return dumps, text[head.start():]
        at = head.group("at")
        dumps.append((float(at) if at else None, body))
    return dumps, ""


def _ends_stack(body: str) -> bool:
    if not body.endswith("\n"):
        return False
    last = body.rstrip("\n").rsplit("\n", 1)[-1]
    match = _DUMP_FRAME.match(last)
    return last in ("  ...", "  <no Python frame>") or bool(match and match.group("function") in _OUTERMOST)


def parse_dump(body: str) -> tuple[list[Frame], int]:
    """One dump's frames, innermost first, as the agent sends them, and how many were
    left out, at least (over MAX_STACK_FRAMES, and one for faulthandler's "..." past
    its own limit of 100 frames, which does not say how many)."""
    frames: list[Frame] = []
    more = 0
    for raw in body.splitlines():
        match = _DUMP_FRAME.match(raw)
        if match is None:
            more += raw == "  ..."
            continue
        if len(frames) == MAX_STACK_FRAMES:
            more += 1
            continue
        frames.append(frame_at(_unescape(match.group("file")), int(match.group("line")),
                               _unescape(match.group("function"))))
    return frames, more


_ESCAPE = re.compile(r"\\x([0-9a-f]{2})|\\u([0-9a-f]{4})|\\U([0-9a-f]{8})")


def _unescape(text: str) -> str:
    """faulthandler writes non-ASCII characters as ``\\xe9``, ``\\u20ac`` or ``\\U0001f600``:
    the real path is needed to read the file."""
    return _ESCAPE.sub(lambda m: chr(int(next(g for g in m.groups() if g), 16)), text) if "\\" in text else text


def frame_at(file: str, line: int, function: str, *, qualified: bool = False) -> Frame:
    """A frame with its kind, its qualified name and source line (for the app's and the
    libraries' code: the frames that are shown, not folded), cut to the protocol's limits."""
    kind = classify(file)
    if not qualified and kind == "app":
        function = qualname(file, line, function)
    named = kind in ("app", "library") and line > 0
    code = linecache.getline(file, line).strip() or None if named else None
    shown = _printable(file)
    return Frame(file=shown if len(shown) <= 300 else "…" + shown[-299:], line=min(line, 10_000_000),
                 function=_printable(function)[:200], code=_printable(code)[:200] if code else None, kind=kind)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _printable(text: str) -> str:
    """A frame's text goes to a terminal: a tab becomes a space, any other control
    character a ``?`` (a path may hold a newline; the protocol refuses them)."""
    return _CONTROL.sub("?", text.replace("\t", " "))


def format_frames(frames: Iterable[tuple[str, int, str]], at: float) -> str:
    """Frames as faulthandler writes them, for the sampler that stands in for it."""
    lines = [f"Stack sampled at {at:.6f} (most recent call first):"]
    lines += [f'  File "{file}", line {line} in {function}' for file, line, function in frames]
    return "\n".join(lines) + "\n"


def qualname(file: str, line: int, name: str) -> str:
    """``run`` at line 48 of a file is ``GilHold.run``: faulthandler writes only the code
    object's name, and the qualified name is found by compiling the file once.

    The reader runs on the heartbeat side: on the app's loop (isolation none), or on the
    heartbeat thread, where every call that lets the GIL go waits up to 5 ms to get it
    back from a busy main thread. So only the app's own files are compiled, none over
    MAX_COMPILE_BYTES, from the lines linecache has read for the source line anyway,
    and a file is read once for the life of the process (the code running is the code
    it imported, whatever the file on disk says later)."""
    best: tuple[int, str] | None = None
    for first, last, code_name, qualified in _code_ranges(file):
        if code_name == name and first <= line <= last and (best is None or last - first < best[0]):
            best = (last - first, qualified)
    return best[1] if best else name


@lru_cache(maxsize=256)
def _code_ranges(file: str) -> tuple[tuple[int, int, str, str], ...]:
    source = "".join(linecache.getlines(file))
    if not source or len(source) > MAX_COMPILE_BYTES:
        return ()
    try:
        module = compile(source, file, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return ()
    ranges = []
    pending: list[CodeType] = [module]
    while pending:
        code = pending.pop()
        pending.extend(const for const in code.co_consts if isinstance(const, CodeType))
        lines = [number for _, _, number in code.co_lines() if number is not None]
        if lines:
            ranges.append((min(lines), max(lines), code.co_name, code.co_qualname))
    return tuple(ranges)
