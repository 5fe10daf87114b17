"""Wire protocol, version 1: JSON text frames, one object per frame, field ``type``.

This module is the one place that encodes and decodes frames. It does no I/O: the
hub, the agent and the monitor hand it bytes or text and get models back (or a
:class:`ProtocolError` that says what was wrong), in the sans-I/O spirit of
websockets itself. ``docs/protocol.md`` documents every message with an example.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 64 * 1024
"""Frames from workers (and commands to them) above this size are refused with an
error reply (the connection stays)."""
MAX_MONITOR_FRAME_BYTES = 16 * 1024 * 1024
"""A hub's snapshot grows with its fleet (about 250 bytes a worker)."""

Isolation = Literal["none", "thread", "process"]
ISOLATIONS: tuple[Isolation, ...] = ("none", "thread", "process")

WorkerName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
RowName = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^\x00-\x1f\x7f]+$")]
"""A worker's name as hubs tell monitors: the agent's own name, or ``fleet/host/name``
for a worker a hub hears over NATS (heartmon.bus), whose host may be any host name."""


class Message(BaseModel):
    """Strict base: unknown fields are refused, so a typo is an error, not silence; NaN
    and infinities are refused, so a broken clock cannot make a worker look on time."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- worker -> hub ---------------------------------------------------------------


class Hello(Message):
    type: Literal["hello"] = "hello"
    v: int
    worker: WorkerName
    isolation: Isolation
    pid: int = Field(ge=0)
    host: str = Field(max_length=255)
    interval_ms: int = Field(gt=0, le=3_600_000)
    agent: str = Field(max_length=64)
    probes: list[str] = Field(default_factory=list, max_length=256)
    """The probes this worker can run: the hub checks injects against them."""
    instance: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    """A random id the agent makes once and keeps across reconnects. A hub with a token
    lets only the same instance take a live worker's name again. Optional: agents
    without it still connect, and replace a live name only on a hub without a token."""


class Beat(Message):
    type: Literal["beat"] = "beat"
    seq: int = Field(ge=0)
    sent_at: float
    loop_lag_ms: float = Field(ge=0)
    main_blocked_ms: float | None = Field(default=None, ge=0)
    """How long the main loop has been blocked right now; only isolated agents know."""


FrameKind = Literal["app", "library", "python", "heartmon"]
"""Whose code a stack frame is: the app's own (heartmon's probes count as the app's: they
are the load), an installed third-party package, Python's standard library, or
heartmon's machinery. Screens dim all but the app's frames."""
MAX_STACK_FRAMES = 64
"""Innermost frames a stack report carries at most; ``more`` says how many were left out.
With the field limits below, a report stays under MAX_FRAME_BYTES."""


_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
"""No control characters: a frame's text is shown on a terminal as it came."""


class Frame(Message):
    """One frame of a stack: where the code is, never what its variables hold."""

    file: str = Field(max_length=300, pattern=_PRINTABLE)
    line: int = Field(ge=0, le=10_000_000)
    function: str = Field(max_length=200, pattern=_PRINTABLE)
    """The qualified name where it is known (``GilHold.run``)."""
    code: str | None = Field(default=None, max_length=200, pattern=_PRINTABLE)
    """The source line, stripped, when the file could be read."""
    kind: FrameKind


class _StackFields(Message):
    type: Literal["stack"] = "stack"
    v: int = Field(ge=1)
    """The stack report's own version (1): fields may be added in later ones."""
    taken_at: float = Field(ge=0, le=10_000_000_000)
    """When the sample was taken, sender's clock: during the block, not when it was sent."""
    blocked_ms: float = Field(ge=0, le=1_000_000_000)
    """How long the main loop had been blocked when the sample was taken."""
    via: Literal["signal", "sampler"]
    """``signal``: written by a signal handler on the blocked thread, which needs no GIL;
    ``sampler``: read by a thread of the worker, which needs the GIL to run."""
    frames: list[Frame] = Field(min_length=1, max_length=MAX_STACK_FRAMES)
    """Innermost (most recent call) first."""
    more: int = Field(0, ge=0, le=1_000_000)
    """Outer frames left out, at least (faulthandler itself stops at 100 frames)."""


class StackReport(_StackFields):
    """The worker's main thread, sampled while its loop is blocked."""


class ProbeStarted(Message):
    type: Literal["probe_started"] = "probe_started"
    id: str = Field(max_length=64)
    probe: str = Field(max_length=64)
    duration_s: float


class ProbeFinished(Message):
    type: Literal["probe_finished"] = "probe_finished"
    id: str = Field(max_length=64)
    elapsed_s: float
    error: str | None = None


# --- hub -> worker ---------------------------------------------------------------


class Inject(Message):
    type: Literal["inject"] = "inject"
    id: str = Field(max_length=64)
    probe: str = Field(max_length=64)
    duration_s: float = Field(gt=0)
    params: dict[str, float | int | str | bool] = Field(default_factory=dict)


class Error(Message):
    """The reply to a frame the receiver could not accept; the connection stays open."""

    type: Literal["error"] = "error"
    code: str
    message: str


# --- hub -> monitor --------------------------------------------------------------


class WorkerInfo(Message):
    """What the hub knows of a connected worker; the payload of snapshot and joined."""

    worker: RowName
    isolation: Isolation
    pid: int
    host: str
    interval_ms: int
    agent: str
    probes: list[str]
    connected_at: float
    last_beat_at: float | None = None
    seq: int | None = None
    probe: str | None = None


class Snapshot(Message):
    type: Literal["snapshot"] = "snapshot"
    v: int
    sent_at: float
    workers: list[WorkerInfo]


class WorkerJoined(Message):
    type: Literal["worker_joined"] = "worker_joined"
    info: WorkerInfo


class WorkerBeat(Message):
    type: Literal["beat"] = "beat"
    worker: RowName
    seq: int
    sent_at: float
    recv_at: float
    loop_lag_ms: float
    main_blocked_ms: float | None = None


class WorkerLeft(Message):
    type: Literal["worker_left"] = "worker_left"
    worker: RowName
    reason: str
    at: float


class WorkerProbeStarted(Message):
    type: Literal["probe_started"] = "probe_started"
    worker: RowName
    id: str
    probe: str
    duration_s: float
    recv_at: float


class WorkerProbeFinished(Message):
    type: Literal["probe_finished"] = "probe_finished"
    worker: RowName
    id: str
    elapsed_s: float
    error: str | None = None
    recv_at: float


class WorkerStack(_StackFields):
    worker: RowName
    recv_at: float


FromWorker = Hello | Beat | ProbeStarted | ProbeFinished | StackReport
"""What a worker may send: a hello first, then the rest."""
ToWorker = Inject | Error
ToMonitor = (Snapshot | WorkerJoined | WorkerBeat | WorkerLeft | WorkerProbeStarted | WorkerProbeFinished
             | WorkerStack | Error)

WorkerFrame = Annotated[FromWorker, Field(discriminator="type")]
HubToWorkerFrame = Annotated[ToWorker, Field(discriminator="type")]
MonitorFrame = Annotated[ToMonitor, Field(discriminator="type")]

_WORKER = TypeAdapter(WorkerFrame)
_TO_WORKER = TypeAdapter(HubToWorkerFrame)
_MONITOR = TypeAdapter(MonitorFrame)


class ProtocolError(ValueError):
    """A frame that cannot be accepted. ``code`` is stable and counted in metrics."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def reply(self) -> Error:
        return Error(code=self.code, message=self.message)


def encode(message: Message) -> str:
    return message.model_dump_json(exclude_none=False)


def _decode(adapter: TypeAdapter, frame: str | bytes, limit: int = MAX_FRAME_BYTES):
    if isinstance(frame, bytes):
        raise ProtocolError("binary_frame", "frames must be JSON text, not binary")
    # A character is at most 4 bytes: only a long frame is worth measuring exactly.
    if len(frame) * 4 > limit and (size := len(frame.encode())) > limit:
        raise ProtocolError("too_large", f"frame of {size} bytes exceeds the limit of {limit}")
    try:
        # pydantic-core parses and validates in one pass: the hot path.
        return adapter.validator.validate_json(frame)
    except ValidationError as exc:
        raise _explain(exc) from None


def _explain(exc: ValidationError) -> ProtocolError:
    """Turn pydantic's report into one stable code and one sentence naming the problem."""
    first = exc.errors(include_url=False)[0]
    kind, loc = first["type"], first["loc"]
    if kind == "json_invalid":
        return ProtocolError("malformed_json", f"frame is not valid JSON: {first['msg']}")
    if not loc and kind in ("dict_type", "model_type", "model_attributes_type"):
        return ProtocolError("malformed_frame", "a frame must be a JSON object")
    if kind == "union_tag_not_found":
        return ProtocolError("malformed_frame", "a frame needs a 'type' field")
    if kind == "union_tag_invalid":
        tag, expected = first["ctx"]["tag"], first["ctx"]["expected_tags"]
        return ProtocolError("unknown_type", f"unknown message type {tag!r}; expected one of {expected}")
    where = ".".join(str(part) for part in loc)
    return ProtocolError("invalid_field", f"{where}: {first['msg']}")


def decode_from_worker(frame: str | bytes) -> FromWorker:
    return _decode(_WORKER, frame)


def decode_to_worker(frame: str | bytes) -> ToWorker:
    return _decode(_TO_WORKER, frame)


def decode_to_monitor(frame: str | bytes) -> ToMonitor:
    """Beats are nearly every frame a monitor reads; one encoded by a hub starts with its
    type, and validating it as a beat directly skips the union (a fifth of the cost). Any
    other frame, or a beat that fails, takes the full path and its error."""
    if isinstance(frame, str) and len(frame) < 1024 and frame.startswith('{"type":"beat"'):
        try:
            return WorkerBeat.__pydantic_validator__.validate_json(frame)
        except ValidationError:
            pass
    return _decode(_MONITOR, frame, MAX_MONITOR_FRAME_BYTES)


def relayed(worker: str, report: Beat | ProbeStarted | ProbeFinished | StackReport, recv_at: float) -> ToMonitor:
    """A worker's report as a hub passes it on to monitors: the same fields, with whose it
    is and when the hub had it."""
    if isinstance(report, Beat):
        return WorkerBeat(worker=worker, seq=report.seq, sent_at=report.sent_at, recv_at=recv_at,
                          loop_lag_ms=report.loop_lag_ms, main_blocked_ms=report.main_blocked_ms)
    if isinstance(report, ProbeStarted):
        return WorkerProbeStarted(worker=worker, id=report.id, probe=report.probe, duration_s=report.duration_s,
                                  recv_at=recv_at)
    if isinstance(report, ProbeFinished):
        return WorkerProbeFinished(worker=worker, id=report.id, elapsed_s=report.elapsed_s, error=report.error,
                                   recv_at=recv_at)
    return WorkerStack(worker=worker, recv_at=recv_at, **report.model_dump(exclude={"type"}))


def check_version(hello: Hello) -> None:
    if hello.v != PROTOCOL_VERSION:
        raise ProtocolError("unsupported_version",
                            f"protocol version {hello.v} is not supported; this hub speaks v{PROTOCOL_VERSION}")
