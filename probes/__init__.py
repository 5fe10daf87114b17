"""Load probes: real CPU or blocking work run on a worker's main thread, as user code would.

A probe is how heartmon shows *why* a heartbeat goes silent: each one blocks the main
thread in a different way, and the isolation mode decides whether the heartbeat
survives it. Third-party probes register under the entry-point group ``heartmon.probes``.
"""

from heartmon.probes.base import Probe, ProbeError
from heartmon.probes.registry import ProbeRegistry, load_registry

__all__ = ["Probe", "ProbeError", "ProbeRegistry", "load_registry"]
