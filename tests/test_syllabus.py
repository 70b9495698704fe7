"""The syllabus (notebooks/syllabus.yaml and its book page): every notebook, a consistent map, a 90-minute path."""

from __future__ import annotations

import shutil

import pytest
import yaml

from vitreg.cli import syllabus
from vitreg.utils.paths import repo_root

ROOT = repo_root()


def _root_with(tmp_path, edit) -> object:
    (tmp_path / "notebooks").mkdir()
    shutil.copy(ROOT / "notebooks" / "order.yaml", tmp_path / "notebooks" / "order.yaml")
    data = yaml.safe_load((ROOT / "notebooks" / "syllabus.yaml").read_text())
    edit(data)
    (tmp_path / "notebooks" / "syllabus.yaml").write_text(yaml.safe_dump(data))
    return tmp_path


def test_the_syllabus_covers_every_notebook_and_its_path_fits_90_minutes():
    data = syllabus.load_syllabus()
    page = syllabus.syllabus_markdown(data, {n: f"{n[:2]} — A tour" for n in data["notebooks"]})
    for name in data["notebooks"]:
        assert f"](notebooks/{name}.ipynb)" in page
    assert "](notebooks/01" not in syllabus.syllabus_markdown(data, {"00_tour": "00 — A tour"}), "no page, no link"
    minutes = sum(data["notebooks"][n]["class_minutes"] for n in data["path_90"])
    assert minutes <= 90 and f"in {minutes} minutes" in page
    assert "| [00](notebooks/00_tour.ipynb) | A tour |" in page, "titles without their number"


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["notebooks"].pop("05_local_information"), "05_local_information: missing"),
    (lambda d: d["notebooks"]["02_high_norm_tokens"].update(builds_on=["07_registers"]), "not an earlier notebook"),
    (lambda d: d.update(path_90=["07_registers", "00_tour"]), "07_registers comes before (or without) 01_"),
    (lambda d: d["notebooks"]["00_tour"].update(class_minutes=80), "more than 90"),
])
def test_a_syllabus_that_disagrees_with_the_notebooks_is_refused(tmp_path, edit, message):
    with pytest.raises(syllabus.SyllabusError, match=message.replace("(", r"\(").replace(")", r"\)")):
        syllabus.load_syllabus(_root_with(tmp_path, edit))


def test_the_dependency_map_puts_each_notebook_below_what_it_builds_on():
    notebooks = syllabus.load_syllabus()["notebooks"]
    levels = syllabus._levels(notebooks)
    where = {n: i for i, level in enumerate(levels) for n in level}
    assert levels[0] == ["00_tour"]
    assert all(where[d] < where[n] for n, e in notebooks.items() for d in e["builds_on"])


def test_a_title_is_the_first_h1_line():
    nb = {"cells": [{"cell_type": "markdown", "source": ["intro\n", "# 02 — High-norm tokens\n"]}]}
    assert syllabus.notebook_title(nb, "02") == "02 — High-norm tokens"
    assert syllabus.notebook_title({"cells": []}, "02_x") == "02_x"


def test_the_book_has_the_syllabus_page_and_an_index_with_titles(tmp_path, monkeypatch):
    from vitreg.cli import book

    root = _root_with(tmp_path, lambda d: None)
    (root / "build" / "smoke" / "notebooks").mkdir(parents=True)
    for name in ("00_tour", "02_high_norm_tokens"):
        shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", root / "build" / "smoke" / "notebooks")
    (root / "build" / "smoke" / "report.md").write_text("# Report\n")
    (tmp_path / "es5").mkdir()
    monkeypatch.setattr(book, "mathjax_es5", lambda: tmp_path / "es5")
    book.stage(book.find_source(root), tmp_path / "src", root)
    toc = yaml.safe_load((tmp_path / "src" / "_toc.yml").read_text())
    assert toc["parts"][2] == {"caption": "Course", "chapters": [{"file": "syllabus"}]}
    intro = (tmp_path / "src" / "intro.md").read_text()
    assert "- [00 — A tour of vitreg: tokens, norms, attention" in intro and "](syllabus.md)" in intro
    assert "# Syllabus" in (tmp_path / "src" / "syllabus.md").read_text()
