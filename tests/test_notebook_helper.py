"""The notebook helper: parameters read from the notebook itself, checked, and recorded in full."""

from __future__ import annotations

import json

import pytest

from vitreg.present import notebook
from vitreg.experiments.params import ParameterError, notebook_defaults
from vitreg.utils.paths import repo_root

NAME = "02_high_norm_tokens"


def _namespace(**overrides):
    ns = notebook_defaults(repo_root() / "notebooks" / f"{NAME}.ipynb")
    ns.update(overrides)
    return {**ns, "unrelated_global": object()}


def test_start_reads_every_parameter_of_the_cell_and_nothing_else(tmp_path):
    run = notebook.start(NAME, _namespace(output_dir=str(tmp_path), n_images=3, profile="smoke"))
    assert set(run.params) == set(notebook_defaults(repo_root() / "notebooks" / f"{NAME}.ipynb"))
    assert run.params["n_images"] == 3 and run.profile == "smoke" and run.output_dir == tmp_path


def test_start_rejects_an_ill_typed_value_and_names_it():
    with pytest.raises(ParameterError, match="n_images"):
        notebook.start(NAME, _namespace(n_images="many"))


def test_start_asks_for_the_parameters_cell_first():
    ns = _namespace()
    del ns["seed"]
    with pytest.raises(NameError, match="parameters cell"):
        notebook.start(NAME, ns)


def test_save_records_all_parameters_skips_and_planted_checks(tmp_path):
    run = notebook.start(NAME, _namespace(output_dir=str(tmp_path), pretrained=False, seed=3))
    assert run.skip("stripes", "no outliers") == {"skipped": "no outliers"}
    run.expect_planted("outliers found", True)
    path = run.save({"x": 1.0})
    record = json.loads(path.read_text())
    assert record["params"]["seed"] == 3 and record["params"]["k_std"] == 3.0  # nothing hand-typed, nothing lost
    assert record["numbers"]["skipped"] == ["stripes: no outliers"]
    assert record["numbers"]["planted_checks"] == {"outliers found": True}


def test_a_nan_is_named_and_recorded_as_skipped_instead_of_losing_the_results_file(tmp_path, capsys):
    import numpy as np
    import torch

    run = notebook.start(NAME, _namespace(output_dir=str(tmp_path), pretrained=False))
    path = run.save({"ok": 1.5, "deep": {"ratio": float("nan"), "t": torch.tensor(float("inf")),
                                         "list": [2.0, np.float32("nan")]}})
    record = json.loads(path.read_text())  # strict JSON: NaN would have been refused
    assert record["numbers"]["ok"] == 1.5 and record["numbers"]["deep"]["list"][0] == 2.0
    for bad in (record["numbers"]["deep"]["ratio"], record["numbers"]["deep"]["t"], record["numbers"]["deep"]["list"][1]):
        assert "not a finite number" in bad["skipped"]
    assert "numbers.deep.ratio, numbers.deep.t, numbers.deep.list[1]" in capsys.readouterr().out


def test_a_missed_planted_truth_fails_the_notebook(tmp_path):
    run = notebook.start(NAME, _namespace(output_dir=str(tmp_path)))
    with pytest.raises(notebook.PlantedTruthMissed, match="outliers found"):
        run.expect_planted("outliers found", False)


def test_figure_names_carry_the_notebook_number(tmp_path):
    run = notebook.start(NAME, _namespace(output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="notebook number"):
        run.save_figure(object(), "norms")


def test_check_prints_the_papers_verdict_and_records_it(tmp_path, capsys):
    run = notebook.start(NAME, _namespace(output_dir=str(tmp_path)))
    far = run.check("outliers.outlier_pct", 40.0, model="dinov2_g")  # the paper: 2.37 %
    assert far and {v.status for v in far} == {"differs", "not comparable"}  # the course measured at 224 px
    near = run.check("outliers.outlier_pct", 2.4, model="dinov2_g")
    assert any(v.status == "reproduced" for v in near)
    assert "F2.outlier_pct.dinov2_g" in capsys.readouterr().out


def test_a_broken_code_invariant_fails_the_notebook(tmp_path):
    run = notebook.start(NAME, _namespace(output_dir=str(tmp_path)))
    assert run.require("attention recomputed == explicit", True)
    with pytest.raises(notebook.CodeCheckFailed, match="explicit"):
        run.require("attention recomputed == explicit", False)


def test_images_fall_back_to_the_bundled_photos_and_record_it(tmp_path):
    run = notebook.start(NAME, _namespace(output_dir=str(tmp_path), profile="smoke", n_images=3, images="photos"))
    assert len(run.images()) == 3
    record = json.loads(run.save({}).read_text())
    assert "bundled" in record["numbers"]["images"]["source"]
    assert record["numbers"]["images"]["n"] == 3


def test_the_verdicts_a_notebook_records_are_the_reports_rows(tmp_path):
    """Agreement by construction: the stored verdicts are what the report computes from the same file."""
    from vitreg.claims.paper import paper_numbers
    from vitreg.present.report import evaluate
    from vitreg.utils.results import load_results

    run = notebook.start(NAME, _namespace(output_dir=str(tmp_path), image_size=518))
    numbers = {"outliers": {"model": "dinov2_g", "outlier_pct": 2.4, "norm_ratio": 30.0, "norm_ratio_after_ln": 1.1},
               "reference": {"model": "dino_b16", "outlier_pct": 0.0}}
    run.check("outliers.outlier_pct", 2.4, model="dinov2_g")
    record = load_results(run.save(numbers, models=[{"name": "dinov2_g", "pretrained": True, "image_size": [518, 518]}]))
    stored = {v["id"]: v["status"] for v in record["numbers"]["verdicts"]}
    mine = [n for n in paper_numbers() if n.notebook == NAME]
    report = {v.id: v.status for v in evaluate(mine, {NAME: record}) if v.status != "not reproducible"}
    assert stored == report
    assert stored["F2.outlier_pct.dinov2_g"] == "reproduced" and stored["F2.norm_ratio.dinov2_g"] == "differs"


@pytest.mark.parametrize("overrides, random, planted", [
    ({}, False, False),
    ({"pretrained": False}, True, False),                 # interactive: profile real, random weights
    ({"pretrained": False, "plant": True}, True, True),   # smoke-like, whatever the profile says
    ({"plant": True, "profile": "smoke"}, False, True),
])
def test_figure_labels_come_from_what_ran_not_from_the_profile(tmp_path, overrides, random, planted):
    """Each saved figure's title says "random weights" exactly when the models were random, and "planted"
    exactly when the run planted its answer; the profile plays no part."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vitreg.present import plots

    run = notebook.start(NAME, _namespace(output_dir=str(tmp_path), **overrides))
    assert (run.random_weights, run.planted) == (random, planted)
    fig, axes = plt.subplots(1, 2)
    fig.suptitle(plots.title_for("Fig. 3: norms", not random))  # its label line is replaced, never duplicated
    run.save_figure(fig, "02_labels")
    title = fig.get_suptitle()
    assert ("random weights" in title) == random and ("planted" in title) == planted
    assert title.count("random weights") <= 1 and title.startswith("Fig. 3: norms")
    plt.close(fig)


def test_a_recorded_plant_or_synthetic_data_labels_the_run_planted(tmp_path):
    run = notebook.start(NAME, _namespace(output_dir=str(tmp_path)))
    assert not run.planted and run.labels == ""
    run.plant("objects on synthetic images")
    assert run.planted and run.labels == "[planted ground truth]"
    assert notebook._planting_params({"datasets": ["VOC07", "synthetic"]}) == ["datasets"]
    assert notebook._planting_params({"synthetic": False, "plant_fraction": 0.0, "datasets": ["VOC07"]}) == []


def test_random_weights_under_profile_real_are_recorded_and_not_applicable(tmp_path, capsys):
    """Opening a notebook by hand with pretrained=False: checks say "not applicable", nothing stops."""
    run = notebook.start(NAME, _namespace(output_dir=str(tmp_path), pretrained=False, profile="real"))
    verdicts = run.check("outliers.outlier_pct", 2.37, model="dinov2_g")
    assert verdicts and {v.status for v in verdicts} == {"not applicable"}
    assert "NOT APPLICABLE" in capsys.readouterr().out
    record = json.loads(run.save({"outliers": {"outlier_pct": 2.37, "model": "dinov2_g"}}).read_text())
    assert record["random_weights"] is True
    assert {v["status"] for v in record["numbers"]["verdicts"] if v["id"].startswith("F2.outlier_pct")} == {"not applicable"}


def test_readable_formats_numbers_for_people():
    import math

    import pandas as pd

    df = pd.DataFrame({"a": [45.833336, math.nan], "b": [3, 12000]})
    shown = notebook.readable(df)
    assert shown["a"].tolist() == ["45.8", "—"] and shown["b"].tolist() == ["3", "12,000"]
    counts = notebook.readable(pd.DataFrame({"n_train": [48.0, None], "acc": [100.0, 45.833336]}))
    assert counts["n_train"].tolist() == ["48", "—"] and counts["acc"].tolist() == ["100.0", "45.8"]
    assert notebook.readable(0.123456, 3) == "0.123" and notebook.readable(None) == "—"
    assert notebook.readable("skipped") == "skipped"
