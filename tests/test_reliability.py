"""One writer per output folder: a second run on the same ``--out`` stops naming the first, staging folders are
never shared, and an executed notebook replaces the old one only when it is whole (a full disk keeps it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from vitreg.utils.lock import FolderBusy, exclusive_folder
from conftest import wait_for
from vitreg.utils.paths import repo_root


def _notebook(path: Path, body: str) -> None:
    nb = new_notebook(cells=[
        new_markdown_cell("# Test notebook"),
        new_code_cell('profile = "real"\npretrained = True\ndevice = "auto"\nseed = 0\noutput_dir = ".."',
                      metadata={"tags": ["parameters"]}),
        new_code_cell(body),
    ], metadata={"kernelspec": {"name": "vitreg", "display_name": "Python (vitreg)", "language": "python"}})
    nbformat.write(nb, path)


_WRITES = ("from pathlib import Path\nPath(output_dir, 'results').mkdir(parents=True, exist_ok=True)\n"
           "Path(output_dir, 'figures').mkdir(parents=True, exist_ok=True)\n"
           "Path(output_dir, 'results', '01_ok.json').write_text('{\"run\": \"%s\"}')\n"
           "Path(output_dir, 'figures', '01_a.png').write_text('figure of %s')\n")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A small project root with one notebook that writes a result and a figure; its experiment is made from its
    parameters cell (here, and in the driver's process)."""
    from vitreg.experiments import catalog
    from vitreg.experiments.params import cell_experiment

    (tmp_path / "notebooks").mkdir()
    _notebook(tmp_path / "notebooks" / "01_ok.ipynb", _WRITES % ("first", "first"))
    (tmp_path / "notebooks" / "order.yaml").write_text("- notebook: 01_ok\n")
    monkeypatch.setattr(catalog, "experiment", lambda name: cell_experiment(tmp_path / "notebooks" / f"{name}.ipynb"))
    return tmp_path


_DRIVER = """
import sys
from pathlib import Path

import vitreg.cli.runner
import vitreg.experiments.catalog
import vitreg.present.report
from vitreg.cli.main import main
from vitreg.experiments.params import cell_experiment

project = Path(sys.argv[1])
vitreg.cli.runner.repo_root = lambda: project
vitreg.experiments.catalog.experiment = lambda name: cell_experiment(project / "notebooks" / f"{name}.ipynb")
vitreg.present.report.build_report = lambda results_dir, out_dir, figures_dir=None: []
sys.exit(main(["run", "--profile", "smoke", "--out", sys.argv[2]]))
"""


def _start(project: Path, out: Path, **popen) -> subprocess.Popen:
    """``vitreg run --profile smoke --out OUT`` on ``project`` in a process of its own."""
    (project / "driver.py").write_text(_DRIVER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo_root()), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(project / "driver.py"), str(project), str(out)], cwd=repo_root(),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)



# --- one writer per output folder -----------------------------------------------------------------
@pytest.mark.robustness("nothing lost")
def test_a_second_run_on_the_same_folder_stops_naming_the_first_and_nothing_is_lost(project):
    started, release = project / "started", project / "release"
    _notebook(project / "notebooks" / "01_ok.ipynb", _WRITES % ("first", "first") + (
        f"import time\nopen({str(started)!r}, 'w').close()\n"
        f"while not Path({str(release)!r}).exists():\n    time.sleep(0.1)\n"))
    out = project / "out"
    first = _start(project, out)
    try:
        wait_for(started, first)
        second = _start(project, out)  # two real processes on one --out
        printed, err = second.communicate(timeout=180)
        assert second.returncode == 2, printed + err
        assert f"PID {first.pid}" in err and "started " in err and "another --out" in err, err
        assert "Traceback" not in err, err
    finally:
        release.touch()
        printed, err = first.communicate(timeout=180)
    assert first.returncode == 0, printed + err
    assert json.loads((out / "results" / "01_ok.json").read_text()) == {"run": "first"}
    assert (out / "figures" / "01_a.png").read_text() == "figure of first"
    assert nbformat.read(out / "notebooks" / "01_ok.ipynb", as_version=4).cells
    assert not (out / ".staging").exists()


@pytest.mark.robustness("clear error")
def test_the_lock_names_its_holder_and_is_free_once_the_holder_ends(tmp_path):
    with exclusive_folder(tmp_path):
        holder = subprocess.run([sys.executable, "-c", "import sys; from vitreg.utils.lock import exclusive_folder\n"
                                 "try:\n    exclusive_folder(sys.argv[1]).__enter__()\n"
                                 "except Exception as e:\n    print(type(e).__name__, e)", str(tmp_path)],
                                capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(repo_root())})
        assert holder.stdout.startswith("FolderBusy") and f"PID {os.getpid()}" in holder.stdout, holder
    with exclusive_folder(tmp_path):  # released with its holder; the stale file blocks nothing
        pass
    killed = subprocess.Popen([sys.executable, "-c", "import sys, time; from vitreg.utils.lock import exclusive_folder\n"
                               "with exclusive_folder(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)",
                               str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(repo_root())})
    assert killed.stdout.readline().strip() == "held"
    with pytest.raises(FolderBusy, match=f"PID {killed.pid}"):
        with exclusive_folder(tmp_path):
            pass
    killed.kill()  # SIGKILL: no cleanup runs, the kernel releases the lock
    killed.wait()
    with exclusive_folder(tmp_path):
        pass


def test_staging_folders_are_never_shared_between_runs(tmp_path):
    from vitreg.cli.runner import _staging_for

    first, second = _staging_for("02_high_norm_tokens", tmp_path), _staging_for("02_high_norm_tokens", tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
    assert first.parent == second.parent == tmp_path / ".staging"


@contextmanager
def _small_filesystem(folder: Path, size: str = "2m"):
    """A real tmpfs of ``size`` mounted on ``folder`` (skips where this process may not mount one)."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a small filesystem here ({done.stderr.strip() or done.returncode}): needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path, leave: int) -> None:
    """Fill the filesystem of ``folder`` but for ``leave`` bytes."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    os.truncate(filler, max(0, filler.stat().st_size - leave))


@pytest.mark.robustness("nothing lost")
def test_a_full_disk_keeps_the_previous_executed_notebook_whole(project, capsys):
    import vitreg.cli.runner as runner

    out = project / "out"
    with _small_filesystem(out):
        old_root = runner.repo_root
        runner.repo_root = lambda: project
        try:
            assert runner.run("smoke", out_dir=out, report=False)[0].status == "ok"
            executed = out / "notebooks" / "01_ok.ipynb"
            before = executed.read_bytes()
            _notebook(project / "notebooks" / "01_ok.ipynb", _WRITES % ("second", "second") + "x = 'y' * 100000\nx")
            _fill(out, leave=32768)  # room for the first cells of the executed copy, not for its last
            again = runner.run("smoke", out_dir=out, report=False)[0]
            assert again.status == "failed" and "No space left" in again.detail, again
        finally:
            runner.repo_root = old_root
        assert executed.read_bytes() == before, "the executed notebook was replaced on a full disk"
        assert json.loads((out / "results" / "01_ok.json").read_text()) == {"run": "first"}
        assert (out / "figures" / "01_a.png").read_text() == "figure of first"
        assert not list((out / "notebooks").glob(".*partial*"))


def test_an_executed_copy_that_is_not_a_whole_notebook_never_replaces_the_old_one(tmp_path):
    from vitreg.cli.runner import _partial_path, _publish_executed

    executed = tmp_path / "01_ok.ipynb"
    executed.write_text('{"cells": []}')
    partial = _partial_path(executed)
    partial.write_text('{"cells": [{"cell_ty')  # what a full disk leaves
    _publish_executed(partial, executed)
    assert executed.read_text() == '{"cells": []}' and not partial.exists()
    partial = _partial_path(executed)
    partial.write_text('{"cells": [1]}')
    _publish_executed(partial, executed)
    assert executed.read_text() == '{"cells": [1]}' and not partial.exists()


@pytest.mark.robustness("handled")
def test_ctrl_c_to_the_process_group_ends_with_the_summary_and_no_kernel_noise(project):
    started = project / "started"
    _notebook(project / "notebooks" / "01_ok.ipynb", f"import time\nopen({str(started)!r}, 'w').close()\ntime.sleep(120)")
    run = _start(project, project / "out", start_new_session=True)  # its own group, like a terminal's job
    wait_for(started, run)
    os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    printed, err = run.communicate(timeout=120)
    assert run.returncode == 130, printed + err
    assert "(INTERRUPTED)" in printed and "01_ok" in printed, printed
    assert err.strip() == "", err  # no ZMQError, "Kernel died" or never-retrieved task


@pytest.mark.robustness("handled")
def test_a_dead_kernel_shows_its_last_words_and_the_run_goes_on(project, capsys):
    import vitreg.cli.runner as runner

    _notebook(project / "notebooks" / "01_ok.ipynb",
              "import os\nos.write(2, b'planted last words of the kernel\\n')\nos._exit(1)")
    old_root = runner.repo_root
    runner.repo_root = lambda: project
    try:
        outcome = runner.run("smoke", out_dir=project / "out", report=False)[0]
    finally:
        runner.repo_root = old_root
    assert outcome.status == "failed" and runner.KERNEL_DIED in outcome.detail, outcome
    err = capsys.readouterr().err
    assert "the kernel of 01_ok said" in err and "planted last words of the kernel" in err, err
