"""Run the notebooks in order with papermill: ``vitreg run`` (``make reproduce``, ``make smoke``, ``make notebook``).

The run order lives in ``notebooks/order.yaml`` (read by :func:`vitreg.experiments.params.load_order`).
Before anything runs, every notebook's parameters are checked (unknown or ill-typed names are errors;
the profile and the user's overrides, ``--params FILE`` and ``--set NOTEBOOK.KEY=VALUE``, alike), the
images of notebooks 00-04/07 are looked up (a natural-image set missing offline, or an ``image_dir`` that
is not a folder, stops the run), and, for every notebook that runs with ``pretrained`` (the real and lecture
profiles), every model's weights are looked up: offline with weights missing, the run stops at once with
the model, the places looked and the two ways out.

Outputs: real profile -> executed notebooks in ``build/notebooks/``, figures in ``figures/``, numbers in
``results/``; smoke profile -> everything under ``build/smoke/`` (smoke figures never overwrite real
ones). A failing notebook leaves its executed copy, with the error, in the notebooks folder; the run
stops there (``--keep-going`` runs the rest) and exits non-zero naming it. A dead kernel (what an
out-of-memory kill looks like) or any other error of papermill/nbclient is a failed notebook, not a
crashed run. Ctrl-C or SIGTERM stop the run: the summary is marked "interrupted" and ``vitreg run``
exits 130. Whatever happens, the run ends with the summary and the report of what finished.

One writer per output folder: a run holds the folder's lock (:mod:`vitreg.utils.lock`) from its first
write to its summary; a second run on the same folder stops at once naming the first one's PID and start
time. A notebook writes into a staging folder of its own (``<out>/.staging/<notebook>.<unique>``, its
``output_dir``), and its executed copy is written beside the old one and replaces it whole; only on
success are its old results and figures removed and the new ones moved into ``results/`` and
``figures/``. A failed rerun thus never leaves the previous run's results beside new figures. Each
notebook's outcome (ok, failed, not run, interrupted) is written to ``results/_outcomes.json`` for the report.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vitreg.experiments.base import Experiment
from vitreg.experiments.params import (ParameterError, experiment_of, given_parameters, load_order, read_overrides,
                                       validate)
from vitreg.experiments import timing
from vitreg.utils.lock import exclusive_folder
from vitreg.utils.paths import repo_root
from vitreg.cli.kernel import kernel_manager_logging_to, log_tail, mark_interrupted, quiet_after_interrupt
from vitreg.cli.terminal import Forward, quiet_jupyter

__all__ = ["Outcome", "load_order", "merged_parameters", "notebook_models", "planned_parameters",
           "preflight_images", "preflight_weights", "run", "strip_outputs", "write_outcomes"]

KERNEL_NAME = "vitreg"


@dataclass
class Outcome:
    notebook: str
    status: str  # "ok", "failed", "not run", "interrupted"
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


def planned_parameters(names: list[str], profile: str, out_dir: Path, root: Path | None = None, *,
                       params_file: str | Path | None = None, sets: Sequence[str] = (),
                       experiments: Mapping[str, Experiment] | None = None) -> dict[str, dict]:
    """Validated parameters of every notebook to run (all checked before the first one runs): the
    profile, then the user's overrides (``params_file`` with ``common`` and ``notebooks``, then ``--set`` items;
    see :func:`vitreg.experiments.params.given_parameters`). Every problem of every notebook is raised at once.
    ``experiments``: notebooks outside the catalog (a test's project), by name."""
    root = root or repo_root()
    known = [e["notebook"] for e in load_order(root)]
    overrides = read_overrides(params_file, tuple(sets), known)
    given = given_parameters(profile, names, root, overrides, experiments)
    plans, problems = {}, []
    for name in names:
        path = root / "notebooks" / f"{name}.ipynb"
        if not path.exists():
            problems.append(f"{path} is listed in notebooks/order.yaml but does not exist")
            continue
        plans[name] = {**given[name], "output_dir": str(out_dir)}
        try:
            validate(name, plans[name], experiment_of(name, experiments))
        except ParameterError as err:
            problems.append(str(err))
    if problems:
        raise ParameterError("\n".join(problems))
    return plans


def merged_parameters(plans: dict[str, dict], root: Path | None = None,
                      experiments: Mapping[str, Experiment] | None = None) -> dict[str, dict]:
    """Every parameter each planned notebook will run with (its experiment's defaults updated by its plan)."""
    return {name: {**experiment_of(name, experiments).defaults(), **given} for name, given in plans.items()}


def estimate(only: list[str] | None = None, *, params_file: str | Path | None = None, sets: Sequence[str] = (),
             rates: Mapping[str, float] | None = None, root: Path | None = None,
             experiments: Mapping[str, Experiment] | None = None) -> str:
    """The run-time table (:mod:`vitreg.experiments.timing`) of a real run of ``only`` (default: every notebook) with
    these overrides, checked as ``vitreg run`` checks them; nothing runs, nothing is written (``vitreg estimate``).
    ``rates``: measured rates in place of the assumed ones (:func:`vitreg.experiments.timing.rates_from_benchmark`).

    Paper: all findings (the real run's cost)."""
    root = root or repo_root()
    names = select(load_order(root), only)
    plans = planned_parameters(names, "real", output_dir_for("real", root), root, params_file=params_file, sets=sets,
                               experiments=experiments)
    with timing.measured_rates(rates or {}):
        return timing.render(names, params=merged_parameters(plans, root, experiments))


def notebook_models(names: list[str] | None = None, root: Path | None = None,
                    params: dict[str, dict] | None = None,
                    experiments: Mapping[str, Experiment] | None = None) -> dict[str, list[str]]:
    """Every model the notebooks load (each experiment's ``models(p)``, twins included), in run order, with the
    notebooks that use it. ``names``: notebooks to look at (default: the whole run order); ``params``: each
    notebook's parameters when overridden (:func:`merged_parameters`), else its defaults (the real profile)."""
    names = names if names is not None else [e["notebook"] for e in load_order(root)]
    users: dict[str, list[str]] = {}
    for name in names:
        exp = experiment_of(name, experiments)
        for model in exp.models(exp.build((params or {}).get(name))):
            if name not in users.setdefault(model, []):
                users[model].append(name)
    return users


def preflight_weights(names: list[str], root: Path | None = None, params: dict[str, dict] | None = None,
                      experiments: Mapping[str, Experiment] | None = None) -> str | None:
    """Check the models of ``names`` that load pretrained weights (with ``params``: the models a run with those
    parameters loads, :func:`notebook_models`); return the stop message if a weights file is broken (its header:
    truncated, empty, not a checkpoint) or some are missing offline (both listed at once)."""
    from vitreg.core.models import get_spec
    from vitreg.core.weights import (broken_weights, broken_weights_message, find_weights, hub_reachable,
                                missing_weights_message)

    names = [n for n in names if (params or {}).get(n, {}).get("pretrained", True)]  # random weights need no files
    wanted = notebook_models(names, root, params, experiments)
    broken = broken_weights(list(wanted))
    stop = broken_weights_message(broken, needed_by=wanted) if broken else None
    missing = [get_spec(m) for m in wanted if m not in broken and find_weights(get_spec(m))[0] is None]
    if not missing:
        return stop
    if hub_reachable():
        for spec in missing:
            print(f"note: {spec.key} is not on this machine yet; timm will download it ({', '.join(wanted[spec.key])})")
        return stop
    return "\n\n".join(filter(None, [stop, missing_weights_message(missing, needed_by=wanted, before_run=True)]))


def preflight_images(params: dict[str, dict]) -> str | None:
    """Check the images of every notebook with an ``images`` parameter (notebooks 00-04, 07; F1-F4, F7):
    ``image_dir`` must be a folder; a natural-image set (``images`` = auto/imagenet/imagenette/pets) must
    be here or downloadable now. Returns the stop message naming every notebook affected, or None;
    prints a note for a set that will be downloaded first. Nothing is downloaded here."""
    from vitreg.data.datasets import natural_images_status

    problems: dict[str, list[str]] = {}
    status: dict[str, tuple[bool, str | None]] = {}
    for name, p in params.items():
        if "images" not in p:
            continue
        if p.get("image_dir") is not None:
            if not Path(str(p["image_dir"])).expanduser().is_dir():
                problems.setdefault(f"image_dir={p['image_dir']!r} is not a folder", []).append(name)
            continue
        if p["images"] not in status:
            status[p["images"]] = natural_images_status(p["images"])
            if status[p["images"]][0] and status[p["images"]][1]:
                print(status[p["images"]][1])
        usable, what = status[p["images"]]
        if not usable:
            problems.setdefault(str(what), []).append(name)
    if not problems:
        return None
    return "Stopping before any notebook runs: the images are not here.\n" + "\n".join(
        f"- {what}\n  (needed by {', '.join(names)})" for what, names in problems.items())


def ensure_kernel() -> None:
    """Register the ``vitreg`` Jupyter kernel for this interpreter if it is missing."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL_NAME not in KernelSpecManager().find_kernel_specs():
        from ipykernel.kernelspec import install

        install(kernel_name=KERNEL_NAME, display_name="Python (vitreg)", prefix=sys.prefix)


KERNEL_DIED = "kernel died — out of memory?"
#: Kernel options: its own log says only errors (not "Kernel is running over TCP without encryption" per notebook).
KERNEL_QUIET = ["--IPKernelApp.log_level=ERROR"]
STAGING = ".staging"
OUTCOMES_FILE = "_outcomes.json"


def run_notebook(name: str, params: dict[str, Any], executed_dir: Path, root: Path | None = None) -> Outcome:
    """Execute one notebook with papermill; the executed copy (errors included) goes to ``executed_dir``.

    The notebook writes into a staging folder of its own (:func:`_staging_for`); on success its outputs
    replace the notebook's previous ones (:func:`_publish`). papermill writes the executed copy to a
    temporary file beside it, which replaces ``executed_dir/<name>.ipynb`` only once it is a whole notebook
    (a full disk keeps the previous copy). Any error of the execution machinery is a failed outcome; only
    Ctrl-C/SIGTERM (``KeyboardInterrupt``) goes through, leaving the old outputs alone.
    """
    import papermill as pm
    from nbclient.exceptions import DeadKernelError

    root = root or repo_root()
    executed_dir.mkdir(parents=True, exist_ok=True)
    out_dir = Path(params["output_dir"])
    staging = _staging_for(name, out_dir)
    executed = executed_dir / f"{name}.ipynb"
    partial = _partial_path(executed)
    start = time.perf_counter()
    kernel_log = tempfile.TemporaryFile(prefix=f"vitreg-kernel-{name}-", suffix=".log")
    try:
        try:
            with _kernel_imports_from(root), quiet_jupyter():  # the notebook's estimate and progress, no Jupyter noise
                pm.execute_notebook(
                    str(root / "notebooks" / f"{name}.ipynb"), str(partial),
                    parameters={**params, "output_dir": str(staging)}, kernel_name=KERNEL_NAME,
                    cwd=str(root / "notebooks"), progress_bar=False, stdout_file=Forward(), stderr_file=Forward(),
                    extra_arguments=KERNEL_QUIET, kernel_manager_class=kernel_manager_logging_to(kernel_log),
                )
        except pm.PapermillExecutionError as err:
            return Outcome(name, "failed", time.perf_counter() - start, f"{err.ename}: {err.evalue}"[:400])
        except DeadKernelError as err:
            _show_kernel_log(name, kernel_log)
            return Outcome(name, "failed", time.perf_counter() - start, f"{KERNEL_DIED} ({err})"[:400])
        except Exception as err:  # noqa: BLE001 - one notebook's failure, whatever it is, must not end the run
            _show_kernel_log(name, kernel_log)
            return Outcome(name, "failed", time.perf_counter() - start, f"{type(err).__name__}: {err}"[:400])
        with _signals_ignored():  # never half-moved
            _publish(name, staging, out_dir)
        return Outcome(name, "ok", time.perf_counter() - start)
    finally:
        kernel_log.close()
        with _signals_ignored():
            _publish_executed(partial, executed)
        shutil.rmtree(staging, ignore_errors=True)
        _remove_if_empty(out_dir / STAGING)


def _show_kernel_log(name: str, kernel_log: Any) -> None:
    """Print what the kernel of a failed notebook wrote to its own stderr (a crash's last words), if anything."""
    if tail := log_tail(kernel_log):
        print(f"    the kernel of {name} said:\n" + "\n".join(f"      {line}" for line in tail.splitlines()),
              file=sys.stderr)


def _staging_for(name: str, out_dir: Path) -> Path:
    """A new staging folder for one run of ``name``: ``<out_dir>/.staging/<name>.<unique>`` (never shared)."""
    (out_dir / STAGING).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}.", dir=out_dir / STAGING))


def _partial_path(executed: Path) -> Path:
    """A new temporary file beside ``executed`` for papermill to write into (named ``.ipynb``, as papermill wants)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{executed.stem}.", suffix=".partial.ipynb", dir=executed.parent)
    os.close(fd)
    return Path(tmp)


def _publish_executed(partial: Path, executed: Path) -> None:
    """Move the executed copy papermill wrote in ``partial`` over ``executed`` if it is a whole notebook (JSON
    with cells); otherwise keep the previous ``executed`` and drop ``partial``."""
    from vitreg.utils.io import replace_with

    try:
        whole = isinstance(json.loads(partial.read_text(encoding="utf-8")).get("cells"), list)
    except (OSError, ValueError, AttributeError):
        whole = False
    try:
        if whole:
            replace_with(partial, executed)
    except OSError as err:
        print(f"    the executed copy of {executed.stem} could not be saved ({err}); the previous one is kept")
    finally:
        partial.unlink(missing_ok=True)


def _clear_stale(out_dir: Path, executed_dir: Path) -> None:
    """Remove what a run killed outright (SIGKILL, power loss) left behind: staging folders and partial
    executed copies. Called with the output folder's lock held, so no live run owns them."""
    shutil.rmtree(out_dir / STAGING, ignore_errors=True)
    for partial in executed_dir.glob(".*.partial.ipynb"):
        partial.unlink(missing_ok=True)


def _publish(name: str, staging: Path, out_dir: Path) -> None:
    """Replace ``name``'s results and figures in ``out_dir`` by the ones of this run (in ``staging``):
    its old ``results/<name>.json`` and ``figures/<nn>_*`` go first, so nothing of an earlier run is
    left beside the new outputs; the recorded ``output_dir`` is set to where the outputs now are."""
    old = [out_dir / "results" / f"{name}.json", *(out_dir / "figures").glob(f"{name.split('_')[0]}_*")]
    for path in old:
        if path.is_file():
            path.unlink()
    for src in sorted(p for p in staging.rglob("*") if p.is_file()):
        dest = out_dir / src.relative_to(staging)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
    _record_output_dir(out_dir / "results" / f"{name}.json", out_dir)


def _record_output_dir(results_file: Path, out_dir: Path) -> None:
    from vitreg.utils.io import atomic_write_json

    try:
        record = json.loads(results_file.read_text())
    except (OSError, ValueError):
        return
    if isinstance(record.get("params"), dict) and "output_dir" in record["params"]:
        record["params"]["output_dir"] = str(out_dir)
        atomic_write_json(results_file, record)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


@contextmanager
def _kernel_imports_from(root: Path) -> Iterator[None]:
    """Put ``root`` first on the kernel's ``PYTHONPATH`` while it starts, so a notebook runs the ``vitreg``
    of the checkout being run, not whichever checkout was installed into the environment."""
    import os

    from vitreg.utils.progress import TEXT_ENV

    old = {k: os.environ.get(k) for k in ("PYTHONPATH", "PYDEVD_DISABLE_FILE_VALIDATION", TEXT_ENV)}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(root).resolve())] + ([old["PYTHONPATH"]] if old["PYTHONPATH"] else []))
    os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # the kernel's debugger warning about frozen modules
    os.environ[TEXT_ENV] = "1"  # text progress bars: forwarded to the terminal, kept in the executed copy
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run(profile: str, only: list[str] | None = None, *, keep_going: bool = False, root: Path | None = None,
        out_dir: Path | None = None, report: bool = True, params_file: str | Path | None = None,
        sets: Sequence[str] = (), experiments: Mapping[str, Experiment] | None = None) -> list[Outcome]:
    """Run the selected notebooks of the run order under ``profile``; print a one-screen summary.

    ``params_file`` (profile format) and ``sets`` (``NOTEBOOK.KEY=VALUE``) override any parameter; all
    are validated, and the images and (``pretrained``) weights they need looked up, before anything runs.
    ``experiments``: notebooks outside the catalog (a test's project), by name.

    Ctrl-C or SIGTERM stop the run: the notebook running is ``interrupted``, the rest ``not run``; the
    summary (marked interrupted) and the report of what finished are still written. The outcomes are
    returned either way (``vitreg run`` exits 130 when one is ``interrupted``).
    """
    root = root or repo_root()
    names = select(load_order(root), only)
    out_dir = Path(out_dir).resolve() if out_dir else output_dir_for(profile, root)  # notebooks run in notebooks/
    executed = executed_dir_for(profile, root) if out_dir == output_dir_for(profile, root) else out_dir / "notebooks"
    plans = planned_parameters(names, profile, out_dir, root, params_file=params_file, sets=sets,
                               experiments=experiments)
    merged = merged_parameters(plans, root, experiments)
    stops = [preflight_weights(names, root, merged, experiments), preflight_images(merged)]  # skips notebooks on random weights
    if any(stops):
        raise SystemExit("\n\n".join(filter(None, stops)))
    ensure_kernel()
    if profile == "real":  # the freely downloadable datasets its notebooks read (`make reproduce DATA=none`: not)
        from vitreg.data.fetch import fetch_for_run
        fetch_for_run(merged)
    if profile == "real":  # how long, before it starts
        table = timing.render(names, params=merged)  # this run's parameters, overrides included
        print(f"expected run time on one H100-class GPU (estimate, vitreg.experiments.timing):\n{table}\n", flush=True)
    outcomes: list[Outcome] = []
    start = time.perf_counter()
    with exclusive_folder(out_dir), _sigterm_interrupts(), quiet_after_interrupt():  # one run per output folder
        _clear_stale(out_dir, executed)
        try:
            _run_all(names, plans, profile, executed, root, keep_going, outcomes)
        except KeyboardInterrupt:
            done = {o.notebook for o in outcomes}
            spent = time.perf_counter() - start - sum(o.seconds for o in outcomes)
            outcomes += [Outcome(n, "interrupted", spent, "interrupted (Ctrl-C or SIGTERM)") if i == 0 else
                         Outcome(n, "not run", detail="the run was interrupted")
                         for i, n in enumerate(n for n in names if n not in done)]
        with _signals_ignored():  # the summary and the report are written even when interrupted again
            write_outcomes(outcomes, out_dir, profile)
            report_paths = _build_report(out_dir, profile) if report else []
            print(summary(outcomes, profile, out_dir, executed, report_paths), flush=True)
    return outcomes


def _run_all(names: list[str], plans: dict[str, dict], profile: str, executed: Path, root: Path,
             keep_going: bool, outcomes: list[Outcome]) -> None:
    """Run ``names`` in order, appending to ``outcomes`` as they finish (so an interrupt keeps them)."""
    for i, name in enumerate(names):
        print(f"[{i + 1}/{len(names)}] {name} ({profile}) ...", flush=True)
        outcome = run_notebook(name, plans[name], executed, root)
        outcomes.append(outcome)
        print(f"    {outcome.status} in {outcome.seconds:.0f} s {outcome.detail}", flush=True)
        if outcome.status == "failed" and not keep_going:
            outcomes += [Outcome(n, "not run", detail=f"stopped after {name} failed") for n in names[i + 1:]]
            return


@contextmanager
def _handling(handler: Any) -> Iterator[None]:
    """SIGINT and SIGTERM go to ``handler`` while the block lasts (outside the main thread signals are left alone)."""
    try:
        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, previous in old.items():
            signal.signal(s, previous)


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While the run lasts, SIGTERM stops it like Ctrl-C (a ``KeyboardInterrupt``), and either signal first says
    an interrupt is under way (:func:`vitreg.cli.kernel.mark_interrupted`: the kernel's shutdown stays quiet)."""
    def interrupt(signum: int, frame: Any) -> None:
        mark_interrupted()
        raise KeyboardInterrupt(f"signal {signum}")

    with _handling(interrupt):
        yield


def _signals_ignored() -> Any:
    """Ignore SIGINT/SIGTERM while the summary and report of a run are written (a few seconds)."""
    return _handling(signal.SIG_IGN)


def write_outcomes(outcomes: list[Outcome], out_dir: Path, profile: str) -> Path:
    """Write each notebook's outcome to ``<out_dir>/results/_outcomes.json`` (atomically) for the report,
    so a failed notebook is shown as failed, not as not run or as ran with an earlier run's results."""
    from vitreg.utils.io import atomic_write_json

    path = Path(out_dir) / "results" / OUTCOMES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, {"profile": profile, "interrupted": any(o.status == "interrupted" for o in outcomes),
                                    "outcomes": [asdict(o) for o in outcomes]})


def _build_report(out_dir: Path, profile: str) -> list[Path]:
    try:
        from vitreg.present.report import build_report
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
    interrupted = any(o.status == "interrupted" for o in outcomes)
    lines = ["", f"== vitreg {profile} run{' (INTERRUPTED)' if interrupted else ''} =="]
    for o in outcomes:
        lines.append(f"  {o.notebook:<28} {o.status:<11} {o.seconds:6.0f} s  {o.detail}")
        notes = _notes(out_dir / "results" / f"{o.notebook}.json") if o.status == "ok" else {}
        lines += [f"  {'':<28} skipped: {s}" for s in notes.get("skipped", [])]
        lines += [f"  {'':<28} DIFFERS from the paper: {d}" for d in notes.get("differs", [])]
    lines += [f"executed notebooks: {executed}", f"figures:            {out_dir / 'figures'}",
              f"results:            {out_dir / 'results'}"]
    lines += [f"report:             {p}" for p in report]
    failed = [o.notebook for o in outcomes if o.status == "failed"]
    if failed:
        lines.append(f"FAILED: {', '.join(failed)} (the executed copy shows the error; earlier outputs of a "
                     "failed notebook, if any, are left as they were)")
    if interrupted:
        lines.append("INTERRUPTED: the run was stopped (Ctrl-C or SIGTERM); the report shows what finished")
    return "\n".join(lines)


def _notes(results_file: Path) -> dict[str, list[str]]:
    """What a notebook's results say it skipped, and the claims whose verdict was "differs" (a scientific
    disagreement is a result: the run goes on, and the summary lists it)."""
    try:
        numbers = json.loads(results_file.read_text()).get("numbers", {})
    except (OSError, ValueError):
        return {}
    if not isinstance(numbers, dict):
        return {}
    skipped = numbers.get("skipped", [])
    verdicts = numbers.get("verdicts", [])
    return {"skipped": [str(s) for s in skipped] if isinstance(skipped, list) else [str(skipped)],
            "differs": [f"{v.get('id')} (ours {v.get('ours')}, paper {v.get('paper')}; {v.get('rule')})"
                        for v in verdicts if isinstance(v, dict) and v.get("status") == "differs"]}


def strip_outputs(root: Path | None = None) -> list[Path]:
    """Remove outputs, execution counts and run metadata from ``notebooks/*.ipynb`` (before committing)."""
    import nbformat

    from vitreg.utils.io import atomic_write_text

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
    raise SystemExit("`python -m vitreg.cli.runner` is now `vitreg run` (or `python -m vitreg run`); --strip is `vitreg strip`")
