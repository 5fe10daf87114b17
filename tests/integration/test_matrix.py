"""`heartmon matrix` reproduces the GIL table with real processes and real load: a heartbeat
on the event loop starves under every probe, one in a thread survives only pure Python and
calls that release the GIL, one in a separate process survives everything."""

import json
import os
import subprocess

import pytest

from tests.harness import HEARTMON

EXPECTED_STARVED = {
    ("busy-python", "none"): True, ("busy-python", "thread"): False, ("busy-python", "process"): False,
    ("gil-hold", "none"): True, ("gil-hold", "thread"): True, ("gil-hold", "process"): False,
    ("regex-backtrack", "none"): True, ("regex-backtrack", "thread"): True, ("regex-backtrack", "process"): False,
    ("sync-sleep", "none"): True, ("sync-sleep", "thread"): False, ("sync-sleep", "process"): False,
    ("gc-pause", "none"): True, ("gc-pause", "thread"): True, ("gc-pause", "process"): False,
}


DURATION_S = 1.0
"""gc-pause's single collections last 40-60% of the probe: at 1 s they stand well clear
of the 150 ms line on a loaded 2-core machine; at 0.6 s they did not always."""


def test_matrix_reproduces_the_gil_table():
    result = subprocess.run([*HEARTMON, "matrix", "--duration", str(DURATION_S), "--interval-ms", "50", "--json"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    matrix = json.loads(result.stdout)
    assert matrix["interval_ms"] == 50 and matrix["duration_s"] == DURATION_S
    cells = {(c["probe"], c["isolation"]): c for c in matrix["cells"]}
    got = {key: cells[key]["starved"] for key in EXPECTED_STARVED}
    assert got == EXPECTED_STARVED, "\n" + result.stderr
    for (probe, isolation), cell in cells.items():
        if isolation == "none":  # silent for the whole probe
            assert cell["max_gap_ms"] >= DURATION_S * 1000 * 0.8, (probe, cell)
        if isolation == "process":  # never far from its interval
            assert cell["max_gap_ms"] < 150, (probe, cell)
    assert "[5/5]" in result.stderr  # the progress display


SYSTEMS_EXPECTED = {
    # (worker, probe): starved? None where the worker has no such probe.
    ("heartmon none", "busy-python"): True, ("heartmon none", "gil-hold"): True,
    ("heartmon process", "busy-python"): False, ("heartmon process", "gil-hold"): False,
    ("celery solo", "busy-python"): True, ("celery solo", "gil-hold"): True,
    ("celery threads", "busy-python"): False, ("celery threads", "gil-hold"): True,
    ("celery prefork", "busy-python"): False, ("celery prefork", "gil-hold"): False,
    ("inngest python", "busy-python"): False, ("inngest python", "gil-hold"): True,
    ("inngest node, isolateExecution on", "busy-python"): False,
    ("inngest node, isolateExecution on", "gil-hold"): None,
    ("inngest node, isolateExecution off", "busy-python"): True,
}


@pytest.mark.timeout(420)  # about 50 s on a quiet 2-core machine, 2 to 3 minutes on a busy one
def test_matrix_systems_puts_the_seed_incidents_software_beside_heartmons_agents(tmp_path):
    """The seed incident's table with real Celery pools and real Inngest SDK workers: a
    heartbeat on the worker's only thread (Celery solo, Node without isolated execution)
    starves as heartmon's `none` does; prefork and isolated execution do not; threads
    survive pure Python but not a call that holds the GIL. No process outlives it (the
    session's check)."""
    result = subprocess.run(
        [*HEARTMON, "matrix", "--systems", "--probe", "busy-python", "--probe", "gil-hold", "--duration", "5",
         "--json"],
        capture_output=True, text=True, timeout=400, env={**os.environ, "XDG_STATE_HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    matrix = json.loads(result.stdout)
    assert matrix["probes"] == ["busy-python", "gil-hold"]
    rows = {row["label"]: row for row in matrix["rows"]}
    got = {}
    for (label, probe) in SYSTEMS_EXPECTED:
        row = rows[label]
        gap = row["cells"][probe]
        got[label, probe] = None if gap is None else gap > 3 * row["interval_ms"]
    assert got == SYSTEMS_EXPECTED, "\n" + result.stderr
    assert rows["celery solo"]["interval_ms"] == 1000
    assert any("test hook" in note for note in matrix["notes"])
