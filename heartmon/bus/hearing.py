"""What one message on the bus means, with no I/O: the subject says who, the payload
(the protocol's own, exactly as an agent sends it to a hub) says what.

The subject is the worker's identity, and a hello must agree with it: a payload that
names another worker or host than its subject is refused, like any malformed one, so
a publisher cannot speak for a worker by writing its name into a payload.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from heartmon.bus.subjects import FROM_WORKER, Identity, parse, unfit_identity
from heartmon.protocol import FromWorker, Hello, ProtocolError, decode_from_worker

ASK_EVERY_S = 2.0
"""A worker heard without its hello is asked for it at most this often."""


@dataclass
class Hearing:
    prefix: str
    asked: dict[str, float] = field(default_factory=dict)

    def decode(self, subject: str, data: bytes) -> tuple[Identity, FromWorker]:
        """The worker and its message. Raises ProtocolError, with a stable code, for
        anything malformed."""
        try:
            identity, kind = parse(self.prefix, subject)
        except ValueError as exc:
            raise ProtocolError("bad_subject", str(exc)) from None
        if why := unfit_identity(identity):
            raise ProtocolError("bad_subject", f"subject {subject[:80]!r}: {why}")
        if kind not in FROM_WORKER:
            raise ProtocolError("bad_subject", f"subject {subject[:80]!r}: {kind[:40]!r} is not a message type")
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise ProtocolError("malformed_json", "payload is not UTF-8 text") from None
        message = decode_from_worker(text)
        if message.type != kind:
            raise ProtocolError("wrong_subject", f"a {message.type!r} payload on a {kind!r} subject")
        if isinstance(message, Hello) and (message.worker, message.host) != (identity.worker, identity.host):
            raise ProtocolError("wrong_subject", f"hello of {message.host}/{message.worker} on the subject of "
                                                 f"{identity.host}/{identity.worker}")
        return identity, message

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
