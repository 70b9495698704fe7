"""The paper beside us: a generated reproduction report.

Paper: every finding (F1-F9 of ``../shared/paper-notes.md``); the numbers live in
``data/paper_numbers.yaml`` (one entry per number, with its source), never in the notebooks.

:func:`build_report` reads the results file of every notebook (``<results_dir>/<notebook>.json``,
written by :func:`vitreg.results.save_results`) and writes ``report.md`` and ``report.html``: one row
per paper number, grouped by finding, with the paper's value, ours, the difference and a status:

* ``reproduced``: ours is within the stated tolerance (or on the stated side of a bound);
* ``differs``: it is not;
* ``not run here``: no results file, the notebook skipped it (and said why), ours comes from random
  weights (smoke), or ours is about another model than the paper's number;
* ``not reproducible``: public assets do not allow it (the reason comes from the data file).

A missing result is a row marked ``not run here``, never a dropped row. A smoke report (random weights,
synthetic data) says so in its FIRST line.

Schema of a results file (checked; any mismatch raises :class:`ReportSchemaError` naming the file and
every problem):

* the envelope that ``save_results`` writes: ``schema`` (== ``vitreg.results.SCHEMA_VERSION``),
  ``notebook`` (str, == the file name without ``.json``), ``profile`` (str), ``random_weights`` (bool),
  ``models`` (list of dicts, each with a bool ``pretrained``), ``params`` (dict), ``versions`` (dict),
  ``created`` (str), ``numbers`` (dict);
* the notebook's own keys: every ``key`` that ``data/paper_numbers.yaml`` gives for that notebook must
  exist inside ``numbers`` (dotted path) and hold a finite number, or ``{"skipped": "<why>"}`` (a skip
  may also sit on any dict along the path, e.g. ``numbers["reg"] = {"skipped": "..."}``).

Command line: ``python -m vitreg.report RESULTS_DIR OUT_DIR [--figures DIR] [--numbers YAML]``.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from vitreg.io import atomic_write_text

#: The data file with the paper's numbers (relative to the repository root).
PAPER_NUMBERS = Path(__file__).resolve().parents[1] / "data" / "paper_numbers.yaml"
FINDINGS = tuple(f"F{i}" for i in range(1, 10))
Status = Literal["reproduced", "differs", "not run here", "not reproducible"]
STATUSES: tuple[Status, ...] = ("reproduced", "differs", "not run here", "not reproducible")
SMOKE_LINE = ("SMOKE REPORT: made from random weights and synthetic data (profile {profiles}); "
              "no number below says anything about the paper.")
_ENTRY_FIELDS = ("id", "finding", "source", "origin", "what", "value", "unit", "model", "notebook", "key",
                 "reproducible")
_FIGURE_SUFFIXES = (".png", ".svg", ".jpg")  # the PDF twins sit beside the PNGs


class ReportSchemaError(ValueError):
    """A results file or the paper-numbers file does not match its schema."""


# ---------------------------------------------------------------------------------------------------
# The paper's numbers
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PaperNumber:
    """One number of the paper (or of a reference the notes quote), as ``data/paper_numbers.yaml`` holds it."""

    id: str
    finding: str
    source: str
    origin: str
    what: str
    value: float | None
    unit: str
    model: str
    notebook: str | None
    key: str | None
    reproducible: bool | Literal["proxy"]
    compare: Literal["approx", "at_least", "at_most"] = "approx"
    tolerance: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Finding:
    """A finding of the paper (F1-F9) and the notebooks that serve it."""

    id: str
    title: str
    paper: str
    notebooks: tuple[str, ...] = ()
    note: str | None = None


def load_paper_numbers(path: str | os.PathLike | None = None) -> tuple[dict[str, Finding], list[PaperNumber]]:
    """Read and check ``data/paper_numbers.yaml``.

    Paper: all findings (the file is the one place the paper's numbers live).

    Args:
        path: the YAML file (default :data:`PAPER_NUMBERS`).

    Returns:
        ``(findings by id, numbers in file order)``.

    Raises:
        ReportSchemaError: a malformed entry (every problem is listed).
    """
    import yaml

    path = Path(path) if path is not None else PAPER_NUMBERS
    data = yaml.safe_load(path.read_text())
    problems: list[str] = []
    if not isinstance(data, dict) or not isinstance(data.get("numbers"), list) or not isinstance(data.get("findings"), dict):
        raise ReportSchemaError(f"{path}: expected a mapping with `findings` (dict) and `numbers` (list)")
    findings = {}
    for fid, f in data["findings"].items():
        if fid not in FINDINGS or not isinstance(f, dict) or "title" not in f:
            problems.append(f"finding {fid!r}: expected one of {FINDINGS} with a title")
            continue
        findings[fid] = Finding(fid, str(f["title"]), str(f.get("paper", "")), tuple(f.get("notebooks") or ()),
                                f.get("note"))
    numbers, seen = [], set()
    for i, e in enumerate(data["numbers"]):
        where = f"entry {i} ({e.get('id', '?') if isinstance(e, dict) else e!r})"
        if not isinstance(e, dict):
            problems.append(f"{where}: not a mapping")
            continue
        missing = [k for k in _ENTRY_FIELDS if k not in e]
        if missing:
            problems.append(f"{where}: missing {missing}")
            continue
        if e["id"] in seen:
            problems.append(f"{where}: duplicate id")
        seen.add(e["id"])
        if e["finding"] not in findings:
            problems.append(f"{where}: finding {e['finding']!r} is not among {sorted(findings)}")
        if (e["notebook"] is None) != (e["key"] is None):
            problems.append(f"{where}: give both notebook and key, or neither")
        rep = e["reproducible"]
        if rep not in (True, False, "proxy"):
            problems.append(f"{where}: reproducible must be true, false or proxy, got {rep!r}")
        if (rep is False or rep == "proxy" or e["notebook"] is None) and not e.get("reason"):
            problems.append(f"{where}: a number that is not (fully) reproducible, or that no notebook computes, needs a reason")
        compare = e.get("compare", "approx")
        if compare not in ("approx", "at_least", "at_most"):
            problems.append(f"{where}: compare must be approx, at_least or at_most, got {compare!r}")
        if e["notebook"] is not None and rep is not False:
            if e["value"] is None:
                problems.append(f"{where}: a compared number needs a value")
            if compare == "approx" and not isinstance(e.get("tolerance"), (int, float)):
                problems.append(f"{where}: compare approx needs a numeric tolerance")
        if e["value"] is not None and (isinstance(e["value"], bool) or not isinstance(e["value"], (int, float))):
            problems.append(f"{where}: value must be a number or null")
        numbers.append(PaperNumber(
            id=str(e["id"]), finding=str(e["finding"]), source=str(e["source"]), origin=str(e["origin"]),
            what=str(e["what"]), value=None if e["value"] is None else float(e["value"]), unit=str(e["unit"] or ""),
            model=str(e["model"]), notebook=e["notebook"], key=e["key"], reproducible=rep, compare=compare,
            tolerance=None if e.get("tolerance") is None else float(e["tolerance"]), reason=e.get("reason")))
    if problems:
        raise ReportSchemaError(f"{path} does not match its schema:\n  - " + "\n  - ".join(problems))
    return findings, numbers


# ---------------------------------------------------------------------------------------------------
# Results files
# ---------------------------------------------------------------------------------------------------
def _envelope_problems(record: Any, stem: str) -> list[str]:
    """What is wrong with the part of a results file that ``save_results`` writes."""
    from vitreg.results import REQUIRED_KEYS, SCHEMA_VERSION

    if not isinstance(record, dict):
        return [f"top level is {type(record).__name__}, expected an object"]
    problems = [f"missing key {k!r}" for k in REQUIRED_KEYS if k not in record]
    types = {"notebook": str, "profile": str, "random_weights": bool, "models": list, "params": dict,
             "versions": dict, "created": str, "numbers": dict}
    for k, t in types.items():
        if k in record and not isinstance(record[k], t):
            problems.append(f"{k!r} is {type(record[k]).__name__}, expected {t.__name__}")
    if "schema" in record and record["schema"] != SCHEMA_VERSION:
        problems.append(f"schema is {record['schema']!r}, this report reads schema {SCHEMA_VERSION} "
                        "(rerun the notebook, or update vitreg.report)")
    if isinstance(record.get("notebook"), str) and record["notebook"] != stem:
        problems.append(f"notebook is {record['notebook']!r} but the file is named {stem}.json")
    for i, m in enumerate(record.get("models") or []) if isinstance(record.get("models"), list) else ():
        if not isinstance(m, dict) or not isinstance(m.get("pretrained"), bool):
            problems.append(f"models[{i}] needs a bool 'pretrained' (vitreg.weights.LoadedModel.describe())")
    return problems


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
    keys_by_nb: dict[str, list[PaperNumber]] = {}
    for n in numbers:
        if n.notebook is not None:
            keys_by_nb.setdefault(n.notebook, []).append(n)
    for path in sorted(results_dir.glob("*.json")) if results_dir.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            errors.append(f"{path}: not valid JSON ({err})")
            continue
        problems = _envelope_problems(record, path.stem)
        if not problems:
            for n in keys_by_nb.get(record["notebook"], []):
                kind, what, _ = lookup(record["numbers"], n.key)
                if kind == "missing":
                    problems.append(f"numbers: {what} (paper number {n.id}; write it, or "
                                    f"{{'skipped': '<why>'}}, or fix `key` in data/paper_numbers.yaml)")
        if problems:
            errors.append(f"{path}:\n    - " + "\n    - ".join(problems))
        else:
            records[record["notebook"]] = record
    if errors:
        raise ReportSchemaError("results files do not match their schema (see vitreg/report.py):\n  "
                                + "\n  ".join(errors))
    return records


def is_smoke(record: Mapping[str, Any]) -> bool:
    """True for a results file made from random weights or under a profile other than ``real``."""
    return bool(record.get("random_weights")) or record.get("profile") != "real" or any(
        not m.get("pretrained", True) for m in record.get("models", []))


# ---------------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the report: a paper number beside ours."""

    number: PaperNumber
    status: Status
    why: str = ""
    ours: float | None = None
    diff: float | None = None
    ours_model: str | None = None


def _is_zoo_key(model: str) -> bool:
    return re.fullmatch(r"[a-z0-9_]+", model) is not None


def compare(number: PaperNumber, ours: float) -> bool:
    """Whether ``ours`` reproduces ``number`` (within its tolerance, or on the right side of its bound)."""
    assert number.value is not None
    if number.compare == "at_least":
        return ours >= number.value
    if number.compare == "at_most":
        return ours <= number.value
    return abs(ours - number.value) <= (number.tolerance or 0.0) + 1e-9


def evaluate(numbers: Sequence[PaperNumber], records: Mapping[str, Mapping[str, Any]]) -> list[Row]:
    """One :class:`Row` per paper number, in file order (none is ever dropped).

    Args:
        numbers: the paper numbers.
        records: ``{notebook: results record}`` (checked by :func:`load_results_dir`).

    Returns:
        the rows.
    """
    rows = []
    for n in numbers:
        if n.notebook is None:
            status: Status = "not reproducible" if n.reproducible is False else "not run here"
            rows.append(Row(n, status, n.reason or "no notebook computes it"))
            continue
        record = records.get(n.notebook)
        if record is None:
            status = "not reproducible" if n.reproducible is False else "not run here"
            why = f"{n.reason}; " if n.reproducible is False else ""
            rows.append(Row(n, status, f"{why}no results file for notebook {n.notebook}"))
            continue
        kind, got, holder = lookup(record["numbers"], n.key)
        ours_model = str(holder["model"]) if holder is not None and "model" in holder else None
        if kind == "skipped":
            status = "not reproducible" if n.reproducible is False else "not run here"
            why = f"{n.reason}; " if n.reproducible is False else ""
            rows.append(Row(n, status, f"{why}{n.notebook} skipped it: {got}", ours_model=ours_model))
            continue
        row = Row(n, "not run here", ours=got, ours_model=ours_model,
                  diff=None if n.value is None else got - n.value)
        if n.reproducible is False:
            row.status, row.why = "not reproducible", f"{n.reason} (ours shown for context)"
        elif is_smoke(record):
            row.why = f"random weights (profile {record.get('profile')}): not compared"
        elif ours_model is not None and _is_zoo_key(n.model) and ours_model != n.model:
            row.why = f"ours is from {ours_model}; this number is about {n.model}"
        else:
            row.status = "reproduced" if compare(n, got) else "differs"
            row.why = _criterion(n) + (f"; proxy: {n.reason}" if n.reproducible == "proxy" else "")
        rows.append(row)
    return rows


def _criterion(n: PaperNumber) -> str:
    if n.compare == "at_least":
        return f"paper: at least {_fmt(n.value, n)}"
    if n.compare == "at_most":
        return f"paper: at most {_fmt(n.value, n)}"
    return f"tolerance ±{_fmt(n.tolerance, n)}"


def _decimals(x: float) -> int:
    text = repr(float(x))
    return 0 if text.endswith(".0") else len(text.split(".")[1]) if "." in text and "e" not in text else 3


def _fmt(x: float | None, n: PaperNumber, *, signed: bool = False) -> str:
    """Format like the paper's value (its number of decimals, at least one for non-integers)."""
    if x is None:
        return "—"
    d = max(_decimals(n.value) if n.value is not None else 2, _decimals(n.tolerance) if n.tolerance else 0)
    if d == 0 and float(x) != round(float(x)):
        d = 1
    return f"{x:+.{d}f}" if signed else f"{x:.{d}f}"


# ---------------------------------------------------------------------------------------------------
# Document: one structure, rendered to Markdown and to HTML
# ---------------------------------------------------------------------------------------------------
@dataclass
class _Doc:
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: Sequence[str]) -> None:
        self.blocks.append(("ul", list(items)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.blocks.append(("table", (list(header), [list(r) for r in rows])))

    def links(self, items: Sequence[tuple[str, str]]) -> None:
        self.blocks.append(("links", list(items)))


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: _Doc) -> str:
    """Markdown text of a report document."""
    out = []
    for kind, body in doc.blocks:
        if kind == "h":
            out.append("#" * body[0] + " " + body[1])
        elif kind == "p":
            out.append(body)
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in body))
        elif kind == "links":
            out.append("Figures: " + ", ".join(f"[{name}]({href})" for name, href in body))
        elif kind == "table":
            header, rows = body
            lines = ["| " + " | ".join(_md_cell(c) for c in header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;max-width:80rem;margin:2rem auto;padding:0 1rem;line-height:1.4}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.25rem .5rem;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.reproduced{background:#e5f5e0}.differs{background:#fde0dd}.not-run-here{background:#f0f0f0}.not-reproducible{background:#fff7d6}
p.smoke{background:#fde0dd;border:2px solid #c00;padding:.5rem;font-weight:bold}"""


def render_html(doc: _Doc, title: str) -> str:
    """A standalone HTML page of a report document (no external assets)."""
    esc = html.escape
    out = [f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
           f"<style>{_CSS}</style></head><body>"]
    for kind, body in doc.blocks:
        if kind == "h":
            out.append(f"<h{body[0]}>{esc(body[1])}</h{body[0]}>")
        elif kind == "p":
            cls = ' class="smoke"' if body.startswith("SMOKE REPORT") or body.startswith("PARTLY A SMOKE") else ""
            out.append(f"<p{cls}>{_inline_html(body)}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in body) + "</ul>")
        elif kind == "links":
            out.append("<p>Figures: " + ", ".join(f'<a href="{esc(href)}">{esc(name)}</a>' for name, href in body)
                       + "</p>")
        elif kind == "table":
            header, rows = body
            status_col = header.index("status") if "status" in header else None
            out.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>")
            for r in rows:
                cls = f' class="{r[status_col].replace(" ", "-")}"' if status_col is not None else ""
                cells = "".join(f'<td class="num">{esc(c)}</td>' if _numeric(c) else f"<td>{_inline_html(c)}</td>"
                                for c in r)
                out.append(f"<tr{cls}>{cells}</tr>")
            out.append("</tbody></table>")
    out.append("</body></html>\n")
    return "\n".join(out)


def _numeric(text: str) -> bool:
    return re.fullmatch(r"[+\-−]?\d+(\.\d+)?|—", text) is not None


def _inline_html(text: str) -> str:
    """Escape, then turn ``**bold**``, ```code``` and ``[name](href)`` into HTML."""
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"`(.+?)`", r"<code>\1</code>", t)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', t)


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
    """Notebook names of ``notebooks/order.yaml`` (empty when the file is not there)."""
    import yaml

    order = PAPER_NUMBERS.parents[1] / "notebooks" / "order.yaml"
    try:
        return [str(e["notebook"]) for e in yaml.safe_load(order.read_text()) or []]
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
    findings, numbers = load_paper_numbers(paper_numbers)
    records = load_results_dir(results_dir, numbers)
    rows = evaluate(numbers, records)
    figures = _figures_by_notebook(figures_dir, out_dir)

    doc = _Doc()
    doc.p(_first_line(records, results_dir))
    doc.h(1, "Reproduction report: Vision Transformers Need Registers")
    doc.p("Darcet, Oquab, Mairal, Bojanowski, ICLR 2024 (arXiv 2309.16588). Paper values from "
          "`data/paper_numbers.yaml`; ours from the results files in "
          f"`{Path(os.path.relpath(results_dir, out_dir)).as_posix()}`. Difference = ours − paper.")
    counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
    doc.p("**" + " · ".join(f"{s}: {c}" for s, c in counts.items()) + f"** (of {len(rows)} numbers)")
    doc.ul([
        "**reproduced**: within the stated tolerance (our choice, in the data file) or on the stated side of a bound;",
        "**differs**: outside it;",
        "**not run here**: no results, the notebook skipped it (reason given), random weights, or another model;",
        "**not reproducible**: public assets do not allow it (reason given; ours shown for context where a "
        "public stand-in ran).",
        "origin: paper = the paper; TTR = Jiang et al. 2025 targets for the public DINOv2-L pair; DINOv2 = the "
        "public model card; reproduction = an independent public reproduction quoted in the notes.",
    ])

    doc.h(2, "Notebooks")
    nb_rows = []
    for nb in sorted({n.notebook for n in numbers if n.notebook} | set(records) | set(_run_order())):
        r = records.get(nb)
        if r is None:
            nb_rows.append([nb, "not run", "—", "—", "—", "—"])
            continue
        models = ", ".join(f"{m.get('name', m.get('key', '?'))}{'' if m.get('pretrained') else ' (random)'}"
                           for m in r["models"]) or "—"
        skipped = r["numbers"].get("skipped") or []
        skipped = "; ".join(map(str, skipped)) if isinstance(skipped, list) else str(skipped)
        nb_rows.append([nb, "ran", str(r["profile"]), models, str(r["created"]), skipped or "—"])
    doc.table(["notebook", "state", "profile", "models", "created", "skipped (as the notebook said)"], nb_rows)

    for fid in FINDINGS:
        f = findings.get(fid)
        doc.h(2, f"{fid}. {f.title if f else ''}".strip())
        if f is not None:
            doc.p(f"Paper: {f.paper}. Notebooks: {', '.join(f.notebooks) or '—'}.")
            if f.note:
                doc.p(f.note)
        f_rows = [r for r in rows if r.number.finding == fid]
        if f_rows:
            doc.table(["id", "what", "source", "origin", "model", "paper", "ours", "diff", "status", "why"],
                      [[r.number.id, r.number.what, r.number.source, r.number.origin,
                        r.number.model + (f" (ours: {r.ours_model})" if r.ours_model and r.ours_model != r.number.model else ""),
                        (_fmt(r.number.value, r.number) + (f" {r.number.unit}" if r.number.unit else "")
                         if r.number.value is not None else "plot only"),
                        _fmt(r.ours, r.number), _fmt(r.diff, r.number, signed=True), r.status, r.why]
                       for r in f_rows])
        else:
            doc.p("No numbers: the paper reports this finding with figures only.")
        nbs = f.notebooks if f else ()
        links = [item for nb in nbs for item in figures.get(nb[:2], [])]
        if links:
            doc.links(links)

    out_dir.mkdir(parents=True, exist_ok=True)
    md = atomic_write_text(out_dir / "report.md", render_markdown(doc))
    page = atomic_write_text(out_dir / "report.html", render_html(doc, "vitreg reproduction report"))
    return ReportPaths(md, page)


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
