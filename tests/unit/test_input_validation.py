"""Bad input is refused where it enters, with a message that names it: addresses,
settings files and values, fleet sizes, probe names, worker names in URLs."""

import re

import httpx
import pytest

from heartmon.commands import HubClient
from heartmon.config import ConfigError, Settings, load_settings
from heartmon.detector import Thresholds
from heartmon.fleet import FleetSpecError, parse_fleet_spec
from heartmon.probes import ProbeError, load_registry
from heartmon.sources import SourceError, no_client, parse_source
from heartmon.urls import check_address

ANY_SCHEME = ("ws", "wss", "http", "https")
MAX_WORKERS = 200


def _source(spec: str):
    return parse_source(spec, Settings(), no_client)


@pytest.mark.parametrize(
    ("spec", "url"),
    [
        ("localhost:8787", "ws://localhost:8787/watch"),
        ("127.0.0.1:8787", "ws://127.0.0.1:8787/watch"),
        ("[::1]:8787", "ws://[::1]:8787/watch"),
        ("ws://127.0.0.1:8787", "ws://127.0.0.1:8787/watch"),
    ],
)
def test_host_port_without_a_scheme_is_a_hub(spec, url):
    source = _source(spec)
    assert source.kind == "hub"
    assert source.url == url


@pytest.mark.parametrize(
    "spec", ["notaurl", "localhost", "localhost:", "localhost:abc", "localhost:8787/health", "api=localhost:8787",
             "localhost:99999"],
)
def test_anything_else_without_a_scheme_is_refused(spec):
    with pytest.raises(SourceError, match=re.escape(f"source {spec!r}")):
        _source(spec)


def test_a_hub_flag_takes_host_port_as_a_hub_and_refuses_a_bare_word():
    assert check_address("localhost:8787", ANY_SCHEME) == "ws://localhost:8787"
    assert check_address("http://h:1", ANY_SCHEME) == "http://h:1"
    with pytest.raises(ValueError, match="invalid address 'notaurl': no scheme, and not HOST:PORT"):
        check_address("notaurl", ANY_SCHEME)


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path):
    config = tmp_path / "latin1.toml"
    config.write_bytes("# réglages\n[detector]\nlate_after = 3.0\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=re.escape(f"{config} is not UTF-8 text")):
        load_settings(config)


def test_the_thresholds_model_itself_refuses_infinity():
    with pytest.raises(ValueError, match="finite"):
        Thresholds(dead_after=float("inf"))


def test_loading_settings_returns_the_settings_class_and_each_call_reads_its_own_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "empty"))
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    first.write_text("[detector]\nlate_after = 3.0\nstarved_after = 6.0\n")
    second.write_text('token = "t2"\n')
    loaded = load_settings(first)
    assert type(loaded) is Settings
    assert loaded.detector.late_after == 3.0
    again = load_settings(second)
    assert (again.detector.late_after, again.token) == (2.0, "t2")
    assert load_settings().detector.late_after == 2.0
    assert Settings().token is None  # built directly: defaults and environment, no file


def test_a_fleet_spec_past_the_limit_is_refused_with_the_limit():
    assert sum(n for _, n in parse_fleet_spec(f"none:{MAX_WORKERS}")) == MAX_WORKERS
    with pytest.raises(FleetSpecError, match=f"at most {MAX_WORKERS}"):
        parse_fleet_spec("none:99999")
    with pytest.raises(FleetSpecError, match=f"at most {MAX_WORKERS}"):
        parse_fleet_spec(f"none:{MAX_WORKERS},thread:1")


def test_an_unknown_probe_is_a_probe_error_that_lists_the_known_ones():
    with pytest.raises(ProbeError) as raised:
        load_registry().get("nope")
    assert re.fullmatch(r"unknown probe 'nope'; known probes: .*gil-hold.*", str(raised.value))


@pytest.mark.parametrize(
    ("worker", "path"),
    [
        ("a/b", "/api/workers/a%2Fb/inject"),
        ("none-1?probe=x", "/api/workers/none-1%3Fprobe%3Dx/inject"),
        ("my worker#1", "/api/workers/my%20worker%231/inject"),
    ],
)
async def test_inject_escapes_the_worker_name_in_the_path(worker, path):
    seen: list[httpx.Request] = []

    def hub(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(404, json={"message": "no such worker"})

    client = HubClient(transport=httpx.MockTransport(hub))
    try:
        await client.inject("ws://hub.test:8787", worker, "gil-hold", 1.0)
    finally:
        await client.aclose()
    assert seen[0].url.raw_path.decode() == f"{path}?probe=gil-hold&duration_s=1.0"
