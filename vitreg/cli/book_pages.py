"""The book's pages as a reader sees them: equations that render, figures where their cell stands, outputs
without debris, solutions folded (``vitreg book``; ``--instructor`` shows them).

Paper: all findings F1-F9 (the pages of the notebooks that reproduce them).

Everything here works on one executed notebook as a JSON dict and returns a new one; :func:`for_reader`
applies every step in order. The book (:mod:`vitreg.cli.book`) calls it on every page it stages.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable

SOLUTION_TAG = "solution"
DISPLAY = "$$"
#: TeX left in a page's text after MathJax ran: a display equation the parser did not recognise (a ``$`` that
#: starts an environment variable's name, such as ``$VITREG_DATA``, is prose).
RAW_TEX = re.compile(r"\$(?![A-Z][A-Z0-9_]{2,})|\\(?:mathrm|frac|gamma|beta|sum|sqrt|big|lVert|mathbb|odot|qquad|text)\b")
PROGRESS = re.compile(r"^\s*[^|\n]*\d{1,3}%\|.*\|", re.MULTILINE)  # tqdm's text bar: "name:  40%|####  | 2/5"
TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?\s*$", re.MULTILINE)
TEMP_PATH = re.compile(r"(?:/private)?/(?:tmp|var/folders)/[^\s'\"]*?/(?=(?:figures|results|notebooks|cache)/)")


def text(cell_or_output: dict, key: str = "source") -> str:
    """A cell's source (or an output's ``text``) as one string: nbformat stores a string or a list of lines."""
    value = cell_or_output.get(key, "")
    return value if isinstance(value, str) else "".join(value)


def tags(cell: dict) -> list[str]:
    """The cell's tags (``metadata.tags``), empty when it has none."""
    return list(cell.get("metadata", {}).get("tags", []))


# --- equations -------------------------------------------------------------------------------------------
def _display_blocks(lines: list[str]) -> Iterable[tuple[int, int]]:
    """(first, last) line index of every ``$$`` display block (a line opening with ``$$`` up to the line that
    closes it). A ``$$`` inside a line of prose is not a block: :func:`display_math_problems` names it."""
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith(DISPLAY):
            closed = stripped.endswith(DISPLAY) and len(stripped) > 2 * len(DISPLAY) - 1 and stripped != DISPLAY
            j = i
            if not closed:
                j = i + 1
                while j < len(lines) and not lines[j].rstrip().endswith(DISPLAY):
                    j += 1
            yield i, min(j, len(lines) - 1)
            i = j + 1
        else:
            i += 1


def display_math_problems(markdown: str) -> list[str]:
    """Display equations that MyST would not render (paper §2's equations in 00-04 among them): a ``$$`` block
    without a blank line before and after it is read as a stray ``$`` plus inline math that swallows the
    following sentences, and ``$$`` in the middle of a line of prose is never a display block.

    Returns:
        One line per problem (``line N: ...``), empty when every display equation stands alone.
    """
    lines = markdown.split("\n")
    problems = []
    starts = set()
    for first, last in _display_blocks(lines):
        starts.update(range(first, last + 1))
        if first > 0 and lines[first - 1].strip():
            problems.append(f"line {first + 1}: no blank line before the display equation")
        if last + 1 < len(lines) and lines[last + 1].strip():
            problems.append(f"line {last + 1}: no blank line after the display equation")
    for n, line in enumerate(lines):
        if n not in starts and DISPLAY in line and not line.lstrip().startswith(("`", "    ")):
            problems.append(f"line {n + 1}: $$ inside a line of prose (put the equation on lines of its own)")
    return problems


def isolate_display_math(markdown: str) -> str:
    """``markdown`` with a blank line before and after every ``$$`` display block (the text is otherwise kept)."""
    lines = markdown.split("\n")
    blocks = list(_display_blocks(lines))
    out: list[str] = []
    for n, line in enumerate(lines):
        if any(n == first for first, _ in blocks) and out and out[-1].strip():
            out.append("")
        out.append(line)
        if any(n == last for _, last in blocks) and n + 1 < len(lines) and lines[n + 1].strip():
            out.append("")
    return "\n".join(out)


def isolate_notebook_math(nb: dict) -> dict:
    """A copy of ``nb`` whose markdown cells have every display equation on lines of its own."""
    out = copy.deepcopy(nb)
    for cell in out["cells"]:
        if cell["cell_type"] == "markdown":
            cell["source"] = isolate_display_math(text(cell))
    return out


# --- outputs ---------------------------------------------------------------------------------------------
def _last_frames(stream: str) -> str:
    """A stream's text as the terminal left it: of each line redrawn with ``\\r``, only its last state."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in stream.split("\n"))


def _markdown_table(stream: str) -> str | None:
    """A printed text that holds a Markdown table (a header row, a ``|---|---|`` rule, rows) as Markdown, with
    the lines before the table as their own paragraph; None when it holds no table."""
    if not TABLE_RULE.search(stream):
        return None
    lines = stream.strip().split("\n")
    first = next(i for i, line in enumerate(lines) if line.lstrip().startswith("|"))
    before = "  \n".join(line for line in lines[:first] if line.strip())
    return (before + "\n\n" if before else "") + "\n".join(lines[first:]) + "\n"


def clean_output(output: dict, run_dir: str | None = None) -> dict | None:
    """One output as the book shows it, or None to drop it.

    Progress bars (tqdm's text bars, written to stderr and redrawn with ``\\r``) are dropped; other streams
    keep each redrawn line's last state; empty outputs are dropped; the run's own folder (``run_dir``, and any
    temporary folder before ``figures/``, ``results/``, ``notebooks/`` or ``cache/``) is shown as ``<run>/``;
    a printed Markdown table becomes a table.
    """
    out = copy.deepcopy(output)
    if out.get("output_type") == "stream":
        body = _last_frames(text(out, "text"))
        if out.get("name") == "stderr":
            body = "\n".join(line for line in body.split("\n") if not PROGRESS.match(line))
        body = _short_paths(body, run_dir)
        if not body.strip():
            return None
        table = _markdown_table(body)
        if table:
            return {"output_type": "display_data", "metadata": {}, "data": {"text/markdown": table}}
        out["text"] = body
        return out
    data = out.get("data")
    if data is not None:
        if not data:
            return None
        for key in ("text/plain", "text/markdown", "text/html"):
            if key in data:
                data[key] = _short_paths(text(data, key), run_dir)
        if set(data) == {"text/plain"} and not data["text/plain"].strip():
            return None
    return out


def _short_paths(body: str, run_dir: str | None) -> str:
    if run_dir:
        body = body.replace(run_dir.rstrip("/") + "/", "<run>/").replace(run_dir.rstrip("/"), "<run>")
    return TEMP_PATH.sub("<run>/", body)


def run_dir_of(nb: dict) -> str | None:
    """The absolute ``output_dir`` the runner gave the notebook (papermill's ``injected-parameters`` cell), if
    any (a relative one, such as the default ``..``, names no machine's folder and is left as it is)."""
    for cell in nb["cells"]:
        if "injected-parameters" in tags(cell):
            found = re.search(r"^output_dir\s*=\s*['\"](/[^'\"]+)['\"]", text(cell), re.MULTILINE)
            return found.group(1) if found else None
    return None


def clean_outputs(nb: dict) -> dict:
    """A copy of ``nb`` whose code cells show what a reader needs (:func:`clean_output` on every output, and
    the run's temporary folder shortened in the injected parameters too)."""
    out = copy.deepcopy(nb)
    run_dir = run_dir_of(nb)
    for cell in out["cells"]:
        if cell["cell_type"] != "code":
            continue
        if "injected-parameters" in tags(cell):
            cell["source"] = _short_paths(text(cell), run_dir)
        kept = [clean_output(o, run_dir) for o in cell.get("outputs", [])]
        cell["outputs"] = [o for o in kept if o is not None]
    return out


# --- figures ---------------------------------------------------------------------------------------------
FIGURE_CALL = re.compile(r"save_figure\(\s*[^,()]+,\s*(f?)(['\"])([^'\"]+)\2")


def figure_patterns(source: str) -> list[re.Pattern]:
    """The figure names a code cell saves (``run.save_figure(fig, "02_norms")``; an f-string's fields match
    any text), as patterns for the saved file names."""
    patterns = []
    for is_f, _, name in FIGURE_CALL.findall(source):
        parts = re.split(r"\{[^}]*\}", name) if is_f else [name]
        patterns.append(re.compile(".+".join(re.escape(p) for p in parts) + r"\.png"))
    return patterns


def has_image(cell: dict) -> bool:
    """Whether a code cell shows an image among its outputs (an inline figure)."""
    return any(k.startswith("image/") for o in cell.get("outputs", []) for k in o.get("data", {}))


def figure_cell(files: list[str], figures_url: str = "../figures") -> dict:
    """A markdown cell showing saved figures (right after the cell that saved them)."""
    images = "\n\n".join(f"![{f}]({figures_url}/{f})" for f in files)
    cell_id = "figure-" + re.sub(r"[^A-Za-z0-9_-]", "-", files[0].removesuffix(".png"))[:50]
    return {"cell_type": "markdown", "id": cell_id, "metadata": {}, "source": images + "\n"}


def place_figures(nb: dict, saved: list[str], figures_url: str = "../figures") -> dict:
    """A copy of ``nb`` with each saved figure (``saved``: PNG file names) shown right after the code cell
    that saved it, unless that cell already shows an image inline. Figures no cell claims go under a last
    heading "Other figures this run saved".

    Returns:
        The new notebook (``nb`` is not changed).
    """
    out = copy.deepcopy(nb)
    left = list(saved)
    cells = []
    for cell in out["cells"]:
        cells.append(cell)
        if cell["cell_type"] != "code":
            continue
        patterns = figure_patterns(text(cell))
        mine = [f for f in left if any(p.fullmatch(f) for p in patterns)]
        left = [f for f in left if f not in mine]
        if mine and not has_image(cell):
            cells.append(figure_cell(mine, figures_url))
    if left:
        other = figure_cell(left, figures_url)
        other["source"] = "## Other figures this run saved\n\n" + other["source"]
        cells.append(other)
    out["cells"] = cells
    return out


# --- solutions -------------------------------------------------------------------------------------------
def fold_solutions(nb: dict, instructor: bool = False) -> dict:
    """A copy of ``nb`` whose solution cells (tagged ``solution``) are folded: a markdown solution inside a
    "Solution" drop-down, a code solution with the ``hide-cell`` tag (a button shows it). With ``instructor``
    the solutions stay open and are only marked as such."""
    out = copy.deepcopy(nb)
    for cell in out["cells"]:
        if SOLUTION_TAG not in tags(cell):
            continue
        if cell["cell_type"] == "markdown":
            body = text(cell)
            fence = ":" * max(3, 1 + max((len(m) for m in re.findall(r"^:{3,}", body, re.MULTILINE)), default=0))
            opened = "\n:open:" if instructor else ""
            cell["source"] = f"{fence}{{dropdown}} Solution{opened}\n{body.rstrip()}\n{fence}\n"
        elif not instructor:
            cell.setdefault("metadata", {}).setdefault("tags", []).append("hide-cell")
    return out


def for_reader(nb: dict, saved: list[str], instructor: bool = False) -> dict:
    """One executed notebook as the book shows it: equations isolated, outputs cleaned, saved figures placed
    after their cells, solutions folded (open in the ``instructor`` book)."""
    return fold_solutions(place_figures(clean_outputs(isolate_notebook_math(nb)), saved), instructor)


# --- the report page and the book's style --------------------------------------------------------------
FIGURE_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(((?:\.\./)?figures/[^)\s]+\.png)\)")
THUMBNAIL_WIDTH = "260px"

#: The book's own style sheet (``_vendor/vitreg.css``): long output lines wrap instead of being cut off, wide
#: tables scroll sideways with readable columns, thumbnails sit side by side.
BOOK_CSS = """/* vitreg: the book's own style (vitreg.cli.book_pages.BOOK_CSS) */
.cell_output pre, .output pre { white-space: pre-wrap; overflow-wrap: anywhere; }
.bd-article table { display: block; overflow-x: auto; max-width: 100%; font-size: 0.85em; }
.bd-article table td, .bd-article table th { min-width: 5.5em; }
.bd-article table td:first-child, .bd-article table th:first-child { min-width: 11em; }
.bd-article img.vitreg-thumb { display: inline-block; margin: 0.25em; border: 1px solid #ccc; }
"""


def report_for_book(markdown: str) -> str:
    """The report (``report.md``) as a book page: each linked figure (``[02_x.png](figures/02_x.png)``) shown as
    a thumbnail under its line, instead of a download link. The text is otherwise kept."""
    out = []
    for line in markdown.split("\n"):
        links = FIGURE_LINK.findall(line)
        out.append(line)
        if links:
            out += [""] + [f":::{{image}} {target}\n:alt: {name}\n:width: {THUMBNAIL_WIDTH}\n:class: vitreg-thumb\n:::\n"
                           for name, target in links]
    return "\n".join(out)
