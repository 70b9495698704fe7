"""Student copies of the notebooks: every cell tagged ``solution`` removed (``vitreg handout``, ``make handout``).

Paper: all findings F1-F9 (the notebooks that reproduce them, as exercises without their answers).

A solution is a code or markdown cell tagged ``solution`` (a tag matched in any case and trimmed; a bare
string ``"tags": "solution"`` counts too) placed after the exercises it answers; the smoke
run executes it like any other cell, so solutions stay correct. The handout keeps every other cell as it
is (exercise prompts included) and carries no outputs.
"""

from __future__ import annotations

import ast
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


def make_handout(src: Path | None = None, out: Path | None = None, profile: str | None = None) -> list[Path]:
    """Write the student copy of every ``src/*.ipynb`` (default ``notebooks/``) to ``out`` (``build/handout``);
    with ``profile`` (``vitreg handout`` passes ``lecture``) the classroom copy (:func:`classroom_copy`).

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
    written = []
    for path, nb in notebooks.items():
        copy = classroom_copy(nb, path.stem, profile) if profile else student_copy(nb)
        written.append(atomic_write_text(out / path.name, json.dumps(copy, indent=1, ensure_ascii=False) + "\n"))
    return written


ADDED_TAG = "handout"  # a cell the handout added (classroom parameters, an answer scaffold)


def profile_cell(name: str, profile: str, defaults: dict) -> dict | None:
    """A code cell that sets the parameters ``profile`` gives notebook ``name`` (CPU-safe with ``lecture``: small
    pretrained models, 224 px, the bundled photos), for the copy to run after its parameters cell; None when
    the profile changes nothing the notebook has.

    Args:
        name: the notebook's name (``02_high_norm_tokens``).
        profile: a profile of the experiments (``lecture``, ``smoke``).
        defaults: the notebook's parameters cell (:func:`vitreg.experiments.params.notebook_defaults`).
    """
    from vitreg.experiments.params import load_profile

    given = {k: v for k, v in load_profile(profile, name).items() if k in defaults and v != defaults[k]}
    if not given:
        return None
    lines = [f"# Classroom parameters (params/{profile}.yaml): they replace the real experiment's defaults above, so",
             "# \"Run all\" fits a laptop CPU (the small models' weights download once, or come from the weights",
             "# folder your teacher filled). Delete this cell for the real experiment.",
             *(f"{k} = {v!r}" for k, v in given.items())]
    return {"cell_type": "code", "id": f"{ADDED_TAG}-{profile}-parameters", "execution_count": None,
            "metadata": {"tags": [ADDED_TAG]}, "outputs": [], "source": "\n".join(lines) + "\n"}


def answer_scaffold(cell: dict, n: int) -> dict:
    """The empty answer cell a student gets in place of solution cell ``cell`` (the ``n``-th of the notebook)."""
    if cell["cell_type"] == "code":
        return {"cell_type": "code", "id": f"{ADDED_TAG}-answer-{n}", "execution_count": None,
                "metadata": {"tags": [ADDED_TAG]}, "outputs": [],
                "source": "# Your code here (the book's Solution button shows one answer).\n"}
    return {"cell_type": "markdown", "id": f"{ADDED_TAG}-answer-{n}", "metadata": {"tags": [ADDED_TAG]},
            "source": "**Your answer.** _(Write it here; the book's Solution button shows one answer.)_\n"}


def cell_defaults(source: str) -> dict:
    """The ``name = literal`` assignments of a parameters cell's ``source`` (others are skipped)."""
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return out


def classroom_copy(nb: dict, name: str, profile: str = "lecture") -> dict:
    """The student copy (:func:`student_copy`) with an answer scaffold where each solution was and, after the
    parameters cell, the ``profile``'s parameters (:func:`profile_cell`): a copy students can "Run all" on a
    CPU. Notebook ``name``'s parameters are read from the notebook itself."""
    cells, n = [], 0
    for cell in nb["cells"]:
        if is_solution(cell):
            n += 1
            cells.append(answer_scaffold(cell, n))
            continue
        cells.append(cell)
        if "parameters" in tags(cell) and cell["cell_type"] == "code":
            added = profile_cell(name, profile, cell_defaults(source_text(cell)))
            cells += [added] if added else []
    return student_copy({**nb, "cells": cells})
