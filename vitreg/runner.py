"""Run the notebooks in order with papermill: ``vitreg run`` (``make reproduce``, ``make smoke``, ``make notebook``).

The run order lives in ``notebooks/order.yaml`` (read by :func:`vitreg.params.load_order`).
Before anything runs, every notebook's parameters are checked (unknown or ill-typed names are errors)
and, for the real profile, every model's weights are looked up: offline with weights missing, the run
stops at once with the model, the places looked and the two ways out.

Outputs: real profile -> executed notebooks in ``build/notebooks/``, figures in ``figures/``, numbers in
``results/``; smoke profile -> everything under ``build/smoke/`` (smoke figures never overwrite real
ones). A failing notebook leaves its executed copy, with the error, in the notebooks folder; the run
stops there (``--keep-going`` runs the rest) and exits non-zero naming it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitreg.params import ParameterError, load_order, load_profile, notebook_defaults, validate
from vitreg.paths import repo_root

__all__ = ["Outcome", "load_order", "models_in", "notebook_models", "preflight_weights", "run", "strip_outputs"]

KERNEL_NAME = "vitreg"


@dataclass
class Outcome:
    notebook: str
    status: str  # "ok", "failed", "not run"
    seconds: float = 0.0
    detail: str = ""


def output_dir_for(profile: str, root: Path | None = None) -> Path:
    """Where a profile's figures/ and results/ go: the repo root (real) or ``build/<profile>``."""
    root = root or repo_root()
    return root if profile == "real" else root / "build" / profile


def executed_dir_for(profile: str, root: Path | None = None) -> Path:
    root = root or repo_root()
    return root / "build" / "notebooks" if profile == "real" else root / "build" / profile / "notebooks"


def select(order: list[dict[str, str]], only: list[str] | None) -> list[str]:
    """Notebook names to run; ``only`` takes numbers (``02``) or names."""
    names = [e["notebook"] for e in order]
    if not only:
        return names
    chosen = []
    for want in only:
        match = [n for n in names if n == want or n.split("_")[0] == want.zfill(2)]
        if not match:
            raise SystemExit(f"no notebook {want!r} in notebooks/order.yaml; known: {', '.join(names)}")
        chosen += match
    return chosen


def planned_parameters(names: list[str], profile: str, out_dir: Path, root: Path | None = None) -> dict[str, dict]:
    """Validated parameters of every notebook to run (all checked before the first one runs)."""
    root = root or repo_root()
    plans, problems = {}, []
    for name in names:
        path = root / "notebooks" / f"{name}.ipynb"
        if not path.exists():
            problems.append(f"{path} is listed in notebooks/order.yaml but does not exist")
            continue
        given = {**load_profile(profile, name, root / "params" / f"{profile}.yaml"), "output_dir": str(out_dir)}
        try:
            validate(path, given)
        except ParameterError as err:
            problems.append(str(err))
        plans[name] = given
    if problems:
        raise ParameterError("\n".join(problems))
    return plans


def models_in(params: dict[str, Any]) -> list[str]:
    """Model names a notebook will load: values of parameters whose name mentions ``model`` (lists and
    lists of pairs included)."""
    def flat(value: Any) -> list[str]:
        if isinstance(value, (list, tuple)):
            return [name for v in value for name in flat(v)]
        return [value] if isinstance(value, str) and value else []

    out: list[str] = []
    for key, value in params.items():
        if "model" in key:
            out += [m for m in flat(value) if m not in out]
    return out


def notebook_models(names: list[str] | None = None, root: Path | None = None) -> dict[str, list[str]]:
    """Every model the notebooks' defaults (the real profile) load, in run order, with the notebooks
    that use it. ``names``: notebooks to look at (default: the whole run order)."""
    root = root or repo_root()
    names = names if names is not None else [e["notebook"] for e in load_order(root)]
    users: dict[str, list[str]] = {}
    for name in names:
        for model in models_in(notebook_defaults(root / "notebooks" / f"{name}.ipynb")):
            if name not in users.setdefault(model, []):
                users[model].append(name)
    return users


def preflight_weights(names: list[str], root: Path | None = None) -> str | None:
    """Check the real-profile models of ``names``; return the stop message if some are missing offline."""
    from vitreg.models import get_spec
    from vitreg.weights import find_weights, hub_reachable, missing_weights_message

    wanted = notebook_models(names, root)
    missing = [get_spec(m) for m in wanted if find_weights(get_spec(m))[0] is None]
    if not missing:
        return None
    if hub_reachable():
        for spec in missing:
            print(f"note: {spec.key} is not on this machine yet; timm will download it ({', '.join(wanted[spec.key])})")
        return None
    return missing_weights_message(missing, needed_by=wanted, before_run=True)


def ensure_kernel() -> None:
    """Register the ``vitreg`` Jupyter kernel for this interpreter if it is missing."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL_NAME not in KernelSpecManager().find_kernel_specs():
        from ipykernel.kernelspec import install

        install(kernel_name=KERNEL_NAME, display_name="Python (vitreg)", prefix=sys.prefix)


def run_notebook(name: str, params: dict[str, Any], executed_dir: Path, root: Path | None = None) -> Outcome:
    """Execute one notebook with papermill; the executed copy (errors included) goes to ``executed_dir``."""
    import papermill as pm

    root = root or repo_root()
    executed_dir.mkdir(parents=True, exist_ok=True)
    Path(params["output_dir"]).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        with _kernel_imports_from(root):
            pm.execute_notebook(
                str(root / "notebooks" / f"{name}.ipynb"), str(executed_dir / f"{name}.ipynb"),
                parameters=params, kernel_name=KERNEL_NAME, cwd=str(root / "notebooks"), progress_bar=False,
            )
    except pm.PapermillExecutionError as err:
        return Outcome(name, "failed", time.perf_counter() - start, f"{err.ename}: {err.evalue}"[:400])
    return Outcome(name, "ok", time.perf_counter() - start)


@contextmanager
def _kernel_imports_from(root: Path) -> Iterator[None]:
    """Put ``root`` first on the kernel's ``PYTHONPATH`` while it starts, so a notebook runs the ``vitreg``
    of the checkout being run, not whichever checkout was installed into the environment."""
    import os

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(root).resolve())] + ([old] if old else []))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def run(profile: str, only: list[str] | None = None, *, keep_going: bool = False, root: Path | None = None,
        out_dir: Path | None = None, report: bool = True) -> list[Outcome]:
    """Run the selected notebooks of the run order under ``profile``; print a one-screen summary."""
    root = root or repo_root()
    names = select(load_order(root), only)
    out_dir = Path(out_dir).resolve() if out_dir else output_dir_for(profile, root)  # notebooks run in notebooks/
    executed = executed_dir_for(profile, root) if out_dir == output_dir_for(profile, root) else out_dir / "notebooks"
    plans = planned_parameters(names, profile, out_dir, root)
    if profile == "real":
        stop = preflight_weights(names, root)
        if stop:
            raise SystemExit(stop)
    ensure_kernel()
    outcomes: list[Outcome] = []
    for i, name in enumerate(names):
        print(f"[{i + 1}/{len(names)}] {name} ({profile}) ...", flush=True)
        outcome = run_notebook(name, plans[name], executed, root)
        outcomes.append(outcome)
        print(f"    {outcome.status} in {outcome.seconds:.0f} s {outcome.detail}", flush=True)
        if outcome.status == "failed" and not keep_going:
            outcomes += [Outcome(n, "not run", detail=f"stopped after {name} failed") for n in names[i + 1:]]
            break
    report_paths = _build_report(out_dir, profile) if report else []
    print(summary(outcomes, profile, out_dir, executed, report_paths))
    return outcomes


def _build_report(out_dir: Path, profile: str) -> list[Path]:
    try:
        from vitreg.report import build_report
    except ImportError:
        return []
    report_dir = out_dir if profile != "real" else out_dir / "build"
    try:
        return list(build_report(out_dir / "results", report_dir, figures_dir=out_dir / "figures"))
    except Exception as err:  # the report must never hide the notebooks' own outcome
        print(f"report not built: {type(err).__name__}: {err}")
        return []


def summary(outcomes: list[Outcome], profile: str, out_dir: Path, executed: Path, report: list[Path]) -> str:
    """The one-screen summary: what ran, what was skipped and why, where the outputs are."""
    lines = ["", f"== vitreg {profile} run =="]
    for o in outcomes:
        lines.append(f"  {o.notebook:<28} {o.status:<8} {o.seconds:6.0f} s  {o.detail}")
        for skipped in _skipped(out_dir / "results" / f"{o.notebook}.json") if o.status == "ok" else []:
            lines.append(f"  {'':<28} skipped: {skipped}")
    lines += [f"executed notebooks: {executed}", f"figures:            {out_dir / 'figures'}",
              f"results:            {out_dir / 'results'}"]
    lines += [f"report:             {p}" for p in report]
    failed = [o.notebook for o in outcomes if o.status == "failed"]
    if failed:
        lines.append(f"FAILED: {', '.join(failed)} (the executed copy shows the error)")
    return "\n".join(lines)


def _skipped(results_file: Path) -> list[str]:
    try:
        numbers = json.loads(results_file.read_text()).get("numbers", {})
    except (OSError, ValueError):
        return []
    skipped = numbers.get("skipped", []) if isinstance(numbers, dict) else []
    return [str(s) for s in skipped] if isinstance(skipped, list) else [str(skipped)]


def strip_outputs(root: Path | None = None) -> list[Path]:
    """Remove outputs, execution counts and run metadata from ``notebooks/*.ipynb`` (before committing)."""
    import nbformat

    from vitreg.io import atomic_write_text

    changed = []
    for path in sorted((root or repo_root()).glob("notebooks/*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        before = nbformat.writes(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
            cell.metadata.pop("papermill", None)
        nb.metadata.pop("papermill", None)
        after = nbformat.writes(nb)
        if after != before:
            atomic_write_text(path, after)
            changed.append(path)
    return changed


if __name__ == "__main__":  # the old entry point: say where it went instead of silently doing nothing
    raise SystemExit("`python -m vitreg.runner` is now `vitreg run` (or `python -m vitreg run`); --strip is `vitreg strip`")
