"""Notebooks: hygiene (stripped, titled, one parameters cell, in the run order) and a smoke run of each."""

from __future__ import annotations

import json

import pytest
import yaml

from vitreg.experiments.params import COMMON_PARAMETERS, load_order, load_profile, notebook_defaults, validate
from vitreg.utils.paths import repo_root
from vitreg.cli.runner import run

ROOT = repo_root()
ORDER = [e["notebook"] for e in load_order()]
FILES = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))


def test_run_order_lists_exactly_the_notebooks():
    assert sorted(ORDER) == FILES, "notebooks/order.yaml and notebooks/*.ipynb differ"
    assert ORDER == sorted(ORDER), "the run order follows the notebook numbers"


def test_smoke_profile_names_only_known_notebooks():
    data = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    assert set(data["notebooks"]) <= set(ORDER)


@pytest.mark.parametrize("name", FILES)
def test_notebook_hygiene(name):
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    cells = nb["cells"]
    first = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown" and first.startswith("# "), "first cell: an H1 title"
    for c in cells:
        if c["cell_type"] == "code":
            assert not c.get("outputs") and c.get("execution_count") is None, "commit notebooks with outputs stripped"
    defaults = notebook_defaults(ROOT / "notebooks" / f"{name}.ipynb")  # exactly one tagged cell, literals only
    missing = [p for p in COMMON_PARAMETERS if p not in defaults]
    assert not missing, f"parameters cell lacks {missing}"
    assert defaults["profile"] == "real" and defaults["pretrained"] is True and defaults["device"] == "auto"
    assert nb["metadata"]["kernelspec"]["name"] == "vitreg"
    text = "".join("".join(c["source"]) for c in cells).lower()
    assert "pitfall" in text and "exercise" in text


@pytest.mark.parametrize("name", FILES)
def test_smoke_parameters_are_known_to_the_notebook(name):
    validate(ROOT / "notebooks" / f"{name}.ipynb", load_profile("smoke", name))


@pytest.mark.notebook
@pytest.mark.parametrize("name", ORDER)
def test_notebook_runs_under_the_smoke_profile(name, tmp_path):
    outcomes = run("smoke", [name], out_dir=tmp_path, report=False)
    assert [o.status for o in outcomes] == ["ok"], outcomes[0].detail
    results = json.loads((tmp_path / "results" / f"{name}.json").read_text())
    assert results["profile"] == "smoke" and results["random_weights"] is True
    assert all(m["pretrained"] is False for m in results["models"])
    figures = list((tmp_path / "figures").glob(f"{name[:2]}_*.png"))
    assert figures, "each notebook saves its figures under figures/ with its number"
    assert len(list((tmp_path / "figures").glob(f"{name[:2]}_*.pdf"))) == len(figures)
