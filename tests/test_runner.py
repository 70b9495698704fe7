"""Runner: parameters checked before anything runs; failures named and kept; offline stops early."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from vitreg.cli.main import main
from vitreg.experiments import catalog
from vitreg.experiments.params import ParameterError, cell_experiment, validate
from vitreg.utils.paths import repo_root
from vitreg.cli.runner import notebook_models, preflight_weights, run, strip_outputs


def _notebook(path, body: str) -> None:
    nb = new_notebook(cells=[
        new_markdown_cell("# Test notebook"),
        new_code_cell('profile = "real"\npretrained = True\ndevice = "auto"\nseed = 0\noutput_dir = ".."\nn_images = 4',
                      metadata={"tags": ["parameters"]}),
        new_code_cell(body),
    ], metadata={"kernelspec": {"name": "vitreg", "display_name": "Python (vitreg)", "language": "python"}})
    nbformat.write(nb, path)


def _smoke(project, name: str, **values) -> None:
    """Set the smoke profile of the project's notebook ``name`` (read by the project's experiments)."""
    path = project / "smoke.json"
    profiles = json.loads(path.read_text()) if path.exists() else {}
    profiles[name] = values
    path.write_text(json.dumps(profiles))


def _own_experiments(project) -> None:
    """The project's notebooks run on experiments made from their parameters cells, with the smoke profile of
    ``smoke.json``; every other name is the catalog's."""
    catalog_experiment = catalog.experiment

    def experiment(name):
        path = project / "notebooks" / f"{name}.ipynb"
        if not path.exists():
            return catalog_experiment(name)
        profiles = json.loads((project / "smoke.json").read_text()) if (project / "smoke.json").exists() else {}
        return cell_experiment(path, {"smoke": profiles.get(name, {})}, kinds={"n_images": "count"})
    return experiment


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A small project root with two notebooks, the second one failing (their experiments made from their cells)."""
    (tmp_path / "notebooks").mkdir()
    monkeypatch.setattr(catalog, "experiment", _own_experiments(tmp_path))
    _notebook(tmp_path / "notebooks" / "01_ok.ipynb",
              "from pathlib import Path\nPath(output_dir, 'results').mkdir(parents=True, exist_ok=True)\n"
              "Path(output_dir, 'results', '01_ok.json').write_text('{}')")
    _notebook(tmp_path / "notebooks" / "02_fails.ipynb", "raise ValueError('planted failure')")
    _notebook(tmp_path / "notebooks" / "03_after.ipynb", "print('after')")
    (tmp_path / "notebooks" / "order.yaml").write_text(
        "- notebook: 01_ok\n- notebook: 02_fails\n- notebook: 03_after\n")
    _smoke(tmp_path, "01_ok", n_images=2)
    return tmp_path


@pytest.mark.robustness("clear error")
def test_unknown_or_ill_typed_parameter_is_an_error(project):
    nb = project / "notebooks" / "01_ok.ipynb"
    with pytest.raises(ParameterError, match="unknown parameter 'n_image'.*n_images"):
        validate(nb, {"n_image": 3})
    with pytest.raises(ParameterError, match="'n_images' = 'many' is out of range: allowed an integer"):
        validate(nb, {"n_images": "many"})
    assert validate(nb, {"n_images": 3, "device": "cpu"})["n_images"] == 3


@pytest.mark.robustness("clear error")
def test_typo_in_the_profile_stops_before_any_notebook_runs(project):
    _smoke(project, "03_after", n_imagse=2)
    with pytest.raises(ParameterError, match="n_imagse"):
        run("smoke", root=project, out_dir=project / "out", report=False)
    assert not (project / "out" / "results").exists()  # nothing ran


@pytest.mark.robustness("nothing lost")
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


@pytest.mark.robustness("clear error")
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


def test_the_weights_check_asks_each_experiment_for_its_models(tmp_path, monkeypatch):
    """10 loads dinov2_l_reg through register_twin (no parameter names it): the check must stop on it too."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VITREG_WEIGHTS", str(tmp_path / "weights"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    stop = preflight_weights(["10_test_time_registers"])
    for key in ("dinov2_l", "clip_b16_laion", "dinov2_l_reg"):
        assert f"{key} = " in stop, (key, stop)
    assert list(notebook_models(["10_test_time_registers"])) == ["dinov2_l", "clip_b16_laion", "dinov2_l_reg"]
    over = {"10_test_time_registers": {"models": ["clip_b16_laion"], "lost_model": "clip_b16_laion"}}
    assert list(notebook_models(["10_test_time_registers"], params=over)) == ["clip_b16_laion"]  # the run's parameters


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


@pytest.mark.robustness("handled")
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


# --- a dead kernel, an interrupt or a failed rerun never crash the run or leave stale outputs ---

@pytest.fixture
def reports(monkeypatch):
    """Stand-in for report.build_report (a tmp project's results do not follow the real schema): the
    calls it got, each with the results files present when it was called."""
    import vitreg.present.report as report_module

    calls = []

    def fake(results_dir, out_dir, figures_dir=None):
        calls.append(sorted(p.name for p in results_dir.glob("*.json")))
        return [out_dir / "report.md"]

    monkeypatch.setattr(report_module, "build_report", fake)
    return calls


def _outcomes(out) -> list[tuple[str, str]]:
    data = json.loads((out / "results" / "_outcomes.json").read_text())
    return [(o["notebook"], o["status"]) for o in data["outcomes"]]


@pytest.mark.robustness("handled")
def test_dead_kernel_is_a_failed_notebook_and_the_run_goes_on(project, reports, capsys):
    _notebook(project / "notebooks" / "02_fails.ipynb", "import os\nos.kill(os.getpid(), 9)")  # an OOM kill
    out = project / "out"
    outcomes = run("smoke", root=project, out_dir=out, keep_going=True)
    assert [(o.notebook, o.status) for o in outcomes] == [("01_ok", "ok"), ("02_fails", "failed"), ("03_after", "ok")]
    assert "kernel died — out of memory?" in outcomes[1].detail
    printed = capsys.readouterr().out
    assert "== vitreg smoke run ==" in printed and "FAILED: 02_fails" in printed and "report:" in printed
    assert reports == [["01_ok.json", "_outcomes.json"]]
    assert _outcomes(out) == [("01_ok", "ok"), ("02_fails", "failed"), ("03_after", "ok")]


@pytest.mark.robustness("handled")
def test_dead_kernel_without_keep_going_still_ends_with_summary_and_report(project, reports, capsys):
    _notebook(project / "notebooks" / "01_ok.ipynb", "import os\nos.kill(os.getpid(), 9)")
    outcomes = run("smoke", root=project, out_dir=project / "out")
    assert [o.status for o in outcomes] == ["failed", "not run", "not run"]
    assert "FAILED: 01_ok" in capsys.readouterr().out and len(reports) == 1


@pytest.mark.robustness("handled")
def test_any_error_of_the_execution_machinery_is_a_failed_notebook(project, reports, monkeypatch):
    import papermill as pm

    real = pm.execute_notebook

    def flaky(input_path, *args, **kwargs):
        if "02_fails" in str(input_path):
            raise RuntimeError("Kernel didn't respond in 60 seconds")
        return real(input_path, *args, **kwargs)

    monkeypatch.setattr(pm, "execute_notebook", flaky)
    outcomes = run("smoke", root=project, out_dir=project / "out", keep_going=True)
    assert [o.status for o in outcomes] == ["ok", "failed", "ok"]
    assert "RuntimeError: Kernel didn't respond" in outcomes[1].detail
    assert len(reports) == 1


_WRITES = """import json
from pathlib import Path
out = Path(output_dir)
(out / 'figures').mkdir(parents=True, exist_ok=True)
(out / 'figures' / f'01_fig_seed{seed}.png').write_text('figure')
if seed == 1:
    raise ValueError('the rerun fails after its first figure')
(out / 'results').mkdir(parents=True, exist_ok=True)
(out / 'results' / '01_ok.json').write_text(json.dumps({'seed': seed, 'params': {'output_dir': output_dir}}))
"""


def _with_seed(project, seed: int) -> None:
    _smoke(project, "01_ok", seed=seed)


@pytest.mark.robustness("nothing lost")
def test_a_failed_rerun_leaves_the_previous_outputs_whole(project, reports):
    _notebook(project / "notebooks" / "01_ok.ipynb", _WRITES)
    (project / "notebooks" / "order.yaml").write_text("- notebook: 01_ok\n")
    out = project / "out"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "02_other.png").write_text("another notebook's figure")
    _with_seed(project, 0)
    assert [o.status for o in run("smoke", root=project, out_dir=out)] == ["ok"]
    first = json.loads((out / "results" / "01_ok.json").read_text())
    assert first["seed"] == 0 and first["params"]["output_dir"] == str(out.resolve())  # where the outputs are
    _with_seed(project, 1)
    assert [o.status for o in run("smoke", root=project, out_dir=out)] == ["failed"]
    assert json.loads((out / "results" / "01_ok.json").read_text())["seed"] == 0
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["01_fig_seed0.png", "02_other.png"]
    assert _outcomes(out) == [("01_ok", "failed")]
    assert not (out / ".staging").exists()
    _with_seed(project, 2)
    assert [o.status for o in run("smoke", root=project, out_dir=out)] == ["ok"]
    assert json.loads((out / "results" / "01_ok.json").read_text())["seed"] == 2
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["01_fig_seed2.png", "02_other.png"]
    assert _outcomes(out) == [("01_ok", "ok")]


_INTERRUPTIBLE = """import sys
from pathlib import Path

import vitreg.present.report
import vitreg.cli.runner
import vitreg.experiments.catalog
from vitreg.cli.main import main
from vitreg.experiments.params import cell_experiment

project = Path(sys.argv[1])
vitreg.cli.runner.repo_root = lambda: project
vitreg.experiments.catalog.experiment = lambda name: cell_experiment(project / "notebooks" / f"{name}.ipynb")


def fake_report(results_dir, out_dir, figures_dir=None):
    (Path(out_dir) / "report.md").write_text(" ".join(sorted(p.name for p in Path(results_dir).glob("*.json"))))
    return [Path(out_dir) / "report.md"]


vitreg.present.report.build_report = fake_report
sys.exit(main(["run", "--profile", "smoke", "--out", str(project / "out")]))
"""


@pytest.mark.robustness("nothing lost")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_ends_with_summary_report_and_exit_130(project, signum):
    started = project / "started"
    _notebook(project / "notebooks" / "02_fails.ipynb",
              f"import os, time\nopen({str(started)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)")
    (project / "driver.py").write_text(_INTERRUPTIBLE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo_root()), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(project / "driver.py"), str(project)], cwd=repo_root(), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not started.exists() or not started.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.1)
    proc.send_signal(signum)
    printed, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, printed
    assert "(INTERRUPTED)" in printed, printed
    assert "vitreg/cli/runner.py" not in printed and "vitreg/cli/main.py" not in printed, printed  # no traceback of ours
    assert re.search(r"01_ok\s+ok", printed) and re.search(r"02_fails\s+interrupted", printed), printed
    assert re.search(r"03_after\s+not run", printed), printed
    out = project / "out"
    assert (out / "report.md").read_text() == "01_ok.json _outcomes.json"  # the report of what finished
    assert _outcomes(out) == [("01_ok", "ok"), ("02_fails", "interrupted"), ("03_after", "not run")]
    assert not (out / ".staging").exists()
    kernel = int(started.read_text())
    for _ in range(100):  # the kernel is shut down with the run, not left sleeping
        if not _alive(kernel):
            break
        time.sleep(0.1)
    assert not _alive(kernel), "the interrupted notebook's kernel is still running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.robustness("clear error")
def test_preflight_names_a_truncated_weights_file_as_broken(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VITREG_WEIGHTS", str(tmp_path))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    broken = tmp_path / "vit_large_patch14_dinov2.lvd142m.safetensors"
    broken.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":")  # a header cut short
    stop = preflight_weights(["00_tour"])
    assert stop is not None and str(broken) in stop and "dinov2_l" in stop


# --- overrides (PARAMS= / --set) and the images preflight -------------------------------
def test_set_and_params_file_reach_the_notebook(project):
    mine = project / "my.yaml"
    mine.write_text("notebooks:\n  01_ok:\n    n_images: 5\n    seed: 9\n")
    out = project / "out"
    outcomes = run("smoke", ["01"], root=project, out_dir=out, report=False, params_file=mine,
                   sets=["01_ok.n_images=7"])
    assert [o.status for o in outcomes] == ["ok"]
    injected = [c for c in json.loads((out / "notebooks" / "01_ok.ipynb").read_text())["cells"]
                if "injected-parameters" in c["metadata"].get("tags", [])]
    source = "".join(injected[0]["source"])
    assert "n_images = 7" in source and "seed = 9" in source and 'profile = "smoke"' in source


def test_a_project_outside_the_catalog_passes_its_experiments_in(tmp_path):
    """No catalog entry and no monkeypatching: the experiments made from the cells are given to run()."""
    (tmp_path / "notebooks").mkdir()
    _notebook(tmp_path / "notebooks" / "01_mine.ipynb", "print('ran')")
    (tmp_path / "notebooks" / "order.yaml").write_text("- notebook: 01_mine\n")
    mine = cell_experiment(tmp_path / "notebooks" / "01_mine.ipynb", {"smoke": {"n_images": 3}})
    with pytest.raises(ParameterError, match="no experiment module"):
        run("smoke", root=tmp_path, out_dir=tmp_path / "out", report=False)
    outcomes = run("smoke", root=tmp_path, out_dir=tmp_path / "out", report=False, experiments={"01_mine": mine})
    assert [o.status for o in outcomes] == ["ok"]
    injected = [c for c in json.loads((tmp_path / "out" / "notebooks" / "01_mine.ipynb").read_text())["cells"]
                if "injected-parameters" in c["metadata"].get("tags", [])]
    assert "n_images = 3" in "".join(injected[0]["source"])  # the smoke profile of the experiment passed in


@pytest.mark.parametrize("sets, match", [
    (["03.n_imagse=2"], "03_after.ipynb: unknown parameter 'n_imagse'"),
    (["01_ok.n_images=-2"], "'n_images' = -2 is out of range"),
    (["01_ok.n_images=many"], "'n_images' = 'many' is out of range"),
    (["04.n_images=2"], "'04' is not 'common' nor a notebook"),
])
def test_a_bad_override_stops_before_any_notebook_runs(project, sets, match):
    with pytest.raises(ParameterError, match=match):
        run("smoke", root=project, out_dir=project / "out", report=False, sets=sets)
    assert not (project / "out").exists()  # nothing ran


def test_a_bad_override_of_the_real_run_exits_2_naming_it(capsys):
    assert main(["run", "--profile", "real", "--set", "02_high_norm_tokens.n_images=0"]) == 2
    err = capsys.readouterr().err
    assert "nothing was run" in err and "02_high_norm_tokens.ipynb" in err and "'n_images' = 0" in err


def _offline_and_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VITREG_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("VITREG_DATA", str(tmp_path / "datasets"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))


def test_real_profile_offline_without_natural_images_stops_before_anything_runs(tmp_path, monkeypatch):
    from vitreg.cli.runner import merged_parameters, planned_parameters, preflight_images

    _offline_and_empty(tmp_path, monkeypatch)
    names = ["01_attention_artifacts", "02_high_norm_tokens", "05_local_information"]
    stop = preflight_images(merged_parameters(planned_parameters(names, "real", tmp_path)))
    assert stop.startswith("Stopping before any notebook runs") and "imagenette" in stop and "image_dir=" in stop
    assert "needed by 01_attention_artifacts, 02_high_norm_tokens" in stop and "05_local" not in stop
    with pytest.raises(SystemExit) as exit_:  # weights and images, both named at once
        main(["run", "--profile", "real", "--only", "02", "--out", str(tmp_path / "out")])
    assert "images are not here" in str(exit_.value.code) and "dinov2_g" in str(exit_.value.code)
    assert not (tmp_path / "out" / "results").exists()


def test_the_images_preflight_follows_the_overrides(tmp_path, monkeypatch):
    from vitreg.cli.runner import merged_parameters, planned_parameters, preflight_images

    _offline_and_empty(tmp_path, monkeypatch)
    names = ["02_high_norm_tokens", "07_registers"]

    def stop(*sets):
        return preflight_images(merged_parameters(planned_parameters(names, "real", tmp_path, sets=sets)))

    assert stop("common.images=photos") is None  # the bundled photos are always here
    (tmp_path / "mine").mkdir()
    assert stop(f"common.image_dir={tmp_path / 'mine'}") is None
    assert "image_dir='/no/such/folder' is not a folder" in stop("02.image_dir=/no/such/folder")
    assert "(needed by 07_registers)" in stop("02.images=photos")
    (tmp_path / "datasets" / "imagenet1k" / "val" / "n00000001").mkdir(parents=True)
    assert "not a usable ImageFolder" in stop()  # an empty ImageNet folder is named, not a crash
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "datasets" / "imagenet1k" / "val" / "n00000001" / "a.JPEG")
    assert stop() is None  # ImageNet val is there: auto takes it
    assert stop("common.images=pets") is not None


def test_the_weights_preflight_follows_the_overrides(tmp_path, monkeypatch):
    from vitreg.cli.runner import merged_parameters, planned_parameters

    _offline_and_empty(tmp_path, monkeypatch)
    plans = planned_parameters(["02_high_norm_tokens"], "real", tmp_path,
                               sets=["02.model=dinov2_s", "02.reference_model=dino_s16", "02.scan_models=[dinov2_s]"])
    stop = preflight_weights(["02_high_norm_tokens"], params=merged_parameters(plans))
    assert "dinov2_s" in stop and "dino_s16" in stop and "dinov2_g" not in stop

    random = planned_parameters(["02_high_norm_tokens"], "real", tmp_path, sets=["02.pretrained=false"])
    assert preflight_weights(["02_high_norm_tokens"], params=merged_parameters(random)) is None  # no files needed


def test_the_summary_lists_the_claims_that_differed_and_the_run_goes_on(tmp_path):
    """A scientific disagreement is a result: no notebook fails for it, and the summary names it."""
    from vitreg.cli.runner import Outcome, summary

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "02_high_norm_tokens.json").write_text(json.dumps({"numbers": {
        "skipped": ["stripes: no outliers"],
        "verdicts": [{"id": "F2.outlier_pct.dinov2_g", "status": "differs", "ours": 9.0, "paper": 2.37, "rule": "±1"},
                     {"id": "F2.norm_ratio.dinov2_g", "status": "reproduced", "ours": 10.0, "paper": 10, "rule": "±5"}]}}))
    text = summary([Outcome("02_high_norm_tokens", "ok", 1.0)], "real", tmp_path, tmp_path / "nb", [])
    assert "DIFFERS from the paper: F2.outlier_pct.dinov2_g" in text and "skipped: stripes" in text
    assert "F2.norm_ratio" not in text


# --- issues 13 and 16: the time table before a real run; the notebook's estimate and progress, no Jupyter noise ---
def test_forward_keeps_the_estimate_and_each_tenth_of_a_bar_and_drops_the_rest():
    import io

    from vitreg.cli.terminal import Forward

    out = io.StringIO()
    f = Forward(out, step=50)
    f.write("loaded the model\nDINOv2 ViT-g/14 at 518x518 on cuda: first batch of 8 took 0.4 s, so 256 images ")
    f.write("will take about 13 s\n")
    for i in range(0, 11):  # a tqdm bar redrawn in place, in pieces as the kernel sends them
        f.write(f"\rfeatures x:  {i * 10}%|{'#' * i}{' ' * (10 - i)}| {i}/10 [00:0{i}<00:10, 1.0chunk/s]")
    f.write("\n[IPKernelApp] WARNING | Kernel is running over TCP without encryption.\nFAIL planted truth missed\n")
    lines = out.getvalue().splitlines()
    assert lines[0] == ("    DINOv2 ViT-g/14 at 518x518 on cuda: first batch of 8 took 0.4 s, so 256 images will take "
                        "about 13 s")
    assert [line.split("|")[0].strip() for line in lines[1:-1]] == ["features x:  0%", "features x:  50%",
                                                                     "features x:  100%"]
    assert "#" not in "".join(lines)  # the drawn bar is dropped, the counts and times stay
    assert lines[-1] == "    FAIL planted truth missed" and len(lines) == 5


def test_quiet_jupyter_drops_the_machinery_warnings_only():
    import warnings

    from vitreg.cli.terminal import quiet_jupyter

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_jupyter():
            warnings.warn("Proactor event loop does not implement add_reader", RuntimeWarning)
            warnings.warn("a warning of the science", UserWarning)
    assert [str(w.message) for w in caught] == ["a warning of the science"]


def test_a_running_notebook_streams_its_estimate_and_progress_without_jupyter_noise(project, capfd):
    _notebook(project / "notebooks" / "01_ok.ipynb",
              "import sys\nprint('a cell output nobody waits for')\n"
              "print('model at 112x112 on cpu: first batch of 4 took 1.0 s, so 8 images will take about 2 s')\n"
              "for i in range(11):\n    sys.stderr.write(f'\\rbar: {i * 10}%|##| {i}/10')\n    sys.stderr.flush()\n")
    (project / "notebooks" / "order.yaml").write_text("- notebook: 01_ok\n")
    assert [o.status for o in run("smoke", root=project, out_dir=project / "out", report=False)] == ["ok"]
    out, err = capfd.readouterr()
    assert "    model at 112x112 on cpu: first batch of 4 took 1.0 s, so 8 images will take about 2 s" in out
    assert "bar: 100%| 10/10" in out and "bar: 50%" in out and "bar: 55%" not in out
    assert "a cell output nobody waits for" not in out
    assert "TCP" not in out + err and "Debugger warning" not in out + err


def test_the_real_profile_prints_the_time_table_before_it_starts(project, capsys, monkeypatch):
    from vitreg.experiments import costs, timing
    from vitreg.experiments.base import Experiment, Work
    from vitreg.experiments.costs import Cost

    own = cell_experiment(project / "notebooks" / "01_ok.ipynb")
    planted = Experiment("01_ok", own.params, lambda p: ["dinov2_s"], lambda p: [Work("dinov2_s", 224, 1000)],
                         costs=lambda p: [Cost("planted probe", 5.0 * p.n_images, "planted scaling")])
    monkeypatch.setattr(catalog, "experiment", lambda name: planted)
    default = planted.build().n_images
    (project / "notebooks" / "order.yaml").write_text("- notebook: 01_ok\n")
    monkeypatch.setattr("vitreg.cli.runner.ensure_kernel", lambda: None)
    monkeypatch.setattr("vitreg.cli.runner._run_all", lambda *a: print("NOTEBOOKS RUN HERE"))
    monkeypatch.setattr("vitreg.cli.runner.preflight_weights", lambda *a: None)  # no weights here: not the point
    run("real", root=project, out_dir=project / "out", report=False)
    out = capsys.readouterr().out
    table = out[:out.index("NOTEBOOKS RUN HERE")]
    assert "expected run time on one H100-class GPU" in table and "01_ok" in table
    assert f"planted probe: {5 * default:.0f} s" in table and "planted scaling" in table
    expected = max(12.2e9 * 1000 / (timing.PEAK_FLOPS * timing.SHARE), 1000 * timing.decode_s(224) / timing.WORKERS) \
        + costs.KERNEL_S + costs.load_s("dinov2_s") + 5.0 * default
    assert f"total {expected:.0f} s:" in table
    # the table is this run's: a parameter given on the command line changes it
    run("real", root=project, out_dir=project / "out2", report=False, sets=["01_ok.n_images=7"])
    out = capsys.readouterr().out
    assert "planted probe: 35 s" in out[:out.index("NOTEBOOKS RUN HERE")]


def test_the_time_table_is_each_experiments_work_and_is_the_readme_table():
    from vitreg.experiments import costs, timing
    from vitreg.experiments.catalog import experiment
    from vitreg.experiments.params import load_order

    rows = timing.rows()
    assert [r["notebook"] for r in rows] == [e["notebook"] for e in load_order()]
    for r in rows:
        e = experiment(r["notebook"])
        p = e.build()
        work = e.work(p)
        assert all((w.model, w.px) in timing.GFLOP for w in work), "every pair of the real work is in the table"
        gpu = sum(timing.GFLOP[(w.model, w.px)] * 1e9 * w.images for w in work) / (timing.PEAK_FLOPS * timing.SHARE)
        host = sum(w.images * timing.decode_s(w.px) for w in work) / timing.WORKERS
        besides = list(e.costs(p))
        loads = sum(costs.load_s(m) for m in e.model_loads(p))
        assert r["total_s"] == pytest.approx(max(gpu, host) + costs.KERNEL_S + loads
                                             + sum(c.seconds or 0 for c in besides))
        assert all(c.what in r["note"] for c in besides), r["notebook"]
    ten = experiment("10_test_time_registers")
    rows10 = {w.what: w for w in ten.work(ten.build())}
    assert rows10["LOST on VOC07"].images == 5011 and rows10["LOST on VOC07, trained registers"].model == "dinov2_l_reg"
    total = timing.totals(rows)
    assert total == pytest.approx(sum(r["total_s"] for r in rows)) and total > timing.GOAL_S
    readme = (repo_root() / "README.md").read_text()
    assert timing.render(markdown=True) in readme, "README's 'Run time (estimate)' table is not vitreg.experiments.timing's"


def test_a_pair_missing_from_the_flop_table_is_counted_on_the_meta_device():
    from vitreg.experiments import timing

    assert timing.count_gflop("dinov2_s", 224) == pytest.approx(timing.GFLOP[("dinov2_s", 224)], rel=0.01)
    assert timing.gflop("dinov2_s", 112) == timing.count_gflop("dinov2_s", 112) < timing.GFLOP[("dinov2_s", 224)] / 3
