"""Two third-party probes: one that spins, one that fails (to test error reporting)."""

import time

from heartmon.probes import Probe, ProbeError


class ExampleSpin(Probe):
    name = "example-spin"
    description = "A third-party probe: spins in pure Python."
    demonstrates = "That probes from other packages are found through entry points."

    def run(self, duration_s: float, **params: object) -> None:
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            pass


class ExampleExplode(Probe):
    name = "example-explode"
    description = "A third-party probe that raises at once."
    demonstrates = "That a failing probe is reported and the worker keeps beating."

    def run(self, duration_s: float, **params: object) -> None:
        raise ProbeError("boom: this probe always fails")
