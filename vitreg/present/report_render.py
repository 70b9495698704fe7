"""Rendering of the reproduction report: verdicts into a scannable page (Markdown and HTML).

Paper: every finding (F1-F9); the verdicts come from :func:`vitreg.claims.paper.judge` through
:mod:`vitreg.present.report`, which also reads the results files. This module only arranges them:

* at the top, a verdict per finding from its primary claims alone (:func:`finding_verdict`), with the count
  of each status, and "not run here" split by cause;
* per finding, one table of the numbers that have a value of ours (compared, not comparable, not
  applicable: random weights, another model), then the rows without one folded into one line per reason (not run here,
  by cause and reason; not reproducible, by reason), each listing its ids so none is dropped;
* the justification of each rule (``why`` in the data file) once per finding, with the ids it covers;
* figure thumbnails (HTML; links in Markdown) and links to the executed notebooks, relative to the report.

Markdown and HTML come from one context and two Jinja2 templates; free text in the HTML goes through
mistune (Markdown inline markup to safe HTML).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from vitreg.claims.paper import CAUSES, COMPARED, FINDINGS, STATUSES, Finding, Verdict, fmt

ROW_HEADER = ["id", "what", "source", "model", "paper", "ours", "diff", "status", "why"]
SUMMARY_HEADER = ["finding", "verdict", *STATUSES]
LEGEND = [
    "**reproduced**: ours (its 95% interval where the results give one, shown in brackets with its n) lies on "
    "the paper's side of no effect and within the stated tolerance (our choice, justified in the data file) or "
    "on the stated side of a bound; a *delta* row checks the sign and the size of a difference (a − b), a "
    "*ratio* row a / b; no effect is never reproduced;",
    "**differs**: the interval excludes every value the rule accepts (another size, or the wrong side);",
    "**inconclusive**: the interval holds both no effect (or both sides of a bound) and the paper's effect; the "
    "row says roughly how many images or samples would decide it;",
    "**primary** (★): a finding's pre-registered claims; its verdict comes from them alone (differs if one "
    "differs, else inconclusive if one is, else reproduced). Every other row is context with its own status, "
    "and a row marked *proxy* (a reduced budget, or a public stand-in) never decides a finding (*proxy only*: "
    "every primary claim was a proxy); a finding that names none reads *no primary claim*;",
    "**not comparable**: ours was measured under another protocol (resolution, too few images) than the number;",
    "**not applicable**: ours comes from random weights; the paper's numbers are about trained models, so ours "
    "is shown for context and never compared;",
    "**not run here**: no results file, the notebook failed, was interrupted or was not run in the last run "
    "(an earlier run's results are not used), skipped by the notebook (reason given), not written yet, or "
    "another model;",
    "**not reproducible**: public assets do not allow it (reason given).",
    "origin: paper = the paper; TTR = Jiang et al. 2025 targets for the public DINOv2-L pair; DINOv2 = the "
    "public model card; reproduction = an independent public reproduction quoted in data/paper_numbers.yaml; Sun2024 = "
    "Sun et al. 2024 (massive activations); DVT = Yang et al. 2024 (Denoising ViT).",
]
_PATH = re.compile(r"(?<![\w.$<>])/[\w+\-][\w.+\-]*(?:/[\w.+\-]+)+")  # absolute, at least two parts


# ---------------------------------------------------------------------------------------------------
# Short reasons: absolute paths once, not on every row
# ---------------------------------------------------------------------------------------------------
def path_aliases(texts: Sequence[str], repo_root: str) -> dict[str, str]:
    """``{absolute prefix: short name}`` for the paths in ``texts``: the repository root becomes a relative
    path, and the deepest folder shared by every other path becomes ``DATA`` (named once in the report)."""
    aliases = {repo_root.rstrip("/") + "/": ""}
    paths = [p for t in texts for p in _PATH.findall(t) if not p.startswith(repo_root.rstrip("/") + "/")]
    if len(paths) >= 2:
        common = os.path.commonpath(paths)
        if common.count("/") >= 2:
            aliases = {common.rstrip("/"): "DATA", **aliases}
    return aliases


def shorten(text: str, aliases: Mapping[str, str]) -> str:
    """``text`` with each aliased absolute prefix replaced (longest first)."""
    for prefix in sorted(aliases, key=len, reverse=True):
        text = text.replace(prefix, aliases[prefix])
    return text


# ---------------------------------------------------------------------------------------------------
# Rows, folded lines and sections
# ---------------------------------------------------------------------------------------------------
def ours_text(v: Verdict) -> str:
    """Ours as the row shows it: the value, its 95% interval and n where the results give them."""
    n = v.number
    text = fmt(v.ours, n)
    if v.ci is not None:
        text += f" [{fmt(v.ci[0], n)}, {fmt(v.ci[1], n)}]"
    if v.n is not None and v.ours is not None:
        text += f" (n = {v.n:,})"
    return text


def cells(v: Verdict, aliases: Mapping[str, str], primary: frozenset[str] = frozenset()) -> list[str]:
    """One table row: id (★ for a primary claim), what, source, model, paper, ours (with its interval), diff
    (compared rows only), status, why."""
    n = v.number
    model = n.model + (f" (ours: {v.ours_model})" if v.ours_model and v.ours_model != n.model else "")
    bound = {"at_least": "≥ ", "at_most": "≤ "}.get(n.compare, "") if n.notebook is not None else ""
    shown = (bound + fmt(n.value, n) + (f" {n.unit}" if n.unit else "")) if n.value is not None else "plot only"
    what = n.what + (f" ({n.derive}: {n.source_text})" if n.derive else "")
    source = n.source if n.origin in n.source or n.origin == "paper" else f"{n.source} · {n.origin}"
    protocol = [f"{n.resolution} px" if n.resolution else "", f"{n.images} images" if n.images else "",
                f"needs ≥ {n.min_images} images" if n.min_images else ""]
    if any(protocol) and not all(p and p in source for p in protocol if p):
        source += " · protocol: " + ", ".join(p for p in protocol if p)
    why = "not applicable: random weights" if v.status == "not applicable" else shorten(v.why, aliases)
    return [("★ " if n.id in primary else "") + n.id, what, source, model, shown, ours_text(v),
            fmt(v.diff, n, signed=True), v.status, why]


def _folded(rows: Sequence[Verdict], aliases: Mapping[str, str]) -> list[dict[str, Any]]:
    """Rows without a value of ours, one line per (status, cause, short reason), in first-seen order."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for v in rows:
        reason = v.number.reason if v.status == "not reproducible" and v.number.reason else v.why
        if v.cause == "not written yet":  # one line per notebook, not per key (the ids name the keys)
            reason = f"{v.number.notebook} does not write these numbers yet"
        groups.setdefault((v.status, v.cause or "", shorten(reason, aliases)), []).append(v.id)
    order = sorted(groups, key=lambda g: (STATUSES.index(g[0]), CAUSES.index(g[1]) if g[1] in CAUSES else 0))
    return [{"status": s, "cause": c, "reason": r, "ids": groups[(s, c, r)]} for s, c, r in order]


def _rules(rows: Sequence[Verdict]) -> list[dict[str, Any]]:
    """The justification of each rule (``why``), once, with the ids it covers."""
    found: dict[str, list[str]] = {}
    for v in rows:
        if v.number.why:
            found.setdefault(v.number.why, []).append(v.id)
    return [{"why": w, "ids": ids} for w, ids in found.items()]


def finding_verdict(rows: Sequence[Verdict], primary: Sequence[str] = ()) -> str:
    """One word per finding, from its primary claims alone.

    Paper: each finding's pre-registered claims (``primary`` in the data file). Of the primary rows that were
    compared and are not proxies: differs if one differs, else inconclusive if one is, else reproduced. A level
    row, a context row or a proxy never decides: with no decisive primary row the finding reads "proxy only"
    (primaries compared on proxies only), else not comparable, not applicable (random weights), not
    reproducible (public assets allow none of it), "no primary claim" (rows were compared, but the finding
    names no claim that decides it) or not run.
    """
    chosen = [v for v in rows if v.id in set(primary)]
    decisive = [v for v in chosen if v.status in COMPARED and v.proxy is None]
    for status in ("differs", "inconclusive", "reproduced"):
        if any(v.status == status for v in decisive):
            return status
    if any(v.status in COMPARED for v in chosen):
        return "proxy only"
    for status in ("not comparable", "not applicable"):
        if any(v.status == status for v in chosen or rows):
            return status
    if rows and all(v.status == "not reproducible" for v in rows):
        return "not reproducible"
    if not primary and any(v.status in COMPARED for v in rows):
        return "no primary claim"
    return "not run"


def section(fid: str, f: Finding | None, rows: Sequence[Verdict], figures: Mapping[str, list],
            aliases: Mapping[str, str]) -> dict[str, Any]:
    """The context of one finding's section."""
    paragraphs = []
    if f is not None:
        paragraphs.append(f"Paper: {f.paper}. Notebooks: {', '.join(f.notebooks) or '—'}.")
        if f.note:
            paragraphs.append(f.note)
    if not rows:
        paragraphs.append("No numbers: the paper reports this finding with figures only.")
    primary = frozenset(f.primary if f else ())
    if primary:
        paragraphs.append("Primary claims (★; the finding's verdict comes from them alone): "
                          + ", ".join(sorted(primary)) + ".")
    shown = [v for v in rows if v.ours is not None and v.status != "not reproducible"]
    folded = [v for v in rows if v.ours is None or v.status == "not reproducible"]
    table = [cells(v, aliases, primary) for v in shown]
    header = ROW_HEADER
    if all(v.diff is None for v in shown):  # nothing compared (random weights, other models): no diff column
        header = [h for h in ROW_HEADER if h != "diff"]
        table = [r[:6] + r[7:] for r in table]
    return {"heading": f"{fid}. {f.title if f else ''}".strip(), "paragraphs": paragraphs, "header": header,
            "rows": table, "folded": _folded(folded, aliases),
            "rules": _rules(rows), "verdict": finding_verdict(rows, tuple(primary)),
            "figures": [item for nb in (f.notebooks if f else ()) for item in figures.get(nb[:2], [])]}


def summary(findings: Mapping[str, Finding], rows: Sequence[Verdict]) -> tuple[list[list[str]], str]:
    """The verdict-per-finding table (with a total row) and the "not run here" causes in one line (causes
    beyond :data:`vitreg.claims.paper.CAUSES`, such as the report's "notebook failed", come first)."""
    table = []
    for fid in FINDINGS:
        f_rows = [v for v in rows if v.number.finding == fid]
        title = findings[fid].title if fid in findings else ""
        primary = findings[fid].primary if fid in findings else ()
        table.append([f"{fid}. {title}", finding_verdict(f_rows, primary),
                      *[str(sum(v.status == s for v in f_rows)) for s in STATUSES]])
    table.append(["all", "", *[str(sum(v.status == s for v in rows)) for s in STATUSES]])
    seen = [c for c in dict.fromkeys(v.cause for v in rows if v.status == "not run here") if c and c not in CAUSES]
    causes = [(c, sum(v.cause == c for v in rows if v.status == "not run here")) for c in (*seen, *CAUSES)]
    return table, "; ".join(f"{c}: {k}" for c, k in causes if k) or "none"


# ---------------------------------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------------------------------
_MD = """{{ first }}

# {{ title }}

{{ intro }}

## Verdicts

{{ table(summary_header, summary_rows) }}

Not run here, by cause: {{ causes }}.
{% if aliases %}
Paths: {% for name, path in aliases %}`{{ name }}` = `{{ path }}`{{ "; " if not loop.last }}{% endfor %}.
{% endif %}
{% for item in legend %}- {{ item }}
{% endfor %}
## Notebooks

{{ table(nb_header, nb_rows) }}
{% for s in sections %}
## {{ s.heading }}

Verdict: **{{ s.verdict }}**.
{% for p in s.paragraphs %}
{{ p }}
{% endfor %}{% if s.rows %}
{{ table(s.header, s.rows) }}
{% endif %}{% if s.folded %}
{% for g in s.folded %}- **{{ g.status }}**{% if g.cause %} ({{ g.cause }}){% endif %}, {{ g.ids | length }} number{{ "s" if g.ids | length > 1 }}: {{ g.reason }} — {{ g.ids | join(", ") }}
{% endfor %}{% endif %}{% if s.rules %}
Why these rules:
{% for r in s.rules %}- {{ r.why }} ({{ r.ids | join(", ") }})
{% endfor %}{% endif %}{% if s.figures %}
Figures: {% for name, href in s.figures %}[{{ name }}]({{ href }}){{ ", " if not loop.last }}{% endfor %}
{% endif %}{% endfor %}"""

_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ page_title }}</title><style>{{ css }}</style></head><body>
<p{% if smoke %} class="smoke"{% endif %}>{{ first | inline }}</p>
<h1>{{ title }}</h1>
<p>{{ intro | inline }}</p>
<h2>Verdicts</h2>
{{ html_table(summary_header, summary_rows, "verdict") }}
<p>Not run here, by cause: {{ causes }}.</p>
{% if aliases %}<p>Paths: {% for name, path in aliases %}<code>{{ name }}</code> = <code>{{ path }}</code>{{ "; " if not loop.last }}{% endfor %}.</p>{% endif %}
<ul>{% for item in legend %}<li>{{ item | inline }}</li>{% endfor %}</ul>
<h2>Notebooks</h2>
{{ html_table(nb_header, nb_rows) }}
{% for s in sections %}<h2>{{ s.heading }}</h2>
<p>Verdict: <span class="{{ s.verdict | replace(" ", "-") }}"><strong>{{ s.verdict }}</strong></span>.</p>
{% for p in s.paragraphs %}<p>{{ p | inline }}</p>
{% endfor %}{% if s.figures %}<div class="thumbs">{% for name, href in s.figures %}{% if href.lower().endswith(".png") %}<a href="{{ href }}"><img src="{{ href }}" alt="{{ name }}" title="{{ name }}"></a>{% else %}<a href="{{ href }}">{{ name }}</a>{% endif %}{% endfor %}</div>
{% endif %}{% if s.rows %}{{ html_table(s.header, s.rows) }}
{% endif %}{% if s.folded %}<ul class="folded">{% for g in s.folded %}<li class="{{ g.status | replace(" ", "-") }}"><strong>{{ g.status }}</strong>{% if g.cause %} ({{ g.cause }}){% endif %}, {{ g.ids | length }} number{{ "s" if g.ids | length > 1 }}: {{ g.reason | inline }} <details><summary>ids</summary>{{ g.ids | join(", ") }}</details></li>
{% endfor %}</ul>
{% endif %}{% if s.rules %}<p>Why these rules:</p><ul>{% for r in s.rules %}<li>{{ r.why | inline }} <details><summary>{{ r.ids | length }} number{{ "s" if r.ids | length > 1 }}</summary>{{ r.ids | join(", ") }}</details></li>{% endfor %}</ul>
{% endif %}{% endfor %}</body></html>
"""

_CSS = """body{font-family:system-ui,sans-serif;max-width:80rem;margin:2rem auto;padding:0 1rem;line-height:1.4}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.25rem .5rem;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.reproduced{background:#e5f5e0}.differs{background:#fde0dd}.not-comparable{background:#e0ecfd}
.not-applicable{background:#ececf6}.inconclusive{background:#fff0d0}.proxy-only,.no-primary-claim{background:#f5ecd5}.not-run-here,.not-run{background:#f0f0f0}.not-reproducible{background:#fff7d6}
.thumbs img{height:9rem;margin:.25rem;border:1px solid #ccc}ul.folded li{margin:.2rem 0}details{display:inline}
p.smoke{background:#fde0dd;border:2px solid #c00;padding:.5rem;font-weight:bold}"""


@lru_cache(maxsize=1)
def _inline_markdown() -> Any:
    import mistune

    return mistune.create_markdown(escape=True)


def inline(text: str) -> Any:
    """Markdown inline markup (bold, code, links) as safe HTML, without the wrapping paragraph."""
    from markupsafe import Markup

    out = _inline_markdown()(str(text)).strip()
    return Markup(re.sub(r"^<p>(.*)</p>$", r"\1", out, flags=re.S))


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows])


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], class_column: str = "status") -> Any:
    """An HTML table; each row gets the class of its ``class_column`` cell (its status)."""
    from markupsafe import Markup, escape

    col = header.index(class_column) if class_column in header else None
    out = ["<table><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for r in rows:
        cls = f' class="{escape(r[col].replace(" ", "-"))}"' if col is not None and r[col] else ""
        tds = "".join(f'<td class="num">{escape(c)}</td>' if re.fullmatch(r"[+\-−]?\d+(\.\d+)?|—", c)
                      else f"<td>{inline(c)}</td>" for c in r)
        out.append(f"<tr{cls}>{tds}</tr>")
    return Markup("\n".join(out + ["</tbody></table>"]))


def render(context: Mapping[str, Any]) -> tuple[str, str]:
    """``(markdown, html)`` of a report context (see :func:`vitreg.present.report.report_context`)."""
    import jinja2

    context = {**context, "legend": LEGEND, "summary_header": SUMMARY_HEADER}
    env = jinja2.Environment(autoescape=False, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    md = env.from_string(_MD).render(**context, table=md_table)
    md = re.sub(r"\n{3,}", "\n\n", md).strip() + "\n"
    html_env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html_env.filters["inline"] = inline
    page = html_env.from_string(_HTML).render(**context, html_table=html_table, css=_CSS,
                                              page_title="vitreg reproduction report")
    return md, page
