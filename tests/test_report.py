"""The reproduction report: built from a fixture of results, nothing dropped, schema errors loud."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

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
        if cells and re.match(r"F\d\.", cells[0]):
            rows[cells[0]] = cells
    return rows


def test_report_builds_from_a_fixture_of_results(tmp_path: Path, numbers_file: Path) -> None:
    _save(tmp_path, "09_downstream", {"no_reg": {"model": "dinov2_l", "imagenet_top1": 86.9, "ade20k_miou": 44.0,
                                                 "nyud_rmse": {"skipped": "NYUd not found under /data/nyud"}}})
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "09_downstream_table.png").write_bytes(b"png")
    paths = rp.build_report(tmp_path / "results", tmp_path / "build", paper_numbers=numbers_file)
    md = paths.md.read_text()
    rows = _rows(md)
    header = ["id", "what", "source", "origin", "model", "paper", "ours", "diff", "status", "why"]
    col = {h: i for i, h in enumerate(header)}
    assert rows["F8.top1"][col["status"]] == "reproduced"  # |86.9 - 86.4| <= 1
    assert rows["F8.top1"][col["ours"]] == "86.9" and rows["F8.top1"][col["diff"]] == "+0.5"
    assert rows["F8.miou"][col["status"]] == "differs"  # 4.3 points off, tolerance 2
    assert rows["F8.rmse"][col["status"]] == "not run here" and "NYUd not found" in rows["F8.rmse"][col["why"]]
    assert rows["F8.paper_own"][col["status"]] == "not reproducible" and "never released" in rows["F8.paper_own"][col["why"]]
    assert rows["F8.paper_own"][col["ours"]] == "86.9"  # shown for context
    assert "no results file for notebook 02_norms" in rows["F2.outliers"][col["why"]]
    assert "(../figures/09_downstream_table.png)" in md
    assert md.splitlines()[0].startswith("Made from pretrained weights")
    page = paths.html.read_text()
    assert "<table>" in page and 'class="reproduced"' in page and 'class="differs"' in page


def test_missing_results_are_marked_not_run_never_dropped(tmp_path: Path) -> None:
    """With the real data file and no results at all, every paper number still has its row."""
    _, numbers = rp.load_paper_numbers()
    md = rp.build_report(tmp_path / "results", tmp_path / "out").md.read_text()
    rows = _rows(md)
    assert set(rows) == {n.id for n in numbers}
    statuses = {cells[-2] for cells in rows.values()}
    assert statuses <= {"not run here", "not reproducible"}
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
    # equal to the paper, yet never "reproduced": random weights are not compared
    assert rows["F8.top1"][-2] == "not run here" and "random weights" in rows["F8.top1"][-1]
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


def test_the_paper_numbers_file_matches_the_notes() -> None:
    findings, numbers = rp.load_paper_numbers()
    by_id = {n.id: n for n in numbers}
    assert set(findings) == set(rp.FINDINGS)
    assert by_id["F2.outlier_pct.dinov2_g"].value == 2.37
    assert by_id["F8.table2.dinov2.reg.nyud_rmse"].value == 0.366
    assert by_id["F8.ttr.ade20k_miou.dinov2_l_reg"].value == 49.1
    assert by_id["F6.table1.aircraft.outlier.dinov2_g"].value == 79.1
    assert sum(n.id.startswith("F6.table1.") for n in numbers) == 14 * 3
    order = yaml.safe_load((Path(rp.__file__).resolve().parents[1] / "notebooks" / "order.yaml").read_text())
    known = {e["notebook"] for e in order}
    assert {n.notebook for n in numbers if n.notebook} <= known
    assert all(n.reason for n in numbers if n.reproducible is False)


def test_a_malformed_paper_numbers_file_fails_loudly(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(NUMBERS))
    bad["numbers"].append(dict(bad["numbers"][0]))  # duplicate id
    bad["numbers"][1].pop("tolerance")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(rp.ReportSchemaError, match="duplicate id") as err:
        rp.load_paper_numbers(path)
    assert "needs a numeric tolerance" in str(err.value)


def test_a_rounded_zero_is_compared_as_rounded() -> None:
    """The course reproduction printed 0.00% for ViT-g+reg: 0.003% (1 token in 33,000) rounds to it, 0.01% not."""
    _, numbers = rp.load_paper_numbers()
    zero = {n.id: n for n in numbers}["F7.outlier_pct.dinov2_g_reg.course"]
    assert rp.compare(zero, 0.0) and rp.compare(zero, 0.003)
    assert not rp.compare(zero, 0.01)
