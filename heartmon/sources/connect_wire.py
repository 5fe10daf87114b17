"""The few Inngest Connect protobuf messages heartmon's gateway reads and writes, by
hand.

Why not ``protobuf`` and generated code: the only generated module at hand is the
Python SDK's ``inngest.connect._internal.connect_pb2``, and importing it imports the
whole SDK first (its package ``__init__``); generating our own would add protobuf to
the ``inngest`` extra and tie heartmon to protobuf's runtime-version checks. The gateway
needs six messages and a dozen scalar fields of them, which the wire format (varints
and length-delimited fields) makes about a hundred lines. Field numbers follow the
SDKs' ``connect.proto`` (package ``connect.v1``); fields heartmon does not need are
skipped, as every protobuf parser does, so a newer SDK's additions do not break it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum


class WireError(ValueError):
    """Bytes that are not the protobuf message they claim to be."""


class Kind(IntEnum):
    """``GatewayMessageType``: what a ``ConnectMessage`` carries."""

    GATEWAY_HELLO = 0
    WORKER_CONNECT = 1
    GATEWAY_CONNECTION_READY = 2
    GATEWAY_EXECUTOR_REQUEST = 3
    WORKER_READY = 4
    WORKER_REQUEST_ACK = 5
    WORKER_REPLY = 6
    WORKER_REPLY_ACK = 7
    WORKER_PAUSE = 8
    WORKER_HEARTBEAT = 9
    GATEWAY_HEARTBEAT = 10
    GATEWAY_CLOSING = 11
    WORKER_REQUEST_EXTEND_LEASE = 12
    WORKER_REQUEST_EXTEND_LEASE_ACK = 13
    SYNC_FAILED = 14
    WORKER_STATUS = 15


FROM_WORKER = frozenset({Kind.WORKER_CONNECT, Kind.WORKER_READY, Kind.WORKER_REQUEST_ACK, Kind.WORKER_REPLY,
                         Kind.WORKER_PAUSE, Kind.WORKER_HEARTBEAT, Kind.WORKER_REQUEST_EXTEND_LEASE,
                         Kind.WORKER_STATUS})
"""The kinds a worker may send; the others are the gateway's own."""

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
MAX_FIELDS = 128
"""The most fields one message may have. The messages heartmon reads have a dozen (a
worker's apps are one each); decoding costs Python work per field, so this, not the
frame's size, bounds what one frame costs: a frame of tiny fields is refused after
this many, not parsed whole."""


@dataclass(frozen=True, slots=True)
class Message:
    """``ConnectMessage``: every WebSocket frame in either direction."""

    kind: int
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class WorkerConnect:
    """``WorkerConnectRequestData``: who the worker is, and the session it was given."""

    connection_id: str = ""
    instance_id: str = ""
    session_token: str = ""
    app_configs: tuple[bytes, ...] = ()
    """Each app's ``AppConfiguration``, undecoded: the gateway checks the session before
    it spends anything on them (:func:`decode_app_name`)."""
    sdk_language: str = ""
    """"typescript" (the Node SDK), "py": which decides the interval it beats at."""


@dataclass(frozen=True, slots=True)
class StartResponse:
    connection_id: str
    gateway_endpoint: str
    gateway_group: str
    session_token: str
    sync_token: str


@dataclass(slots=True)
class _Fields:
    """A message's fields by number, last value wins (as protobuf's scalars); repeated
    ones keep every value in order."""

    values: dict[int, list[int | bytes]] = field(default_factory=dict)

    def last(self, number: int) -> int | bytes | None:
        found = self.values.get(number)
        return found[-1] if found else None

    def text(self, number: int) -> str:
        value = self.last(number)
        if value is None:
            return ""
        if isinstance(value, int):
            raise WireError(f"field {number} should be a string, not a varint")
        return _text(value)

    def blob(self, number: int) -> bytes:
        value = self.last(number)
        if isinstance(value, int):
            raise WireError(f"field {number} should be bytes, not a varint")
        return value or b""

    def number(self, number: int) -> int:
        value = self.last(number)
        if isinstance(value, bytes):
            raise WireError(f"field {number} should be a varint, not bytes")
        return value or 0

    def repeated(self, number: int) -> list[bytes]:
        values = self.values.get(number, [])
        if any(isinstance(v, int) for v in values):
            raise WireError(f"field {number} should be repeated bytes")
        return [v for v in values if isinstance(v, bytes)]


def decode_message(data: bytes) -> Message:
    f = _parse(data)
    return Message(f.number(1), f.blob(2))


def encode_message(kind: Kind, payload: bytes = b"") -> bytes:
    return _varint_field(1, kind) + (_bytes_field(2, payload) if payload else b"")


def decode_worker_connect(data: bytes) -> WorkerConnect:
    f = _parse(data)
    return WorkerConnect(connection_id=f.text(1), instance_id=f.text(2), session_token=_parse(f.blob(3)).text(1),
                         app_configs=tuple(f.repeated(5)), sdk_language=f.text(12))


def decode_app_name(config: bytes) -> str:
    """An ``AppConfiguration``'s ``app_name``."""
    return _parse(config).text(1)


def check_start_request(data: bytes) -> list[str]:
    """``StartRequest``'s ``exclude_gateways``: this gateway is the only one, so they are
    only checked to be what they claim."""
    f = _parse(data)
    return [_text(raw) for raw in f.repeated(1)]


def encode_start_response(r: StartResponse) -> bytes:
    return b"".join(_bytes_field(n, s.encode()) for n, s in enumerate(
        (r.connection_id, r.gateway_endpoint, r.gateway_group, r.session_token, r.sync_token), start=1))


def encode_connection_ready(heartbeat_interval: str, extend_lease_interval: str) -> bytes:
    """``GatewayConnectionReadyData``; intervals are Go durations ("100ms", "5s")."""
    return _bytes_field(1, heartbeat_interval.encode()) + _bytes_field(2, extend_lease_interval.encode())


# --- the wire format --------------------------------------------------------------


def _parse(data: bytes) -> _Fields:
    fields = _Fields()
    for count, (number, value) in enumerate(_fields(data), start=1):
        if count > MAX_FIELDS:
            raise WireError(f"more than {MAX_FIELDS} fields in one message")
        fields.values.setdefault(number, []).append(value)
    return fields


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise WireError("a string is not UTF-8 text") from None


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    at, end = 0, len(data)
    while at < end:
        key, at = _read_varint(data, at)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == _VARINT:
            value, at = _read_varint(data, at)
            yield number, value
        elif wire == _LEN:
            length, at = _read_varint(data, at)
            if at + length > end:
                raise WireError(f"field {number} claims {length} bytes, {end - at} left")
            yield number, bytes(data[at:at + length])
            at += length
        elif wire in (_I64, _I32):
            at += 8 if wire == _I64 else 4  # fixed-width numbers: no field heartmon reads
            if at > end:
                raise WireError(f"field {number} is cut short")
        else:
            raise WireError(f"field {number} has wire type {wire}, which proto3 does not use")


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    for i in range(at, min(at + 10, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    raise WireError("a varint is cut short or longer than 10 bytes")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3 | _VARINT) + _varint(value)


def _bytes_field(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(value)) + value
