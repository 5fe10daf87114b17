"""Module boundaries: the core and the probes never import Textual (a worker, a hub or an
app using the agent does not load the terminal UI), and health detection stays pure."""

import subprocess
import sys


def test_the_core_and_the_probes_do_not_import_textual():
    """Textual only: rich comes with httpx wherever click is installed (Celery brings it)."""
    code = (
        "import sys, heartmon.cli, heartmon.agent, heartmon.hub, heartmon.matrix, heartmon.probes.builtin;"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] == 'textual');"
        "print(leaked); sys.exit(1 if leaked else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_monitor_side_does_not_import_the_agent_or_the_probes():
    """The monitor and its UI load neither the worker-side agent, nor multiprocessing, nor
    the probes: a monitor is not a worker, and what it imports it pays for at start-up."""
    code = (
        "import sys, heartmon.monitor_process, heartmon.sources.hub, heartmon.sources.http, heartmon.tui.app;"
        "leaked = sorted(m for m in sys.modules if m in ('heartmon.agent', 'multiprocessing')"
        " or m.startswith('heartmon.probes'));"
        "print(leaked); sys.exit(1 if leaked else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_health_detection_is_pure():
    """The detector and the fleet state take time as a parameter and do no I/O."""
    import ast
    from pathlib import Path

    forbidden = {"asyncio", "socket", "time", "threading", "textual", "websockets", "httpx", "psutil", "datetime"}
    root = Path(__file__).parents[2] / "heartmon"
    for module in ("detector.py", "fleet_state.py", "view.py"):
        tree = ast.parse((root / module).read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert not imported & forbidden, f"{module} imports {imported & forbidden}"
