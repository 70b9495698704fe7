"""Student copies (``make handout``): solution cells removed, every other cell (exercise prompts) kept."""

from __future__ import annotations

import json

import pytest

from vitreg.cli.handout import exercises_index, is_solution, make_handout, source_text, student_copy
from vitreg.utils.paths import repo_root

ROOT = repo_root()
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _cell(kind: str, text: str, *tags: str) -> dict:
    cell = {"cell_type": kind, "id": f"c{abs(hash(text)) % 10**8}", "metadata": {"tags": list(tags)},
            "source": text}
    if kind == "code":
        cell.update(outputs=[{"output_type": "stream", "name": "stdout", "text": "42\n"}], execution_count=3)
    return cell


def _planted() -> dict:
    """A notebook whose two solutions (one code, one markdown) sit after the prompts they answer."""
    cells = [_cell("markdown", "# 99 — planted"), _cell("code", "x = 1", "parameters"),
             _cell("markdown", "## Pitfalls\n- one\n\n## Exercises\n1. Double x.\n2. Say why."),
             _cell("code", "print(2 * x)", "solution"),
             _cell("markdown", "3. A prompt after a solution."),
             _cell("markdown", "Because the planted answer says so.", "solution", "hide-input")]
    return {"cells": cells, "metadata": {"kernelspec": {"name": "vitreg"}}, "nbformat": 4, "nbformat_minor": 5}


def test_the_student_copy_drops_exactly_the_solution_cells():
    nb = _planted()
    copy = student_copy(nb)
    assert [source_text(c) for c in copy["cells"]] == [source_text(c) for c in nb["cells"] if not is_solution(c)]
    assert len(copy["cells"]) == len(nb["cells"]) - 2
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in copy["cells"] if c["cell_type"] == "code")
    assert nb["cells"][3]["outputs"], "the original notebook is left as it was"


def test_the_exercises_heading_is_found():
    assert exercises_index(_planted()) == 2
    assert exercises_index({"cells": [_cell("markdown", "# t\nno exercises here")]}) is None


def _check_handout(source: dict, handout: dict) -> None:
    assert not [c for c in handout["cells"] if is_solution(c)], "a solution cell is left in the handout"
    kept = [source_text(c) for c in source["cells"] if not is_solution(c)]
    assert [source_text(c) for c in handout["cells"]] == kept, "a non-solution cell was lost or changed"
    index = exercises_index(handout)
    assert index is not None, "the exercise prompts are gone"
    assert source_text(handout["cells"][index]) == source_text(source["cells"][exercises_index(source)])


def test_the_handout_check_catches_a_left_solution():
    nb = _planted()
    with pytest.raises(AssertionError, match="solution cell is left"):
        _check_handout(nb, nb)


def test_the_handout_has_no_solution_and_keeps_every_prompt(tmp_path):
    written = make_handout(out=tmp_path)
    assert [p.name for p in written] == [p.name for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        _check_handout(json.loads(path.read_text()), json.loads((tmp_path / path.name).read_text()))


def _lacking_solutions(paths) -> list[str]:
    """The notebooks among ``paths`` with no `solution`-tagged cell after their Exercises heading."""
    lacking = []
    for path in paths:
        nb = json.loads(path.read_text())
        start = exercises_index(nb)
        if start is None or not any(is_solution(c) for c in nb["cells"][start + 1:]):
            lacking.append(path.stem)
    return lacking


def test_the_solution_check_sees_a_missing_solution(tmp_path):
    with_solutions, without = _planted(), _planted()
    without["cells"] = [c for c in without["cells"] if not is_solution(c)]
    early = _planted()  # a solution before the exercises does not answer them
    early["cells"] = [early["cells"][3]] + [c for c in early["cells"] if not is_solution(c)]
    for name, nb in (("a", with_solutions), ("b", without), ("c", early)):
        (tmp_path / f"{name}.ipynb").write_text(json.dumps(nb))
    assert _lacking_solutions(sorted(tmp_path.glob("*.ipynb"))) == ["b", "c"]


def test_every_notebook_has_a_solution_after_its_exercises():
    lacking = _lacking_solutions(NOTEBOOKS)
    assert not lacking, f"exercises without a `solution`-tagged cell after them: {lacking}"
