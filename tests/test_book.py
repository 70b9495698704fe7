"""The book (``make book``): staging and labels (unit tests), then every page in a headless Chromium, offline.

The browser test runs under ``make test-book`` (which builds the book from the smoke run first and sets
VITREG_BOOK_REQUIRED=1, so a missing browser or book fails instead of skipping). Chromium comes from the
system packages (``apt-get install chromium chromium-driver``); Selenium drives it through the system
chromedriver and never downloads one. Chromium resolves no host name but 127.0.0.1 and every page's
requests are recorded from the DevTools log: only the local server may be asked for anything.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from vitreg.cli import book, book_pages
from vitreg.utils.paths import repo_root

ROOT = repo_root()
BOOK = ROOT / os.environ.get("VITREG_BOOK_DIR", "build/book")  # make test-book: build/book-smoke
HTML = BOOK / "html"
SHOTS = BOOK / "screenshots"
REQUIRED = os.environ.get("VITREG_BOOK_REQUIRED") == "1"


def _executed(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True)
    for name in names:
        nb = {"cells": [{"cell_type": "markdown", "id": "t", "metadata": {}, "source": f"# {name}"},
                        {"cell_type": "code", "id": "c", "metadata": {}, "source": "1", "execution_count": 1,
                         "outputs": []}],
              "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
        (folder / f"{name}.ipynb").write_text(json.dumps(nb))


def _fake_root(tmp_path: Path, *, real: bool, smoke: bool) -> Path:
    (tmp_path / "notebooks").mkdir()
    shutil.copy(ROOT / "notebooks" / "order.yaml", tmp_path / "notebooks" / "order.yaml")
    if real:
        _executed(tmp_path / "build" / "notebooks", ["02_high_norm_tokens"])
        (tmp_path / "build" / "report.md").write_text("# Report (real)\n")
    if smoke:
        _executed(tmp_path / "build" / "smoke" / "notebooks", ["00_tour", "02_high_norm_tokens"])
        (tmp_path / "build" / "smoke" / "report.md").write_text("# Report (smoke)\n")
    return tmp_path


def test_the_real_run_wins_over_the_smoke_run(tmp_path):
    assert book.find_source(_fake_root(tmp_path, real=True, smoke=True)).kind == "real"


def test_the_smoke_run_is_used_when_no_real_run_exists(tmp_path):
    assert book.find_source(_fake_root(tmp_path, real=False, smoke=True)).kind == "smoke"


def test_no_run_is_a_clear_error(tmp_path):
    with pytest.raises(book.NoExecutedNotebooks, match="make smoke"):
        book.find_source(_fake_root(tmp_path, real=False, smoke=False))


@pytest.mark.parametrize("kind", ["real", "smoke"])
def test_every_page_says_which_run_it_shows(tmp_path, kind, monkeypatch):
    root = _fake_root(tmp_path, real=kind == "real", smoke=True)
    fake_mathjax = tmp_path / "es5"
    fake_mathjax.mkdir()
    (fake_mathjax / "tex-chtml.js").write_text("// stand-in")
    monkeypatch.setattr(book, "mathjax_es5", lambda: fake_mathjax)
    staging = tmp_path / "src"
    names = book.stage(book.find_source(root), staging, root)
    assert names == (["02_high_norm_tokens"] if kind == "real" else ["00_tour", "02_high_norm_tokens"])
    title = book.LABELS[kind][0]
    for name in names:
        cells = json.loads((staging / "notebooks" / f"{name}.ipynb").read_text())["cells"]
        assert cells[0]["source"].startswith(f"# {name}\n"), "the title stays first"
        assert title in cells[0]["source"] and len(cells) == 2
    assert title in (staging / "intro.md").read_text()
    other = book.LABELS["smoke" if kind == "real" else "real"][0]
    assert other not in (staging / "intro.md").read_text()
    report = (staging / "report.md").read_text()
    assert report.startswith(f"# Report ({kind})\n") and title in report
    toc = yaml.safe_load((staging / "_toc.yml").read_text())
    assert [c["file"] for c in toc["parts"][0]["chapters"]] == [f"notebooks/{n}" for n in names]
    assert toc["parts"][1]["chapters"] == [{"file": "report"}]
    config = yaml.safe_load((staging / "_config.yml").read_text())["sphinx"]["config"]
    assert (staging / config["html_static_path"][0] / config["mathjax_path"]).is_file(), "MathJax is local"
    assert config["nb_ipywidgets_js"] == {}, "no require.js from a CDN"


def test_the_label_goes_under_the_title_even_when_text_precedes_it():
    text = book.under_title("SMOKE REPORT: a line\n# Report\n\nbody\n", "smoke")
    assert text.startswith("# Report\n\n:::{admonition} Smoke run") and text.index("SMOKE REPORT") < text.index("body")
    assert book.under_title("no title", "real").startswith(":::{admonition} Real run")


def test_the_notebook_tests_smoke_runs_are_gathered(tmp_path):
    (tmp_path / "repo").mkdir()
    root = _fake_root(tmp_path / "repo", real=False, smoke=False)
    base = tmp_path / "basetemp"
    for i, (name, profile) in enumerate([("00_tour", "smoke"), ("02_high_norm_tokens", "smoke"),
                                         ("02_high_norm_tokens", "real"), ("99_not_in_order", "smoke")]):
        run_dir = base / f"test_notebook_runs_under_the_s{i}"
        _executed(run_dir / "notebooks", [name])
        (run_dir / "results").mkdir()
        (run_dir / "results" / f"{name}.json").write_text(json.dumps({"profile": profile, "i": i}))
        (run_dir / "results" / "_outcomes.json").write_text("{}")
        (run_dir / "figures").mkdir()
        (run_dir / "figures" / f"{name[:2]}_plot.png").write_bytes(b"png")
    (base / "test_notebook_runs_under_the_scurrent").symlink_to(base / "test_notebook_runs_under_the_s1")
    assert book.collect_smoke(base, root) == 2
    smoke = root / "build" / "smoke"
    assert sorted(p.name for p in (smoke / "notebooks").iterdir()) == ["00_tour.ipynb", "02_high_norm_tokens.ipynb"]
    assert json.loads((smoke / "results" / "02_high_norm_tokens.json").read_text())["i"] == 1, "not the real one"
    assert not (smoke / "results" / "_outcomes.json").exists()
    assert sorted(p.name for p in (smoke / "figures").iterdir()) == ["00_plot.png", "02_plot.png"]
    assert book.find_source(root, "smoke").kind == "smoke"
    assert book.collect_smoke(tmp_path / "empty", root) == 0


def test_a_notebook_without_inline_figures_shows_the_files_it_saved(tmp_path, monkeypatch):
    root = _fake_root(tmp_path, real=False, smoke=True)
    (root / "build" / "smoke" / "figures").mkdir()
    for name in ("00_tour_maps.png", "02_norms.png", "02_norms.pdf"):
        (root / "build" / "smoke" / "figures" / name).write_bytes(b"png")
    tour = root / "build" / "smoke" / "notebooks" / "00_tour.ipynb"
    nb = json.loads(tour.read_text())
    nb["cells"][1]["outputs"] = [{"output_type": "display_data", "data": {"image/png": "iVBOR"}, "metadata": {}}]
    tour.write_text(json.dumps(nb))
    (tmp_path / "es5").mkdir()
    monkeypatch.setattr(book, "mathjax_es5", lambda: tmp_path / "es5")
    book.stage(book.find_source(root), tmp_path / "src", root)
    staged = {n: json.loads((tmp_path / "src" / "notebooks" / f"{n}.ipynb").read_text())["cells"]
              for n in ("00_tour", "02_high_norm_tokens")}
    assert len(staged["00_tour"]) == 2, "inline figures: nothing added"
    assert staged["02_high_norm_tokens"][-1]["source"].count("](../figures/02_norms.png)") == 1
    assert ".pdf" not in staged["02_high_norm_tokens"][-1]["source"]


def test_the_thebe_address_is_emptied_and_declared_once():
    script = '<script>const THEBE_JS_URL = "https://example.org/thebe.js"; const x = 1</script>\n'
    page = book.offline_html(f"<head>{script}<p>a</p>{script}</head>")
    assert "example.org" not in page and page.count("const x = 1") == 1 and "<p>a</p>" in page


# --- the built book in a browser -------------------------------------------------------------------
def _need(ok: bool, why: str) -> None:
    if not ok:
        (pytest.fail if REQUIRED else pytest.skip)(why)


@pytest.fixture(scope="module")
def server():
    _need((HTML / "index.html").is_file(), f"no built book in {HTML}: run `make book`")
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest's output short
        pass

    def do_GET(self) -> None:
        if self.path == "/favicon.ico":  # browsers ask for it unprompted; the book has none
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    _need(bool(chromium and driver_path), "no chromium/chromedriver: apt-get install -y chromium chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _need(False, "selenium is not installed (pip install -e '.[book]')")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1600", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-default-apps",
                # the network is off for the page: no name resolves but the local server's address
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def _pages() -> list[str]:
    return sorted(str(p.relative_to(HTML)) for p in HTML.rglob("*.html") if "_static" not in p.parts)


def _requests(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def _local(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in ("data", "blob", "about") or (
        parsed.scheme in ("http", "https", "file") and parsed.hostname in (None, "127.0.0.1"))


_SETTLE = """
const done = arguments[arguments.length - 1];
document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; });
const images = Promise.all(Array.from(document.images).map(i => i.complete ? null :
    new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); })));
const math = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
const loaded = document.readyState === 'complete' ? Promise.resolve() :
    new Promise(r => window.addEventListener('load', r));
Promise.all([images, math, loaded]).then(() => document.fonts.ready).then(() => done(true), e => done(String(e)));
"""
_STATE = """
return {
  images: Array.from(document.images).map(i => [i.currentSrc || i.src, i.naturalWidth]),
  math: document.querySelectorAll('.math').length,
  rendered: document.querySelectorAll('.math mjx-container, mjx-container').length,
  mathErrors: document.querySelectorAll('mjx-merror, [data-mjx-error]').length,
  title: document.title,
};
"""


def test_every_page_loads_offline_with_its_equations_and_images(server, browser):
    pages = _pages()
    assert "intro.html" in pages and "report.html" in pages and any(p.startswith("notebooks/") for p in pages)
    problems: list[str] = []
    math_pages = image_count = 0
    for page in pages:
        browser.get_log("performance")  # drop what an earlier page left
        browser.get(f"{server}/{page}")
        settled = browser.execute_async_script(_SETTLE)
        state = browser.execute_script(_STATE)
        if settled is not True:
            problems.append(f"{page}: waiting for images/MathJax failed: {settled}")
        for src, width in state["images"]:
            image_count += 1
            if not width:
                problems.append(f"{page}: image did not load: {src}")
        if state["math"]:
            math_pages += 1
            if state["rendered"] < state["math"] or state["mathErrors"]:
                problems.append(f"{page}: {state['math']} equations, {state['rendered']} rendered by MathJax, "
                                f"{state['mathErrors']} errors")
        errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        problems += [f"{page}: console error: {e}" for e in errors]
        problems += [f"{page}: request leaves the machine: {u}" for u in _requests(browser) if not _local(u)]
    print(f"{len(pages)} pages, {math_pages} with equations, {image_count} images")
    assert not problems, "\n".join(problems)
    assert math_pages >= 1, "no page has an equation: the MathJax check checked nothing"
    assert image_count >= 1, "no page has an image: the image check checked nothing"


def test_a_request_to_the_internet_is_seen_and_fails(server, browser):
    """The check above can fail: a page that asks a remote host is recorded, and the request does not succeed."""
    browser.get_log("performance")
    browser.get(f"{server}/intro.html")
    browser.execute_script("const i = new Image(); i.src = 'https://example.org/x.png'; document.body.append(i);")
    browser.execute_async_script("const d = arguments[0]; setTimeout(() => d(1), 1500);")
    remote = [u for u in _requests(browser) if not _local(u)]
    assert remote == ["https://example.org/x.png"]
    assert browser.execute_script("return document.images[document.images.length - 1].naturalWidth") == 0
    browser.get_log("browser")


def test_three_screenshots(server, browser):
    """Screenshots of the intro, one notebook and the report, for a person to look at (build/book/screenshots)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    notebooks = [p for p in _pages() if p.startswith("notebooks/")]
    notebook = next((p for p in notebooks if p.startswith("notebooks/02")), notebooks[0])
    for page in ("intro.html", notebook, "report.html"):
        browser.get(f"{server}/{page}")
        browser.execute_async_script(_SETTLE)
        out = SHOTS / (page.replace("/", "_").removesuffix(".html") + ".png")
        assert browser.save_screenshot(str(out)) and out.stat().st_size > 10_000
    browser.get_log("browser")


_PROSE = """
const main = document.querySelector('main') || document.body;
const copy = main.cloneNode(true);
copy.querySelectorAll('mjx-container, script, style, pre, code, .cell_output, .output, .headerlink')
    .forEach(e => e.remove());
return copy.textContent;
"""
_LAYOUT = """
const main = document.querySelector('main') || document.body;
const top = e => e.getBoundingClientRect().top + window.scrollY;
const images = Array.from(main.querySelectorAll('img'));
const headings = Array.from(main.querySelectorAll('h2'));
return {firstImage: images.length ? top(images[0]) : null,
        lastHeading: headings.length ? top(headings[headings.length - 1]) : null,
        lastHeadingText: headings.length ? headings[headings.length - 1].textContent : ''};
"""


def _settled(browser) -> bool:
    """Wait for the page's images and MathJax; False when they do not settle within the script timeout."""
    from selenium.common.exceptions import TimeoutException

    try:
        return browser.execute_async_script(_SETTLE) is True
    except TimeoutException:
        return False


def _raw_tex(text: str) -> list[str]:
    """Snippets of ``text`` around TeX that MathJax did not render (a stray ``$``, ``\\frac``, ...)."""
    return [text[max(0, m.start() - 30):m.end() + 30].replace("\n", " ") for m in book_pages.RAW_TEX.finditer(text)]


def test_the_raw_tex_check_sees_a_garbled_equation():
    """What the page test below looks for: the text a glued display equation leaves in the page."""
    assert _raw_tex("the input is $X^{0} = \\big[\\,x_{\\mathrm{CLS}}") and _raw_tex("LN(x) = \\gamma")
    assert not _raw_tex("LN(x) = γ ⊙ (x − μ)/σ + β; it costs 5 %; set $VITREG_DATA first.")
    assert _raw_tex("sequence $N = hwL$ Transformer")


def test_no_page_shows_raw_tex(server, browser):
    """Every equation renders: the prose of a page (math, code and outputs left out) holds no ``$`` and no TeX
    command, as a display equation without blank lines around it leaves."""
    problems = []
    for page in _pages():
        browser.get(f"{server}/{page}")
        if not _settled(browser):
            problems.append(f"{page}: images or MathJax did not settle")
        problems += [f"{page}: ...{s}..." for s in _raw_tex(browser.execute_script(_PROSE))[:5]]
    browser.get_log("browser")
    assert not problems, "\n".join(problems)


def test_each_notebook_shows_its_first_figure_before_its_last_heading(server, browser):
    """Figures stand where the cell that made them stands, not in a list at the end (a screenshot of each
    notebook page goes to build/book/screenshots for a person to look at)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    problems, checked = [], 0
    for page in (p for p in _pages() if p.startswith("notebooks/")):
        browser.get(f"{server}/{page}")
        _settled(browser)
        layout = browser.execute_script(_LAYOUT)
        browser.save_screenshot(str(SHOTS / (page.replace("/", "_").removesuffix(".html") + ".png")))
        if layout["firstImage"] is None or layout["lastHeading"] is None:
            continue
        checked += 1
        if layout["firstImage"] > layout["lastHeading"]:
            problems.append(f"{page}: first figure below the last heading ({layout['lastHeadingText']!r})")
    browser.get_log("browser")
    assert checked, "no notebook page has both a figure and a heading: the check checked nothing"
    assert not problems, "\n".join(problems)


_SOLUTIONS = """
const visible = e => !!(e && e.checkVisibility());  // false inside a closed <details>
const drops = Array.from(document.querySelectorAll('details.sd-dropdown'))
    .filter(d => (d.querySelector('summary') || d).textContent.includes('Solution'));
const code = Array.from(document.querySelectorAll('.cell.tag_solution'));
return {folded: drops.length, open: drops.filter(d => d.open).length,
        code: code.length, codeShown: code.filter(c => visible(c.querySelector('.cell_input pre'))).length};
"""


def test_solutions_are_folded(server, browser):
    """A reader sees each solution only after pressing its button (``vitreg book --instructor`` opens them)."""
    problems, folded = [], 0
    for page in (p for p in _pages() if p.startswith("notebooks/")):
        browser.get(f"{server}/{page}")
        _settled(browser)
        state = browser.execute_script(_SOLUTIONS)
        folded += state["folded"] + state["code"]
        if state["open"] or state["codeShown"]:
            problems.append(f"{page}: {state['open']} written and {state['codeShown']} code solutions shown open")
    browser.get_log("browser")
    assert folded, "no solution on any page: the check checked nothing"
    assert not problems, "\n".join(problems)


def test_no_page_shows_a_temporary_folder_or_a_progress_bar(server, browser):
    """Outputs as a reader needs them: no run's temporary folder, no tqdm bar debris (``40%|####``)."""
    problems = []
    for page in _pages():
        browser.get(f"{server}/{page}")
        text = browser.execute_script("return (document.querySelector('main') || document.body).textContent;")
        if "/tmp/" in text:
            problems.append(f"{page}: temporary folder shown")
        bars = [m.group(0).strip()[:60] for m in book_pages.PROGRESS.finditer(text)]
        problems += [f"{page}: progress bar shown: {bar}" for bar in bars[:3]]
    browser.get_log("browser")
    assert not problems, "\n".join(problems)
