"""A stand-in for a hub's /watch stream, in its own process, for the benchmarks: the
frames are the hub's own encodings, the pace is whatever the benchmark asks."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Awaitable, Callable

from websockets.asyncio.server import ServerConnection, serve


def serve_stream(stream: Callable[[ServerConnection], Awaitable[None]], port, ready) -> None:
    """Runs in the sender process: every connection gets `stream`."""

    async def main() -> None:
        async with serve(stream, "127.0.0.1", 0, compression=None, max_size=None) as server:
            port.value = server.sockets[0].getsockname()[1]
            ready.set()
            await asyncio.Future()

    asyncio.run(main())


def start(target: Callable[..., None], *args) -> tuple[multiprocessing.Process, str]:
    """Starts `target(*args, port, ready)` in a spawned process; returns it and its URL."""
    ctx = multiprocessing.get_context("spawn")
    port, ready = ctx.Value("i", 0), ctx.Event()
    process = ctx.Process(target=target, args=(*args, port, ready), daemon=True)
    process.start()
    if not ready.wait(60):
        process.kill()
        raise SystemExit("the fake hub did not start")
    return process, f"ws://127.0.0.1:{port.value}"
