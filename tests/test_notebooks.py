"""Notebooks: hygiene (stripped, titled, one parameters cell, in the run order), each notebook equal to its
experiment (parameters cell = dataclass defaults, paper keys = record paths) and a smoke run of each that loads
and forwards exactly what its experiment declares (a trace of the run, vitreg.core.trace)."""

from __future__ import annotations

import functools
import json
from collections import Counter

import pytest

from vitreg.core import trace
from vitreg.experiments.base import record_paths
from vitreg.experiments.catalog import MODULES, experiment
from vitreg.experiments.params import COMMON_PARAMETERS, load_order, load_profile, notebook_defaults, validate
from vitreg.utils.paths import repo_root
from vitreg.cli.runner import run

ROOT = repo_root()
ORDER = [e["notebook"] for e in load_order()]
FILES = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))


def test_run_order_lists_exactly_the_notebooks():
    assert sorted(ORDER) == FILES, "notebooks/order.yaml and notebooks/*.ipynb differ"
    assert ORDER == sorted(ORDER), "the run order follows the notebook numbers"


def test_every_notebook_of_the_run_order_has_its_experiment():
    assert list(MODULES) == ORDER, "vitreg.experiments.catalog.MODULES and notebooks/order.yaml differ"
    assert all(experiment(name).name == name for name in ORDER)


@pytest.mark.parametrize("name", ORDER)
def test_the_parameters_cell_is_the_experiments_defaults(name):
    """The cell and the dataclass hold the same names with the same literals (``1`` is not ``1.0``)."""
    cell = notebook_defaults(ROOT / "notebooks" / f"{name}.ipynb")
    defaults = experiment(name).defaults()
    assert set(cell) == set(defaults), f"{name}: the parameters cell and the dataclass name different parameters"
    assert {k: repr(v) for k, v in cell.items()} == {k: repr(v) for k, v in defaults.items()}, name


def _record_marks(name: str):
    if experiment(name).record is None:
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason="no results record yet"))
    return name


@pytest.mark.parametrize("name", [_record_marks(n) for n in ORDER])
def test_every_paper_key_is_a_field_of_the_results_record(name):
    from vitreg.claims.paper import paper_numbers

    record = experiment(name).record
    assert record is not None, f"{name}: its experiment has no results record"
    keys = {n.key for n in paper_numbers() if n.notebook == name and n.key}
    assert keys - record_paths(record) == set(), f"{name}: keys of data/paper_numbers.yaml outside its record"


def test_the_bundled_photo_count_is_what_work_counts():
    from vitreg.core.images import sample_photos
    from vitreg.experiments.base import BUNDLED_PHOTOS

    assert len(sample_photos()) == BUNDLED_PHOTOS


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


@functools.lru_cache(maxsize=None)
def _absent(dataset: str) -> bool:
    """True when ``dataset`` (a :class:`vitreg.experiments.base.Work` row's ``needs``) is not on this machine, so
    the run skips the row: box sets, Table 2's dense sets, classification sets (never downloaded here)."""
    from vitreg.data.boxes import open_box_dataset
    from vitreg.data.datasets import try_load_dataset
    from vitreg.data.dense import ade20k_pairs, nyud_pairs

    try:
        if dataset in ("VOC07", "VOC12", "COCO20k"):
            return open_box_dataset(dataset, None, limit=1) is None
        if dataset in ("ade20k", "nyud"):
            return not (ade20k_pairs("val") if dataset == "ade20k" else nyud_pairs("test"))
        return try_load_dataset(dataset, "test", download=False)[0] is None
    except Exception:  # noqa: BLE001  (any way of not being there)
        return True


def check_trace(name: str, events: list[dict]) -> None:
    """The models a smoke run of ``name`` loaded, and the images it forwarded per model, are its experiment's
    ``models(p)`` and ``work(p)`` at the smoke parameters (rows whose dataset is absent here are skipped)."""
    exp = experiment(name)
    p = exp.build(load_profile("smoke", name))
    loaded = list(dict.fromkeys(trace.loads(events)))
    assert loaded == exp.models(p), f"{name}: loaded {loaded}, its experiment declares {exp.models(p)}"
    again = Counter(trace.loads(events)) - Counter(exp.model_loads(p))  # fewer where a dataset is absent here
    assert not again, f"{name}: loaded {dict(again)} more often than its experiment's model_loads(p) says"
    declared: Counter = Counter()
    for w in exp.work(p):
        if not (w.needs and _absent(w.needs)):
            declared[w.model] += w.images
    forwarded = trace.images_per_model(events)
    assert forwarded == declared, f"{name}: forwarded {dict(forwarded)}, its experiment declares {dict(declared)}"


@pytest.mark.notebook
@pytest.mark.parametrize("name", ORDER)
def test_notebook_runs_under_the_smoke_profile(name, tmp_path, monkeypatch):
    monkeypatch.setenv(trace.TRACE_ENV, str(tmp_path / "trace.jsonl"))  # the kernel inherits it
    outcomes = run("smoke", [name], out_dir=tmp_path, report=False)
    assert [o.status for o in outcomes] == ["ok"], outcomes[0].detail
    check_trace(name, trace.read(tmp_path / "trace.jsonl"))
    results = json.loads((tmp_path / "results" / f"{name}.json").read_text())
    assert results["profile"] == "smoke" and results["random_weights"] is True
    assert all(m["pretrained"] is False for m in results["models"])
    figures = list((tmp_path / "figures").glob(f"{name[:2]}_*.png"))
    assert figures, "each notebook saves its figures under figures/ with its number"
    assert len(list((tmp_path / "figures").glob(f"{name[:2]}_*.pdf"))) == len(figures)
