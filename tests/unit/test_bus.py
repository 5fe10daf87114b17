"""NATS without a server: subjects, what a message on the bus means, /connz as evidence
of life, server addresses and credentials, the nats:// source's options, and the hub's
judgement of workers it hears over a bus."""

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import SecretStr

from heartmon.bus.commands import new_inject
from heartmon.bus.connect import BEATING, BusError, credentials, parse_servers
from heartmon.bus.evidence import GRACE_S, Evidence
from heartmon.bus.hearing import ASK_EVERY_S, Hearing
from heartmon.bus.subjects import Identity, escape, parse, reports, stem_identity, unescape
from heartmon.config import NatsSettings, Settings
from heartmon.detector import Thresholds
from heartmon.hub_state import BadInject, HubState
from heartmon.protocol import (
    Beat,
    Frame,
    Hello,
    ProbeFinished,
    ProbeStarted,
    ProtocolError,
    StackReport,
    WorkerJoined,
    WorkerLeft,
    encode,
)
from heartmon.sources import SourceError, no_client, parse_source

PREFIX = "heartmon"
WORKER = Identity("prod", "web-1.example.com", "api:worker.1")
SECRET = "s3cr3t-pass"


def hello(worker: str = "api:worker.1", host: str = "web-1.example.com", instance: str | None = None) -> Hello:
    return Hello(v=1, worker=worker, isolation="thread", pid=42, host=host, interval_ms=100, agent="t",
                 probes=["gil-hold"], instance=instance)


def nats_matches(pattern: str, subject: str) -> bool:
    """NATS's own rule, written out: tokens are split on '.', '*' matches exactly one
    token, '>' (last) matches one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


# --- subjects -----------------------------------------------------------------------


PARTS = st.text(st.one_of(st.sampled_from(".*> \t%:/é"), st.characters(codec="utf-8")), min_size=1)
"""Any text, with the characters a subject token may not hold drawn often."""


@given(st.text(min_size=1) | PARTS)
@example("web-1.example.com")
@example("*")
@example(">")
@example("a b")
@example("%41")
def test_any_text_becomes_one_subject_token_that_reads_back_exactly(text):
    token = escape(text)
    assert token and not any(c in token for c in ".*>") and not any(c.isspace() for c in token)
    assert unescape(token) == text


def test_a_dotted_host_and_a_worker_name_with_colons_and_dots_are_one_token_each():
    for part in ("web-1.example.com", "api:worker.1"):
        assert "." not in escape(part) and ":" not in escape(part)
    subject = WORKER.subject(PREFIX, "beat")
    assert subject.split(".") == ["heartmon", "prod", escape("web-1.example.com"), escape("api:worker.1"), "beat"]


def test_the_key_is_fleet_host_name_and_reads_back_with_slashes_in_the_name():
    assert WORKER.key == "prod/web-1.example.com/api:worker.1"
    assert Identity.from_key(WORKER.key) == WORKER
    assert Identity.from_key("prod/h/jobs/nightly/1") == Identity("prod", "h", "jobs/nightly/1")
    for bad in ("a/b", "/b/c", "a//c", "a/b/", "plain"):
        with pytest.raises(ValueError, match="FLEET/HOST/NAME"):
            Identity.from_key(bad)


@given(PARTS, PARTS, PARTS,
       st.sampled_from(["hello", "beat", "probe_started", "probe_finished", "stack"]))
def test_a_subject_reads_back_as_the_worker_and_type_it_was_made_of(fleet, host, name, kind):
    identity = Identity(fleet, host, name)
    assert parse(PREFIX, identity.subject(PREFIX, kind)) == (identity, kind)
    assert stem_identity(PREFIX, identity.stem(PREFIX)) == identity


def test_a_subject_of_the_wrong_depth_or_outside_the_prefix_is_refused():
    good = WORKER.subject(PREFIX, "beat")
    for bad in ("heartmon.prod.h.beat", good + ".extra", WORKER.command(PREFIX, "inject"), "heartmon.discover",
                "other." + good.removeprefix("heartmon."), "heartmonx.prod.h.w.beat", "heartmon"):
        with pytest.raises(ValueError):
            parse(PREFIX, bad)
    with pytest.raises(ValueError, match="not an escaped subject token"):
        parse(PREFIX, "heartmon.prod.web%2e1.w.beat")  # not how escape writes a dot


@pytest.mark.parametrize("fleet", [None, "my fleet"])
def test_a_monitor_hears_every_report_of_a_worker_and_none_of_its_commands(fleet):
    worker = Identity("my fleet", "web-1.example.com", "api:worker.1")
    pattern = reports(PREFIX, fleet)
    for kind in ("hello", "beat", "probe_started", "probe_finished", "stack"):
        assert nats_matches(pattern, worker.subject(PREFIX, kind))
    # An inject to a worker nobody holds must hear "no responders": no monitor may match it.
    for command in ("inject", "discover"):
        assert not nats_matches(pattern, worker.command(PREFIX, command))
    assert not nats_matches(pattern, f"{PREFIX}.discover")


def test_a_monitor_of_one_fleet_does_not_hear_another():
    other = Identity("staging", "h", "w")
    assert not nats_matches(reports(PREFIX, "prod"), other.subject(PREFIX, "beat"))
    assert nats_matches(reports(PREFIX, None), other.subject(PREFIX, "beat"))


@pytest.mark.parametrize("name", ["", "some-app", "heartmon", "heartmon.prod.h", "heartmon.prod.h.w.extra",
                                  "other.prod.h.w", "heartmon.prod.h.w%zz"])
def test_a_connection_that_is_not_a_heartmon_worker_has_no_identity(name):
    assert stem_identity(PREFIX, name) is None


# --- hearing ------------------------------------------------------------------------

STACK = StackReport(v=1, taken_at=1.7, blocked_ms=200.0, via="signal", more=0,
                    frames=[Frame(file="/srv/app/jobs.py", line=12, function="Report.render", code="x = f()",
                                  kind="app")])
REPORTS = [hello(), Beat(seq=3, sent_at=1.5, loop_lag_ms=0.4, main_blocked_ms=12.0),
           ProbeStarted(id="a1", probe="gil-hold", duration_s=2.0), ProbeFinished(id="a1", elapsed_s=2.01), STACK]


@pytest.mark.parametrize("message", REPORTS, ids=lambda m: m.type)
def test_each_report_on_its_own_subject_decodes_to_its_worker_and_message(message):
    identity, decoded = Hearing(PREFIX).decode(WORKER.subject(PREFIX, message.type), encode(message).encode())
    assert identity == WORKER and decoded == message


@pytest.mark.parametrize("other", [hello(worker="someone-else"), hello(host="web-2.example.com")],
                         ids=["worker", "host"])
def test_a_hello_that_names_another_worker_than_its_subject_is_refused(other):
    with pytest.raises(ProtocolError) as refused:
        Hearing(PREFIX).decode(WORKER.subject(PREFIX, "hello"), encode(other).encode())
    assert refused.value.code == "wrong_subject"


def test_a_payload_of_one_type_on_another_types_subject_is_refused():
    beat = Beat(seq=1, sent_at=0, loop_lag_ms=0)
    with pytest.raises(ProtocolError) as refused:
        Hearing(PREFIX).decode(WORKER.subject(PREFIX, "hello"), encode(beat).encode())
    assert refused.value.code == "wrong_subject"


@pytest.mark.parametrize("data", [b"\xff\xfe{", b"{not json", b""], ids=["not-utf8", "not-json", "empty"])
def test_a_payload_that_is_not_json_text_is_refused_as_malformed(data):
    with pytest.raises(ProtocolError) as refused:
        Hearing(PREFIX).decode(WORKER.subject(PREFIX, "beat"), data)
    assert refused.value.code == "malformed_json"


@pytest.mark.parametrize("subject", [WORKER.subject(PREFIX, "shout"), WORKER.subject(PREFIX, "cmd"),
                                     "heartmon.prod.h.beat", "elsewhere.prod.h.w.beat"])
def test_a_subject_no_worker_publishes_on_is_refused(subject):
    beat = encode(Beat(seq=1, sent_at=0, loop_lag_ms=0)).encode()
    with pytest.raises(ProtocolError) as refused:
        Hearing(PREFIX).decode(subject, beat)
    assert refused.value.code == "bad_subject"


@pytest.mark.parametrize("identity", [Identity("prod", "web\x1b[2J1", "api"), Identity("pr/od", "web-1", "api"),
                                      Identity("prod", "web/1", "api"), Identity("f" * 300, "h" * 250, "api")])
def test_a_hello_whose_identity_cannot_name_a_row_is_refused(identity):
    """Its key reaches terminals and the hub's listing: control characters, a '/' that
    would not read back, or an absurd length are refused like any malformed message."""
    with pytest.raises(ProtocolError) as refused:
        Hearing(PREFIX).decode(identity.subject(PREFIX, "hello"), encode(hello("api", identity.host)).encode())
    assert refused.value.code == "bad_subject"


def test_a_worker_heard_without_its_hello_is_asked_at_most_every_few_seconds_each():
    hearing, other = Hearing(PREFIX), Identity("prod", "h", "other")
    assert hearing.should_ask(WORKER, 100.0)
    assert not hearing.should_ask(WORKER, 100.0)
    assert not hearing.should_ask(WORKER, 100.0 + ASK_EVERY_S - 0.01)
    assert hearing.should_ask(other, 100.5)  # each worker on its own
    assert hearing.should_ask(WORKER, 100.0 + ASK_EVERY_S)
    assert not hearing.should_ask(other, 101.0)


def test_a_worker_is_asked_at_once_on_a_clock_that_starts_at_zero():
    assert Hearing(PREFIX).should_ask(WORKER, 0.0)


# --- evidence -----------------------------------------------------------------------

STEM = WORKER.stem(PREFIX)
KEY = WORKER.key


def test_a_worker_listed_on_a_server_has_its_connection_as_evidence():
    evidence = Evidence(PREFIX)
    assert evidence.reading({"n1": [STEM], "n2": []}, 0.0) == [(KEY, "NATS connection open on n1")]
    assert KEY in evidence.vouched
    assert evidence.reading({"n1": [STEM], "n2": []}, 0.0) == []  # nothing changed, nothing to say


def test_a_worker_that_moves_to_another_server_is_vouched_for_there():
    evidence = Evidence(PREFIX)
    evidence.reading({"n1": [STEM], "n2": []}, 0.0)
    assert evidence.reading({"n1": [], "n2": [STEM]}, 0.0) == [(KEY, "NATS connection open on n2")]


def test_a_worker_whose_server_cannot_be_read_keeps_its_evidence_for_a_while_then_loses_it():
    """A dead server's workers are on another within milliseconds; a wedged one's leave
    it once its pings go unanswered: until then they were connected as far as anyone knows."""
    evidence = Evidence(PREFIX)
    evidence.reading({"n1": [STEM], "n2": []}, 0.0)
    assert GRACE_S >= BEATING.stale_after_s  # as long as an agent takes to give up on a wedged server
    ((key, because),) = evidence.reading({"n1": None, "n2": []}, 1.0)
    assert key == KEY and "n1" in because and "cannot be read" in because
    for now in (2.0, 1.0 + GRACE_S):
        assert evidence.reading({"n1": None, "n2": []}, now) == []  # still vouched, the same words
    assert evidence.reading({"n1": None, "n2": []}, 1.1 + GRACE_S) == [(KEY, None)]
    assert KEY not in evidence.vouched


def test_a_worker_back_on_a_list_during_the_grace_is_connected_again():
    evidence = Evidence(PREFIX)
    evidence.reading({"n1": [STEM], "n2": []}, 0.0)
    evidence.reading({"n1": None, "n2": []}, 0.0)
    assert evidence.reading({"n1": None, "n2": [STEM]}, 0.0) == [(KEY, "NATS connection open on n2")]


def test_a_worker_on_no_list_of_a_readable_server_loses_its_evidence_at_once():
    evidence = Evidence(PREFIX)
    evidence.reading({"n1": [STEM]}, 0.0)
    assert evidence.reading({"n1": []}, 0.0) == [(KEY, None)]
    assert KEY not in evidence.vouched
    assert evidence.reading({"n1": []}, 0.0) == []


def test_connections_that_are_not_heartmon_workers_are_ignored():
    evidence = Evidence(PREFIX)
    assert evidence.reading({"n1": ["", "some-app", "other.prod.h.w", "heartmon.prod.h"], "n2": None}, 0.0) == []
    assert evidence.vouched == {} and evidence.seen_on == {}


# --- servers and credentials ----------------------------------------------------------


def test_several_servers_are_comma_separated():
    assert parse_servers(" nats://10.0.0.1:4222, tls://n2.example.com:4222 ,nats://[::1]:4222/") == [
        "nats://10.0.0.1:4222", "tls://n2.example.com:4222", "nats://[::1]:4222/"]


@pytest.mark.parametrize("url", [f"nats://u:{SECRET}@h:4222", f"nats://{SECRET}@h:4222",
                                 f"nats://h1:4222,tls://u:{SECRET}@h2:4222"])
def test_credentials_in_a_server_address_are_refused_without_repeating_them(url):
    with pytest.raises(BusError) as refused:
        parse_servers(url)
    message = str(refused.value)
    assert SECRET not in message
    assert "credentials" in message and "settings" in message and "HEARTMON_NATS__" in message


@pytest.mark.parametrize("url, problem", [
    ("http://h:4222", "expected nats://HOST:PORT"), ("h:4222", "expected nats://HOST:PORT"),
    ("nats://:4222", "expected nats://HOST:PORT"), ("nats://h:4222/x", "nothing after the port"),
    ("nats://h:4222?x=1", "nothing after the port"), ("nats://h:port", "invalid NATS address"), ("", "no NATS server"),
])
def test_a_server_address_that_is_not_nats_host_port_is_refused(url, problem):
    with pytest.raises(BusError, match=problem):
        parse_servers(url)


@pytest.mark.parametrize("url", [f"nats://u:{SECRET}@h:port", f"http://u:{SECRET}@h:4222"])
def test_a_bad_address_with_credentials_does_not_repeat_the_password(url):
    with pytest.raises(BusError) as refused:
        parse_servers(url)
    assert SECRET not in str(refused.value)


def test_credentials_come_from_the_settings_as_the_clients_keyword_arguments():
    assert credentials(NatsSettings()) == {}
    assert credentials(NatsSettings(token=SecretStr("tok"))) == {"token": "tok"}
    assert credentials(NatsSettings(user="mon", password=SecretStr(SECRET))) == {"user": "mon", "password": SECRET}
    assert credentials(NatsSettings(user="mon")) == {"user": "mon", "password": ""}


# --- commands -----------------------------------------------------------------------


@pytest.mark.parametrize("duration", [60.01, 0.0, -1.0, float("nan"), float("inf")])
def test_an_inject_longer_than_the_maximum_or_not_positive_is_refused_before_sending(duration):
    with pytest.raises(BadInject) as refused:
        new_inject("gil-hold", duration, 60.0)
    assert refused.value.code == "bad_duration"


def test_an_inject_within_the_maximum_is_a_command_with_an_id():
    command = new_inject("gil-hold", 60.0, 60.0)
    assert (command.probe, command.duration_s) == ("gil-hold", 60.0) and command.id
    assert new_inject("gil-hold", 1.0, 60.0).id != command.id


# --- the nats:// source ---------------------------------------------------------------


def test_a_nats_source_takes_a_fleet_and_each_servers_monitoring_endpoint():
    source = parse_source("nats://127.0.0.1:4222?fleet=prod&monitor=127.0.0.1:8222&monitor=127.0.0.1:8223",
                          Settings(), no_client)
    assert source.kind == "nats"
    assert (source.servers, source.fleet, source.monitors) == (
        ["nats://127.0.0.1:4222"], "prod", ["127.0.0.1:8222", "127.0.0.1:8223"])
    assert source.subject == reports("heartmon", "prod")


def test_a_nats_source_without_options_follows_every_fleet():
    source = parse_source("nats://n1:4222,nats://n2:4222", Settings(), no_client)
    assert (source.servers, source.fleet, source.monitors) == (["nats://n1:4222", "nats://n2:4222"], None, [])


@pytest.mark.parametrize("spec, problem", [
    ("nats://h:4222?flet=prod", "unknown option 'flet'"),
    ("nats://h:4222?fleet=a&fleet=b", "fleet= names one fleet"),
    ("nats://h:4222?fleet=", "fleet= names one fleet"),
    ("nats://h:4222?fleet", "cannot read the options"),
    (f"nats://u:{SECRET}@h:4222", "carries credentials"),
])
def test_a_nats_source_refuses_what_it_cannot_follow_and_says_why(spec, problem):
    with pytest.raises(SourceError, match=problem):
        parse_source(spec, Settings(), no_client)


def test_a_nats_source_with_credentials_is_refused_without_repeating_the_password():
    with pytest.raises(SourceError) as refused:
        parse_source(f"nats://u:{SECRET}@h:4222", Settings(), no_client)
    assert SECRET not in str(refused.value)


# --- the hub's judgement of workers on a bus ------------------------------------------

BUS_KEY = "prod/web-1.example.com/api"


def hub(**kwargs) -> HubState:
    return HubState(Thresholds(), ["gil-hold"], wall_offset=1_000_000.0, **kwargs)


def bus_hello(instance: str | None = "i1") -> Hello:
    """As the bridge passes it on: named by its key, fleet/host/name."""
    return hello("api", instance=instance).model_copy(update={"worker": BUS_KEY})


def silent_until(state: HubState, end: float) -> None:
    """Judges every deadline up to ``end``, as the hub's judging loop does."""
    due = state.judge(0.0)
    while due is not None and due <= end:
        due = state.judge(due)
    state.judge(end)


def test_a_bus_worker_silent_without_evidence_is_dead_and_buried():
    state = hub()
    state.join(bus_hello(), "route", 0.0, connected=None)
    silent_until(state, 0.5)
    assert state.bury(0.5) == [] and state.records[BUS_KEY].tracker.state == "late"
    silent_until(state, 2.0)  # dead_after: 10 intervals of 0.1 s
    assert state.records[BUS_KEY].tracker.state == "dead"
    (left,) = state.bury(2.0)
    assert isinstance(left, WorkerLeft) and left.worker == BUS_KEY
    assert BUS_KEY not in state.records and state.bury(2.1) == []


def test_a_bus_worker_vouched_for_by_its_nats_connection_is_starved_not_dead():
    state = hub()
    state.join(bus_hello(), "route", 0.0, connected=None)
    state.vouch(BUS_KEY, "NATS connection open on n1", 0.0)
    silent_until(state, 60.0)
    assert state.records[BUS_KEY].tracker.state == "starved"
    assert state.bury(60.0) == []
    state.vouch(BUS_KEY, None, 60.0)  # the connection is gone too
    silent_until(state, 60.0)
    assert [type(m) for m in state.bury(60.0)] == [WorkerLeft]


def test_a_websocket_worker_is_never_buried_however_long_its_silence():
    state = hub()
    state.join(hello("api"), "ws", 0.0)
    silent_until(state, 3600.0)
    assert state.records["api"].tracker.state == "starved"
    assert state.bury(3600.0) == [] and "api" in state.records


def test_a_hub_that_loses_the_bus_makes_only_its_bus_workers_unknown_and_their_hello_brings_them_back():
    """A bridge still takes WebSocket workers on /connect: its lost bus says nothing of them."""
    state = hub()
    state.join(hello("api"), "ws", 0.0)
    state.join(bus_hello(), "route", 0.0, connected=None)
    state.bus_lost(0.05)
    assert state.records[BUS_KEY].tracker.state == "unknown"
    assert state.records["api"].tracker.state == "healthy"
    again = state.join(bus_hello(), "route", 0.1, connected=None)  # the same agent, asked to say hello
    assert again.publish == [] and again.record is state.records[BUS_KEY]
    assert state.records[BUS_KEY].tracker.state == "healthy"


def test_with_a_token_a_bus_worker_may_say_hello_as_another_instance_but_a_websocket_worker_may_not():
    state = hub(identity_required=True)
    state.join(bus_hello("i1"), "route-1", 0.0, connected=None)
    joined = state.join(bus_hello("i2"), "route-2", 1.0, connected=None)  # the cluster's auth decided
    assert joined.replaced == "route-1" and [type(m) for m in joined.publish] == [WorkerLeft, WorkerJoined]
    assert state.records[BUS_KEY].hello.instance == "i2"
    state.join(hello("api", instance="i1"), "ws-1", 0.0)
    with pytest.raises(ProtocolError) as refused:
        state.join(hello("api", instance="i2"), "ws-2", 1.0)
    assert refused.value.code == "name_taken"


def test_a_worker_listed_on_connz_before_its_hello_has_that_evidence_once_it_says_hello():
    """/connz may list a worker before its hello arrives (the benchmark saw 58 of 10,000):
    the evidence then was for no row, and the hello must pick it up, or the worker's
    first silence would be judged dead instead of starved."""
    from heartmon.monitor import Monitor
    from heartmon.sources.nats import NatsSource
    from heartmon.view import ViewRequest

    monitor = Monitor(Settings(), [], clock=lambda: 10.0)
    source = NatsSource("nats://bus:4222", ["nats://bus:4222"], NatsSettings(), None, ["bus:8222"], no_client)
    for key, because in source.evidence.reading({"http://bus:8222": [WORKER.stem(PREFIX)]}, 0.0):
        monitor.vouch("nats://bus:4222", key, 10.0, because)  # as the source's /connz follower does
    source.take(monitor, WORKER, hello(WORKER.worker, WORKER.host), 10.0)
    detail = monitor.view(ViewRequest(detail=("nats://bus:4222", WORKER.key))).detail
    assert detail is not None and detail.vouched == "NATS connection open on http://bus:8222"
