"""The wire protocol: every message survives a round trip; bad frames get a named error."""

import json

import pytest

from heartmon import protocol as p

WORKER_FRAMES = [
    p.Hello(v=1, worker="none-1", isolation="none", pid=42, host="h", interval_ms=100, agent="heartmon/0.1.0",
            probes=["gil-hold"]),
    p.Beat(seq=7, sent_at=1.5, loop_lag_ms=0.2, main_blocked_ms=None),
    p.Beat(seq=8, sent_at=1.6, loop_lag_ms=0.0, main_blocked_ms=1800.0),
    p.ProbeStarted(id="a1", probe="gil-hold", duration_s=2.0),
    p.ProbeFinished(id="a1", elapsed_s=2.01, error=None),
    p.ProbeFinished(id="a2", elapsed_s=0.0, error="ProbeError: boom"),
    p.StackReport(v=1, taken_at=1.7, blocked_ms=200.0, via="signal", more=0,
                  frames=[p.Frame(file="/srv/app/jobs.py", line=12, function="Report.render", code="x = f()",
                                  kind="app")]),
]
INFO = p.WorkerInfo(worker="thread-1", isolation="thread", pid=1, host="h", interval_ms=100, agent="a",
                    probes=[], connected_at=1.0)
MONITOR_FRAMES = [
    p.Snapshot(v=1, sent_at=3.0, workers=[INFO]),
    p.WorkerJoined(info=INFO),
    p.WorkerBeat(worker="thread-1", seq=1, sent_at=1.0, recv_at=1.01, loop_lag_ms=0.1, main_blocked_ms=3.0),
    p.WorkerLeft(worker="thread-1", reason="connection lost", at=4.0),
    p.WorkerProbeStarted(worker="thread-1", id="x", probe="gc-pause", duration_s=1.0, recv_at=2.0),
    p.WorkerProbeFinished(worker="thread-1", id="x", elapsed_s=1.0, recv_at=3.0),
    p.Error(code="malformed_json", message="nope"),
]


@pytest.mark.parametrize("message", WORKER_FRAMES, ids=lambda m: m.type)
def test_worker_frames_round_trip(message):
    assert p.decode_from_worker(p.encode(message)) == message


@pytest.mark.parametrize("message", MONITOR_FRAMES, ids=lambda m: m.type)
def test_monitor_frames_round_trip(message):
    assert p.decode_to_monitor(p.encode(message)) == message


def test_inject_round_trips_to_worker():
    inject = p.Inject(id="i", probe="sync-sleep", duration_s=0.5, params={"n": 3})
    assert p.decode_to_worker(p.encode(inject)) == inject


@pytest.mark.parametrize(
    ("frame", "code", "says"),
    [
        ("{", "malformed_json", "not valid JSON"),
        ("[1, 2]", "malformed_frame", "JSON object"),
        ('{"seq": 1}', "malformed_frame", "'type'"),
        ('{"type": "zap"}', "unknown_type", "'zap'"),
        ('{"type": "beat", "seq": -1, "sent_at": 1, "loop_lag_ms": 0}', "invalid_field", "seq"),
        ('{"type": "beat", "seq": 1, "sent_at": 1, "loop_lag_ms": 0, "extra": 1}', "invalid_field", "extra"),
        ('{"type": "hello", "v": 1}', "invalid_field", "hello.worker"),
        (b'{"type": "beat"}', "binary_frame", "binary"),
        ('{"type": "beat", "pad": "' + "x" * p.MAX_FRAME_BYTES + '"}', "too_large", "exceeds"),
    ],
)
def test_bad_frames_get_a_code_and_a_message_that_names_the_problem(frame, code, says):
    with pytest.raises(p.ProtocolError) as caught:
        p.decode_from_worker(frame)
    assert caught.value.code == code
    assert says in caught.value.message
    reply = json.loads(p.encode(caught.value.reply()))
    assert reply == {"type": "error", "code": code, "message": caught.value.message}


def test_a_worker_cannot_send_hub_commands():
    with pytest.raises(p.ProtocolError) as caught:
        p.decode_from_worker(p.encode(p.Inject(id="i", probe="gil-hold", duration_s=1)))
    assert caught.value.code == "unknown_type"


def test_other_protocol_versions_are_refused():
    hello = WORKER_FRAMES[0].model_copy(update={"v": 2})
    with pytest.raises(p.ProtocolError) as caught:
        p.check_version(hello)
    assert caught.value.code == "unsupported_version"


def test_every_example_in_the_protocol_doc_decodes():
    """docs/protocol.md's examples are real frames: a drift between doc and code fails here."""
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    decoders = {"worker": p.decode_from_worker, "to-worker": p.decode_to_worker, "monitor": p.decode_to_monitor}
    examples = re.findall(r"```json (\S+)\n(.*?)\n```", doc, re.S)
    assert len(examples) == 14
    for direction, frame in examples:
        message = decoders[direction](frame)
        assert p.encode(message) == frame, f"the doc's {message.type} is not in canonical form"


def test_a_beat_takes_the_short_path_and_a_bad_one_still_gets_the_full_error():
    frame = p.encode(p.WorkerBeat(worker="w", seq=3, sent_at=1.0, recv_at=2.0, loop_lag_ms=0.1))
    assert p.decode_to_monitor(frame) == p.WorkerBeat(worker="w", seq=3, sent_at=1.0, recv_at=2.0, loop_lag_ms=0.1)
    with pytest.raises(p.ProtocolError) as bad:
        p.decode_to_monitor(frame.replace('"seq":3', '"seq":"three"'))
    assert bad.value.code == "invalid_field" and "seq" in bad.value.message
