"""Student copies of the notebooks: every cell tagged ``solution`` removed (``vitreg handout``, ``make handout``).

Paper: all findings F1-F9 (the notebooks that reproduce them, as exercises without their answers).

A solution is a code or markdown cell tagged ``solution`` placed after the exercises it answers; the smoke
run executes it like any other cell, so solutions stay correct. The handout keeps every other cell as it
is (exercise prompts included) and carries no outputs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from vitreg.utils.paths import repo_root

SOLUTION_TAG = "solution"
EXERCISES_HEADING = re.compile(r"^#{1,6}\s+Exercises?\b", re.IGNORECASE | re.MULTILINE)


def tags(cell: dict) -> list[str]:
    """The cell's tags (``metadata.tags``), empty when it has none."""
    return list(cell.get("metadata", {}).get("tags", []))


def is_solution(cell: dict) -> bool:
    """Whether the cell is a solution (tagged ``solution``)."""
    return SOLUTION_TAG in tags(cell)


def source_text(cell: dict) -> str:
    """A cell's source as one string (nbformat stores a string or a list of lines)."""
    src = cell.get("source", "")
    return src if isinstance(src, str) else "".join(src)


def exercises_index(nb: dict) -> int | None:
    """Index of the first cell with an "Exercises" heading, or None."""
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "markdown" and EXERCISES_HEADING.search(source_text(cell)):
            return i
    return None


def student_copy(nb: dict) -> dict:
    """A copy of a notebook (JSON dict) without its solution cells and without outputs."""
    out = dict(nb)
    cells = []
    for cell in nb["cells"]:
        if is_solution(cell):
            continue
        cell = dict(cell)
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cells.append(cell)
    out["cells"] = cells
    return out


def make_handout(src: Path | None = None, out: Path | None = None) -> list[Path]:
    """Write the student copy of every ``src/*.ipynb`` (default ``notebooks/``) to ``out`` (``build/handout``).

    Returns:
        The written notebooks, sorted.
    """
    root = repo_root()
    src = src or root / "notebooks"
    out = out or root / "build" / "handout"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(src.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        target = out / path.name
        target.write_text(json.dumps(student_copy(nb), indent=1, ensure_ascii=False) + "\n")
        written.append(target)
    return written
