"""The `vitreg` command: every subcommand answers --help, dispatches to the library and says what failed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from vitreg.cli import main as cli
from vitreg.cli.main import main
from vitreg.utils.paths import repo_root


@pytest.mark.parametrize("argv", [[], ["run"], ["weights"], ["weights", "download"], ["weights", "where"],
                                  ["report"], ["strip"], ["extract"]])
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: vitreg") and len(out.splitlines()) > 4


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in cli.SUBCOMMANDS:
        assert f"    {name}" in out


def test_no_command_or_an_unknown_one_is_a_usage_error(capsys):
    for argv in ([], ["frobnicate"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
    assert "usage: vitreg" in capsys.readouterr().err


def test_run_dispatches_with_its_options(monkeypatch, tmp_path):
    import vitreg.cli.runner as runner

    seen = {}

    def fake_run(profile, only, *, keep_going, out_dir, params_file, sets):
        seen.update(profile=profile, only=only, keep_going=keep_going, out_dir=out_dir, params_file=params_file,
                    sets=sets)
        return [runner.Outcome("02_x", "failed")]

    monkeypatch.setattr(runner, "run", fake_run)
    assert main(["run", "--profile", "smoke", "--only", "02", "05", "--keep-going", "--out", str(tmp_path)]) == 1
    assert seen == {"profile": "smoke", "only": ["02", "05"], "keep_going": True, "out_dir": tmp_path,
                    "params_file": None, "sets": []}
    assert main(["run", "--params", "my.yaml", "--set", "02.n_images=512", "--set", "common.device=cuda"]) == 1
    assert seen["params_file"] == Path("my.yaml") and seen["sets"] == ["02.n_images=512", "common.device=cuda"]
    monkeypatch.setattr(runner, "run", lambda *a, **k: [runner.Outcome("02_x", "ok")])
    assert main(["run"]) == 0


def test_run_with_a_bad_parameter_exits_2_naming_it(monkeypatch, capsys):
    import vitreg.cli.runner as runner
    from vitreg.experiments.params import ParameterError

    def bad(*a, **k):
        raise ParameterError("02_x.ipynb: unknown parameter 'n_image'")

    monkeypatch.setattr(runner, "run", bad)
    assert main(["run", "--profile", "smoke"]) == 2
    assert "nothing was run" in capsys.readouterr().err


def test_run_interrupted_exits_130(monkeypatch, capsys):
    import vitreg.cli.runner as runner

    monkeypatch.setattr(runner, "run", lambda *a, **k: [runner.Outcome("01_x", "ok"),
                                                        runner.Outcome("02_x", "interrupted"),
                                                        runner.Outcome("03_x", "not run")])
    assert main(["run", "--profile", "smoke"]) == 130

    def stopped_early(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run", stopped_early)
    assert main(["run", "--profile", "smoke"]) == 130
    assert "interrupted before any notebook ran" in capsys.readouterr().err


def test_weights_where_reports_missing_and_unknown(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VITREG_WEIGHTS", str(tmp_path))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["weights", "where", "dinov2_s"]) == 1
    assert str(tmp_path / "vit_small_patch14_dinov2.lvd142m.safetensors") in capsys.readouterr().out
    (tmp_path / "dinov2_vits14_pretrain.pth").write_bytes(b"x")  # found, but its header says broken
    assert main(["weights", "where", "dinov2_s"]) == 1 and "is broken" in capsys.readouterr().out
    import torch

    torch.save({"cls_token": torch.zeros(1, 1, 384)}, tmp_path / "dinov2_vits14_pretrain.pth")
    assert main(["weights", "where", "dinov2_s"]) == 0
    assert main(["weights", "where", "dinov2_xl"]) == 2
    assert "dinov2_l" in capsys.readouterr().err


def test_weights_download_picks_the_models(monkeypatch, capsys):
    import vitreg.cli.runner as runner
    import vitreg.core.weights as weights
    from vitreg.core.models import ZOO

    asked = []
    monkeypatch.setattr(weights, "download", lambda keys: asked.append(list(keys)))
    assert main(["weights", "download", "dinov2_s", "mae_b16"]) == 0
    assert main(["weights", "download", "--all"]) == 0
    assert main(["weights", "download", "--notebooks"]) == 0
    assert asked == [["dinov2_s", "mae_b16"], list(ZOO), list(runner.notebook_models())]
    assert "dinov2_l" in asked[2] and len(set(asked[2])) == len(asked[2])
    assert main(["weights", "download"]) == 2
    assert main(["weights", "download", "dinov2_s", "--all"]) == 2
    assert "not both" in capsys.readouterr().err


def test_report_calls_build_report(monkeypatch, tmp_path, capsys):
    import vitreg.present.report as report

    calls = []

    def fake(results_dir, out_dir, figures_dir=None):
        calls.append((results_dir, out_dir, figures_dir))
        return [out_dir / "report.md", out_dir / "report.html"]

    monkeypatch.setattr(report, "build_report", fake)
    assert main(["report", str(tmp_path / "r"), str(tmp_path / "o"), "--figures", str(tmp_path / "f")]) == 0
    assert calls == [(tmp_path / "r", tmp_path / "o", tmp_path / "f")]
    assert capsys.readouterr().out.split() == [str(tmp_path / "o" / "report.md"), str(tmp_path / "o" / "report.html")]

    def broken(*a, **k):
        raise ValueError("results/09_downstream.json: schema_version missing")

    monkeypatch.setattr(report, "build_report", broken)
    assert main(["report", str(tmp_path / "r"), str(tmp_path / "o")]) == 2
    assert "09_downstream.json" in capsys.readouterr().err


def test_strip_strips_the_checkouts_notebooks(monkeypatch, tmp_path, capsys):
    import vitreg.cli.runner as runner

    (tmp_path / "notebooks").mkdir()
    nb = new_notebook(cells=[new_code_cell("1 + 1", execution_count=3)])
    nbformat.write(nb, tmp_path / "notebooks" / "x.ipynb")
    monkeypatch.setattr(runner, "repo_root", lambda: tmp_path)
    assert main(["strip"]) == 0
    assert "stripped" in capsys.readouterr().out
    assert nbformat.read(tmp_path / "notebooks" / "x.ipynb", as_version=4).cells[0].execution_count is None


def test_python_dash_m_vitreg_is_the_same_command():
    done = subprocess.run([sys.executable, "-m", "vitreg", "--help"], capture_output=True, text=True,
                          cwd=repo_root(), timeout=120)
    assert done.returncode == 0 and "usage: vitreg" in done.stdout


def test_installed_console_script_if_any():
    """The console script declared in pyproject.toml points at this main (run it when installed)."""
    assert 'vitreg = "vitreg.cli.main:main"' in (repo_root() / "pyproject.toml").read_text()
    exe = shutil.which("vitreg", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the vitreg console script is not installed in this environment")
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("vitreg ")


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target, extra", [("reproduce", []), ("smoke", []), ("notebook", ["N=02"])])
def test_make_passes_params_and_set_to_vitreg_run(target, extra):
    """`make reproduce PARAMS=my.yaml SET="..."` (and smoke, notebook) reach `vitreg run` as --params/--set."""
    out = subprocess.run(["make", "-n", "-C", str(repo_root()), "STAMP=README.md", target, *extra, "PARAMS=my.yaml",
                          "SET=02.n_images=512 common.device=cuda"], capture_output=True, text=True, check=True).stdout
    assert "vitreg run --profile" in out
    assert "--params my.yaml --set 02.n_images=512 --set common.device=cuda" in out
    plain = subprocess.run(["make", "-n", "-C", str(repo_root()), "STAMP=README.md", target, *extra],
                           capture_output=True, text=True, check=True).stdout
    assert "--params" not in plain and "--set" not in plain


def test_a_bad_set_exits_2_before_anything_runs(capsys):
    assert main(["run", "--profile", "smoke", "--only", "02", "--set", "02.n_imagez=3"]) == 2
    err = capsys.readouterr().err
    assert "nothing was run" in err and "'n_imagez'" in err and "did you mean n_images" in err
    assert main(["run", "--profile", "smoke", "--set", "02_hgh.n_images=3"]) == 2
    assert "'02_hgh' is not 'common' nor a notebook" in capsys.readouterr().err


# --- vitreg extract ---------------------------------------------------------------------------------
def _small_06(cache: Path) -> list[str]:
    """Notebook 06 under the smoke profile, shrunk: one synthetic set, one model, the cache on."""
    return ["06.use_cache=true", f"06.cache_dir={cache}", "06.datasets=[synthetic]", "06.ttr_models=[]",
            "06.ttr_datasets=[]", "06.synthetic_n=8", "06.image_size=56", "06.batch_size=8", "06.n_draws=1"]


def _smoke_06(cache: Path, **change):
    """Notebook 06's parameters as :func:`_small_06` sets them (what the notebook's own steps receive)."""
    from vitreg.experiments import global_information as experiment

    return experiment.EXPERIMENT.build({**experiment.PROFILES["smoke"], "pretrained": False, "device": "cpu",
                                        "use_cache": True, "cache_dir": str(cache), "datasets": ["synthetic"],
                                        "ttr_models": [], "ttr_datasets": [], "synthetic_n": 8, "image_size": 56,
                                        "batch_size": 8, "n_draws": 1, **change})


def test_extract_fills_the_cache_that_the_notebooks_own_call_then_hits(tmp_path, monkeypatch, capsys):
    import dataclasses

    import torch

    from vitreg.cli.prefill import extract_notebooks
    from vitreg.experiments import global_information as experiment
    from vitreg.experiments.steps import load
    from vitreg.measure import features

    sets = _small_06(tmp_path)
    assert main(["extract", "06", "--profile", "smoke", *[a for s in sets for a in ("--set", s)]]) == 0
    assert "dinov2_s_reg / synthetic: single tokens of train 8, test 4 images" in capsys.readouterr().out
    assert list(tmp_path.rglob("done.json")), "the cache folder holds no entry"

    def no_forward(*args, **kwargs):
        raise AssertionError("a forward pass ran: the cache missed")

    monkeypatch.setattr(features, "forward_tokens", no_forward)
    again = extract_notebooks(["06"], "smoke", sets=sets)  # a second extraction: every chunk read back
    assert again["06_global_information"] == ["dinov2_s_reg / synthetic: single tokens of train 8, test 4 images"]
    # the notebook's own calls (its experiment's steps, as its cells make them) find every chunk too,
    # after other random numbers were drawn (random weights are seeded per model)
    p = _smoke_06(tmp_path)
    torch.rand(1000)
    loaded = experiment.load_models(p)["dinov2_s_reg"]
    res = experiment.measure(p, loaded, "synthetic")
    cached = experiment.extract(p, loaded, "synthetic")["train"]
    assert res["n_train"] == 8 and res["n_test"] == 4
    monkeypatch.undo()
    # planted truth: the cached features equal a direct extraction without the cache
    direct = experiment.extract(dataclasses.replace(p, use_cache=False), load(p, "dinov2_s_reg"), "synthetic")["train"]
    assert set(direct) == set(cached)
    for name in direct:
        assert torch.equal(direct[name], cached[name]), name
    assert cached["has_outlier"].any(), "the planted outliers are in the cached features"


def test_extract_says_when_there_is_nothing_to_do(capsys):
    assert main(["extract", "02", "09", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "02_high_norm_tokens: nothing to pre-extract" in out and "09_downstream: nothing to pre-extract" in out
    assert main(["extract", "06", "--profile", "smoke"]) == 0  # smoke keeps use_cache false
    assert "use_cache is false" in capsys.readouterr().out


def test_extract_of_an_unknown_notebook_or_parameter_exits_2(capsys):
    assert main(["extract", "99"]) == 2
    assert main(["extract", "06", "--set", "06.n_drawz=2"]) == 2
    assert "n_draws" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_reproduce_gpus_extracts_under_torchrun_first():
    run_make = lambda *a: subprocess.run(["make", "-n", "-C", str(repo_root()), "STAMP=README.md", "reproduce", *a],  # noqa: E731
                                         capture_output=True, text=True, check=True).stdout.splitlines()
    lines = run_make("GPUS=4", "SET=06.max_train=100")
    torchrun = [i for i, line in enumerate(lines) if "torchrun --standalone --nproc_per_node 4 -m vitreg extract all" in line]
    run = [i for i, line in enumerate(lines) if "vitreg run --profile real" in line]
    assert torchrun and run and torchrun[0] < run[0], lines
    assert "--set 06.max_train=100" in lines[torchrun[0]]
    assert not any("torchrun" in line for line in run_make())


def test_estimate_prints_the_real_runs_table_for_the_overrides_and_runs_nothing(monkeypatch, capsys):
    monkeypatch.setattr("vitreg.cli.runner._run_all", lambda *a: pytest.fail("estimate must not run a notebook"))

    def total(out: str) -> str:
        return next(line for line in out.splitlines() if line.startswith("total "))

    assert main(["estimate", "--only", "09"]) == 0
    three = capsys.readouterr().out
    assert "09_downstream" in three and "3 seeds" in three and "02_high_norm_tokens" not in three
    assert "for the 1 notebook(s) selected" in total(three) and "the one-hour goal is for the whole run" in total(three)
    assert main(["estimate", "--only", "09", "--set", "09_downstream.seeds=1"]) == 0
    one = capsys.readouterr().out
    assert "1 seeds" in one and total(one) != total(three)
    assert main(["estimate", "--set", "09_downstream.seedz=1"]) == 2
    assert "unknown parameter 'seedz'" in capsys.readouterr().err
    assert main(["estimate"]) == 0
    assert "the one-hour goal on one H100-class GPU" in total(capsys.readouterr().out)


def test_estimate_takes_the_rates_a_gpu_benchmark_measured_and_restores_the_assumed_ones(tmp_path, capsys):
    import json

    from vitreg.experiments import costs, timing

    def total(out: str) -> str:
        return next(line for line in out.splitlines() if line.startswith("total "))

    before = (timing.SHARE, costs.FP32_SHARE, costs.HBM_SHARE, costs.PCIE_BYTES_S, costs.KERNEL_S)
    assert main(["estimate"]) == 0
    assumed = capsys.readouterr().out
    measured = {"device": "NVIDIA H100 80GB HBM3", "dry_run": False,
                "forward": {"dinov2_l@224": {"images_per_s": 3000.0, "share_of_peak": 0.8}},
                "fp32_matmul_flops": 0.9 * costs.FP32_FLOPS, "hbm_copy_bytes_s": 0.9 * costs.HBM_BYTES_S,
                "h2d_bytes_s": 25e9, "kernel_start_s": 3.0, "disk_read_bytes_s": {"dinov2_l": 3e9}}
    rates = tmp_path / "rates.json"
    rates.write_text(json.dumps(measured))
    assert timing.rates_from_benchmark(measured)["FP32_SHARE"] == pytest.approx(0.9)
    assert main(["estimate", "--rates", str(rates)]) == 0
    out = capsys.readouterr().out
    assert "with the rates measured in" in out and "SHARE 0.8" in out
    hours = lambda text: float(re.search(r"\((\d+\.\d)x the hour\)", total(text)).group(1))  # noqa: E731
    assert hours(out) < hours(assumed)
    assert (timing.SHARE, costs.FP32_SHARE, costs.HBM_SHARE, costs.PCIE_BYTES_S,
            costs.KERNEL_S) == before, "the assumed rates are back after the estimate"
    with pytest.raises(KeyError, match="GPU_OP_S"):  # a rate bound before the estimate runs cannot be swapped
        with timing.measured_rates({"GPU_OP_S": 1e-6}):
            pass
    rates.write_text(json.dumps({**measured, "dry_run": True}))
    assert main(["estimate", "--rates", str(rates)]) == 2 and "dry run" in capsys.readouterr().err
    rates.write_text("not json")
    assert main(["estimate", "--rates", str(rates)]) == 2 and "is not the JSON file" in capsys.readouterr().err
