"""The book and the handout on what a real run and real hands leave: a failed or interrupted notebook says so on
its page; unreadable notebooks and results are named (exit 2); solution tags are matched as people write them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vitreg.cli import book, handout
from vitreg.cli.main import main
from vitreg.utils.paths import repo_root


def _code(source: str, count: int | None, status: str, outputs: list | None = None) -> dict:
    return {"cell_type": "code", "id": f"c{abs(hash(source)) % 10**6}", "source": source, "execution_count": count,
            "outputs": outputs or [], "metadata": {"papermill": {"status": status}}}


def _executed(cells: list[dict]) -> dict:
    return {"cells": [{"cell_type": "markdown", "id": "t", "metadata": {}, "source": "# 01 tour"}, *cells],
            "metadata": {"papermill": {"exception": None}}, "nbformat": 4, "nbformat_minor": 5}


INTERRUPTED_BY_KILL = _executed([_code("a = 1", 1, "completed"), _code("b = 2", None, "running"),
                                 _code("c = 3", None, "pending")])  # what papermill had saved when its runner died
INTERRUPTED_BY_CTRL_C = _executed([_code("a = 1", 1, "completed"), _code("sleep()", 2, "completed", [
    {"output_type": "error", "ename": "KeyboardInterrupt", "evalue": "", "traceback": []}])])
FAILED = _executed([_code("a = 1", 1, "failed", [
    {"output_type": "error", "ename": "ValueError", "evalue": "planted", "traceback": []}]), _code("b", None, "pending")])
WHOLE = _executed([_code("a = 1", 1, "completed"), _code("b = 2", 2, "completed")])


def _root(tmp_path: Path, executed: dict | str) -> Path:
    """A project root whose smoke run left ``00_tour`` executed as ``executed`` (a dict, or raw text)."""
    (tmp_path / "notebooks").mkdir()
    shutil.copy(repo_root() / "notebooks" / "order.yaml", tmp_path / "notebooks" / "order.yaml")
    folder = tmp_path / "build" / "smoke" / "notebooks"
    folder.mkdir(parents=True)
    (folder / "00_tour.ipynb").write_text(executed if isinstance(executed, str) else json.dumps(executed))
    (tmp_path / "build" / "smoke" / "report.md").write_text("# Report\n")
    return tmp_path


def _staged_page(tmp_path: Path, executed: dict, monkeypatch) -> str:
    root = _root(tmp_path, executed)
    mathjax = tmp_path / "es5"
    mathjax.mkdir()
    (mathjax / "tex-chtml.js").write_text("// stand-in")
    monkeypatch.setattr(book, "mathjax_es5", lambda: mathjax)
    book.stage(book.find_source(root), tmp_path / "src", root)
    cells = json.loads((tmp_path / "src" / "notebooks" / "00_tour.ipynb").read_text())["cells"]
    return "\n".join(c["source"] if isinstance(c["source"], str) else "".join(c["source"]) for c in cells)


@pytest.mark.robustness("handled")
@pytest.mark.parametrize("executed, says", [
    (INTERRUPTED_BY_KILL, "interrupted: only 1 of its 3 code cells ran"),
    (INTERRUPTED_BY_CTRL_C, "interrupted: only 2 of its 2 code cells ran"),
    (FAILED, "This notebook failed"),
], ids=["runner-killed", "ctrl-c", "failed"])
def test_a_chapter_from_an_unfinished_notebook_says_so_on_its_page(executed, says, tmp_path, monkeypatch):
    page = _staged_page(tmp_path, executed, monkeypatch)
    assert says.replace("interrupted: ", "") in page.replace("\n", " "), page
    assert page.index("# 01 tour") < page.index(says.split(":")[-1].strip()[:10]), "the mark goes under the title"


def test_a_whole_notebook_has_no_mark(tmp_path, monkeypatch):
    page = _staged_page(tmp_path, WHOLE, monkeypatch)
    assert "failed" not in page and "interrupted" not in page


@pytest.mark.robustness("clear error")
@pytest.mark.parametrize("text", ['{"cells": [{"cell_type": "mark', "", "[1, 2]"], ids=["truncated", "empty", "no-cells"])
def test_book_names_an_unreadable_executed_notebook_and_exits_2(text, tmp_path, monkeypatch, capsys):
    root = _root(tmp_path, text)
    monkeypatch.setattr(book, "repo_root", lambda: root)
    assert main(["book", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "00_tour.ipynb" in err and "Traceback" not in err, err


@pytest.mark.robustness("clear error")
def test_book_names_a_truncated_results_file_and_exits_2(tmp_path, monkeypatch, capsys):
    root = _root(tmp_path, WHOLE)
    (root / "build" / "smoke" / "report.md").unlink()  # the report is built from the results
    (root / "build" / "smoke" / "results").mkdir()
    (root / "build" / "smoke" / "results" / "00_tour.json").write_text('{"notebook": "00_tour", "numb')
    monkeypatch.setattr(book, "repo_root", lambda: root)
    monkeypatch.setattr(book, "mathjax_es5", lambda: tmp_path)
    assert main(["book", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "00_tour.json" in err and "Traceback" not in err, err


# --- handout -------------------------------------------------------------------------------------
def _cell(text: str, metadata: object) -> dict:
    return {"cell_type": "code", "id": f"c{abs(hash(text)) % 10**6}", "metadata": metadata, "source": text,
            "outputs": [], "execution_count": None}


@pytest.mark.robustness("handled")
@pytest.mark.parametrize("tags", ["solution", ["Solution"], ["solution "], [" SOLUTION", "hide-input"]],
                         ids=["bare-string", "capital", "trailing-space", "upper-and-list"])
def test_a_solution_tag_is_matched_as_people_write_it(tags):
    nb = {"cells": [_cell("x = 1", {}), _cell("answer = 42", {"tags": tags})], "metadata": {}}
    assert [c["source"] for c in handout.student_copy(nb)["cells"]] == ["x = 1"]


@pytest.mark.robustness("handled")
@pytest.mark.parametrize("metadata", [None, {"tags": None}, {"tags": ["solutions"]}, {"tags": [3]}],
                         ids=["metadata-null", "tags-null", "other-tag", "not-a-string"])
def test_cells_without_a_solution_tag_are_kept(metadata):
    nb = {"cells": [_cell("x = 1", metadata)], "metadata": {}}
    assert [c["source"] for c in handout.student_copy(nb)["cells"]] == ["x = 1"]


@pytest.mark.robustness("clear error")
def test_handout_names_a_truncated_notebook_and_writes_nothing(tmp_path, monkeypatch, capsys):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "00_good.ipynb").write_text(json.dumps({"cells": [], "metadata": {}}))
    (tmp_path / "notebooks" / "01_cut.ipynb").write_text('{"cells": [{"cell_')
    monkeypatch.setattr(handout, "repo_root", lambda: tmp_path)
    assert main(["handout", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "01_cut.ipynb" in err and "git checkout" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.robustness("clear error")
def test_handout_folder_that_is_a_file_is_one_line_and_exit_2(tmp_path, capsys):
    taken = tmp_path / "handout"
    taken.write_text("mine")
    assert main(["handout", "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert str(taken) in err and "Traceback" not in err, err
    assert taken.read_text() == "mine"
