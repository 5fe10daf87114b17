"""A real Inngest Connect worker (the Python SDK, ``inngest[connect]``), started by the
systems experiment and the tests.

    python -m heartmon.systems.inngest_worker BASE_URL APP INSTANCE PROBE_FILE [HEARTBEAT_S]

BASE_URL is heartmon's gateway (``http://127.0.0.1:PORT``), given to the client as
``api_base_url``; dev mode (``INNGEST_DEV=1``) or cloud mode with ``INNGEST_SIGNING_KEY``
comes from the environment. The SDK beats every 10 s whatever the gateway asks for;
HEARTBEAT_S overrides that through the SDK's own test hook (it has no public setting),
so that a test need not wait tens of seconds for a few beats.

When PROBE_FILE appears, the main thread reads ``PROBE SECONDS`` from it, deletes it,
and runs that heartmon load probe for that long, where a function's code would run.
The SDK's heartbeat runs on a thread of its own, so pure Python (which gives the GIL up
every few milliseconds) does not starve it, and a C call that holds the GIL does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

import inngest
from inngest.connect import connect
from inngest.connect._internal.connect import connect_test_overrides

from heartmon.probes import load_registry


async def _probe_when_told(path: str) -> None:
    registry = load_registry()
    while True:
        await asyncio.sleep(0.05)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            probe, seconds = f.read().split()
        os.remove(path)
        print(f"running {probe} on the main thread for {seconds} s", flush=True)
        registry.get(probe)().run(float(seconds))
        print("probe done", flush=True)


async def main(base_url: str, app: str, instance: str, probe_file: str, heartbeat_s: int | None) -> None:
    client = inngest.Inngest(app_id=app, api_base_url=base_url)

    @client.create_function(fn_id="noop", trigger=inngest.TriggerEvent(event="heartmon/noop"))
    async def noop(ctx: inngest.Context) -> None:
        return None

    overrides = connect_test_overrides(heartbeat_interval_sec=heartbeat_s) if heartbeat_s else contextlib.nullcontext()
    with overrides:
        connection = connect([(client, [noop])], instance_id=instance)
    prober = asyncio.create_task(_probe_when_told(probe_file))
    print("connecting", flush=True)
    await connection.start()  # until SIGTERM or SIGINT closes it
    prober.cancel()
    print("closed", flush=True)


if __name__ == "__main__":
    base_url, app, instance, probe_file, *rest = sys.argv[1:]
    asyncio.run(main(base_url, app, instance, probe_file, int(rest[0]) if rest else None))
