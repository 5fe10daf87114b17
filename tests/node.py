"""The Node SDK for the tests that run real Node workers: installed by the tests
themselves with npm into build/node (gitignored), once, and reused while it is there.

Node and npm are required, as in CI: a machine without them fails these tests instead
of skipping them, so that a green run always means the Node workers ran.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREFIX = ROOT / "build" / "node"
PACKAGE = "inngest@4"
INSTALL_TIMEOUT_S = 600


@dataclass(frozen=True)
class NodeSdk:
    node: str
    prefix: Path
    """What ``npm install --prefix`` was given: node_modules is under it."""
    env: dict[str, str]
    """For every Node worker: NODE_OPTIONS=--experimental-websocket where the WebSocket
    global is still behind a flag (Node 20); the SDK's worker thread does not inherit
    plain command-line flags, only NODE_OPTIONS."""


def install_node_sdk() -> NodeSdk:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise RuntimeError("node and npm are needed for the Inngest Node SDK tests (Node 20 or later)")
    if not (PREFIX / "node_modules" / "inngest").is_dir():
        PREFIX.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(PREFIX), PACKAGE],
                              capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"npm install {PACKAGE} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    has_websocket = subprocess.run([node, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"],
                                   capture_output=True, timeout=60).returncode == 0
    return NodeSdk(node, PREFIX, {} if has_websocket else {"NODE_OPTIONS": "--experimental-websocket"})
