"""The agent's parts without a hub: its bound on injects, its identity, the channel and
the log relay between a process worker and its heartbeat child."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

from heartmon import protocol as p
from heartmon.agent import (
    MAX_ERROR_CHARS,
    MAX_PENDING_INJECTS,
    Agent,
    AgentConfig,
    Beater,
    Channel,
    ForwardLogs,
    ProbeRunner,
    relay_logs,
)
from heartmon.probes import Probe, ProbeRegistry

CONFIG = AgentConfig(hub="ws://127.0.0.1:9", name="w1", isolation="process", interval_ms=100)


def _inject(i: int) -> p.Inject:
    return p.Inject(id=f"i{i}", probe="sync-sleep", duration_s=0.01)


async def test_injects_past_the_bound_are_refused_on_the_heartbeat_side():
    delivered: list[p.Inject] = []
    beater = Beater(CONFIG, [0.0, 0.0], delivered.append, ["sync-sleep"])
    for i in range(MAX_PENDING_INJECTS + 5):
        beater._on_frame(p.encode(_inject(i)))
    assert [inject.id for inject in delivered] == [f"i{i}" for i in range(MAX_PENDING_INJECTS)]
    refusals = [message for message, _ in beater.pending]
    assert [r.id for r in refusals] == [f"i{i}" for i in range(MAX_PENDING_INJECTS, MAX_PENDING_INJECTS + 5)]
    assert all(isinstance(r, p.ProbeFinished) and r.error.startswith("refused") for r in refusals)
    assert all(len(p.encode(r)) < 200 for r in refusals)

    beater.enqueue(p.ProbeStarted(id="i0", probe="sync-sleep", duration_s=0.01))  # still held
    beater.take(_inject(100))
    assert delivered[-1].id == "i31"
    beater.enqueue(p.ProbeFinished(id="i0", elapsed_s=0.01))  # its slot is free again
    beater.take(_inject(101))
    assert delivered[-1].id == "i101"
    beater.enqueue(p.ProbeFinished(id="unknown", elapsed_s=0.01))  # frees nothing
    beater.take(_inject(102))
    assert delivered[-1].id == "i101"


async def test_the_agent_says_who_it_is_in_every_hello_and_old_hellos_still_validate():
    agent = Agent(CONFIG)
    other = Agent(CONFIG)
    assert agent.instance != other.instance
    beater = agent._beater([0.0, 0.0], lambda inject: None)
    hello = p.decode_from_worker(p.encode(beater.hello()))
    assert hello.instance == agent.instance == agent._beater([0.0, 0.0], lambda inject: None).hello().instance
    without = p.Hello(v=1, worker="w1", isolation="none", pid=1, host="h", interval_ms=100, agent="old")
    assert p.decode_from_worker(p.encode(without)).instance is None


class _Loud(Probe):
    name = "loud"
    description = "raises a long error"
    demonstrates = "nothing"

    def run(self, duration_s: float, **params: object) -> None:
        raise RuntimeError("x" * 100_000)


async def test_a_probe_error_is_reported_cut_short():
    reports: list[p.Message] = []

    async def report(message: p.Message) -> None:
        reports.append(message)

    runner = ProbeRunner(ProbeRegistry({"loud": _Loud}), report)
    await runner._handle(p.Inject(id="a", probe="loud", duration_s=0.01))
    started, finished = reports
    assert isinstance(started, p.ProbeStarted) and isinstance(finished, p.ProbeFinished)
    assert finished.error.startswith("RuntimeError: xxx") and len(finished.error) == MAX_ERROR_CHARS


async def test_the_channel_never_blocks_its_writer_on_a_peer_that_reads_nothing():
    """What the peer's socket cannot take waits in the writer's loop; the loop goes on."""
    near, far = socket.socketpair()
    sender = await Channel.open(near)
    big = p.Inject(id="big", probe="sync-sleep", duration_s=1.0, params={"pad": "x" * 60_000})
    start = time.monotonic()
    for _ in range(200):  # 12 MB: far more than two socket buffers
        sender.send(big)
    assert time.monotonic() - start < 2.0
    assert sender.writer.transport.get_write_buffer_size() > 0

    receiver = await Channel.open(far)
    lines = receiver.lines()
    for _ in range(200):
        assert p.decode_to_worker(await asyncio.wait_for(anext(lines), 10)) == big
    sender.close()
    assert await asyncio.wait_for(anext(lines, None), 10) is None  # the peer closed: the end
    receiver.close()


async def test_the_heartbeat_childs_log_records_come_out_of_the_parents_logging(caplog):
    """A spawned child inherits no logging configuration: its records are relayed and
    emitted by the parent's loggers, at the parent's levels."""
    child_end, parent_end = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_unix_connection(asyncio.Protocol, sock=child_end)
    relay = threading.Thread(target=relay_logs, args=(parent_end,), daemon=True)
    relay.start()
    source = logging.Logger("heartmon.agent")  # stands for the child's logger, outside the hierarchy
    source.addHandler(ForwardLogs(transport, loop))
    caplog.set_level(logging.INFO, logger="heartmon.agent")
    source.info("%s connected to %s", "p1", "ws://h:1/connect")
    source.debug("below the parent's level")
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        source.exception("p1: it failed")
    await asyncio.sleep(0.05)
    transport.close()
    await asyncio.to_thread(relay.join, 5)
    assert not relay.is_alive(), "the relay ends when the child's end closes"
    relayed = [r for r in caplog.records if r.name == "heartmon.agent"]
    assert [(r.levelno, r.getMessage()) for r in relayed] == [
        (logging.INFO, "p1 connected to ws://h:1/connect"), (logging.ERROR, "p1: it failed"),
    ]
    assert "ZeroDivisionError" in caplog.text
