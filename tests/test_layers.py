"""The layer contract of pyproject.toml ([tool.importlinter]) holds: arrows point down only, only
vitreg.present.plots imports matplotlib, and no two modules import each other."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from vitreg.utils.paths import repo_root

_LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def _lint_imports() -> subprocess.CompletedProcess:
    """``lint-imports`` on this checkout (import-linter puts the working folder first on the path)."""
    return subprocess.run([sys.executable, "-c", _LINT, "--no-cache"], cwd=repo_root(), capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})


def test_import_contracts_hold():
    done = _lint_imports()
    out = done.stdout + done.stderr
    broken = out[out.find("Broken contracts"):] if "Broken contracts" in out else out
    assert done.returncode == 0, f"import contract broken (see [tool.importlinter] in pyproject.toml):\n{broken}"
    kept = re.findall(r"^(.*) KEPT", out, flags=re.M)
    assert len(kept) == 4, out  # layers, entry points, plots, acyclic: none silently dropped
