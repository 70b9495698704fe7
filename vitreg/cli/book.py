"""The book: a Jupyter Book (1.x) of the executed notebooks and the report, readable offline (``vitreg book``).

Paper: all findings F1-F9 (the book shows the notebooks that reproduce them, as they ran).

The book is built from one run's executed notebooks: the real run's (``build/notebooks/``) when it exists,
else the smoke run's (``build/smoke/notebooks/``). Every page says which run it shows, and the page of a
notebook that failed or was interrupted says so under its title. Nothing is loaded
from the internet when the book is read: MathJax is copied from the ``django-static-mathjax`` package into
the book's ``_static/`` folder, widgets' JavaScript (require.js) is switched off, and the theme serves its
own files. ``make book`` calls :func:`build_book`; ``make test-book`` opens every page in a headless
Chromium with the network cut off (tests/test_book.py).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from vitreg.cli import syllabus
from vitreg.cli.book_pages import BOOK_CSS, for_reader, report_for_book
from vitreg.cli.guide import guide_markdown
from vitreg.experiments.params import load_order
from vitreg.utils.io import read_notebook
from vitreg.utils.paths import repo_root

LABELS = {
    "real": ("Real run",
             "Everything on this page comes from the real run (`make reproduce`): pretrained weights and the "
             "notebooks' own parameters, plus any overrides that run was given. Its numbers are the "
             "reproduction's results; the report chapter compares them with the paper."),
    "smoke": ("Smoke run: random weights, not the paper's results",
              "Everything on this page comes from the smoke run (`make smoke`, the smoke profile of vitreg.experiments): random "
              "weights, tiny inputs, artifacts planted where a notebook says so. It shows that the code runs; "
              "no number or figure here is evidence about the paper. Run `make reproduce`, then `make book`, "
              "for the real results."),
    "lecture": ("Lecture run: small pretrained models, not the paper's experiment",
                "Everything on this page comes from the lecture run (`make lecture`: the lecture profile of each experiment in vitreg/experiments/): "
                "pretrained weights of small models at 224 px, the bundled photos and small subsets, nothing "
                "planted. Its numbers are measurements of these models, not the paper's experiment (other "
                "models, resolutions and data sets); the report chapter says which comparisons apply."),
}
MATHJAX_SCRIPT = "mathjax/tex-chtml.js"  # relative to the book's _static/


class NoExecutedNotebooks(FileNotFoundError):
    """Neither a real nor a smoke run has left executed notebooks to build the book from."""


@dataclass(frozen=True)
class Source:
    """One run's outputs: ``kind`` (real or smoke), its executed notebooks, results and report folders."""

    kind: str
    notebooks: Path
    results: Path
    report_dir: Path


def find_source(root: Path | None = None, run: str = "auto") -> Source:
    """The run the book shows: ``run`` (real, lecture or smoke), or for ``auto`` the real run's executed
    notebooks when there are any, else the smoke run's.

    Raises:
        NoExecutedNotebooks: the run asked for (for auto: neither run) has no executed notebooks.
    """
    root = root or repo_root()
    sources = {"real": Source("real", root / "build" / "notebooks", root / "results", root / "build"),
               "smoke": Source("smoke", root / "build" / "smoke" / "notebooks", root / "build" / "smoke" / "results",
                               root / "build" / "smoke"),
               "lecture": Source("lecture", root / "build" / "lecture" / "notebooks",
                                 root / "build" / "lecture" / "results", root / "build" / "lecture")}
    for source in [sources["real"], sources["smoke"]] if run == "auto" else [sources[run]]:
        if any(source.notebooks.glob("*.ipynb")):
            return source
    asked = [sources[run]] if run != "auto" else [sources["real"], sources["smoke"]]
    where = " or ".join(str(s.notebooks) for s in asked)
    first = "`make lecture`" if run == "lecture" else "`make smoke` (minutes, CPU) or `make reproduce`"
    raise NoExecutedNotebooks(f"no executed notebooks in {where}: run {first} first")


def collect_smoke(basetemp: Path, root: Path | None = None) -> int:
    """Gather the smoke runs that the notebook tests left under pytest's ``basetemp`` into ``build/smoke/``.

    ``make test`` runs each notebook under the smoke profile into its own temporary folder
    (tests/test_notebooks.py); with ``--basetemp`` those folders stay, and the book can be built from them
    instead of running every notebook again (pytest's ``*current`` links to them are skipped). A notebook of the run order is taken when its executed copy
    and its results file (profile smoke) are there: the executed notebook, the results file and its
    figures (``NN_*``) are copied. The runner's ``_outcomes.json`` (one per run) is not; the report is
    rebuilt from the gathered results when the book is built.

    Returns:
        The number of executed notebooks gathered (0: none found, build/smoke untouched).
    """
    root = root or repo_root()
    order = {entry["notebook"] for entry in load_order(root)}
    dest = root / "build" / "smoke"
    count = 0
    for executed in sorted(basetemp.glob("*/notebooks/*.ipynb")):
        run_dir, name = executed.parent.parent, executed.stem
        results = run_dir / "results" / f"{name}.json"
        if run_dir.is_symlink() or name not in order or not results.is_file() or json.loads(results.read_text()).get("profile") != "smoke":
            continue
        files = [(executed, "notebooks"), (results, "results")]
        files += [(f, "figures") for f in sorted((run_dir / "figures").glob(f"{name[:2]}_*"))]
        for file, sub in files:
            (dest / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, dest / sub / file.name)
        count += 1
    if count:
        (dest / "report.md").unlink(missing_ok=True)  # rebuilt from the gathered results by the book
    return count


def mathjax_es5() -> Path:
    """The ``es5`` folder of MathJax 3 shipped by the ``django-static-mathjax`` package (the ``book`` extra)."""
    spec = importlib.util.find_spec("mathjax")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        es5 = Path(folder) / "static" / "mathjax" / "es5"
        if (es5 / "tex-chtml.js").is_file():
            return es5
    raise FileNotFoundError("MathJax not found: install the book extra (pip install -e '.[book]'), "
                            "which brings django-static-mathjax")


def label_markdown(kind: str) -> str:
    """The run label that goes under each page's title: which run the page shows (a MyST admonition)."""
    title, text = LABELS[kind]
    css = "warning" if kind == "smoke" else "note"
    return f":::{{admonition}} {title}\n:class: {css}\n{text}\n:::\n"


def under_title(markdown: str, kind: str) -> str:
    """``markdown`` with the run label right under its first H1 line (the H1 moved first when text precedes it)."""
    lines = markdown.splitlines()
    h1 = next((i for i, line in enumerate(lines) if line.startswith("# ")), None)
    if h1 is None:
        return label_markdown(kind) + "\n" + markdown
    before = "\n".join(lines[:h1]).strip()
    rest = "\n".join(lines[h1 + 1:])
    return "\n\n".join(part for part in (lines[h1], label_markdown(kind).rstrip(), before, rest) if part) + "\n"


def label_notebook(nb: dict, kind: str) -> dict:
    """A copy of an executed notebook (JSON dict) whose first markdown cell carries the run label under its H1."""
    out = dict(nb)
    cells = [dict(c) for c in nb["cells"]]
    first = next((c for c in cells if c["cell_type"] == "markdown"), None)
    if first is None:
        cells.insert(0, {"cell_type": "markdown", "id": "vitreg-run-label", "metadata": {},
                         "source": label_markdown(kind)})
    else:
        source = first["source"] if isinstance(first["source"], str) else "".join(first["source"])
        first["source"] = under_title(source, kind)
    out["cells"] = cells
    return out


STATUS_TEXT = {
    "failed": ("This notebook failed",
               "The run stopped this notebook at an error (shown below, in the cell that raised it): the cells "
               "after it did not run, and the numbers and figures of this page are incomplete."),
    "interrupted": ("This notebook was interrupted",
                    "The run was stopped (Ctrl-C, SIGTERM or a killed runner) while this notebook ran: only "
                    "{done} of its {total} code cells ran, and this page shows the notebook as it was then."),
}


def run_status(nb: dict) -> str | None:
    """How an executed notebook ended when it did not finish: ``"failed"`` (an error output, or papermill's
    exception flag), ``"interrupted"`` (a ``KeyboardInterrupt``, or cells papermill left pending or
    running), or None for a notebook that ran to its end."""
    code = [c for c in nb.get("cells", []) if isinstance(c, dict) and c.get("cell_type") == "code"]
    errors = [o for c in code for o in c.get("outputs") or [] if isinstance(o, dict) and o.get("output_type") == "error"]
    if any(e.get("ename") == "KeyboardInterrupt" for e in errors):
        return "interrupted"
    papermill = (nb.get("metadata") or {}).get("papermill") or {}
    if errors or papermill.get("exception"):
        return "failed"
    states = [((c.get("metadata") or {}).get("papermill") or {}).get("status") for c in code]
    return "interrupted" if any(s in ("pending", "running") for s in states) else None


def status_cell(nb: dict, status: str) -> dict:
    """A markdown cell that says on the page that its notebook failed or was interrupted (a MyST admonition)."""
    code = [c for c in nb["cells"] if c.get("cell_type") == "code"]
    done = sum(c.get("execution_count") is not None for c in code)
    title, text = STATUS_TEXT[status]
    return {"cell_type": "markdown", "id": f"vitreg-{status}", "metadata": {},
            "source": f":::{{admonition}} {title}\n:class: error\n{text.format(done=done, total=len(code))}\n:::\n"}


def has_inline_images(nb: dict) -> bool:
    """Whether any output of the executed notebook is an image (a kernel with a non-inline matplotlib backend,
    such as the tests' MPLBACKEND=Agg, saves figures to files but shows none)."""
    return any(k.startswith("image/") for c in nb["cells"] for o in c.get("outputs", []) for k in o.get("data", {}))


COURSE_PAGES = {"syllabus": "Syllabus: objectives, prerequisites, times, the dependency map, a 90-minute path",
                "guide": "User guide: commands, weights, data, parameters, run time, GPUs"}


def _intro(source: Source, names: list[str], titles: dict[str, str] | None = None, course: list[str] = ()) -> str:
    title, text = LABELS[source.kind]
    rows = "\n".join([*(f"- [{COURSE_PAGES[page]}]({page}.md)" for page in course),
                      *(f"- [{(titles or {}).get(name, name)}](notebooks/{name}.ipynb)" for name in names)])
    return f"""# Vision Transformers Need Registers: the notebooks

The executed notebooks of `vitreg`, the companion to Darcet, Oquab, Mairal and Bojanowski, *Vision
Transformers Need Registers* (ICLR 2024), and the reproduction report that puts every number of the paper
beside the run's own.

:::{{admonition}} {title}
:class: {"warning" if source.kind == "smoke" else "note"}
{text}
:::

The quantity the series keeps coming back to is the norm of a token's feature vector $x_i \\in \\mathbb{{R}}^d$
at the output of a transformer block, before the final LayerNorm:

$$
\\lVert x_i \\rVert_2 = \\Big(\\sum_{{k=1}}^{{d}} x_{{i,k}}^2\\Big)^{{1/2}} .
$$

## Contents

{rows}
- [The reproduction report](report.md)

This book reads offline: it loads nothing from the internet. Rebuild it with `make book`.
"""


def _config(source: Source) -> dict:
    return {
        "title": "vitreg: Vision Transformers Need Registers",
        "author": "vitreg",
        "copyright": "2026",
        "only_build_toc_files": True,
        "execute": {"execute_notebooks": "off"},
        "parse": {"myst_enable_extensions": ["colon_fence", "dollarmath", "amsmath"]},
        "html": {"use_repository_button": False, "use_issues_button": False, "use_edit_page_button": False,
                 "comments": {"hypothesis": False, "utterances": False}},
        "launch_buttons": {"binderhub_url": "", "jupyterhub_url": "", "thebe": False, "colab_url": ""},
        "sphinx": {"config": {
            "mathjax_path": MATHJAX_SCRIPT,  # a local copy (relative to _static/): no CDN
            "html_static_path": ["_vendor"],  # not _static/: Jupyter Book would load every .js found there
            "html_css_files": ["vitreg.css"],  # wrapped output lines, scrolling tables (book_pages.BOOK_CSS)
            "nb_ipywidgets_js": {},  # no require.js / widget manager from a CDN
            "nb_render_markdown_format": "gfm",  # Markdown outputs (printed tables) with their tables
            "html_show_sourcelink": False,
            "suppress_warnings": ["mystnb.unknown_mime_type", "myst.header"],
        }},
    }


def stage(source: Source, staging: Path, root: Path | None = None, instructor: bool = False) -> list[str]:
    """Write the book's sources into ``staging``: config, table of contents, intro, the labelled notebooks
    (in the run order; as a reader sees them: :func:`vitreg.cli.book_pages.for_reader`, solutions open with
    ``instructor``), the report chapter and a local MathJax. Returns the notebooks' names."""
    root = root or repo_root()
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "notebooks").mkdir(parents=True)
    order = [entry["notebook"] for entry in load_order(root)]
    names = [n for n in order if (source.notebooks / f"{n}.ipynb").is_file()]
    figures = source.results.parent / "figures"  # the report links them; pages without inline figures show them
    if figures.is_dir():
        shutil.copytree(figures, staging / "figures")
    executed = {name: read_notebook(source.notebooks / f"{name}.ipynb") for name in names}  # each one named if unreadable
    for name in names:
        nb = label_notebook(executed[name], source.kind)
        if status := run_status(nb):
            first = next((i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown"), -1)
            nb["cells"].insert(first + 1, status_cell(nb, status))
        saved = sorted(p.name for p in (staging / "figures").glob(f"{name[:2]}_*.png"))
        nb = for_reader(nb, [] if has_inline_images(nb) else saved, instructor)
        (staging / "notebooks" / f"{name}.ipynb").write_text(json.dumps(nb, indent=1))
    (staging / "report.md").write_text(under_title(report_for_book(_report_markdown(source)), source.kind))
    titles = syllabus.titles(source.notebooks, names)
    course = []
    if (root / "notebooks" / "syllabus.yaml").is_file():
        (staging / "syllabus.md").write_text(syllabus.syllabus_markdown(syllabus.load_syllabus(root), titles))
        course.append("syllabus")
    if (root / "README.md").is_file():
        (staging / "guide.md").write_text(guide_markdown((root / "README.md").read_text()))
        course.append("guide")
    (staging / "intro.md").write_text(_intro(source, names, titles, course))
    toc = {"format": "jb-book", "root": "intro",
           "parts": [{"caption": "Notebooks", "chapters": [{"file": f"notebooks/{n}"} for n in names]},
                     {"caption": "Report", "chapters": [{"file": "report"}]}]}
    if course:
        toc["parts"].append({"caption": "Course", "chapters": [{"file": page} for page in course]})
    (staging / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    (staging / "_config.yml").write_text(yaml.safe_dump(_config(source), sort_keys=False))
    shutil.copytree(mathjax_es5(), staging / "_vendor" / "mathjax")
    (staging / "_vendor" / "vitreg.css").write_text(BOOK_CSS)
    return names


def _report_markdown(source: Source) -> str:
    """The run's report.md (built from its results first if it is missing), as the book's last chapter."""
    report = source.report_dir / "report.md"
    if not report.is_file():
        from vitreg.present.report import build_report

        build_report(source.results, source.report_dir, figures_dir=source.results.parent / "figures")
    return report.read_text()


def build_book(root: Path | None = None, out: Path | None = None, run: str = "auto",
               instructor: bool = False) -> Path:
    """Build the book into ``out`` (default ``build/book``) and return its ``index.html``.

    The sources are staged in ``out/src``; Jupyter Book writes the HTML to ``out/html`` (no notebook is
    executed: the pages show the run's outputs).

    Raises:
        NoExecutedNotebooks: no run has left executed notebooks.
        subprocess.CalledProcessError: Jupyter Book failed (its output says why).
    """
    root = root or repo_root()
    out = out or root / "build" / "book"
    source = find_source(root, run)
    staging = out / "src"
    stage(source, staging, root, instructor)
    build = out / "_jb"
    if build.exists():
        shutil.rmtree(build)
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(staging),
           "--path-output", str(build), "--builder", "html", "--keep-going", "--quiet"]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # warnings go to stderr, shown as they come
    if done.returncode:
        print(done.stdout, file=sys.stderr)
        raise subprocess.CalledProcessError(done.returncode, cmd)
    html = out / "html"
    if html.exists():
        shutil.rmtree(html)
    shutil.move(str(build / "_build" / "html"), str(html))
    shutil.rmtree(build)
    for page in html.rglob("*.html"):
        page.write_text(offline_html(page.read_text()))
    return html / "index.html"


def offline_html(text: str) -> str:
    """A page without the one remote address the theme hard-codes, and without its two console errors.

    sphinx-thebe writes ``const THEBE_JS_URL = "<remote address>"`` (thebe, a live kernel from Binder, loads
    only when its launch button is pressed; the book has none): the address is emptied, and the copies that
    Jupyter Book's double registration adds (each a SyntaxError: already declared) are dropped. The theme's
    first visit reads an empty colour mode and logs an error: the default mode is set to "auto".
    """
    config = re.compile(r"<script>const THEBE_JS_URL = [^<]*</script>\n?")
    seen = []

    def first_only(match: re.Match) -> str:
        seen.append(match)
        return re.sub(r'THEBE_JS_URL = "[^"]*"', 'THEBE_JS_URL = ""', match.group(0)) if len(seen) == 1 else ""

    text = config.sub(first_only, text)
    return text.replace('localStorage.getItem("mode") || ""', 'localStorage.getItem("mode") || "auto"')
