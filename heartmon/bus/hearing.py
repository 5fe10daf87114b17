"""What one message on the bus means, with no I/O: the subject says who, the payload
(the protocol's own, exactly as an agent sends it to a hub) says what.

The subject is the worker's identity, and a hello must agree with it: a payload that
names another worker or host than its subject is refused, like any malformed one, so
a publisher cannot speak for a worker by writing its name into a payload.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from heartmon.bus.subjects import Identity, parse, unfit_identity
from heartmon.protocol import (
    MAX_FRAME_BYTES,
    Beat,
    FromWorker,
    Hello,
    Message,
    ProbeFinished,
    ProbeStarted,
    ProtocolError,
    StackReport,
    decode_from_worker,
)

MAX_SUBJECTS = 500_000
MODELS: dict[str, type[Message]] = {
    "hello": Hello, "beat": Beat, "probe_started": ProbeStarted, "probe_finished": ProbeFinished, "stack": StackReport}
"""What a worker publishes, by the last token of its subject."""
ASK_EVERY_S = 2.0
"""A worker heard without its hello is asked for it at most this often."""


@dataclass
class Hearing:
    prefix: str
    asked: dict[str, float] = field(default_factory=dict)
    subjects: dict[str, tuple[Identity, str]] = field(default_factory=dict)
    """Subjects read before: each worker's five are read once, not at every beat."""

    def decode(self, subject: str, data: bytes) -> tuple[Identity, FromWorker]:
        """The worker and its message. Raises ProtocolError, with a stable code, for
        anything malformed."""
        known = self.subjects.get(subject)
        if known is None:
            known = self.subjects[subject] = self._read(subject)
            if len(self.subjects) > MAX_SUBJECTS:  # a fleet's worth of subjects at most, not everything ever heard
                self.subjects.clear()
        identity, kind = known
        if len(data) > MAX_FRAME_BYTES:
            raise ProtocolError("too_large", f"payload of {len(data)} bytes exceeds the limit of {MAX_FRAME_BYTES}")
        try:  # the subject names the type: validate as that model alone (a beat is nearly every message)
            message: FromWorker = MODELS[kind].__pydantic_validator__.validate_json(data)
        except ValidationError:
            try:
                text = data.decode()
            except UnicodeDecodeError:
                raise ProtocolError("malformed_json", "payload is not UTF-8 text") from None
            message = decode_from_worker(text)  # the union's error says what is wrong
        if message.type != kind:
            raise ProtocolError("wrong_subject", f"a {message.type!r} payload on a {kind!r} subject")
        if isinstance(message, Hello) and (message.worker, message.host) != (identity.worker, identity.host):
            raise ProtocolError("wrong_subject", f"hello of {message.host}/{message.worker} on the subject of "
                                                 f"{identity.host}/{identity.worker}")
        return identity, message

    def _read(self, subject: str) -> tuple[Identity, str]:
        try:
            identity, kind = parse(self.prefix, subject)
        except ValueError as exc:
            raise ProtocolError("bad_subject", str(exc)) from None
        if why := unfit_identity(identity):
            raise ProtocolError("bad_subject", f"subject {subject[:80]!r}: {why}")
        if kind not in MODELS:
            raise ProtocolError("bad_subject", f"subject {subject[:80]!r}: {kind[:40]!r} is not a message type")
        return identity, kind

    def should_ask(self, identity: Identity, now: float) -> bool:
        """A report came from a worker whose hello is not known (it said hello before we
        subscribed): whether to ask it again now, at most every ASK_EVERY_S."""
        key = identity.key
        if now - self.asked.get(key, -ASK_EVERY_S) < ASK_EVERY_S:
            return False
        self.asked[key] = now
        if len(self.asked) > 100_000:  # stale entries of workers long gone
            self.asked = {k: t for k, t in self.asked.items() if now - t < ASK_EVERY_S}
        return True
