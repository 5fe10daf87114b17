"""The hub under abuse, from one client on this machine: the gaps between the other
workers' beats, as the hub stamps them, while one connection floods it.

Starts `heartmon mock` (one worker per isolation mode, 100 ms), follows its /watch
stream, and for each phase prints every worker's largest gap and how many gaps passed
the late (2x) and starved (5x) thresholds: idle, a 20,000-frame flood of 12-byte frames
on one connection, 100,000 fuzzed frames (random bytes, broken and valid-looking JSON),
then 700 concurrent injects into the process worker (the HTTP answers, and whether it
beats on). A benchmark that prints figures, not a test.

    .venv/bin/python benchmarks/hub_abuse.py
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict

import httpx
from websockets.asyncio.client import connect

INTERVAL_S = 0.1
WORKERS = ("none-1", "thread-1", "process-1")


class Gaps:
    """Follows /watch; keeps each worker's beat times (the hub's recv_at)."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)

    async def follow(self, url: str) -> None:
        async with connect(f"{url}/watch", max_size=None) as ws:
            async for frame in ws:
                event = json.loads(frame)
                if event["type"] == "beat":
                    self.times[event["worker"]].append(event["recv_at"])

    def report(self, label: str, since: float, until: float) -> None:
        parts = []
        for worker in WORKERS:
            times = [t for t in self.times[worker] if since <= t <= until]
            gaps = [b - a for a, b in zip(times, times[1:], strict=False)]  # neighbours: one pair fewer
            if not gaps:
                parts.append(f"{worker} no beats")
                continue
            late = sum(g > 2 * INTERVAL_S for g in gaps)
            starved = sum(g > 5 * INTERVAL_S for g in gaps)
            parts.append(f"{worker} max {max(gaps) * 1000:4.0f} ms ({late} late, {starved} starved)")
        print(f"{label:<22} " + "  ".join(parts), flush=True)


def fuzz_frame(rng: random.Random) -> str | bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
    if kind == 1:
        return "".join(chr(rng.randrange(32, 127)) for _ in range(rng.randrange(1, 60)))
    if kind == 2:
        return json.dumps({"type": rng.choice(["beat", "hello", "probe_finished", "x"]), "seq": rng.randrange(-5, 5)})
    if kind == 3:
        return '{"type":"beat","seq":1,"sent_at":NaN,"loop_lag_ms":0}'
    return "[" * rng.randrange(1, 200)


async def flood(url: str, frames) -> float:
    start = time.time()
    async with connect(f"{url}/connect", compression=None, max_size=None) as ws:
        for frame in frames:
            await ws.send(frame)
    return start


async def main() -> None:
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}", flush=True)
    mock = subprocess.Popen([sys.executable, "-m", "heartmon", "mock", "--port", "0", "--quiet", "--interval-ms",
                             str(int(INTERVAL_S * 1000)), "--workers", "none:1,thread:1,process:1"],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"(ws://\S+)", mock.stdout.readline()).group(1)
        http = url.replace("ws://", "http://")
        no_reuse = httpx.Limits(max_keepalive_connections=0)  # the hub closes each connection after its answer
        async with httpx.AsyncClient(base_url=http, timeout=60, limits=no_reuse) as client:
            while len([w for w in (await client.get("/api/workers")).json() if w["available"]]) < 3:
                await asyncio.sleep(0.2)
            gaps = Gaps()
            follower = asyncio.create_task(gaps.follow(url))
            await asyncio.sleep(1)

            start = time.time()
            await asyncio.sleep(10)
            gaps.report("idle, 10 s", start, time.time())

            start = await flood(url, ['{"type":"x"}'] * 20_000)
            await asyncio.sleep(3)
            gaps.report("20,000-frame flood", start, time.time())

            rng = random.Random(7)
            start = await flood(url, (fuzz_frame(rng) for _ in range(100_000)))
            await asyncio.sleep(3)
            gaps.report("100,000 fuzzed frames", start, time.time())

            metrics = (await client.get("/metrics")).text
            limited = re.search(r"^heartmon_frames_rate_limited_total (\S+)", metrics, re.M)
            print(f"frames dropped by the rate limit: {float(limited.group(1)) if limited else 0:,.0f}", flush=True)

            start = time.time()
            answers = await asyncio.gather(*(client.post("/api/workers/process-1/inject",
                                                         params={"probe": "sync-sleep", "duration_s": "0.01"})
                                             for _ in range(700)))
            codes = Counter(a.status_code for a in answers)
            await asyncio.sleep(5)
            gaps.report("700 concurrent injects", start, time.time())
            listed = {w["worker"]: w for w in (await client.get("/api/workers")).json()}
            print(f"700 injects into process-1: {dict(sorted(codes.items()))}; afterwards process-1 is "
                  f"{listed['process-1']['state']}, seq {listed['process-1']['seq']}", flush=True)
            follower.cancel()
    finally:
        mock.terminate()
        try:
            mock.wait(5)
        except subprocess.TimeoutExpired:
            mock.kill()
            mock.wait()


if __name__ == "__main__":
    asyncio.run(main())
