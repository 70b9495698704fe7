"""The paper beside us: a generated reproduction report.

Paper: every finding (F1-F9 of the project's paper notes); the numbers live in
``data/paper_numbers.yaml`` (one entry per number, with its source and its tolerance), read only through
:mod:`vitreg.paper`, never in the notebooks.

:func:`build_report` reads the results file of every notebook (``<results_dir>/<notebook>.json``,
written by :func:`vitreg.results.save_results`) and writes ``report.md`` and ``report.html``: one row
per paper number, grouped by finding, with the paper's value, ours, the difference and a status. Every
status comes from :func:`vitreg.paper.judge`, the same function behind the notebooks' ``paper.check``,
so a notebook's verdict and the report's row cannot disagree:

* ``reproduced``: ours is within the stated tolerance (or on the stated side of a bound);
* ``differs``: it is not;
* ``not run here``: no results file, the notebook skipped it (and said why), ours comes from random
  weights (smoke), or ours is about another model than the paper's number;
* ``not reproducible``: public assets do not allow it (the reason comes from the data file).

Markdown and HTML are rendered from one context by two Jinja2 templates; free text in the HTML goes
through mistune (Markdown to HTML).

A missing result is a row marked ``not run here``, never a dropped row. A smoke report (random weights,
synthetic data) says so in its FIRST line.

Schema of a results file (checked; any mismatch raises :class:`ReportSchemaError` naming the file and
every problem):

* the envelope: :data:`vitreg.results.RESULTS_SCHEMA` (the JSON schema ``save_results`` checks too), and
  ``notebook`` == the file name without ``.json``;
* the notebook's own keys: every ``key`` that ``data/paper_numbers.yaml`` gives for that notebook must
  exist inside ``numbers`` (dotted path) and hold a finite number, or ``{"skipped": "<why>"}`` (a skip
  may also sit on any dict along the path, e.g. ``numbers["reg"] = {"skipped": "..."}``). An entry
  marked ``awaiting_key`` is exempt until its notebook writes the key (its row says so).

Command line: ``python -m vitreg.report RESULTS_DIR OUT_DIR [--figures DIR] [--numbers YAML]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, NamedTuple

from vitreg import paper
from vitreg.io import atomic_write_text
from vitreg.paper import (FINDINGS, STATUSES, Finding, PaperNumber, PaperNumbersError, Verdict, fmt,
                          judge, load_paper_numbers, meets)
from vitreg.results import envelope_problems

__all__ = ["FINDINGS", "STATUSES", "ReportPaths", "ReportSchemaError", "build_report", "evaluate", "is_smoke",
           "load_paper_numbers", "load_results_dir", "lookup", "main", "meets"]

#: A report row is a verdict of :func:`vitreg.paper.judge` (kept as a name for readers of the report).
Row = Verdict
SMOKE_LINE = ("SMOKE REPORT: made from random weights and synthetic data (profile {profiles}); "
              "no number below says anything about the paper.")
_FIGURE_SUFFIXES = (".png", ".svg", ".jpg")  # the PDF twins sit beside the PNGs
_LEGEND = [
    "**reproduced**: within the stated tolerance (our choice, in the data file) or on the stated side of a bound;",
    "**differs**: outside it;",
    "**not run here**: no results, the notebook skipped it (reason given), random weights, or another model;",
    "**not reproducible**: public assets do not allow it (reason given; ours shown for context where a "
    "public stand-in ran).",
    "origin: paper = the paper; TTR = Jiang et al. 2025 targets for the public DINOv2-L pair; DINOv2 = the "
    "public model card; reproduction = an independent public reproduction quoted in the notes.",
]
_ROW_HEADER = ["id", "what", "source", "origin", "model", "paper", "ours", "diff", "status", "why"]
_NB_HEADER = ["notebook", "state", "profile", "models", "created", "skipped (as the notebook said)"]


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
        ``("value", number, holder)``, ``("skipped", reason, holder)`` or ``("missing", what, None)``;
        ``holder`` is the dict that holds the last step (it may name the ``model``).
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
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node):
        return "missing", f"{key!r} holds {node!r}, expected a finite number or {{'skipped': '<why>'}}", None
    return "value", float(node), holder


def _key_problems(record: dict, numbers: Sequence[PaperNumber]) -> list[str]:
    """The paper numbers' keys that ``record`` lacks (entries still awaiting their key are exempt)."""
    problems = []
    for n in numbers:
        if n.notebook != record["notebook"] or n.awaiting_key:
            continue
        kind, what, _ = lookup(record["numbers"], n.key)
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
        raise ReportSchemaError("results files do not match their schema (vitreg.results.RESULTS_SCHEMA and "
                                "data/paper_numbers.yaml):\n  " + "\n  ".join(errors))
    return records


def is_smoke(record: Mapping[str, Any]) -> bool:
    """True for a results file made from random weights or under a profile other than ``real``."""
    return bool(record.get("random_weights")) or record.get("profile") != "real" or any(
        not m.get("pretrained", True) for m in record.get("models", []))


# ---------------------------------------------------------------------------------------------------
# Rows: every status through vitreg.paper.judge
# ---------------------------------------------------------------------------------------------------
def row_for(n: PaperNumber, record: Mapping[str, Any] | None) -> Verdict:
    """The verdict on ``n`` given its notebook's results ``record`` (None: no results file)."""
    if n.notebook is None:
        return judge(n, None)
    if record is None:
        return judge(n, None, absent=f"no results file for notebook {n.notebook}")
    kind, got, holder = lookup(record["numbers"], n.key)
    model = str(holder["model"]) if holder is not None and "model" in holder else None
    if kind == "missing":  # only entries awaiting their key get here (load_results_dir checks the rest)
        return judge(n, None, absent=f"{n.notebook} does not write {n.key!r} yet", model=model)
    if kind == "skipped":
        return judge(n, None, absent=f"{n.notebook} skipped it: {got}", model=model)
    return judge(n, got, model=model, random_weights=is_smoke(record), profile=str(record.get("profile")))


def evaluate(numbers: Sequence[PaperNumber], records: Mapping[str, Mapping[str, Any]]) -> list[Verdict]:
    """One verdict per paper number, in file order (none is ever dropped)."""
    return [row_for(n, records.get(n.notebook) if n.notebook else None) for n in numbers]


# ---------------------------------------------------------------------------------------------------
# Rendering: one context, two Jinja2 templates (Markdown and HTML); free text through mistune
# ---------------------------------------------------------------------------------------------------
_MD = """{{ first }}

# {{ title }}

{{ intro }}

**{{ counts }}** (of {{ total }} numbers)

{% for item in legend %}- {{ item }}
{% endfor %}
## Notebooks

{{ table(nb_header, nb_rows) }}
{% for s in sections %}
## {{ s.heading }}
{% for p in s.paragraphs %}
{{ p }}
{% endfor %}{% if s.rows %}
{{ table(row_header, s.rows) }}
{% endif %}{% if s.links %}
Figures: {% for name, href in s.links %}[{{ name }}]({{ href }}){{ ", " if not loop.last }}{% endfor %}
{% endif %}{% endfor %}"""

_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ page_title }}</title><style>{{ css }}</style></head><body>
<p{% if smoke %} class="smoke"{% endif %}>{{ first | inline }}</p>
<h1>{{ title }}</h1>
<p>{{ intro | inline }}</p>
<p>{{ ("**" ~ counts ~ "** (of " ~ total ~ " numbers)") | inline }}</p>
<ul>{% for item in legend %}<li>{{ item | inline }}</li>{% endfor %}</ul>
<h2>Notebooks</h2>
{{ html_table(nb_header, nb_rows) }}
{% for s in sections %}<h2>{{ s.heading }}</h2>
{% for p in s.paragraphs %}<p>{{ p | inline }}</p>
{% endfor %}{% if s.rows %}{{ html_table(row_header, s.rows) }}
{% endif %}{% if s.links %}<p>Figures: {% for name, href in s.links %}<a href="{{ href }}">{{ name }}</a>{{ ", " if not loop.last }}{% endfor %}</p>
{% endif %}{% endfor %}</body></html>
"""

_CSS = """body{font-family:system-ui,sans-serif;max-width:80rem;margin:2rem auto;padding:0 1rem;line-height:1.4}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.25rem .5rem;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.reproduced{background:#e5f5e0}.differs{background:#fde0dd}.not-run-here{background:#f0f0f0}.not-reproducible{background:#fff7d6}
p.smoke{background:#fde0dd;border:2px solid #c00;padding:.5rem;font-weight:bold}"""


@lru_cache(maxsize=1)
def _inline_markdown() -> Any:
    import mistune

    return mistune.create_markdown(escape=True)


def _inline(text: str) -> Any:
    """Markdown inline markup (bold, code, links) as safe HTML, without the wrapping paragraph."""
    from markupsafe import Markup

    out = _inline_markdown()(str(text)).strip()
    return Markup(re.sub(r"^<p>(.*)</p>$", r"\1", out, flags=re.S))


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows])


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> Any:
    from markupsafe import Markup, escape

    status_col = header.index("status") if "status" in header else None
    out = ["<table><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for r in rows:
        cls = f' class="{escape(r[status_col].replace(" ", "-"))}"' if status_col is not None else ""
        cells = "".join(f'<td class="num">{escape(c)}</td>' if re.fullmatch(r"[+\-−]?\d+(\.\d+)?|—", c)
                        else f"<td>{_inline(c)}</td>" for c in r)
        out.append(f"<tr{cls}>{cells}</tr>")
    return Markup("\n".join(out + ["</tbody></table>"]))


def render(context: Mapping[str, Any]) -> tuple[str, str]:
    """``(markdown, html)`` of a report context (see :func:`report_context`)."""
    import jinja2

    env = jinja2.Environment(autoescape=False, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    md = env.from_string(_MD).render(**context, table=_md_table)
    md = re.sub(r"\n{3,}", "\n\n", md).strip() + "\n"
    html_env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html_env.filters["inline"] = _inline
    page = html_env.from_string(_HTML).render(**context, html_table=_html_table, css=_CSS,
                                              page_title="vitreg reproduction report")
    return md, page


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
    """Notebook names of ``notebooks/order.yaml`` (empty when the file is not there).

    Reads it through ``vitreg.params.load_order`` (the one reader) where that exists; until then,
    beside the data file. TODO(lead, at merge): drop the fallback once ``params.load_order`` is in.
    """
    from vitreg import params

    try:
        load = getattr(params, "load_order", None)
        if load is not None:
            entries = load()
        else:
            import yaml

            entries = yaml.safe_load((paper.PAPER_NUMBERS.parents[1] / "notebooks" / "order.yaml").read_text())
        return [str(e["notebook"]) for e in entries or []]
    except (OSError, TypeError, KeyError):
        return []


def _first_line(records: Mapping[str, Mapping[str, Any]], results_dir: Path) -> str:
    smoke = sorted(nb for nb, r in records.items() if is_smoke(r))
    if not records:
        return f"No results yet: no results files in `{results_dir}`; every row below is marked not run."
    if len(smoke) == len(records):
        profiles = ", ".join(sorted({str(records[nb].get("profile")) for nb in smoke}))
        return SMOKE_LINE.format(profiles=profiles)
    if smoke:
        return ("PARTLY A SMOKE REPORT: the results of " + ", ".join(smoke)
                + " were made from random weights and synthetic data; their rows are not compared.")
    return "Made from pretrained weights (profile real) for every notebook that ran."


def _notebook_rows(numbers: Sequence[PaperNumber], records: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for nb in sorted({n.notebook for n in numbers if n.notebook} | set(records) | set(_run_order())):
        r = records.get(nb)
        if r is None:
            rows.append([nb, "not run", "—", "—", "—", "—"])
            continue
        models = ", ".join(f"{m.get('name', m.get('key', '?'))}{'' if m.get('pretrained') else ' (random)'}"
                           for m in r["models"]) or "—"
        skipped = r["numbers"].get("skipped") or []
        skipped = "; ".join(map(str, skipped)) if isinstance(skipped, list) else str(skipped)
        rows.append([nb, "ran", str(r["profile"]), models, str(r["created"]), skipped or "—"])
    return rows


def _cells(v: Verdict) -> list[str]:
    n = v.number
    model = n.model + (f" (ours: {v.ours_model})" if v.ours_model and v.ours_model != n.model else "")
    bound = {"at_least": "≥ ", "at_most": "≤ "}.get(n.compare, "") if n.notebook is not None else ""
    shown = (bound + fmt(n.value, n) + (f" {n.unit}" if n.unit else "")) if n.value is not None else "plot only"
    return [n.id, n.what, n.source, n.origin, model, shown, fmt(v.ours, n), fmt(v.diff, n, signed=True),
            v.status, v.why]


def _section(fid: str, f: Finding | None, rows: Sequence[Verdict], figures: Mapping[str, list]) -> dict[str, Any]:
    paragraphs = []
    if f is not None:
        paragraphs.append(f"Paper: {f.paper}. Notebooks: {', '.join(f.notebooks) or '—'}.")
        if f.note:
            paragraphs.append(f.note)
    f_rows = [_cells(v) for v in rows if v.number.finding == fid]
    if not f_rows:
        paragraphs.append("No numbers: the paper reports this finding with figures only.")
    links = [item for nb in (f.notebooks if f else ()) for item in figures.get(nb[:2], [])]
    return {"heading": f"{fid}. {f.title if f else ''}".strip(), "paragraphs": paragraphs, "rows": f_rows,
            "links": links}


def report_context(results_dir: Path, out_dir: Path, figures_dir: Path,
                   paper_numbers: str | os.PathLike | None = None) -> dict[str, Any]:
    """Everything the report shows, as plain data for the templates (reads and checks every file)."""
    try:
        findings, numbers = load_paper_numbers(paper_numbers)
    except PaperNumbersError as err:
        raise ReportSchemaError(str(err)) from err
    records = load_results_dir(results_dir, numbers)
    rows = evaluate(numbers, records)
    figures = _figures_by_notebook(figures_dir, out_dir)
    counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
    first = _first_line(records, results_dir)
    return {
        "first": first, "smoke": first.startswith(("SMOKE REPORT", "PARTLY A SMOKE")),
        "title": "Reproduction report: Vision Transformers Need Registers",
        "intro": ("Darcet, Oquab, Mairal, Bojanowski, ICLR 2024 (arXiv 2309.16588). Paper values from "
                  "`data/paper_numbers.yaml`; ours from the results files in "
                  f"`{Path(os.path.relpath(results_dir, out_dir)).as_posix()}`. Difference = ours − paper."),
        "counts": " · ".join(f"{s}: {c}" for s, c in counts.items()), "total": len(rows),
        "legend": _LEGEND, "nb_header": _NB_HEADER, "nb_rows": _notebook_rows(numbers, records),
        "row_header": _ROW_HEADER,
        "sections": [_section(fid, findings.get(fid), rows, figures) for fid in FINDINGS],
    }


def build_report(results_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 figures_dir: str | os.PathLike | None = None, *,
                 paper_numbers: str | os.PathLike | None = None) -> ReportPaths:
    """Write ``report.md`` and ``report.html``: every paper number beside ours.

    Paper: all findings F1-F9 (Figs. 1-8, Tables 1-3, App. A, D, G).

    Args:
        results_dir: folder of the notebooks' results files (``<output_dir>/results``).
        out_dir: where to write the report (``build`` or ``build/smoke``).
        figures_dir: the notebooks' figures (default ``<results_dir>/../figures``); linked per finding.
        paper_numbers: the data file (default ``data/paper_numbers.yaml``).

    Returns:
        the paths of the Markdown and HTML files.

    Raises:
        ReportSchemaError: a results file or the data file does not match its schema.
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    figures_dir = Path(figures_dir) if figures_dir is not None else results_dir.parent / "figures"
    md, page = render(report_context(results_dir, out_dir, figures_dir, paper_numbers))
    out_dir.mkdir(parents=True, exist_ok=True)
    return ReportPaths(atomic_write_text(out_dir / "report.md", md), atomic_write_text(out_dir / "report.html", page))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vitreg.report RESULTS_DIR OUT_DIR``: build the report, print its paths."""
    ap = argparse.ArgumentParser(prog="python -m vitreg.report", description=__doc__.splitlines()[0])
    ap.add_argument("results_dir", help="folder with the notebooks' results/*.json")
    ap.add_argument("out_dir", help="where to write report.md and report.html")
    ap.add_argument("--figures", default=None, help="figures folder (default RESULTS_DIR/../figures)")
    ap.add_argument("--numbers", default=None, help="paper numbers YAML (default data/paper_numbers.yaml)")
    args = ap.parse_args(argv)
    try:
        paths = build_report(args.results_dir, args.out_dir, args.figures, paper_numbers=args.numbers)
    except ReportSchemaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(paths.md)
    print(paths.html)
    return 0


if __name__ == "__main__":
    sys.exit(main())
