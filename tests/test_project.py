"""The project's frame: environment.yml agrees with pyproject.toml, the README and Makefile agree with the run order."""

from __future__ import annotations

import re

import pytest
import yaml

from vitreg.experiments.params import load_order
from vitreg.utils.paths import repo_root

ROOT = repo_root()
tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_delegates_to_pyproject_and_the_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    major, minor = map(int, python.split("=")[1].split(".")[:2])
    low = re.match(r">=(\d+)\.(\d+)", _pyproject()["project"]["requires-python"])
    assert (major, minor) >= (int(low[1]), int(low[2]))
    conda_pkgs = {d.split("=")[0] for d in deps if isinstance(d, str)}
    assert conda_pkgs == {"python", "pip"}, "dependencies belong in pyproject.toml, not in environment.yml"
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    editable = next(p for p in pip if p.startswith("-e ."))
    extras = set(re.search(r"\[(.*)\]", editable)[1].split(","))
    assert extras == set(_pyproject()["project"]["optional-dependencies"])
    constraint = next(p for p in pip if p.startswith("-c "))
    assert (ROOT / constraint[3:].strip()).exists()


def test_constraints_pin_every_declared_dependency():
    pins = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    project = _pyproject()["project"]
    declared = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    for dep in declared:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.\-]+", dep)[0]).lower()
        assert name in pins, f"{name} is not pinned in requirements/constraints.txt"
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"


def test_readme_table_lists_every_notebook_and_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    for entry in load_order():
        assert f"`{entry['notebook']}`" in readme, f"README table lacks {entry['notebook']}"
    assert "make reproduce" in readme and "make test" in readme


def test_makefile_has_the_targets_and_ci_calls_make_test():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("help", "test", "smoke", "reproduce", "notebook", "clean", "weights"):
        assert re.search(rf"^{target}:.*## ", makefile, re.M), f"Makefile target {target} (with a help line)"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci



def test_make_test_gpu_runs_every_case_marked_gpu_and_the_cuda_device_carries_the_mark():
    """`make test-gpu` (the exactness tests on CUDA) selects by the registered ``gpu`` marker, which the CUDA case of
    ``conftest.DEVICES`` carries: a test parametrized over the devices is in it with no list to keep."""
    from conftest import DEVICES

    recipe = re.search(r"^test-gpu:.*## On a GPU machine: the exactness tests on CUDA\n((?:\t.*\n)+)",
                       (ROOT / "Makefile").read_text(), re.M)
    assert recipe, "Makefile target test-gpu (with its help line)"
    assert re.search(r"pytest .*-m gpu tests$", recipe[1], re.M)
    assert any(m.startswith("gpu:") for m in _pyproject()["tool"]["pytest"]["ini_options"]["markers"])
    marks = {p.id: {m.name for m in p.marks} for p in DEVICES}
    assert marks["cpu"] == set() and {"gpu", "skipif"} <= marks["cuda"]
