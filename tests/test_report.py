"""The reproduction report: built from a fixture of results, nothing dropped, schema errors loud."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from vitreg import paper
from vitreg import report as rp
from vitreg.results import save_results

NUMBERS = {
    "findings": {"F2": {"title": "High-norm tokens", "paper": "Fig. 3", "notebooks": ["02_norms"]},
                 "F8": {"title": "Downstream", "paper": "Table 2", "notebooks": ["09_downstream"]}},
    "numbers": [
        {"id": "F8.top1", "finding": "F8", "source": "T2", "origin": "TTR", "what": "top-1", "value": 86.4,
         "unit": "%", "model": "dinov2_l", "notebook": "09_downstream", "key": "no_reg.imagenet_top1",
         "compare": "approx", "tolerance": 1.0, "reproducible": True},
        {"id": "F8.miou", "finding": "F8", "source": "T2", "origin": "TTR", "what": "mIoU", "value": 48.3,
         "unit": "%", "model": "dinov2_l", "notebook": "09_downstream", "key": "no_reg.ade20k_miou",
         "compare": "approx", "tolerance": 2.0, "reproducible": True},
        {"id": "F8.rmse", "finding": "F8", "source": "T2", "origin": "TTR", "what": "RMSE", "value": 0.388,
         "unit": "m", "model": "dinov2_l", "notebook": "09_downstream", "key": "no_reg.nyud_rmse",
         "compare": "approx", "tolerance": 0.03, "reproducible": True},
        {"id": "F8.paper_own", "finding": "F8", "source": "T2", "origin": "paper", "what": "top-1", "value": 84.3,
         "unit": "%", "model": "paper's own", "notebook": "09_downstream", "key": "no_reg.imagenet_top1",
         "reproducible": False, "reason": "never released"},
        {"id": "F2.outliers", "finding": "F2", "source": "Fig. 3", "origin": "paper", "what": "share", "value": 2.37,
         "unit": "%", "model": "dinov2_g", "notebook": "02_norms", "key": "outlier_pct", "compare": "approx",
         "tolerance": 1.0, "reproducible": True},
        {"id": "F2.stripes", "finding": "F2", "source": "App. A", "origin": "paper", "what": "stripes", "value": 20,
         "unit": "%", "model": "dinov2_g", "notebook": "02_norms", "key": "stripes_pct", "compare": "at_least",
         "reproducible": True},
    ],
}
MODEL = {"name": "dinov2_l", "pretrained": True}


@pytest.fixture()
def numbers_file(tmp_path: Path) -> Path:
    path = tmp_path / "paper_numbers.yaml"
    path.write_text(yaml.safe_dump(NUMBERS))
    return path


def _save(out: Path, name: str, numbers: dict, *, pretrained: bool = True, profile: str = "real") -> Path:
    return save_results(name, numbers, models=[{**MODEL, "pretrained": pretrained}], params={"profile": profile},
                        output_dir=out)


def _rows(md: str) -> dict[str, list[str]]:
    """``{id: cells}`` of the report's number tables."""
    rows = {}
    for line in md.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if cells and re.match(r"F\d\.\w", cells[0]):  # an id, not a finding of the verdict table
            rows[cells[0]] = cells
    return rows


def _folded(md: str) -> dict[str, str]:
    """``{id: line}`` of the folded lines (rows without a value of ours, one line per reason)."""
    found = {}
    for line in md.splitlines():
        m = re.match(r"- \*\*(not run here|not reproducible)\*\*.* — (F\d\..*)$", line)
        if m:
            found.update({i.strip(): line for i in m.group(2).split(",")})
    return found


def test_report_builds_from_a_fixture_of_results(tmp_path: Path, numbers_file: Path) -> None:
    _save(tmp_path, "09_downstream", {"no_reg": {"model": "dinov2_l", "imagenet_top1": 86.9, "ade20k_miou": 44.0,
                                                 "nyud_rmse": {"skipped": "NYUd not found under /data/nyud"}}})
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "09_downstream_table.png").write_bytes(b"png")
    paths = rp.build_report(tmp_path / "results", tmp_path / "build", paper_numbers=numbers_file)
    md = paths.md.read_text()
    rows = _rows(md)
    header = ["id", "what", "source", "model", "paper", "ours", "diff", "status", "why"]
    col = {h: i for i, h in enumerate(header)}
    assert rows["F8.top1"][col["status"]] == "reproduced"  # |86.9 - 86.4| <= 1
    assert rows["F8.top1"][col["ours"]] == "86.9" and rows["F8.top1"][col["diff"]] == "+0.5"
    assert rows["F8.miou"][col["status"]] == "differs"  # 4.3 points off, tolerance 2
    folded = _folded(md)  # rows without a value of ours: one line per reason
    assert "not run here** (skipped by the notebook)" in folded["F8.rmse"] and "NYUd not found" in folded["F8.rmse"]
    assert "not reproducible**" in folded["F8.paper_own"] and "never released" in folded["F8.paper_own"]
    assert "(no results file)" in folded["F2.outliers"] and "no results file for notebook 02_norms" in folded["F2.outliers"]
    assert "F2.outliers" not in rows and "F8.paper_own" not in rows
    assert "(../figures/09_downstream_table.png)" in md
    assert md.splitlines()[0].startswith("Made from pretrained weights")
    page = paths.html.read_text()
    assert "<table>" in page and 'class="reproduced"' in page and 'class="differs"' in page
    assert '<img src="../figures/09_downstream_table.png"' in page  # a thumbnail, linked relatively
    verdicts = md.split("## Verdicts", 1)[1].split("## Notebooks", 1)[0]  # the verdict per finding, at the top
    assert re.search(r"\| F8\. Downstream \| differs \| 1 \| 1 \| 0 \| 1 \| 1 \|", verdicts)
    assert "Not run here, by cause: no results file: 2; skipped by the notebook: 1." in verdicts


def test_missing_results_are_marked_not_run_never_dropped(tmp_path: Path) -> None:
    """With the real data file and no results at all, every paper number still has its row."""
    numbers = paper.paper_numbers()
    md = rp.build_report(tmp_path / "results", tmp_path / "out").md.read_text()
    rows, folded = _rows(md), _folded(md)
    assert not rows and set(folded) == {n.id for n in numbers}  # every number, folded by reason
    assert all("not run here" in line or "not reproducible" in line for line in folded.values())
    assert md.splitlines()[0].startswith("No results yet")
    for fid in rp.FINDINGS:  # every finding has its section, numbers or not
        assert re.search(rf"^## {fid}\. ", md, re.M)


@pytest.mark.parametrize("breakage, message", [
    (lambda r: r.pop("numbers"), "missing key 'numbers'"),
    (lambda r: r.update(random_weights="no"), "'random_weights' is str"),
    (lambda r: r.update(notebook="other"), "named 09_downstream.json"),
    (lambda r: r["numbers"]["no_reg"].pop("ade20k_miou"), "no 'ade20k_miou'"),
    (lambda r: r["numbers"]["no_reg"].update(nyud_rmse="0.38"), "expected a finite number"),
    (lambda r: r["models"][0].pop("pretrained"), "bool 'pretrained'"),
    (lambda r: r.update(schema=99), "this vitreg reads schema 1"),
])
def test_a_results_file_off_its_schema_fails_loudly(tmp_path: Path, numbers_file: Path, breakage, message: str) -> None:
    path = _save(tmp_path, "09_downstream", {"no_reg": {"imagenet_top1": 86.0, "ade20k_miou": 48.0, "nyud_rmse": 0.4}})
    rp.build_report(tmp_path / "results", tmp_path / "ok", paper_numbers=numbers_file)  # intact: builds
    record = json.loads(path.read_text())
    breakage(record)
    path.write_text(json.dumps(record))
    with pytest.raises(rp.ReportSchemaError) as err:
        rp.build_report(tmp_path / "results", tmp_path / "build", paper_numbers=numbers_file)
    assert message in str(err.value) and "09_downstream.json" in str(err.value)
    assert not (tmp_path / "build" / "report.md").exists()
    assert rp.main([str(tmp_path / "results"), str(tmp_path / "build"), "--numbers", str(numbers_file)]) == 2


def test_smoke_report_says_so_in_its_first_line(tmp_path: Path, numbers_file: Path) -> None:
    _save(tmp_path, "09_downstream", {"no_reg": {"imagenet_top1": 86.4, "ade20k_miou": 48.3, "nyud_rmse": 0.388}},
          pretrained=False, profile="smoke")
    paths = rp.build_report(tmp_path / "results", tmp_path / "smoke", paper_numbers=numbers_file)
    md = paths.md.read_text()
    first = md.splitlines()[0]
    assert first.startswith("SMOKE REPORT") and "random weights and synthetic data" in first
    rows = _rows(md)
    # equal to the paper, yet never "reproduced": random weights are not compared, and no difference shown
    assert rows["F8.top1"][-2] == "not run here" and "random weights" in rows["F8.top1"][-1]
    assert rows["F8.top1"][5] == "86.4" and rows["F8.top1"][6] == "—"
    body = paths.html.read_text().split("<body>", 1)[1]
    assert body.lstrip().startswith('<p class="smoke">SMOKE REPORT')


def test_partly_smoke_and_other_model(tmp_path: Path, numbers_file: Path) -> None:
    _save(tmp_path, "09_downstream", {"no_reg": {"model": "dinov2_b", "imagenet_top1": 86.4, "ade20k_miou": 48.3,
                                                 "nyud_rmse": 0.388}})
    _save(tmp_path, "02_norms", {"outlier_pct": 2.4, "stripes_pct": 25.0}, pretrained=False, profile="smoke")
    md = rp.build_report(tmp_path / "results", tmp_path / "b", paper_numbers=numbers_file).md.read_text()
    assert md.splitlines()[0].startswith("PARTLY A SMOKE REPORT") and "02_norms" in md.splitlines()[0]
    rows = _rows(md)
    assert rows["F8.top1"][-2] == "not run here" and "ours is from dinov2_b" in rows["F8.top1"][-1]


@pytest.mark.parametrize("ours, status", [(2.37 + 0.99, "reproduced"), (2.37 + 1.01, "differs"), (2.37 - 0.99, "reproduced"), (2.37 - 1.01, "differs")])
def test_tolerance_decides_the_status(tmp_path: Path, numbers_file: Path, ours: float, status: str) -> None:
    _save(tmp_path, "02_norms", {"outlier_pct": ours, "stripes_pct": 19.0})
    rows = _rows(rp.build_report(tmp_path / "results", tmp_path / "b", paper_numbers=numbers_file).md.read_text())
    assert rows["F2.outliers"][-2] == status
    assert rows["F2.stripes"][-2] == "differs"  # at least 20 asked, 19 found


def test_the_report_renders_markdown_and_html_from_one_context(tmp_path: Path, numbers_file: Path) -> None:
    """Both files hold the same rows; free text is escaped in HTML, and inline markup becomes tags."""
    _save(tmp_path, "09_downstream", {"no_reg": {"model": "dinov2_l", "imagenet_top1": 86.9, "ade20k_miou": 44.0,
                                                 "nyud_rmse": {"skipped": "no <nyud> | here"}}})
    paths = rp.build_report(tmp_path / "results", tmp_path / "build", paper_numbers=numbers_file)
    md, page = paths.md.read_text(), paths.html.read_text()
    assert "no <nyud> | here" in md  # folded lines are list items: a pipe cannot break a table there
    assert "no &lt;nyud&gt; | here" in page and "<nyud>" not in page
    assert "<code>data/paper_numbers.yaml</code>" in page and "<strong>reproduced</strong>" in page
    for fid in ("F2", "F8"):
        assert f"## {fid}. " in md and f"<h2>{fid}. " in page
    assert len(re.findall(r'<tr class="[^"]+"><td>F\d\.\w', page)) == len(_rows(md))


def test_an_entry_awaiting_its_key_is_a_row_not_a_schema_error(tmp_path: Path) -> None:
    data = json.loads(json.dumps(NUMBERS))
    data["numbers"].append({**data["numbers"][0], "id": "F8.new", "key": "no_reg.delta", "awaiting_key": True})
    path = tmp_path / "numbers.yaml"
    path.write_text(yaml.safe_dump(data))
    _save(tmp_path, "09_downstream", {"no_reg": {"imagenet_top1": 86.0, "ade20k_miou": 48.0, "nyud_rmse": 0.4}})
    folded = _folded(rp.build_report(tmp_path / "results", tmp_path / "b", paper_numbers=path).md.read_text())
    assert "not run here** (not written yet)" in folded["F8.new"] and "does not write these numbers yet" in folded["F8.new"]
