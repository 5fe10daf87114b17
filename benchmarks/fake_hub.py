"""A stand-in for a hub's /watch stream, in its own process, for the benchmarks: the
frames are the hub's own encodings, the pace is whatever the benchmark asks.

:func:`paced_fleet` plays a fleet beating at a steady rate (optionally with workers
falling silent on a schedule, and plain HTTP health endpoints beside it); the
pipeline benchmark plays its own stream as fast as it can."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Awaitable, Callable

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from heartmon.protocol import PROTOCOL_VERSION, Snapshot, WorkerBeat, WorkerInfo, WorkerLeft, encode

SLICE_S = 0.01
"""The paced stream sends every 10 ms the beats that fall due in it, so the pace is smooth."""
END = "bench-end"
"""A worker in every paced snapshot that leaves after the last beat: when the monitor
shows it dead, it has taken every frame before it (one ordered stream)."""


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


def worker_name(i: int) -> str:
    return f"w{i:05}"


def snapshot(workers: list[WorkerInfo], sent_at: float) -> str:
    """A hub's snapshot frame, whether or not this protocol version names the hub in it."""
    named = {"hub": "bench"} if "hub" in Snapshot.model_fields else {}
    return encode(Snapshot(v=PROTOCOL_VERSION, sent_at=sent_at, workers=workers, **named))


def paced_fleet(workers: int, rate_hz: float, seconds: float, beating: bool, sent, silence: dict[int, float] | None,
                silence_base, port, ready) -> None:
    """Runs in the sender process. Every /watch connection gets a snapshot of `workers`
    workers (and :data:`END`), then each worker's beats at `rate_hz`, numbered from 1, for
    `seconds`; then :data:`END` leaves, `sent.value` is set to the beats sent before it, and
    the workers beat on until the reader hangs up (so the end of a measurement is not
    the whole fleet falling silent at once).

    Silence: worker i sends nothing more once the shared `silence_base` (a
    time.monotonic(), 0 until the benchmark sets it) plus its offset has passed. Not
    `beating`: the snapshot (workers of interval 1/`rate_hz`), END leaves, and nothing else."""
    silence = silence or {}
    names = [worker_name(i) for i in range(workers)]
    beats = [encode(WorkerBeat(worker=name, seq=0, sent_at=0.0, recv_at=0.0, loop_lag_ms=0.1,
                               main_blocked_ms=2.0)).split('"seq":0,') for name in names]
    assert all(len(parts) == 2 for parts in beats), "the beat encoding changed: fix the template"
    slices = max(1, round(1 / (rate_hz * SLICE_S)))  # slices per interval
    interval_s = 1 / rate_hz

    def silent(index: int, now: float) -> bool:
        return _silent(silence, silence_base, index, now)

    async def stream(ws) -> None:
        now = time.time()
        infos = [WorkerInfo(worker=name, isolation=("none", "thread", "process")[i % 3], pid=0, host="bench",
                            interval_ms=round(interval_s * 1000), agent="bench", probes=[], connected_at=now,
                            last_beat_at=now, seq=0) for i, name in enumerate(names)]
        infos.append(WorkerInfo(worker=END, isolation="process", pid=0, host="bench", interval_ms=3_600_000,
                                agent="bench", probes=[], connected_at=now))
        await ws.send(snapshot(infos, now))
        if not beating:
            await ws.send(encode(WorkerLeft(worker=END, reason="no beats in this stream", at=time.time())))
            sent.value = 0
            await ws.wait_closed()
            return
        start = time.monotonic()
        count, slot, total = 0, 0, round(seconds * rate_hz * slices)
        try:
            while True:
                if slot == total:
                    await ws.send(encode(WorkerLeft(worker=END, reason="the timed beats ended", at=time.time())))
                    sent.value = count
                seq = slot // slices + 1
                mono = time.monotonic()
                for i in range(slot % slices, workers, slices):
                    if not silent(i, mono):
                        head, tail = beats[i]
                        await ws.send(f'{head}"seq":{seq},{tail}')
                        count += 1
                slot += 1
                await asyncio.sleep(max(0.0, start + slot * interval_s / slices - time.monotonic()))
        except ConnectionClosed:
            return  # the reader is done

    serve_stream(stream, port, ready)


def _silent(offsets: dict[int, float], base, index: int, now: float) -> bool:
    return index in offsets and base.value > 0 and now >= base.value + offsets[index]


def http_endpoints(silence: dict[int, float], silence_base, port, ready) -> None:
    """Runs in its own process (a hub's bursts must not delay its answers): `GET /h/<j>`
    is answered 200 at once, keep-alive, or never once endpoint j's silence has begun."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                index = int(head.split(b" ", 2)[1].rsplit(b"/", 1)[1])
                if _silent(silence, silence_base, index, time.monotonic()):
                    await asyncio.sleep(3600)  # a hung endpoint: the poll times out
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port.value = server.sockets[0].getsockname()[1]
        ready.set()
        await asyncio.Future()

    asyncio.run(main())


def start_paced(workers: int, rate_hz: float, seconds: float, *, beating: bool = True,
                silence: dict[int, float] | None = None):
    """Starts :func:`paced_fleet`; returns (process, hub URL, sent, silence_base)."""
    ctx = multiprocessing.get_context("spawn")
    sent, base = ctx.Value("q", -1), ctx.Value("d", 0.0)
    process, url = start(paced_fleet, workers, rate_hz, seconds, beating, sent, silence, base)
    return process, url, sent, base


def start_http(silence: dict[int, float], silence_base) -> tuple[multiprocessing.Process, str]:
    """Starts :func:`http_endpoints`; returns the process and its base URL (add /h/<j>)."""
    process, url = start(http_endpoints, silence, silence_base)
    return process, url.replace("ws://", "http://")
