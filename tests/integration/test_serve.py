"""`heartmon serve`: the real monitor in a real browser (Debian's chromium, driven by
Playwright), its token, and no app process outliving it however it stops.

xterm.js draws the terminal on a canvas, and textual-serve's script keeps its terminal
to itself. So the page gets a hook before that script runs: the first object that sets
a ``fitAddon`` (textual-serve's client, as it builds its terminal) is kept on
``window``, and the test reads the terminal's own buffer, the text the viewer sees.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright

from tests.conftest import Launch
from tests.harness import HEARTMON, Running, remember_descendants, wait_gone, wait_until

CHROMIUM = "/usr/bin/chromium"  # tools/install_browser.sh installs it; `make test` runs that first
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "incident-42-token"
SERVING = r"serving the monitor on (\S+)"
SHOWN_S = 60.0
"""Generous: on 2 busy cores a session starts an interpreter, Textual and an ingest process."""

KEEP_CLIENT = """
Object.defineProperty(Object.prototype, 'fitAddon', {
  configurable: true,
  set(value) {
    window.heartmonClient = this;
    Object.defineProperty(this, 'fitAddon', {value, writable: true, configurable: true, enumerable: true});
  },
});
"""
READ_TERMINAL = """() => {
  const terminal = window.heartmonClient && window.heartmonClient.terminal;
  if (!terminal) return '';
  const buffer = terminal.buffer.active, lines = [];
  for (let i = 0; i < buffer.length; i++) lines.push(buffer.getLine(i).translateToString(true));
  return lines.join('\\n');
}"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """One chromium for the module, with a fresh profile; at the end, it and Playwright's
    driver must be gone like every process a test starts."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run tools/install_browser.sh (make test does)")
    ours: dict[int, psutil.Process] = {}
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    playwright = sync_playwright().start()
    try:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 720})
        context.add_init_script(KEEP_CLIENT)
        remember_descendants(os.getpid(), ours)
        yield context
        context.close()
    finally:
        remember_descendants(os.getpid(), ours)
        playwright.stop()
    alive = wait_gone([p for pid, p in ours.items() if pid not in before])
    for proc in alive:
        proc.kill()
    assert not alive, f"the browser outlived its tests: {[p.pid for p in alive]}"


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    browser.clear_cookies()  # each test signs in (or not) on its own
    page = browser.new_page()
    yield page
    page.close()


def terminal_text(page: Page) -> str:
    return page.evaluate(READ_TERMINAL)


def focus(page: Page) -> None:
    """Puts the keyboard in the page's terminal, as a viewer's click does: until then the
    app is told it is blurred (it starts so), and its footer shows no keys."""
    page.focus(".xterm-helper-textarea")


def wait_shown(page: Page, serve: Running, words: tuple[str, ...], shot: Path) -> str:
    """Waits until the page's terminal shows every word; the screenshot is taken either way."""
    try:
        return wait_until(lambda: (text := terminal_text(page)) and all(w in text for w in words) and text,
                          SHOWN_S, f"the page's terminal to show {words}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; it shows:\n{terminal_text(page)}\nserve printed:\n{printed(serve)}") from None
    finally:
        page.screenshot(path=str(shot))


def printed(running: Running, quiet_s: float = 2.0) -> str:
    """Everything the process printed so far: textual-serve writes there what an app that
    failed to start said on its stderr."""
    try:
        running.read_until(r"(?!)", timeout_s=quiet_s)  # matches nothing: reads until the deadline
    except AssertionError:
        pass
    return "\n".join(running.lines)


def fleet(launch: Launch, *workers: tuple[str, str], token: str | None = None) -> Running:
    """A hub and real workers: (name, isolation) each, beating every 100 ms."""
    auth = ("--token", token) if token else ()
    hub = launch("hub", "--port", "0", *auth)
    for name, isolation in workers:
        launch("worker", "--hub", hub.url, "--name", name, "--isolation", isolation, "--interval-ms", "100", *auth,
               ready=None)
    return hub


def test_the_monitor_in_a_browser_and_nothing_left_after_sigterm(launch, page, tmp_path):
    hub = fleet(launch, ("checkout-1", "none"), ("billing-1", "thread"), ("ledger-1", "process"))
    serve = launch("serve", "--port", "0", hub.url, ready=SERVING)
    page.goto(serve.url)
    shown = wait_shown(page, serve, ("checkout-1", "billing-1", "ledger-1", "healthy 3"), tmp_path / "fleet.png")
    assert hub.url in shown and "connected" in shown  # the header: the source the session watches
    focus(page)
    wait_shown(page, serve, ("q quit",), tmp_path / "focused.png")
    page.keyboard.press("s")  # keys reach the app: the sort cycles from worst first to name
    wait_shown(page, serve, ("sort: name",), tmp_path / "serve.png")

    sessions = serve.remember_tree()
    assert any("watch" in p.cmdline() for p in sessions), "the session's app is serve's child"
    assert serve.stop(signal.SIGTERM, timeout_s=30) == 0
    assert wait_gone(sessions, 30) == [], "a session's process outlived serve's SIGTERM"


def test_the_demo_dies_with_serve_even_by_sigkill(launch, page, tmp_path):
    serve = launch("serve", "--port", "0", ready=SERVING)
    page.goto(serve.url)
    wait_shown(page, serve, ("none-1", "thread-2", "process-2", "healthy 6"), tmp_path / "demo.png")
    tree = serve.remember_tree()  # the app, its ingest process, its mock, the workers, their heartbeat children
    assert len(tree) >= 10, [p.cmdline() for p in tree]
    serve.proc.kill()
    serve.proc.wait(30)
    assert wait_gone(tree, 30) == [], "processes outlived a SIGKILLed serve"


def test_a_token_guards_every_route(launch, page, tmp_path):
    hub = fleet(launch, ("checkout-1", "none"), token=TOKEN)
    serve = launch("serve", "--host", "0.0.0.0", "--port", "0", "--token", TOKEN, hub.url, ready=SERVING)
    port = serve.url.rsplit(":", 1)[1]
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/").status_code == 303 and client.get("/").headers["location"] == "/login"
        for path in ("/static/js/textual.js", "/ws", "/download/anything"):
            assert client.get(path).status_code == 401, path
        refused = client.get("/ws", headers={"Connection": "Upgrade", "Upgrade": "websocket",
                                             "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZQ=="})
        assert refused.status_code == 401
        assert client.get("/?token=" + TOKEN).status_code == 303  # only the form takes the token

    page.goto(url)
    assert page.url.endswith("/login")
    page.fill("input[name=token]", "not-the-token")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "wrong token" in page.content()
    assert page.context.cookies() == []

    page.fill("input[name=token]", TOKEN)
    with page.expect_navigation():
        page.click("button[type=submit]")
    wait_shown(page, serve, ("checkout-1", "healthy 1"), tmp_path / "signed-in.png")
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]


def test_without_a_token_only_loopback_names_and_same_origin_are_served(launch):
    serve = launch("serve", "--port", "0", "ws://127.0.0.1:9", ready=SERVING)
    with httpx.Client(base_url=serve.url, timeout=10) as client:
        assert client.get("/").status_code == 200
        port = serve.url.rsplit(":", 1)[1]
        rebound = client.get("/", headers={"Host": f"attacker.example:{port}"})  # DNS rebinding
        assert rebound.status_code == 403
        assert client.get("/ws", headers={"Origin": "http://attacker.example"}).status_code == 403
        assert client.get("/").headers["X-Frame-Options"] == "DENY"


def _without_token() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "HEARTMON_TOKEN"}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--host", "0.0.0.0"], "refusing to bind 0.0.0.0 without a token"),
        (["--port", "70000"], "invalid --port '70000'"),
        (["--port", "http"], "invalid --port 'http'"),
        (["ftp://example"], "source 'ftp://example'"),
        (["ws://127.0.0.1:abc"], "invalid address"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, says):
    result = subprocess.run([*HEARTMON, "serve", *args], capture_output=True, text=True, timeout=30,
                            env=_without_token())
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr
    assert result.stdout == ""


def test_a_port_in_use_is_one_line(launch):
    hub = launch("hub", "--port", "0")
    port = hub.url.rsplit(":", 1)[1]
    result = subprocess.run([*HEARTMON, "serve", "--port", port], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and result.stderr.count("\n") == 1, result.stderr
