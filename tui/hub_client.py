"""Commands from the monitor to hubs, over HTTP: one long-lived httpx client whose
transport can be swapped (httpx's MockTransport in tests)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from heartmon.urls import hub_http


@dataclass(frozen=True)
class Answer:
    ok: bool
    text: str


class HubClient:
    def __init__(self, token: str | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.AsyncClient(headers=headers, transport=transport, timeout=5)

    async def probes(self, hub: str) -> list[dict[str, str]]:
        response = await self.client.get(f"{hub_http(hub)}/api/probes")
        response.raise_for_status()
        return response.json()

    async def inject(self, hub: str, target: str, probe: str, duration_s: float) -> Answer:
        """The hub's answer, errors included, as one line for a person."""
        try:
            response = await self.client.post(f"{hub_http(hub)}/api/workers/{target}/inject",
                                              params={"probe": probe, "duration_s": duration_s})
        except httpx.HTTPError as exc:
            return Answer(False, f"{target}: cannot reach the hub at {hub}: {exc}")
        try:
            body = response.json()
        except ValueError:
            return Answer(False, f"{target}: HTTP {response.status_code} {response.text.strip()}")
        if response.is_success:
            return Answer(True, f"{response.status_code}: {body['probe']} for {body['duration_s']:g} s "
                                f"into {body['worker']} (id {body['id']})")
        return Answer(False, f"{response.status_code}: {body.get('message', body)}")

    async def aclose(self) -> None:
        await self.client.aclose()
