"""``heartmon serve``: the live monitor in a browser, for sharing a screen in an incident channel.

textual-serve does the relaying: each browser session gets its own app process (the
ordinary TUI, ``heartmon watch SOURCE...`` or the demo, drawn by Textual's web driver)
whose output it carries over a websocket to xterm.js. What heartmon adds around it:

- the hub's exposure rule: a non-loopback address needs a token, and with a token
  every route (the page, its static files, its websocket) needs a session cookie that
  only the token form hands out. The token is never taken from a URL, where it would
  land in histories and logs;
- no orphans: every app process is told ``HEARTMON_DIE_WITH`` our pid (the kernel kills
  it if we die, even by SIGKILL), and is stopped when we stop;
- links that work from wherever the page was opened (textual-serve writes its bind
  address into the page, which is useless for ``0.0.0.0`` or port 0).

textual-serve and aiohttp are imported only by this command: every other heartmon
process (workers included) would pay a quarter of a second for them.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import ipaddress
import os
import secrets
import shlex
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import psutil

if TYPE_CHECKING:
    from aiohttp import web
    from aiohttp.typedefs import Middleware

DEFAULT_PORT = 8788
"""Beside the hub's 8787."""

COOKIE = "heartmon_serve"
LOGIN = "/login"

SESSION_GRACE_S = 5.0
"""How long app processes get to stop on SIGTERM when we stop (each stops its own
children: the demo's fleet, the ingest process), after which they are killed."""

SHUTDOWN_S = 2.0
"""How long aiohttp waits for the browsers' websockets to close once their apps have
stopped, before it cancels their handlers."""

_origin: ContextVar[str] = ContextVar("heartmon_serve_origin")
"""scheme://host:port of the request being handled, as the browser addressed us."""

LOGIN_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>heartmon</title>
<style>
body {{ background: #0c181f; color: #e6edf3; font-family: monospace; display: flex; justify-content: center;
       align-items: center; height: 100vh; margin: 0; }}
form {{ background: #12232d; padding: 2em 3em; }}
input, button {{ font: inherit; padding: 0.4em; margin-top: 0.6em; }}
.refused {{ color: #ff7b72; }}
</style></head>
<body><form method="post" action="{login}">
<h1>heartmon</h1>
<p>This monitor asks for its token.</p>
{refused}<label>token <input type="password" name="token" autocomplete="current-password" autofocus required></label>
<button type="submit">open the monitor</button>
</form></body>
</html>
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],
               parents: Sequence[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Defines ``heartmon serve`` on the CLI's subcommands; ``parents`` brings --config and --token."""
    serve = sub.add_parser("serve", parents=list(parents),
                           help="the live monitor in a browser, for sharing a screen (each browser session runs it)")
    serve.add_argument("sources", nargs="*", metavar="SOURCE",
                       help="what each session watches, as for 'heartmon watch'; none: the demo fleet of bare "
                            "'heartmon', a fleet of its own for each session")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default: 127.0.0.1; any other needs a token)")
    # Checked by cmd_serve, not argparse: a bad port is one line, like every other bad input.
    serve.add_argument("--port", default=str(DEFAULT_PORT), metavar="P",
                       help=f"port to bind, 0 for any free one (default: {DEFAULT_PORT})")
    return serve


def cmd_serve(args: argparse.Namespace) -> int:
    """Everything a session would fail on is checked here, where it is one line and exit 2."""
    from heartmon.cli import UsageError, _check_exposure, _run, settings_from  # cli imports this module
    from heartmon.sources import SourceError, no_client, parse_source

    settings = settings_from(args, flags=("token",))
    token = settings.token or None  # an empty one guards nothing, as for the hub
    port = _port(args.port)
    _check_exposure(args.host, token)
    for spec in args.sources:  # a session that could only fail would show the browser a blank page
        try:
            parse_source(spec, settings, no_client)
        except SourceError as exc:
            raise UsageError(str(exc)) from None
    command = app_command(args.sources, args.config)
    # textual-serve starts each app with a copy of our environment, and nothing else we
    # can set: the token goes there rather than on a command line that `ps` shows.
    os.environ["HEARTMON_DIE_WITH"] = str(os.getpid())
    if token:
        os.environ["HEARTMON_TOKEN"] = token

    def ready(url: str) -> None:
        print(f"serving the monitor on {url}", flush=True)
        print(f"each browser session runs: {command.removeprefix('exec ')}", flush=True)
        if token:
            print("the page asks for the token; Ctrl-C stops every session", flush=True)
        else:
            print("Ctrl-C stops every session", flush=True)

    try:
        _run(_serve(command, args.host, port, token, ready))
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{port}: {exc.strerror or exc}") from None
    return 0


def _port(text: str) -> int:
    from heartmon.cli import UsageError

    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise UsageError(f"invalid --port {text!r}: expected a whole number from 0 (any free port) to 65535")
    return int(text)


def app_command(sources: Sequence[str], config: Path | None) -> str:
    """The shell command textual-serve runs for each session. ``exec``: the app replaces
    the shell, so its parent is this process, which ``HEARTMON_DIE_WITH`` names (with a
    shell between, the app would refuse to start, and the kernel would tie it to the
    shell). The demo's hub takes any free port: each session has a fleet of its own.
    Recording is the lead terminal's business, not every viewer's."""
    argv = [sys.executable, "-m", "heartmon", "watch" if sources else "run", "--no-record"]
    if config is not None:
        argv += ["--config", str(config)]
    if sources:
        argv += ["--", *sources]
    else:
        argv += ["--port", "0"]
    return "exec " + shlex.join(argv)


async def _serve(command: str, host: str, port: int, token: str | None, ready: Callable[[str], None]) -> None:
    """Serves until cancelled, then stops every session's app before it returns."""
    from aiohttp import web

    app = await _application(command, token)
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_S)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        ready(f"http://{shown}:{bound_port}")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()  # its on_shutdown stops the sessions' apps


async def _application(command: str, token: str | None) -> web.Application:
    from textual_serve.server import Server

    class _Server(Server):
        @property
        def public_url(self) -> str:
            """The address the browser used, which the page's script and websocket URLs
            are built on: textual-serve's own guess is its bind address."""
            return _origin.get()

        @public_url.setter
        def public_url(self, value: str) -> None:
            """textual-serve's constructor sets its guess: the request's address replaces it."""

        async def on_startup(self, app: web.Application) -> None:
            """Quiet: our own lines say where we listen, once the port is bound."""

    server = _Server(command, title="heartmon")
    app = await server._make_app()  # textual-serve's routes, which the guard below wraps
    session = secrets.token_urlsafe(32)
    app.middlewares.append(_guard(token, session))
    if token is not None:
        app.router.add_get(LOGIN, _login_page)
        app.router.add_post(LOGIN, _sign_in(token, session))
    app.on_shutdown.append(_stop_sessions)
    return app


R = TypeVar("R", bound="web.StreamResponse")
Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


def _guard(token: str | None, session: str) -> Middleware:
    """Every route goes through here. Without a token, only a loopback Host is served (a
    web page's script that rebinds its own name to 127.0.0.1 would otherwise drive the
    monitor, injects included); with one, the session cookie is required, which the
    token form sets to ``session``, a secret of this process (the cookie is not the
    token, which also opens the hubs)."""
    from aiohttp import web

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        _origin.set(f"{request.scheme}://{request.host}")
        if token is None and not _loopback_name(request.host):
            return _refuse(403, "this monitor is served to loopback names only: open it at 127.0.0.1")
        if (origin := request.headers.get("Origin")) and urlsplit(origin).netloc.lower() != request.host.lower():
            return _refuse(403, "cross-origin requests are refused")  # another site's script
        signed_in = hmac.compare_digest(request.cookies.get(COOKIE, "").encode(), session.encode())
        if token is not None and not signed_in and request.path != LOGIN:
            if request.method == "GET" and request.path == "/":
                return _no_frames(web.Response(status=303, headers={"Location": LOGIN}))
            return _refuse(401, f"sign in with the token at {LOGIN} first")
        return _no_frames(await handler(request))

    return guard


def _sign_in(token: str, session: str) -> Handler:
    from aiohttp import web

    async def sign_in(request: web.Request) -> web.StreamResponse:
        """A right token sets the session cookie and leads to the monitor; a wrong one back to the form."""
        supplied = (await request.post()).get("token")
        if isinstance(supplied, str) and hmac.compare_digest(supplied.encode(), token.encode()):
            response = web.Response(status=303, headers={"Location": "/"})
            response.set_cookie(COOKIE, session, httponly=True, samesite="Strict", path="/")
            return response
        return _login(403, '<p class="refused">wrong token</p>\n')

    return sign_in


async def _login_page(request: web.Request) -> web.StreamResponse:
    return _login(200, "")


def _login(status: int, refused: str) -> web.Response:
    from aiohttp import web

    return web.Response(status=status, content_type="text/html", text=LOGIN_PAGE.format(login=LOGIN, refused=refused),
                        headers={"Cache-Control": "no-store"})


def _refuse(status: int, reason: str) -> web.Response:
    from aiohttp import web

    return _no_frames(web.Response(status=status, text=f"heartmon: {reason}\n"))


def _no_frames(response: R) -> R:
    """Another site may not frame the monitor and click in it for the viewer."""
    if not response.prepared:  # a websocket's headers are already sent
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    return response


def _loopback_name(host: str) -> bool:
    name = urlsplit(f"//{host}").hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


async def _stop_sessions(app: web.Application) -> None:
    """Stops every app process textual-serve started, the sessions of browsers that are
    still open: SIGTERM (Textual's web driver exits on it, and each app stops its own
    children), then SIGKILL past the grace. Their exits are awaited on the loop, which
    keeps reading their output meanwhile: an app blocked on a full pipe could not exit."""
    apps = psutil.Process().children()  # ours are only the apps: exec'd, no shell between
    for proc in apps:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SESSION_GRACE_S
    while (running := [p for p in apps if _running(p)]) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    for proc in running:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
