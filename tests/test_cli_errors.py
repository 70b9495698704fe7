"""One error boundary in the ``vitreg`` command: bad input is one line naming the culprit and exit 2, Ctrl-C one
line and exit 130, a traceback only for a bug (with a line saying so)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from vitreg.cli.main import main, user_error
from conftest import wait_for
from vitreg.utils.paths import repo_root



# --- one error boundary ---------------------------------------------------------------------------
@pytest.mark.robustness("clear error")
@pytest.mark.parametrize("argv, culprit", [
    (["weights", "where", "resnet18"], "resnet18"),
    (["extract", "06", "--profile", "smoke", "--set", "06.use_cache=true", "--set", "06.model=dinov2_xl"], "dinov2_xl"),
    (["extract", "06", "--profile", "smoke", "--set", "06.use_cache=true", "--set", "06.model=resnet18"], "resnet18"),
])
def test_an_unknown_or_non_vit_model_is_one_line_and_exit_2(argv, culprit, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert culprit in err and "Traceback" not in err, err


@pytest.mark.robustness("clear error")
@pytest.mark.parametrize("option, message", [
    (["--batch-size", "0"], "--batch-size 0"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--size", "140000"], "--size 140000"),
    (["--size", "-14"], "--size -14"),
])
def test_scan_checks_size_batch_and_device_before_loading(option, message, tmp_path, capsys, monkeypatch):
    import vitreg.core.weights as weights

    monkeypatch.setattr(weights, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["scan", "dinov2_s", "--random", "--out", str(tmp_path), *option]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


@pytest.mark.robustness("clear error")
def test_scan_with_the_weights_of_another_architecture_is_one_line_and_exit_2(tmp_path, capsys):
    import timm
    from safetensors.torch import save_file

    other = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, tmp_path / "tiny.safetensors")
    assert main(["scan", "dino_s16", "--weights", str(tmp_path / "tiny.safetensors"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "tiny.safetensors" in err and "do not match" in err and "Traceback" not in err, err


@pytest.mark.robustness("clear error")
def test_a_params_file_that_is_not_utf8_is_named(tmp_path, capsys):
    bad = tmp_path / "my.yaml"
    bad.write_bytes("notebooks:\n  02_high_norm_tokens:\n    image_dir: /données\n".encode("latin-1"))
    assert main(["run", "--profile", "smoke", "--params", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "UTF-8" in err and "Traceback" not in err, err


@pytest.mark.robustness("clear error")
def test_an_output_folder_that_is_a_file_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    import vitreg.cli.runner as runner

    monkeypatch.setattr(runner, "ensure_kernel", lambda: None)
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    assert main(["run", "--profile", "smoke", "--only", "09", "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert str(taken) in err and "Traceback" not in err, err
    assert taken.read_text() == "not a folder"


def test_a_bug_shows_its_traceback_and_says_it_is_one(capsys, monkeypatch):
    import vitreg.cli.main as cli

    def broken(args):
        return 1 / 0

    monkeypatch.setitem(cli.SUBCOMMANDS, "strip", (cli._add_strip, broken))
    assert main(["strip"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err and "bug in vitreg" in err


def test_user_errors_are_the_projects_own_and_os_errors_only():
    from vitreg.core.models import UnknownModel

    assert user_error(UnknownModel("unknown model 'x'")) == "unknown model 'x'"
    assert "/nope" in user_error(PermissionError(13, "Permission denied", "/nope"))
    assert user_error(ZeroDivisionError("division by zero")) is None
    assert user_error(KeyError("x")) is None


_EXTRACT_DRIVER = """
import sys, time
import vitreg.cli.prefill
from vitreg.cli.main import main


def slow(*args, **kwargs):
    open(sys.argv[1], "w").close()
    time.sleep(120)


vitreg.cli.prefill.extract_notebooks = slow
sys.exit(main(["extract", "06", "--profile", "smoke"]))
"""


@pytest.mark.robustness("handled")
def test_ctrl_c_in_extract_is_one_line_and_exit_130(tmp_path):
    started = tmp_path / "started"
    (tmp_path / "driver.py").write_text(_EXTRACT_DRIVER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo_root()), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(started)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(started, proc, 120)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err, err


@pytest.mark.robustness("clear error")
def test_a_read_only_output_folder_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    import vitreg.cli.runner as runner

    monkeypatch.setattr(runner, "ensure_kernel", lambda: None)
    out = tmp_path / "ro"
    out.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(out)], capture_output=True, text=True)
    if done.returncode:  # root ignores permission bits: only a read-only filesystem is read-only for it
        pytest.skip(f"cannot mount a read-only filesystem here ({done.stderr.strip() or done.returncode}): needs root")
    try:
        assert main(["run", "--profile", "smoke", "--only", "09", "--out", str(out)]) == 2
    finally:
        subprocess.run(["umount", "-l", str(out)], check=False)
    err = capsys.readouterr().err
    assert str(out) in err and "Read-only" in err and "Traceback" not in err, err


@pytest.mark.robustness("clear error")
def test_a_cache_root_that_is_a_file_is_one_line_and_exit_2(tmp_path, capsys):
    taken = tmp_path / "cache"
    taken.write_text("not a folder")
    sets = ["06.use_cache=true", f"06.cache_dir={taken}", "06.datasets=[synthetic]", "06.ttr_models=[]",
            "06.ttr_datasets=[]", "06.synthetic_n=8", "06.image_size=56", "06.batch_size=8", "06.n_draws=1"]
    assert main(["extract", "06", "--profile", "smoke", *[a for s in sets for a in ("--set", s)]]) == 2
    err = capsys.readouterr().err
    assert str(taken) in err and "Traceback" not in err, err
    assert taken.read_text() == "not a folder"


@pytest.mark.robustness("clear error")
@pytest.mark.parametrize("profile", ["real", "lecture"])
@pytest.mark.parametrize("model", ["dinov2_xl", "resnet18"])
def test_a_bad_model_in_the_weights_preflight_is_one_line_and_exit_2(profile, model, capsys, monkeypatch):
    import vitreg.cli.runner as runner

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(runner, "ensure_kernel", lambda: pytest.fail("the run started"))
    assert main(["run", "--profile", profile, "--only", "02", "--set", f"02.model={model}"]) == 2
    err = capsys.readouterr().err
    assert model in err and "Traceback" not in err, err
