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


def test_a_name_too_long_for_its_column_keeps_its_start_and_its_end():
    from heartmon.tui.model import WIDTHS, elide, fit

    a, b = "default/machine-a/worker-1", "default/machine-b/worker-1"
    assert elide(a, 22) == "default…ine-a/worker-1" and len(elide(a, 22)) == 22
    assert elide(a, 22) != elide(b, 22)  # two machines' worker-1 stay two names on screen
    assert elide("none-1", 22) == "none-1"
    assert fit(("x" * 30, "none"), (0, 1))[1] == "none".ljust(WIDTHS[1])
