"""Runner: parameters checked before anything runs; failures named and kept; offline stops early."""

from __future__ import annotations

import json
import shutil

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from vitreg.cli import main
from vitreg.params import ParameterError, validate
from vitreg.paths import repo_root
from vitreg.runner import models_in, preflight_weights, run, strip_outputs


def _notebook(path, body: str) -> None:
    nb = new_notebook(cells=[
        new_markdown_cell("# Test notebook"),
        new_code_cell('profile = "real"\npretrained = True\ndevice = "auto"\nseed = 0\noutput_dir = ".."\nn_images = 4',
                      metadata={"tags": ["parameters"]}),
        new_code_cell(body),
    ], metadata={"kernelspec": {"name": "vitreg", "display_name": "Python (vitreg)", "language": "python"}})
    nbformat.write(nb, path)


@pytest.fixture
def project(tmp_path):
    """A small project root with two notebooks, the second one failing."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params").mkdir()
    _notebook(tmp_path / "notebooks" / "01_ok.ipynb",
              "from pathlib import Path\nPath(output_dir, 'results').mkdir(parents=True, exist_ok=True)\n"
              "Path(output_dir, 'results', '01_ok.json').write_text('{}')")
    _notebook(tmp_path / "notebooks" / "02_fails.ipynb", "raise ValueError('planted failure')")
    _notebook(tmp_path / "notebooks" / "03_after.ipynb", "print('after')")
    (tmp_path / "notebooks" / "order.yaml").write_text(
        "- notebook: 01_ok\n- notebook: 02_fails\n- notebook: 03_after\n")
    (tmp_path / "params" / "smoke.yaml").write_text("common:\n  profile: smoke\nnotebooks:\n  01_ok:\n    n_images: 2\n")
    return tmp_path


def test_unknown_or_ill_typed_parameter_is_an_error(project):
    nb = project / "notebooks" / "01_ok.ipynb"
    with pytest.raises(ParameterError, match="unknown parameter 'n_image'.*n_images"):
        validate(nb, {"n_image": 3})
    with pytest.raises(ParameterError, match="should be int"):
        validate(nb, {"n_images": "many"})
    assert validate(nb, {"n_images": 3, "device": "cpu"})["n_images"] == 3


def test_typo_in_the_profile_stops_before_any_notebook_runs(project):
    (project / "params" / "smoke.yaml").write_text("common:\n  profile: smoke\nnotebooks:\n  03_after:\n    n_imagse: 2\n")
    with pytest.raises(ParameterError, match="n_imagse"):
        run("smoke", root=project, out_dir=project / "out", report=False)
    assert not (project / "out" / "results").exists()  # nothing ran


def test_failing_notebook_is_named_kept_and_stops_the_run(project):
    out = project / "out"
    (out / "notebooks").mkdir(parents=True)
    (out / "notebooks" / "03_after.ipynb").write_text("earlier output")
    outcomes = run("smoke", root=project, out_dir=out, report=False)
    assert [(o.notebook, o.status) for o in outcomes] == [("01_ok", "ok"), ("02_fails", "failed"), ("03_after", "not run")]
    assert "planted failure" in outcomes[1].detail
    executed = json.loads((out / "notebooks" / "02_fails.ipynb").read_text())
    assert any("planted failure" in json.dumps(c.get("outputs", [])) for c in executed["cells"])
    assert (out / "notebooks" / "03_after.ipynb").read_text() == "earlier output"  # untouched
    assert (out / "results" / "01_ok.json").exists()


def test_real_profile_offline_stops_early_naming_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VITREG_WEIGHTS", str(tmp_path / "weights"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    stop = preflight_weights(["00_tour"])
    assert "dinov2_l = vit_large_patch14_dinov2.lvd142m: 00_tour" in stop and "Two ways out" in stop
    assert str(tmp_path / "weights") in stop
    with pytest.raises(SystemExit, match="Stopping before any notebook runs"):
        main(["run", "--profile", "real", "--only", "00"])


def test_models_in_reads_model_parameters():
    assert models_in({"model": "dinov2_g", "models": ["dino_b16", "mae_b16"], "n_images": 3, "model_dir": None,
                      "model_pairs": [["dinov2_s", "dinov2_s_reg"], ["dinov2_g", "dinov2_g_reg"]]}) == [
        "dinov2_g", "dino_b16", "mae_b16", "dinov2_s", "dinov2_s_reg", "dinov2_g_reg"]


def test_strip_outputs(tmp_path):
    (tmp_path / "notebooks").mkdir()
    nb = new_notebook(cells=[new_code_cell("1 + 1", execution_count=3,
                                           outputs=[nbformat.v4.new_output("execute_result", {"text/plain": "2"})])])
    nbformat.write(nb, tmp_path / "notebooks" / "x.ipynb")
    assert strip_outputs(tmp_path) == [tmp_path / "notebooks" / "x.ipynb"]
    cell = nbformat.read(tmp_path / "notebooks" / "x.ipynb", as_version=4).cells[0]
    assert cell.outputs == [] and cell.execution_count is None
    assert strip_outputs(tmp_path) == []


def test_repo_root_holds_the_project():
    assert (repo_root() / "notebooks" / "order.yaml").exists()
    assert shutil.which("make") is not None


def test_kernel_imports_vitreg_from_the_checkout_being_run(project):
    """A second checkout must run its own code, not the one installed into the environment."""
    (project / "vitreg").mkdir()
    (project / "vitreg" / "__init__.py").write_text("MARK = 'this checkout'\n")
    _notebook(project / "notebooks" / "01_ok.ipynb",
              "import vitreg\nfrom pathlib import Path\nPath(output_dir, 'results').mkdir(parents=True, exist_ok=True)\n"
              "Path(output_dir, 'results', '01_ok.json').write_text(vitreg.__file__ + ' ' + getattr(vitreg, 'MARK', ''))")
    (project / "notebooks" / "order.yaml").write_text("- notebook: 01_ok\n")
    assert [o.status for o in run("smoke", root=project, out_dir=project / "out", report=False)] == ["ok"]
    ran = (project / "out" / "results" / "01_ok.json").read_text()
    assert ran.startswith(str(project.resolve() / "vitreg")) and ran.endswith("this checkout")
