"""A real Inngest Connect worker (the Python SDK, ``inngest[connect]``) for heartmon's tests.

    python -m tests.apps.inngest_worker BASE_URL APP INSTANCE SPIN_FILE [HEARTBEAT_S]

BASE_URL is heartmon's gateway (``http://127.0.0.1:PORT``), given to the client as
``api_base_url``; dev mode (``INNGEST_DEV=1``) or cloud mode with ``INNGEST_SIGNING_KEY``
comes from the environment. The SDK beats every 10 s whatever the gateway asks for;
HEARTBEAT_S overrides that through the SDK's own test hook (it has no public setting),
so that a test need not wait tens of seconds for a few beats.

When SPIN_FILE appears, the main thread reads a number of seconds from it, deletes it
and spins in pure Python for that long. The SDK's heartbeat runs on a thread of its
own, so pure Python (which gives the GIL up every few milliseconds) does not starve it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time

import inngest
from inngest.connect import connect
from inngest.connect._internal.connect import connect_test_overrides


async def _spin_when_told(path: str) -> None:
    while True:
        await asyncio.sleep(0.05)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            seconds = float(f.read())
        os.remove(path)
        print(f"spinning the main thread for {seconds:g} s", flush=True)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pass
        print("spin done", flush=True)


async def main(base_url: str, app: str, instance: str, spin_file: str, heartbeat_s: int | None) -> None:
    client = inngest.Inngest(app_id=app, api_base_url=base_url)

    @client.create_function(fn_id="noop", trigger=inngest.TriggerEvent(event="heartmon/noop"))
    async def noop(ctx: inngest.Context) -> None:
        return None

    overrides = connect_test_overrides(heartbeat_interval_sec=heartbeat_s) if heartbeat_s else contextlib.nullcontext()
    with overrides:
        connection = connect([(client, [noop])], instance_id=instance)
    spinner = asyncio.create_task(_spin_when_told(spin_file))
    print("connecting", flush=True)
    await connection.start()  # until SIGTERM or SIGINT closes it
    spinner.cancel()
    print("closed", flush=True)


if __name__ == "__main__":
    base_url, app, instance, spin_file, *rest = sys.argv[1:]
    asyncio.run(main(base_url, app, instance, spin_file, int(rest[0]) if rest else None))
