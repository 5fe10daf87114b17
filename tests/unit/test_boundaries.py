"""DESIGN.md's boundaries: the core and the probes never import Textual."""

import subprocess
import sys


def test_the_core_and_the_probes_do_not_import_textual():
    code = (
        "import sys, heartmon.cli, heartmon.agent, heartmon.hub, heartmon.matrix, heartmon.probes.builtin;"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'));"
        "print(leaked); sys.exit(1 if leaked else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
