"""The Node SDK for the tests that run real Node workers: installed by the tests
themselves with npm into build/node (gitignored), once, and reused while it is there.

Node and npm are required, as in CI: a machine without them fails these tests instead
of skipping them, so that a green run always means the Node workers ran.
"""

from __future__ import annotations

from pathlib import Path

from heartmon.systems.launch import NodeSdk, node_sdk

PREFIX = Path(__file__).resolve().parent.parent / "build" / "node"


def install_node_sdk() -> NodeSdk:
    sdk = node_sdk(PREFIX)
    if sdk is None:
        raise RuntimeError("node and npm are needed for the Inngest Node SDK tests (Node 20 or later)")
    return sdk
