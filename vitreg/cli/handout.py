"""Student copies of the notebooks: every cell tagged ``solution`` removed (``vitreg handout``, ``make handout``).

Paper: all findings F1-F9 (the notebooks that reproduce them, as exercises without their answers).

A solution is a code or markdown cell tagged ``solution`` (a tag matched in any case and trimmed; a bare
string ``"tags": "solution"`` counts too) placed after the exercises it answers; the smoke
run executes it like any other cell, so solutions stay correct. The handout keeps every other cell as it
is (exercise prompts included) and carries no outputs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from vitreg.utils.io import atomic_write_text, read_notebook
from vitreg.utils.paths import repo_root

SOLUTION_TAG = "solution"
EXERCISES_HEADING = re.compile(r"^#{1,6}\s+Exercises?\b", re.IGNORECASE | re.MULTILINE)


def tags(cell: dict) -> list[str]:
    """The cell's tags (``metadata.tags``) as written, trimmed: a list, or one bare string; none when the
    metadata or the tags are missing or ``null``."""
    raw = (cell.get("metadata") or {}).get("tags") or []
    raw = [raw] if isinstance(raw, str) else raw
    return [t.strip() for t in raw if isinstance(t, str)] if isinstance(raw, list) else []


def is_solution(cell: dict) -> bool:
    """Whether the cell is a solution: tagged ``solution`` in any case, with or without spaces around it."""
    return any(t.lower() == SOLUTION_TAG for t in tags(cell))


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

    Raises:
        vitreg.utils.io.UnreadableNotebook: a source notebook cannot be read (named; nothing is written then).
        NotADirectoryError: ``out`` is a file.
    """
    root = repo_root()
    src = src or root / "notebooks"
    out = out or root / "build" / "handout"
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(20, "the handout folder is a file; move it away or pass --out DIR", str(out))
    notebooks = {path: read_notebook(path) for path in sorted(src.glob("*.ipynb"))}  # all read before any is written
    out.mkdir(parents=True, exist_ok=True)
    return [atomic_write_text(out / path.name, json.dumps(student_copy(nb), indent=1, ensure_ascii=False) + "\n")
            for path, nb in notebooks.items()]
