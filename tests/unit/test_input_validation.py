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
from heartmon.sources import SourceError, parse_source
from heartmon.urls import check_address

ANY_SCHEME = ("ws", "wss", "http", "https")
MAX_WORKERS = 200


def _source(spec: str):
    return parse_source(spec, None, 1.0, 2.0, lambda: None)


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
