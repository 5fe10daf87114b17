"""Injects by request/reply: the command goes to the worker's own subject and the
worker answers it, accepted or refused, with the same codes and messages as a hub's
HTTP API (heartmon.hub_state). No answer means nobody holds that subject (NATS's "no
responders": no such worker) or the side that listens is blocked (a ``none`` worker
whose loop is starved cannot even say no)."""

from __future__ import annotations

import json
import uuid
from http import HTTPStatus
from typing import TYPE_CHECKING

from heartmon.bus.subjects import Identity
from heartmon.hub_state import BadInject, RouteError, UnknownWorker, check_duration
from heartmon.protocol import Inject, encode

if TYPE_CHECKING:
    from nats.aio.client import Client

ANSWER_S = 2.0


class WorkerSilent(RouteError):
    """The worker's subject is held, and nothing answered in time."""

    status = HTTPStatus.GATEWAY_TIMEOUT


async def request_inject(nc: Client, prefix: str, target: str, command: Inject,
                         answer_s: float = ANSWER_S) -> dict:
    """Sends ``command`` to the worker ``fleet/host/name`` and returns what it accepted;
    raises RouteError with the worker's own refusal, or why there was no answer."""
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout

    try:
        identity = Identity.from_key(target)
    except ValueError as exc:
        raise UnknownWorker("unknown_worker", str(exc)) from None
    try:
        reply = await nc.request(identity.command(prefix, "inject"), encode(command).encode(), timeout=answer_s)
    except NoRespondersError:
        raise UnknownWorker("unknown_worker", f"unknown worker {target!r}; no worker of that name is on NATS") from None
    except NatsTimeout:
        raise WorkerSilent("worker_silent", f"worker {target!r} did not answer within {answer_s:g} s: the side "
                                            "that takes its commands is blocked (a worker without isolation "
                                            "whose loop is starved)") from None
    try:
        body = json.loads(reply.data)
        if "error" in body:
            raise BadInject(str(body["error"]), str(body.get("message", "")))  # the worker refused the command
        return {key: body[key] for key in ("id", "worker", "probe", "duration_s")}
    except (ValueError, KeyError, TypeError):
        raise BadInject("bad_answer", f"worker {target!r} answered something that is not an answer") from None


def new_inject(probe: str, duration_s: float, max_duration_s: float) -> Inject:
    """The command, checked as a hub checks it before anything is sent."""
    check_duration(duration_s, max_duration_s)
    return Inject(id=uuid.uuid4().hex[:12], probe=probe, duration_s=duration_s)
