"""Type-checks heartmon as it is installed: ``heartmon.tui``, ``heartmon.probes`` and
``heartmon.config`` live in ``tui/``, ``probes/`` and ``config/`` (setuptools'
package-dir mapping), which mypy cannot follow through an editable install. A tree of
links under build/ puts every module where its import name says, and mypy checks that.

    .venv/bin/python tools/typecheck.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "build" / "typecheck"
MAPPED = {"tui": "tui", "probes": "probes", "config": "config"}
"""heartmon.<key> is the folder <value> at the root."""


def main() -> int:
    shutil.rmtree(TREE, ignore_errors=True)
    package = TREE / "heartmon"
    package.mkdir(parents=True)
    for entry in (ROOT / "heartmon").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in MAPPED.items():
        (package / name).symlink_to(ROOT / folder)
    return subprocess.call([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                            "-p", "heartmon"], cwd=TREE)


if __name__ == "__main__":
    sys.exit(main())
