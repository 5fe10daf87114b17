"""Commands to hubs, over HTTP: one long-lived httpx client whose transport can be
swapped (httpx's MockTransport in tests). The monitor's inject dialog and
`heartmon inject` send them the same way."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import httpx

from heartmon.urls import auth_headers, hub_http

NO_HUB = ("no hub to send commands to: inject works on hub sources (ws://…), and on a NATS fleet "
          "through a hub that bridges it (heartmon hub --nats)")


@dataclass(frozen=True)
class Answer:
    ok: bool
    text: str
    """The hub's answer, errors included, as one line for a person."""
    status: int | None = None
    """The HTTP status; None when the hub could not be reached."""
    sent: dict | None = None
    """For an accepted command, the hub's record of it: id, worker, probe, duration_s."""


class HubClient:
    def __init__(self, token: str | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.client = httpx.AsyncClient(headers=auth_headers(token), transport=transport, timeout=5)

    async def probes(self, hub: str) -> list[dict[str, str]]:
        response = await self.client.get(f"{hub_http(hub)}/api/probes")
        response.raise_for_status()
        return response.json()

    async def workers(self, hub: str) -> list[dict]:
        """The hub's own list of its workers, with their state and availability."""
        response = await self.client.get(f"{hub_http(hub)}/api/workers")
        response.raise_for_status()
        return response.json()

    async def inject(self, hub: str, target: str, probe: str, duration_s: float) -> Answer:
        """Asks the hub to run ``probe`` on ``target`` (a worker's name, or ``any``). The name
        is escaped into one path segment: a '/', '?' or '#' in it must reach the hub as part
        of the name, not become another path, a query or a fragment."""
        try:
            response = await self.client.post(f"{hub_http(hub)}/api/workers/{quote(target, safe='')}/inject",
                                              params={"probe": probe, "duration_s": duration_s})
        except httpx.HTTPError as exc:
            return Answer(False, f"{target}: cannot reach the hub at {hub}: {exc}")
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            return Answer(False, f"{status} {response.text.strip()}", status)
        if response.is_success:
            return Answer(True, f"{status}: {body['probe']} for {body['duration_s']:g} s into {body['worker']} "
                                f"(id {body['id']})", status, body)
        return Answer(False, f"{status}: {body.get('message', body)}", status)

    async def aclose(self) -> None:
        await self.client.aclose()
