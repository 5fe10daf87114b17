"""Fleet specs, backoff and hub addresses: the small rules users meet first."""

import pytest

from heartmon.agent import backoff_delay
from heartmon.fleet import FleetSpecError, parse_fleet_spec
from heartmon.urls import hub_http, hub_ws


def test_fleet_spec_parses_modes_and_counts():
    assert parse_fleet_spec("none:2, thread:1,process:3") == [("none", 2), ("thread", 1), ("process", 3)]


@pytest.mark.parametrize("spec", ["", "none", "fork:2", "none:x", "none:2,,bogus:1"])
def test_fleet_spec_errors_name_the_bad_part(spec):
    with pytest.raises(FleetSpecError, match="spec"):
        parse_fleet_spec(spec)


def test_backoff_grows_is_capped_and_jittered():
    delays = [backoff_delay(attempt, 0.1, 2.0) for attempt in range(12)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(d <= 2.0 for d in delays)
    assert delays[-1] >= 1.0
    assert len({backoff_delay(5, 0.1, 2.0) for _ in range(20)}) > 1


def test_hub_addresses():
    assert hub_ws("ws://127.0.0.1:8787", "/connect") == "ws://127.0.0.1:8787/connect"
    assert hub_ws("http://h:1/", "/watch") == "ws://h:1/watch"
    assert hub_ws("127.0.0.1:9", "/watch") == "ws://127.0.0.1:9/watch"
    assert hub_http("wss://h:1") == "https://h:1"
