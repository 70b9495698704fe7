"""The classroom mode and honest labels: a notebook opened by hand takes the lecture parameters
(``VITREG_PROFILE=lecture make lab``), and a schematic is not stamped as a planted or random-weights result."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from vitreg.experiments.params import load_profile, notebook_defaults  # noqa: E402
from vitreg.present import notebook  # noqa: E402
from vitreg.present.plots import diagrams  # noqa: E402
from vitreg.utils.paths import repo_root  # noqa: E402
from vitreg.utils.progress import TEXT_ENV  # noqa: E402

TOUR = repo_root() / "notebooks" / "00_tour.ipynb"


@pytest.fixture
def by_hand(monkeypatch):
    """A kernel opened by `VITREG_PROFILE=lecture make lab`: the lab variable set, not a runner's kernel."""
    monkeypatch.setenv(notebook.LAB_PROFILE_ENV, "lecture")
    monkeypatch.delenv(TEXT_ENV, raising=False)


def test_a_notebook_opened_by_hand_takes_the_lecture_parameters(by_hand, capsys):
    defaults = notebook_defaults(TOUR)
    lecture = load_profile("lecture", "00_tour")
    assert defaults["image_size"] != lecture["image_size"], "the planted difference: 518 px real, 224 px lecture"
    namespace = dict(defaults)
    run = notebook.start("00_tour", namespace)
    assert run.profile == "lecture" and run.params["image_size"] == lecture["image_size"]
    assert namespace["image_size"] == lecture["image_size"], "the cells after start read the lecture value"
    assert "VITREG_LAB_PROFILE: " in capsys.readouterr().out


def test_a_value_edited_by_hand_wins_over_the_lecture_profile(by_hand):
    namespace = dict(notebook_defaults(TOUR), image_size=336)
    run = notebook.start("00_tour", namespace)
    assert run.params["image_size"] == 336 and namespace["image_size"] == 336 and run.profile == "lecture"


def test_a_runner_kernel_and_a_plain_kernel_keep_their_parameters(by_hand, monkeypatch):
    defaults = notebook_defaults(TOUR)
    monkeypatch.setenv(TEXT_ENV, "1")  # the runner's kernel: its profile came with its parameters
    assert notebook.lab_parameters("00_tour", dict(defaults)) == {}
    monkeypatch.delenv(TEXT_ENV)
    monkeypatch.delenv(notebook.LAB_PROFILE_ENV)
    namespace = dict(defaults)
    assert notebook.start("00_tour", namespace).params["image_size"] == defaults["image_size"]


def test_a_schematic_keeps_its_own_label_and_a_measured_figure_gets_the_runs(tmp_path):
    run = notebook.NotebookRun("00_tour", {"pretrained": False, "plant": True, "output_dir": str(tmp_path)})
    schematic = diagrams.outlier_norms()
    run.save_figure(schematic, "00_schematic")
    assert "schematic" in schematic.get_suptitle() and "planted" not in schematic.get_suptitle()
    measured, ax = plt.subplots()
    ax.set_title("norms")
    run.save_figure(measured, "00_norms")
    assert "planted" in ax.get_title() and (tmp_path / "figures" / "00_norms.png").is_file()
    plt.close("all")


# --- the handout: CPU-safe student copies with answer scaffolds -----------------------------------------------
def test_the_classroom_handout_runs_the_lecture_parameters_and_leaves_answer_cells(tmp_path):
    import json

    from vitreg.cli.handout import ADDED_TAG, is_solution, make_handout, source_text

    source = json.loads(TOUR.read_text())
    written = {p.stem: p for p in make_handout(out=tmp_path, profile="lecture")}
    copy = json.loads(written["00_tour"].read_text())
    assert not [c for c in copy["cells"] if is_solution(c)]
    added = [c for c in copy["cells"] if ADDED_TAG in c["metadata"].get("tags", [])]
    solutions = [c for c in source["cells"] if is_solution(c)]
    assert len(added) == len(solutions) + 1, "one answer cell per solution, plus the classroom parameters"
    params_at = next(i for i, c in enumerate(copy["cells"]) if "parameters" in c["metadata"].get("tags", []))
    classroom = copy["cells"][params_at + 1]
    namespace: dict = {}
    exec(source_text(copy["cells"][params_at]) + source_text(classroom), namespace)  # the two cells, as run
    lecture = load_profile("lecture", "00_tour")
    assert {k: namespace[k] for k in lecture} == lecture and namespace["image_size"] == 224
    kinds = [c["cell_type"] for c in solutions]
    assert [c["cell_type"] for c in added[1:]] == kinds
    real = json.loads(make_handout(out=tmp_path / "real", profile="real")[0].read_text())
    assert not any(c["id"].endswith("-parameters") for c in real["cells"]), "real: the defaults stay"


# --- the book of a lecture run ------------------------------------------------------------------------------
def test_the_book_of_a_lecture_run_says_so(tmp_path, monkeypatch):
    import json
    import shutil

    from vitreg.cli import book

    (tmp_path / "notebooks").mkdir()
    shutil.copy(repo_root() / "notebooks" / "order.yaml", tmp_path / "notebooks")
    with pytest.raises(book.NoExecutedNotebooks, match="make lecture"):
        book.find_source(tmp_path, "lecture")
    lecture = tmp_path / "build" / "lecture"
    (lecture / "notebooks").mkdir(parents=True)
    nb = {"cells": [{"cell_type": "markdown", "id": "t", "metadata": {}, "source": "# 00 — A tour"}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (lecture / "notebooks" / "00_tour.ipynb").write_text(json.dumps(nb))
    (lecture / "report.md").write_text("# Report\n")
    source = book.find_source(tmp_path, "lecture")
    assert source.kind == "lecture" and source.notebooks == lecture / "notebooks"
    with pytest.raises(book.NoExecutedNotebooks):
        book.find_source(tmp_path, "auto")  # auto: the real run, else the smoke run
    (tmp_path / "es5").mkdir()
    monkeypatch.setattr(book, "mathjax_es5", lambda: tmp_path / "es5")
    book.stage(source, tmp_path / "src", tmp_path)
    title = book.LABELS["lecture"][0]
    assert title in (tmp_path / "src" / "intro.md").read_text() and title in (tmp_path / "src" / "report.md").read_text()


def test_the_artifact_score_axis_names_the_score_not_a_share():
    """01 and 10 draw (s_top - u)/(1 - u), which is 0 for a uniform map: the axis must not call it a share."""
    import torch

    from vitreg.present.plots import plot_artifact_scores

    fig = plot_artifact_scores({"model": torch.tensor([0.1, 0.2])}, uniform=0.0)
    label = fig.axes[0].get_ylabel()
    assert label.startswith("artifact score") and "0: uniform map" in label and "share on top" not in label
    plt.close(fig)
