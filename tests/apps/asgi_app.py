"""A plain web service, as on-call engineers run them: Starlette on uvicorn, one event
loop. ``/hog?s=N`` runs pure Python on that loop for N seconds, the way a handler that
parses a huge payload or renders a report does; nothing else is served meanwhile."""

from __future__ import annotations

import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def hog(request: Request) -> PlainTextResponse:
    seconds = float(request.query_params.get("s", "6"))
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:  # CPU-heavy code on the event loop
        n += 1
    return PlainTextResponse(f"hogged the loop for {seconds:g} s")


app = Starlette(routes=[Route("/healthz", healthz), Route("/hog", hog)])
