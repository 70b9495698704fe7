"""The paper beside us: a generated reproduction report.

Paper: every finding (findings F1-F9, README); the numbers live in
``data/paper_numbers.yaml`` (one entry per number, with its source and its tolerance), read only through
:mod:`vitreg.claims.paper`, never in the notebooks.

:func:`build_report` reads the results file of every notebook (``<results_dir>/<notebook>.json``,
written by :func:`vitreg.utils.results.save_results`) and writes ``report.md`` and ``report.html``: a verdict
per finding at the top, then per finding the paper's value beside ours with the difference and a status.
Every status comes from :func:`vitreg.claims.paper.judge`, the same function behind the notebooks'
``paper.check`` and ``paper.check_delta``, so a notebook's verdict and the report's row cannot disagree:

* ``reproduced``: ours is within the stated tolerance (or on the stated side of a bound);
* ``differs``: it is not;
* ``not comparable``: ours was measured at another resolution, or on fewer images, than the number's
  protocol (read from the results file: the dict holding the key, the model's ``image_size``, ``params``);
* ``not applicable``: ours comes from random weights (smoke, or ``pretrained=False``): shown, never compared;
* ``not run here``: no results file, the notebook skipped it (and said why), or another model than the number's;
* ``not reproducible``: public assets do not allow it (the reason comes from the data file).

A derived number (``delta``/``ratio`` in the data file) reads both its keys from the same results file.
The page itself is arranged by :mod:`vitreg.present.report_render`.

A missing result is a row marked ``not run here``, never a dropped row. A smoke report (random weights,
synthetic data) says so in its FIRST line.

The runner's outcomes (``<results_dir>/_outcomes.json``, :func:`vitreg.cli.runner.write_outcomes`) say what
happened to each notebook of the LAST run: a notebook that failed, was interrupted or was not run is shown
so in the notebooks table, and its rows are ``not run here`` with that cause, even when a results file
from an earlier run is still there (the table says so; its numbers are not used). A notebook the last run
did not include keeps its earlier results, marked as from an earlier run. An interrupted run says so in
the report's FIRST line.

Schema of a results file (checked; any mismatch raises :class:`ReportSchemaError` naming the file and
every problem):

* the envelope: :data:`vitreg.utils.results.RESULTS_SCHEMA` (the JSON schema ``save_results`` checks too), and
  ``notebook`` == the file name without ``.json``;
* the notebook's own keys: every ``key`` that ``data/paper_numbers.yaml`` gives for that notebook must
  exist inside ``numbers`` (dotted path) and hold a finite number, or ``{"skipped": "<why>"}`` (a skip
  may also sit on any dict along the path, e.g. ``numbers["reg"] = {"skipped": "..."}``). An entry
  marked ``awaiting_key`` is exempt until its notebook writes the key (its row says so).

Command line: ``python -m vitreg.present.report RESULTS_DIR OUT_DIR [--figures DIR] [--notebooks DIR] [--numbers YAML]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

from vitreg.present import report_render as rr
from vitreg.utils.io import atomic_write_text
from vitreg.claims.measured import is_measured, measured_problems, parse_measured
from vitreg.claims.paper import (FINDINGS, STATUSES, PaperNumber, PaperNumbersError, Verdict, combine, judge,
                          load_paper_numbers, meets, pair_model)
from vitreg.utils.paths import repo_root
from vitreg.utils.results import envelope_problems

__all__ = ["FINDINGS", "STATUSES", "ReportPaths", "ReportSchemaError", "RunOutcomes", "build_report", "evaluate",
           "is_smoke", "load_outcomes", "load_paper_numbers", "load_results_dir", "lookup", "main", "meets"]

Row = Verdict  #: a report row is a verdict of :func:`vitreg.claims.paper.judge` (a name for the report's readers)
render = rr.render
SMOKE_LINE = ("SMOKE REPORT: made from random weights and synthetic data (profile {profiles}); "
              "no number below says anything about the paper.")
_FIGURE_SUFFIXES = (".png", ".svg", ".jpg")  # the PDF twins sit beside the PNGs
_NB_HEADER = ["notebook", "state", "profile", "models", "resolution", "images", "created",
              "skipped (as the notebook said)"]
OUTCOMES_FILE = "_outcomes.json"  # written by vitreg.cli.runner.write_outcomes (the runner is above us: not imported)
#: The cause of a ``not run here`` row whose notebook did not finish in the last run, by runner status.
RUN_CAUSES = {"failed": "notebook failed", "interrupted": "run interrupted", "not run": "not run in the last run"}
INTERRUPTED_LINE = ("INTERRUPTED RUN: the run was stopped (Ctrl-C or SIGTERM) before every notebook finished; "
                    "the notebooks that did not finish are marked so below.")


class ReportSchemaError(ValueError):
    """A results file or the paper-numbers file does not match its schema."""


# ---------------------------------------------------------------------------------------------------
# Results files
# ---------------------------------------------------------------------------------------------------
def lookup(numbers: Mapping[str, Any], key: str) -> tuple[Literal["value", "skipped", "missing"], Any, dict | None]:
    """Follow a dotted ``key`` inside a results file's ``numbers``.

    Args:
        numbers: the ``numbers`` dict of a results file.
        key: dotted path, e.g. ``"no_reg.ade20k_miou"``.

    Returns:
        ``("value", ours, holder)``, ``("skipped", reason, holder)`` or ``("missing", what, None)``;
        ours is a float, or a :class:`vitreg.claims.measured.Measured` where the file holds a measured value
        (``{"value": v, "ci": [lo, hi], "n": n, ...}``); ``holder`` is the dict that holds the last step (it
        may name the ``model``).
    """
    node: Any = numbers
    holder: dict | None = None
    for part in key.split("."):
        if isinstance(node, dict) and isinstance(node.get("skipped"), str):
            return "skipped", node["skipped"], node
        if not isinstance(node, dict) or part not in node:
            return "missing", f"no {part!r} at {key!r}", None
        holder, node = node, node[part]
    if isinstance(node, dict) and isinstance(node.get("skipped"), str):
        return "skipped", node["skipped"], holder
    if is_measured(node):
        problems = measured_problems(node)
        if problems:
            return "missing", f"{key!r} is a measured value off its form: {'; '.join(problems)}", None
        return "value", parse_measured(node), holder
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node):
        return "missing", f"{key!r} holds {node!r}, expected a finite number or {{'skipped': '<why>'}}", None
    return "value", float(node), holder


def _key_problems(record: dict, numbers: Sequence[PaperNumber]) -> list[str]:
    """The paper numbers' keys that ``record`` lacks (entries still awaiting their key are exempt)."""
    problems = []
    for n in numbers:
        if n.notebook != record["notebook"] or n.awaiting_key:
            continue
        for key in n.keys:
            kind, what, _ = lookup(record["numbers"], key)
            if kind == "missing":
                problems.append(f"numbers: {what} (paper number {n.id}; write it, or "
                                f"{{'skipped': '<why>'}}, or fix `key` in data/paper_numbers.yaml)")
    return problems


def load_results_dir(results_dir: str | os.PathLike, numbers: Sequence[PaperNumber]) -> dict[str, dict]:
    """Read and check every ``*.json`` in ``results_dir``.

    Args:
        results_dir: folder of results files (may be missing: then nothing ran).
        numbers: the paper numbers, whose keys each notebook's file must hold.

    Returns:
        ``{notebook: record}``.

    Raises:
        ReportSchemaError: one or more files do not match the schema (all problems listed).
    """
    results_dir = Path(results_dir)
    records, errors = {}, []
    for path in sorted(results_dir.glob("*.json")) if results_dir.is_dir() else []:
        if path.name.startswith("_"):  # the runner's _outcomes.json, not a notebook's results
            continue
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            errors.append(f"{path}: not valid JSON ({err})")
            continue
        problems = envelope_problems(record, path.stem)
        problems = problems or _key_problems(record, numbers)
        if problems:
            errors.append(f"{path}:\n    - " + "\n    - ".join(problems))
        else:
            records[record["notebook"]] = record
    if errors:
        raise ReportSchemaError("results files do not match their schema (vitreg.utils.results.RESULTS_SCHEMA and "
                                "data/paper_numbers.yaml):\n  " + "\n  ".join(errors))
    return records


class Outcome(NamedTuple):
    """What the last run did with one notebook (an entry of ``_outcomes.json``)."""

    status: str  # ok, failed, interrupted, not run
    detail: str


class RunOutcomes(NamedTuple):
    """The runner's ``_outcomes.json``: the last run's profile, whether it was interrupted, each notebook's outcome."""

    profile: str
    interrupted: bool
    notebooks: dict[str, Outcome]

    def unfinished(self, notebook: str) -> Outcome | None:
        """The outcome of ``notebook`` if the last run included it and it did not finish, else None."""
        o = self.notebooks.get(notebook)
        return o if o is not None and o.status != "ok" else None


def load_outcomes(results_dir: str | os.PathLike) -> RunOutcomes | None:
    """Read ``<results_dir>/_outcomes.json`` (None when there is none: results put there by hand).

    Raises:
        ReportSchemaError: the file is there but is not what the runner writes (named, with the problem).
    """
    path = Path(results_dir) / OUTCOMES_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        outcomes = {str(o["notebook"]): Outcome(str(o["status"]), str(o.get("detail") or ""))
                    for o in data["outcomes"]}
        unknown = sorted({o.status for o in outcomes.values()} - {"ok", *RUN_CAUSES})
        if unknown:
            raise ValueError(f"unknown status {', '.join(map(repr, unknown))}")
        return RunOutcomes(str(data.get("profile", "?")), bool(data.get("interrupted")), outcomes)
    except (ValueError, KeyError, TypeError) as err:
        raise ReportSchemaError(f"{path}: not the runner's outcomes file ({type(err).__name__}: {err}); "
                                "delete it or rerun `vitreg run`") from err


def is_smoke(record: Mapping[str, Any]) -> bool:
    """True for random weights or the smoke profile (a pretrained lecture run's rows are judged)."""
    return has_random_weights(record) or record.get("profile") == "smoke"


def has_random_weights(record: Mapping[str, Any]) -> bool:
    """True when the models ran with random weights, whatever the profile: the rows are "not applicable"."""
    return bool(record.get("random_weights")) or any(not m.get("pretrained", True) for m in record.get("models", []))


# ---------------------------------------------------------------------------------------------------
# Rows: every status through vitreg.claims.paper.judge
# ---------------------------------------------------------------------------------------------------
def run_protocol(record: Mapping[str, Any], holder: Mapping[str, Any] | None, model: str | None) -> tuple[Any, Any]:
    """``(resolution, n_images)`` a number of ``record`` was measured under, or None where not recorded.

    The most specific record wins: the dict that holds the number (``image_size``, ``n_images``), then the
    model's entry in ``models`` (``image_size``), then the notebook's ``numbers["n_images"]`` and ``params``.
    """
    holder = holder or {}
    params = record.get("params") or {}
    resolution = holder.get("image_size")
    if resolution is None:
        resolution = next((m.get("image_size") for m in record.get("models", []) if m.get("name") == model), None)
    if resolution is None:
        resolution = params.get("image_size")
    n_images = holder.get("n_images", record["numbers"].get("n_images", params.get("n_images")))
    n_images = n_images if isinstance(n_images, int) and not isinstance(n_images, bool) else None
    return (resolution if isinstance(resolution, (int, list, tuple)) else None), n_images


def row_for(n: PaperNumber, record: Mapping[str, Any] | None, outcome: Outcome | None = None) -> Verdict:
    """The verdict on ``n`` given its notebook's results ``record`` (None: no results file).

    A derived number (``delta``/``ratio``) reads both operands; a skip of either is the row's reason.
    ``outcome``: the last run's outcome of the notebook when it did not finish; then the row is ``not run
    here`` with that cause, and an earlier run's ``record`` is not used.
    """
    if n.notebook is None:
        return judge(n, None)
    if outcome is not None:
        return judge(n, None, absent=_unfinished_text(n.notebook, outcome, record),
                     cause=RUN_CAUSES[outcome.status])  # type: ignore[arg-type]
    if record is None:
        return judge(n, None, absent=f"no results file for notebook {n.notebook}", cause="no results file")
    found = [lookup(record["numbers"], key) for key in n.keys]
    models = [str(h["model"]) if h is not None and "model" in h else None for _, _, h in found]
    model = pair_model(n, models) if n.derive else models[0]
    for key, (kind, got, _) in zip(n.keys, found):
        if kind == "missing":  # only entries awaiting their key get here (load_results_dir checks the rest)
            return judge(n, None, absent=f"{n.notebook} does not write {key!r} yet", cause="not written yet",
                         model=model)
        if kind == "skipped":
            return judge(n, None, absent=f"{n.notebook} skipped it: {got}", cause="skipped by the notebook",
                         model=model)
    ours = combine(n, found[0][1], found[1][1]) if n.derive else found[0][1]
    protocols = [run_protocol(record, h, m or n.model) for (_, _, h), m in zip(found, models)]
    counts = [c for _, c in protocols if c is not None]
    return judge(n, ours, absent="the ratio's denominator is 0", model=model, random_weights=has_random_weights(record),
                 profile=str(record.get("profile")), resolution=protocols[0][0],
                 n_images=min(counts) if counts else None, proxy=budget_proxy(record, n.keys))


def budget_proxy(record: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    """Why the run measured ``keys`` on a reduced budget, from its ``numbers["budget"]`` (None: full budget).

    A budget entry ``budget.<task> = {"proxy": true, "why": ...}`` covers every key with a part that is
    ``<task>`` or starts with it (``imagenet`` covers ``reg.imagenet_top1`` and ``table1.imagenet1k.normal``).
    """
    budget = record["numbers"].get("budget")
    if not isinstance(budget, Mapping):
        return None
    for task, spent in budget.items():
        if not (isinstance(spent, Mapping) and spent.get("proxy") is True):
            continue
        if any(part.startswith(str(task)) for key in keys for part in key.split(".")):
            return str(spent.get("why") or f"budget.{task} is a proxy")
    return None


def _unfinished_text(notebook: str, outcome: Outcome, record: Mapping[str, Any] | None) -> str:
    """Why a notebook of the last run has no numbers: its outcome, and what became of an earlier results file."""
    what = {"failed": "failed", "interrupted": "was interrupted", "not run": "was not run"}[outcome.status]
    said = outcome.detail and not outcome.detail.startswith(outcome.status)  # not "interrupted (interrupted...)"
    text = f"{notebook} {what} in the last run" + (f" ({outcome.detail})" if said else "")
    if record is not None:
        text += f"; its results file is from an earlier run ({_created(record)}) and is not used"
    return text


def _created(record: Mapping[str, Any]) -> str:
    return str(record.get("created", "?"))[:16].replace("T", " ")


def evaluate(numbers: Sequence[PaperNumber], records: Mapping[str, Mapping[str, Any]],
             outcomes: RunOutcomes | None = None) -> list[Verdict]:
    """One verdict per paper number, in file order (none is ever dropped)."""
    return [row_for(n, records.get(n.notebook) if n.notebook else None,
                    outcomes.unfinished(n.notebook) if outcomes and n.notebook else None) for n in numbers]


# ---------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------
class ReportPaths(NamedTuple):
    """Where :func:`build_report` wrote the report."""

    md: Path
    html: Path


def _figures_by_notebook(figures_dir: Path, out_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """``{"02": [(file name, link relative to out_dir)]}`` for figures named ``NN_...``."""
    found: dict[str, list[tuple[str, str]]] = {}
    if not figures_dir.is_dir():
        return found
    for f in sorted(figures_dir.rglob("*")):
        m = re.match(r"(\d\d)[_-]", f.name)
        if f.is_file() and m and f.suffix.lower() in _FIGURE_SUFFIXES:
            found.setdefault(m.group(1), []).append((f.name, Path(os.path.relpath(f, out_dir)).as_posix()))
    return found


def _run_order() -> list[str]:
    """Notebook names of ``notebooks/order.yaml`` through :func:`vitreg.experiments.params.load_order` (empty without it)."""
    from vitreg.experiments import params

    try:
        return [str(e["notebook"]) for e in params.load_order() or []]
    except (OSError, TypeError, KeyError):
        return []


SYNTHETIC_LINE = ("SYNTHETIC REHEARSAL: every number below was drawn by vitreg.claims.rehearsal ({what}), "
                  "none was measured; the report shows what a real run's verdicts would be in that world.")


def _first_line(records: Mapping[str, Mapping[str, Any]], results_dir: Path, stale: bool = False) -> str:
    """What the report is made of (synthetic, smoke, partly smoke, pretrained, nothing): ``records`` are the
    used ones; ``stale``: there are results files, but only from an earlier run of notebooks the last run did
    not finish."""
    synthetic = sorted({str((r.get("params") or {}).get("synthetic", "synthetic")) for r in records.values()
                        if r.get("profile") == "rehearsal"})  # a notebook's own `synthetic` parameter is not one
    if synthetic:
        return SYNTHETIC_LINE.format(what="; ".join(synthetic))
    smoke = sorted(nb for nb, r in records.items() if is_smoke(r))
    if not records and stale:
        return (f"No results of the last run: the results files in `{results_dir}` are from an earlier run of "
                "notebooks that did not finish this time; every row below is marked not run.")
    if not records:
        return f"No results yet: no results files in `{results_dir}`; every row below is marked not run."
    if len(smoke) == len(records):
        return SMOKE_LINE.format(profiles=", ".join(sorted({str(records[nb].get("profile")) for nb in smoke})))
    if smoke:
        return ("PARTLY A SMOKE REPORT: the results of " + ", ".join(smoke)
                + " were made from random weights and synthetic data; their rows are not compared.")
    profiles = ", ".join(sorted({str(r.get("profile")) for r in records.values()}))
    return f"Made from pretrained weights (profile {profiles}) for every notebook that ran" + (
        "." if profiles == "real" else "; a lecture run uses small models on a few photos, not the paper's "
        "experiment: rows at other resolutions or image counts are marked not comparable.")


def _resolution_text(record: Mapping[str, Any]) -> str:
    """The resolutions the models of a run were measured at (``518 px``; ``224×322 px``)."""
    sizes = []
    for m in record.get("models", []):
        size = m.get("image_size")
        text = "×".join(map(str, size)) if isinstance(size, (list, tuple)) and len(set(size)) > 1 else \
            str(size[0] if isinstance(size, (list, tuple)) and size else size)
        if size is not None and text not in sizes:
            sizes.append(text)
    return (", ".join(sizes) + " px") if sizes else "—"


def _state(nb: str, record: Mapping[str, Any] | None, outcomes: RunOutcomes | None) -> str:
    """The notebooks table's state: ran, ran in an earlier run, or why the last run has nothing of it."""
    outcome = outcomes.unfinished(nb) if outcomes else None
    if outcome is not None:
        return _clip(_unfinished_text(nb, outcome, record).removeprefix(f"{nb} "), 160)
    if record is None:
        return "not run"
    if outcomes is not None and nb not in outcomes.notebooks:
        return "ran in an earlier run (not part of the last run)"
    return "ran"


def _notebook_rows(numbers: Sequence[PaperNumber], records: Mapping[str, Mapping[str, Any]], out_dir: Path,
                   notebooks_dir: Path, aliases: Mapping[str, str], outcomes: RunOutcomes | None = None
                   ) -> list[list[str]]:
    """One row per notebook: a link to the executed notebook where it exists, its state, models and protocol.

    A notebook the last run did not finish shows that (and when its stale results file was made), never
    the stale file's models or numbers.
    """
    rows = []
    for nb in sorted({n.notebook for n in numbers if n.notebook} | set(records) | set(_run_order())
                     | set(outcomes.notebooks if outcomes else ())):
        executed = notebooks_dir / f"{nb}.ipynb"
        name = f"[{nb}]({Path(os.path.relpath(executed, out_dir)).as_posix()})" if executed.is_file() else nb
        r = records.get(nb)
        state = _state(nb, r, outcomes)
        if r is None or state not in ("ran", "ran in an earlier run (not part of the last run)"):
            rows.append([name, state, "—", "—", "—", "—", "—", "—"])
            continue
        models = ", ".join(f"{m.get('name', m.get('key', '?'))}{'' if m.get('pretrained') else ' (random)'}"
                           for m in r["models"]) or "—"
        skipped = r["numbers"].get("skipped") or []
        skipped = "; ".join(_clip(rr.shorten(str(x), aliases)) for x in (skipped if isinstance(skipped, list)
                                                                          else [skipped]))
        n_images = (r.get("params") or {}).get("n_images", r["numbers"].get("n_images"))
        rows.append([name, state, str(r["profile"]), models, _resolution_text(r),
                     "—" if n_images is None else str(n_images), _created(r), skipped or "—"])
    return rows


def _clip(text: str, width: int = 90) -> str:
    """One skip reason of the notebooks table, cut at ``width`` characters (the rows below give it whole)."""
    return text if len(text) <= width else text[:width - 1].rstrip() + "…"


def _aliases(rows: Sequence[Verdict], records: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Short names for the absolute paths of the reasons (see :func:`vitreg.present.report_render.path_aliases`)."""
    texts = [v.why for v in rows] + [str(r["numbers"].get("skipped") or "") for r in records.values()]
    return rr.path_aliases(texts, str(repo_root()))


def report_context(results_dir: Path, out_dir: Path, figures_dir: Path, notebooks_dir: Path | None = None,
                   paper_numbers: str | os.PathLike | None = None) -> dict[str, Any]:
    """Everything the report shows, as plain data for the templates (reads and checks every file)."""
    try:
        findings, numbers = load_paper_numbers(paper_numbers)
    except PaperNumbersError as err:
        raise ReportSchemaError(str(err)) from err
    records = load_results_dir(results_dir, numbers)
    outcomes = load_outcomes(results_dir)
    rows = evaluate(numbers, records, outcomes)
    figures = _figures_by_notebook(figures_dir, out_dir)
    aliases = _aliases(rows, records)
    used = {nb: r for nb, r in records.items() if not (outcomes and outcomes.unfinished(nb))}
    first = _first_line(used, results_dir, stale=len(used) < len(records))
    smoke = first.startswith(("SMOKE REPORT", "PARTLY A SMOKE"))
    if outcomes is not None and outcomes.interrupted:
        first = f"{INTERRUPTED_LINE} {first}"
    summary_rows, causes = rr.summary(findings, rows)
    return {
        "first": first, "smoke": smoke or first.startswith("INTERRUPTED"),
        "title": "Reproduction report: Vision Transformers Need Registers",
        "intro": ("Darcet, Oquab, Mairal, Bojanowski, ICLR 2024 (arXiv 2309.16588). Paper values from "
                  "`data/paper_numbers.yaml`; ours from the results files in "
                  f"`{Path(os.path.relpath(results_dir, out_dir)).as_posix()}`. Difference = ours − paper, "
                  f"shown only for rows that were compared. {len(rows)} numbers."),
        "summary_rows": summary_rows, "causes": causes,
        "aliases": [(name, path) for path, name in aliases.items() if name],
        "nb_header": _NB_HEADER,
        "nb_rows": _notebook_rows(numbers, records, out_dir, notebooks_dir or _default_notebooks(results_dir), aliases,
                                  outcomes),
        "sections": [rr.section(fid, findings.get(fid), [v for v in rows if v.number.finding == fid], figures,
                                aliases) for fid in FINDINGS],
    }


def _default_notebooks(results_dir: Path) -> Path:
    """Where ``vitreg run`` puts the executed notebooks of a run whose results are in ``results_dir``:
    ``<out>/notebooks`` (smoke and ``--out`` runs), else ``build/notebooks`` (the real run)."""
    beside = results_dir.parent / "notebooks"
    return beside if beside.is_dir() else results_dir.parent / "build" / "notebooks"


def build_report(results_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 figures_dir: str | os.PathLike | None = None, *, notebooks_dir: str | os.PathLike | None = None,
                 paper_numbers: str | os.PathLike | None = None) -> ReportPaths:
    """Write ``report.md`` and ``report.html``: every paper number beside ours.

    Paper: all findings F1-F9 (Figs. 1-8, Tables 1-3, App. A, D, G).

    Args:
        results_dir: folder of the notebooks' results files (``<output_dir>/results``).
        out_dir: where to write the report (``build`` or ``build/smoke``).
        figures_dir: the notebooks' figures (default ``<results_dir>/../figures``); thumbnails per finding.
        notebooks_dir: the executed notebooks, linked from the notebooks table (default
            ``<results_dir>/../notebooks`` when it exists, else ``<results_dir>/../build/notebooks``).
        paper_numbers: the data file (default ``data/paper_numbers.yaml``).

    Returns:
        the paths of the Markdown and HTML files.

    Raises:
        ReportSchemaError: a results file or the data file does not match its schema.
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    figures_dir = Path(figures_dir) if figures_dir is not None else results_dir.parent / "figures"
    notebooks = Path(notebooks_dir) if notebooks_dir is not None else None
    md, page = rr.render(report_context(results_dir, out_dir, figures_dir, notebooks, paper_numbers))
    out_dir.mkdir(parents=True, exist_ok=True)
    return ReportPaths(atomic_write_text(out_dir / "report.md", md), atomic_write_text(out_dir / "report.html", page))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vitreg.present.report RESULTS_DIR OUT_DIR``: build the report, print its paths."""
    ap = argparse.ArgumentParser(prog="python -m vitreg.present.report", description=__doc__.splitlines()[0])
    ap.add_argument("results_dir", help="folder with the notebooks' results/*.json")
    ap.add_argument("out_dir", help="where to write report.md and report.html")
    ap.add_argument("--figures", default=None, help="figures folder (default RESULTS_DIR/../figures)")
    ap.add_argument("--notebooks", default=None, help="executed notebooks (default RESULTS_DIR/../notebooks, "
                    "else RESULTS_DIR/../build/notebooks)")
    ap.add_argument("--numbers", default=None, help="paper numbers YAML (default data/paper_numbers.yaml)")
    args = ap.parse_args(argv)
    try:
        paths = build_report(args.results_dir, args.out_dir, args.figures, notebooks_dir=args.notebooks,
                             paper_numbers=args.numbers)
    except ReportSchemaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(paths.md)
    print(paths.html)
    return 0


if __name__ == "__main__":
    sys.exit(main())
