"""The monitor side of stack capture: py-spy reads a local Python process's stacks from
outside, so it names what any worker is stuck in (one heartmon did not write, or a
``none`` agent whose own report can only leave after the block), while it is stuck.

py-spy needs ptrace permission on the pid: the same user and a yama ptrace_scope of 0,
or root, or CAP_SYS_PTRACE on the py-spy binary. Where it is refused, the one line it
leaves says what to grant. It runs with ``--nonblocking`` (the worker is never paused)
and never with ``--locals``: a stack says where the code is, never what its variables hold.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sysconfig
from contextlib import suppress
from pathlib import Path

from heartmon.lifeline import die_with_parent
from heartmon.protocol import MAX_STACK_FRAMES, Frame
from heartmon.stacks import frame_at

NOT_INSTALLED = "py-spy is not installed, so stacks of local workers cannot be read from outside: " \
                "pip install 'heartmon[spy]'"


class SpyError(Exception):
    """Why py-spy gave no stack: one line for the screen."""


def find(command: str) -> str | None:
    """The py-spy to run: the setting as a path, else beside this Python (the wheel puts
    it in the environment's scripts folder), else on the PATH."""
    if not command:
        return None
    if os.sep in command:
        return command if os.access(command, os.X_OK) else None
    beside = Path(sysconfig.get_paths()["scripts"]) / command
    return str(beside) if os.access(beside, os.X_OK) else shutil.which(command)


async def dump(py_spy: str, pid: int, timeout_s: float) -> tuple[list[Frame], int]:
    """The main thread of ``pid``, innermost frame first, and how many were left out."""
    process = await asyncio.create_subprocess_exec(
        py_spy, "dump", "--pid", str(pid), "--json", "--nonblocking",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        await _end(process)
        raise SpyError(f"py-spy took longer than {timeout_s:g} s to read pid {pid}") from None
    except asyncio.CancelledError:  # the monitor is stopping: py-spy goes with it
        await _end(process)
        raise
    if process.returncode != 0:
        raise SpyError(_explain(pid, py_spy, err.decode(errors="replace")))
    return parse(out.decode(errors="replace"), pid)


async def _end(process: asyncio.subprocess.Process) -> None:
    with suppress(ProcessLookupError):
        process.kill()
    await process.wait()


def _explain(pid: int, py_spy: str, stderr: str) -> str:
    lowered = stderr.lower()
    if "permission" in lowered or "not permitted" in lowered or "eperm" in lowered:
        return (f"py-spy may not read pid {pid}: ptrace is not permitted. Run heartmon as the worker's user "
                f"with kernel.yama.ptrace_scope=0, or as root, or grant it: sudo setcap cap_sys_ptrace+ep {py_spy}")
    first = next((line.strip() for line in stderr.splitlines() if line.strip()), "no output")
    return f"py-spy could not read pid {pid}: {first[:200]}"


def parse(output: str, pid: int) -> tuple[list[Frame], int]:
    """py-spy's JSON: a list of threads, each with its frames innermost first. The main
    thread's OS id is the pid; a process with no Python frame there gives its first thread."""
    try:
        threads = json.loads(output)
        chosen = next((t for t in threads if t.get("os_thread_id") == pid), threads[0] if threads else None)
        raw = chosen["frames"] if chosen else []
        frames = [frame_at(str(f["filename"]), int(f.get("line") or 0), str(f["name"]), qualified=True)
                  for f in raw[:MAX_STACK_FRAMES]]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise SpyError(f"py-spy's answer for pid {pid} could not be read: {exc}") from None
    if not frames:
        raise SpyError(f"py-spy found no Python frame in pid {pid}")
    return frames, max(0, len(raw) - MAX_STACK_FRAMES)
