"""Bad command-line input: one line that names the problem, an exit code, no traceback."""

import subprocess

import pytest

from tests.harness import HEARTMON


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["mock", "--workers", "fork:2"], 2, "invalid worker spec 'fork:2'"),
        (["mock", "--interval-ms", "0"], 2, "must be > 0"),
        (["worker", "--isolation", "fiber"], 2, "invalid choice: 'fiber'"),
        (["matrix", "--duration", "-1"], 2, "must be > 0"),
        (["inject", "none-1", "gil-hold", "--hub", "ws://127.0.0.1:1"], 1, "cannot reach the hub"),
        (["bogus"], 2, "invalid choice: 'bogus'"),
        (["inject", "none-1", "gil-hold", "--hub", "ws://127.0.0.1:abc"], 2, "invalid address 'ws://127.0.0.1:abc'"),
        (["inject", "none-1", "gil-hold", "--duration", "-1"], 2, "must be > 0"),
        (["worker", "--hub", "ws://[::1"], 2, "invalid address"),
        (["check", "ws://127.0.0.1:abc"], 2, "source 'ws://127.0.0.1:abc': invalid address"),
        (["watch", "ftp://example"], 2, "expected ws:// or wss:// or http:// or https://"),
    ],
)
def test_bad_input_exits_with_a_message_and_no_traceback(args, code, says):
    result = subprocess.run([*HEARTMON, *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == code
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_a_clear_error(launch):
    first = launch("hub", "--port", "0")
    port = first.url.rsplit(":", 1)[1]
    result = subprocess.run([*HEARTMON, "hub", "--port", port], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
