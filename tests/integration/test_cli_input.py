"""What a user types, checked before anything runs: one line on stderr that names the
problem, exit code 2, no traceback; and what is valid works as the user meant it."""

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from heartmon.urls import auth_headers
from tests.harness import HEARTMON, free_port, wait_until, workers

TIMEOUT_S = 60
"""Generous: every command here either refuses at once or ends on its own."""


def _heartmon(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*HEARTMON, *args], capture_output=True, text=True, timeout=TIMEOUT_S,
                          env={**os.environ, **(env or {})})


def _refused(result: subprocess.CompletedProcess, says: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert says in lines[0]


def _port(url: str) -> str:
    return url.rsplit(":", 1)[1]


def test_host_port_without_a_scheme_is_a_hub(launch):
    fleet = launch("mock", "--port", "0", "--interval-ms", "50", "--workers", "none:1")
    port = _port(fleet.url)
    checked = _heartmon("check", f"127.0.0.1:{port}", "--within", "30")
    assert checked.returncode == 0, (checked.stdout, checked.stderr)
    assert "ok: all 1 workers healthy or busy" in checked.stdout
    events = _heartmon("events", f"localhost:{port}", "--for", "3")
    assert events.returncode == 0, events.stderr
    assert f"heartmon: ws://localhost:{port}: connected" in events.stderr.splitlines()


@pytest.mark.parametrize("command", ["watch", "events", "check"])
def test_a_source_that_is_not_a_url_is_refused(command):
    _refused(_heartmon(command, "notaurl"), "source 'notaurl': invalid address 'notaurl'")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--name", "bad name!"], "--name 'bad name!': String should match pattern"),
        (["--name", "x" * 65], "--name"),
        (["--interval-ms", "3600001"], "--interval-ms 3600001: Input should be less than or equal to 3600000"),
        (["--isolation", "process", "--name", "bad name!"], "--name 'bad name!'"),
        (["--isolation", "process", "--interval-ms", "3600001"], "--interval-ms 3600001"),
    ],
)
def test_a_worker_the_protocol_would_refuse_is_refused_before_it_connects(launch, args, says):
    hub = launch("hub", "--port", "0")
    _refused(_heartmon("worker", "--hub", hub.url, *args), says)


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    config = tmp_path / "latin1.toml"
    config.write_bytes("# réglages\n[detector]\nlate_after = 3.0\n".encode("latin-1"))
    _refused(_heartmon("check", "ws://127.0.0.1:1", "--config", str(config)), f"{config} is not UTF-8 text")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["check", "ws://127.0.0.1:1", "--dead-after", "inf"], "must be a finite number, got inf"),
        (["matrix", "--duration", "inf"], "must be a finite number, got inf"),
    ],
)
def test_infinite_flags_are_refused(args, says):
    result = _heartmon(*args)
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_infinite_thresholds_in_a_config_file_are_refused_by_key(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[detector]\ndead_after = inf\n")
    _refused(_heartmon("check", "ws://127.0.0.1:1", "--config", str(config)),
             "detector.dead_after: Input should be a finite number")


def test_a_fleet_past_the_limit_is_refused_before_any_worker_starts():
    _refused(_heartmon("mock", "--port", str(free_port()), "--workers", "none:99999"), "at most 200")


def test_worker_and_inject_take_the_token_from_the_config_file(launch, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("HEARTMON_TOKEN", raising=False)
    (tmp_path / "heartmon").mkdir()
    (tmp_path / "heartmon" / "config.toml").write_text('token = "s3cret"\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    hub = launch("hub", "--port", "0", "--token", "s3cret")
    launch("worker", "--hub", hub.url, "--name", "configured-1", "--interval-ms", "100", env=env, ready=None)
    with httpx.Client(base_url=hub.http, headers=auth_headers("s3cret"), timeout=10) as client:
        wait_until(lambda: workers(client).get("configured-1", {}).get("available"), 30,
                   "the worker to join the hub with the config file's token")
    injected = _heartmon("inject", "configured-1", "sync-sleep", "--duration", "0.1", "--hub", hub.url, env=env)
    assert injected.returncode == 0, injected.stderr
    assert "injected sync-sleep for 0.1 s into configured-1" in injected.stdout


def test_a_mock_interval_past_the_protocols_limit_is_refused():
    result = subprocess.run([*HEARTMON, "mock", "--port", "0", "--interval-ms", "4000000"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "mock.interval_ms" in result.stderr and "Traceback" not in result.stderr
