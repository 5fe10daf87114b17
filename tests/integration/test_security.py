"""Safe by default: loopback unless told otherwise, and a token guards everything but /healthz."""

import subprocess

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import FLEET_ARGS, NAMES, wait_fleet_ready
from tests.harness import HEARTMON, next_event, watch

TOKEN = "s3cret-token"


@pytest.fixture
def guarded(launch):
    running = launch(*FLEET_ARGS, "--token", TOKEN)
    with httpx.Client(base_url=running.http, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
        wait_fleet_ready(client)  # its own workers were handed the token
    return running


def test_a_token_guards_http_but_not_healthz(guarded):
    assert httpx.get(f"{guarded.http}/healthz").status_code == 200
    for path in ("/api/workers", "/api/probes", "/metrics"):
        assert httpx.get(f"{guarded.http}{path}").status_code == 401, path
        wrong = httpx.get(f"{guarded.http}{path}", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401, path
    refused = httpx.post(f"{guarded.http}/api/workers/none-1/inject", params={"probe": "gil-hold", "duration_s": 1})
    assert refused.status_code == 401 and "Bearer" in refused.json()["message"]


def test_a_token_guards_websockets(guarded):
    for path in ("/watch", "/connect"):
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{guarded.url}{path}", open_timeout=10)
        assert refused.value.response.status_code == 401
    with watch(guarded.url, token=TOKEN) as ws:
        snapshot = next_event(ws, lambda e: e["type"] == "snapshot")
        assert {w["worker"] for w in snapshot["workers"]} == set(NAMES)


def test_the_inject_command_sends_the_token(guarded):
    def inject(*extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([*HEARTMON, "inject", "none-1", "sync-sleep", "--duration", "0.1", "--hub", guarded.url,
                               *extra], capture_output=True, text=True, timeout=30, env=env)

    without = inject(env={"PATH": "/usr/bin:/bin"})
    assert without.returncode == 1 and "401" in without.stderr and "Traceback" not in without.stderr
    with_token = inject("--token", TOKEN)
    assert with_token.returncode == 0 and "injected sync-sleep" in with_token.stdout


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_binding_beyond_loopback_without_a_token_is_refused(host):
    result = subprocess.run([*HEARTMON, "mock", "--host", host, "--port", "0"], capture_output=True, text=True,
                            timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "refusing to bind" in result.stderr and "--token" in result.stderr
    assert "Traceback" not in result.stderr
