"""The book's pages as a reader sees them (vitreg.cli.book_pages): equations, outputs, figures, solutions."""

from __future__ import annotations

import json

import pytest

from vitreg.cli import book_pages as pages
from vitreg.utils.paths import repo_root

NOTEBOOKS = sorted((repo_root() / "notebooks").glob("*.ipynb"))


def _md(source: str, **meta) -> dict:
    return {"cell_type": "markdown", "id": "m", "metadata": meta, "source": source}


def _code(source: str, outputs: list[dict] | None = None, **meta) -> dict:
    return {"cell_type": "code", "id": "c", "metadata": meta, "source": source, "execution_count": 1,
            "outputs": outputs or []}


def _nb(*cells: dict) -> dict:
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


# --- equations ---------------------------------------------------------------------------------------------
GLUED = "the input is\n$$X^{0} = \\big[x; y\\big]$$\nwith $N$ patches.\n"


def test_a_display_equation_glued_to_prose_is_found_and_isolated():
    assert len(pages.display_math_problems(GLUED)) == 2
    fixed = pages.isolate_display_math(GLUED)
    assert fixed == "the input is\n\n$$X^{0} = \\big[x; y\\big]$$\n\nwith $N$ patches.\n"
    assert pages.display_math_problems(fixed) == []
    assert pages.isolate_display_math(fixed) == fixed, "isolating twice changes nothing"


def test_a_multi_line_display_equation_is_one_block():
    text = "text\n$$a = b\n\\qquad c = d.$$\nmore\n"
    assert pages.isolate_display_math(text) == "text\n\n$$a = b\n\\qquad c = d.$$\n\nmore\n"
    assert pages.display_math_problems("x\n\n$$\na\n$$\n\ny") == []


def test_display_math_inside_a_line_of_prose_is_named():
    assert pages.display_math_problems("the norm $$\\|x\\|$$ grows") == [
        "line 1: $$ inside a line of prose (put the equation on lines of its own)"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_display_equation_of_the_notebooks_stands_alone(path):
    """MyST renders a ``$$`` block only with a blank line before and after it (in the book, not in Jupyter)."""
    nb = json.loads(path.read_text())
    problems = [f"cell {i}, {p}" for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown"
                for p in pages.display_math_problems(pages.text(c))]
    assert not problems, "\n".join(problems)


# --- outputs -----------------------------------------------------------------------------------------------
RUN = "/tmp/pytest-of-u/pytest-3/test_notebook_runs0"


def test_progress_bars_empty_outputs_and_temporary_paths_are_cleaned():
    bar = "extract:   0%|          | 0/4 [00:00<?, ?it/s]\rextract: 100%|##########| 4/4 [00:01<00:00]\n"
    outputs = [
        {"output_type": "stream", "name": "stderr", "text": bar},
        {"output_type": "stream", "name": "stderr", "text": bar},
        {"output_type": "stream", "name": "stdout", "text": f"results: {RUN}/results/02.json\n"},
        {"output_type": "stream", "name": "stdout", "text": "  \n"},
        {"output_type": "display_data", "metadata": {}, "data": {}},
        {"output_type": "stream", "name": "stderr", "text": "warning: 1 number is not finite\n"},
        {"output_type": "stream", "name": "stdout", "text": "saved /tmp/abc123/figures/02_x.png\n"},
    ]
    nb = _nb(_code(f'output_dir = "{RUN}"\n', **{"tags": ["injected-parameters"]}), _code("run()", outputs))
    cleaned = pages.clean_outputs(nb)
    assert cleaned["cells"][0]["source"] == 'output_dir = "<run>"\n'
    kept = cleaned["cells"][1]["outputs"]
    assert [o["text"] for o in kept] == ["results: <run>/results/02.json\n", "warning: 1 number is not finite\n",
                                         "saved <run>/figures/02_x.png\n"]
    assert nb["cells"][1]["outputs"][0]["text"] == bar, "the input notebook is not changed"


def test_a_relative_output_folder_is_left_as_it_is():
    nb = _nb(_code('output_dir = ".."\n', **{"tags": ["injected-parameters"]}),
             _code("run()", [{"output_type": "stream", "name": "stdout", "text": "wait... saved ../figures/x.png\n"}]))
    assert pages.run_dir_of(nb) is None
    assert pages.clean_outputs(nb)["cells"][1]["outputs"][0]["text"] == "wait... saved ../figures/x.png\n"


def test_a_printed_markdown_table_becomes_a_table():
    table = "| model | norm |\n|:------|-----:|\n| ViT-S | 1.0 |\n"
    out = pages.clean_output({"output_type": "stream", "name": "stdout", "text": table})
    assert out == {"output_type": "display_data", "metadata": {}, "data": {"text/markdown": table}}
    noted = pages.clean_output({"output_type": "stream", "name": "stdout", "text": "RANDOM WEIGHTS: a note.\n" + table})
    assert noted["data"]["text/markdown"] == "RANDOM WEIGHTS: a note.\n\n" + table
    plain = {"output_type": "stream", "name": "stdout", "text": "a | b\n"}
    assert pages.clean_output(plain) == plain


# --- figures -----------------------------------------------------------------------------------------------
def test_each_saved_figure_goes_right_after_the_cell_that_saved_it():
    nb = _nb(_md("# 08"),
             _code('run.save_figure(fig, "08_corloc")'),
             _md("The figure above."),
             _code('for key in keys:\n    run.save_figure(fig, f"08_lost_steps_{key}")'),
             _code("print(1)"))
    saved = ["08_corloc.png", "08_lost_steps_voc07.png", "08_lost_steps_voc12.png", "08_unclaimed.png"]
    cells = pages.place_figures(nb, saved)["cells"]
    sources = [pages.text(c) for c in cells]
    assert sources[2] == "![08_corloc.png](../figures/08_corloc.png)\n"
    assert sources[3] == "The figure above."
    assert sources[5].count("08_lost_steps_") == 4 and "voc07" in sources[5] and "voc12" in sources[5]
    assert sources[7].startswith("## Other figures this run saved") and "08_unclaimed.png" in sources[7]
    assert len(cells) == 8 and len({c["id"] for c in cells if c["id"].startswith("figure-")}) == 3


def test_a_cell_that_shows_its_figure_inline_gets_no_copy():
    inline = [{"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBOR"}}]
    nb = _nb(_code('run.save_figure(fig, "02_norms")', inline))
    assert len(pages.place_figures(nb, ["02_norms.png"])["cells"]) == 1


# --- solutions ---------------------------------------------------------------------------------------------
def test_solutions_are_folded_for_students_and_open_for_the_instructor():
    nb = _nb(_md("**Solution 1.** $\\sqrt{d}$.\n:::{note}\nx\n:::\n", tags=["solution"]),
             _code("answer = 1", tags=["solution"]), _md("Exercise 1."), _code("x = 1"))
    student = pages.fold_solutions(nb)["cells"]
    assert student[0]["source"].startswith("::::{dropdown} Solution\n**Solution 1.**")
    assert student[0]["source"].endswith("\n::::\n"), "the fence is longer than the one inside"
    assert student[1]["metadata"]["tags"] == ["solution", "hide-cell"]
    assert student[2:] == nb["cells"][2:]
    teacher = pages.fold_solutions(nb, instructor=True)["cells"]
    assert teacher[0]["source"].startswith("::::{dropdown} Solution\n:open:\n")
    assert teacher[1]["metadata"]["tags"] == ["solution"]


# --- the report page -----------------------------------------------------------------------------------------
def test_the_reports_figure_links_become_thumbnails():
    line = "Figures: [02_a.png](figures/02_a.png), [02_b.png](figures/02_b.png); see [the data](data.yaml)"
    page = pages.report_for_book(f"# Report\n\n{line}\n\nmore\n")
    assert page.startswith(f"# Report\n\n{line}\n\n:::{{image}} figures/02_a.png\n:alt: 02_a.png\n")
    assert page.count(":::{image}") == 2 and "data.yaml\n:" not in page and page.endswith("\nmore\n")
    assert pages.report_for_book("![shown](figures/02_a.png)\n") == "![shown](figures/02_a.png)\n"
