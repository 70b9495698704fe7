"""The reproduction report: built from a fixture of results, nothing dropped, schema errors loud."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from vitreg.claims import paper
from vitreg.present import report as rp
from vitreg.utils.results import save_results

NUMBERS = {
    "findings": {"F2": {"title": "High-norm tokens", "paper": "Fig. 3", "notebooks": ["02_norms"]},
                 "F8": {"title": "Downstream", "paper": "Table 2", "notebooks": ["09_downstream"]}},
    "primary": {"F8": ["F8.top1", "F8.miou"]},
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
        if cells and re.match(r"(★ )?F\d\.\w", cells[0]):  # an id (★: a primary claim), not a finding
            rows[cells[0].removeprefix("★ ")] = cells
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
    assert rows["F8.top1"][0] == "★ F8.top1"  # a primary claim is marked
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
    assert re.search(r"\| F8\. Downstream \| differs \| 1 \| 1 \| 0 \| 0 \| 0 \| 1 \| 1 \|", verdicts)
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
    assert rows["F8.top1"][-2] == "not applicable" and rows["F8.top1"][-1] == "not applicable: random weights"
    assert rows["F8.top1"][5] == "86.4" and len(rows["F8.top1"]) == 8  # no diff column when nothing was compared
    assert "| id | what | source | model | paper | ours | status | why |" in md
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
    assert len(re.findall(r'<tr class="[^"]+"><td>(?:★ )?F\d\.\w', page)) == len(_rows(md))


def test_an_entry_awaiting_its_key_is_a_row_not_a_schema_error(tmp_path: Path) -> None:
    data = json.loads(json.dumps(NUMBERS))
    data["numbers"].append({**data["numbers"][0], "id": "F8.new", "key": "no_reg.delta", "awaiting_key": True})
    path = tmp_path / "numbers.yaml"
    path.write_text(yaml.safe_dump(data))
    _save(tmp_path, "09_downstream", {"no_reg": {"imagenet_top1": 86.0, "ade20k_miou": 48.0, "nyud_rmse": 0.4}})
    folded = _folded(rp.build_report(tmp_path / "results", tmp_path / "b", paper_numbers=path).md.read_text())
    assert "not run here** (not written yet)" in folded["F8.new"] and "does not write these numbers yet" in folded["F8.new"]


# ---------------------------------------------------------------------------------------------------
# fixtures of real-profile results against the real data file. A reversed claim, or a number
# measured under another protocol, must each show; the paper's own numbers must show "reproduced".
# ---------------------------------------------------------------------------------------------------
def _real_numbers(nb: str, values: dict[str, float], models: dict[str, str] | None = None) -> dict:
    """A results ``numbers`` dict for ``nb`` holding every key the data file names for it: ``values``
    where given, else the first entry's paper value (``models``: holder -> model written beside it)."""
    numbers: dict = {}
    for n in paper.paper_numbers():
        if n.notebook != nb:
            continue
        for key in n.keys:
            value = values.get(key, n.value if n.key == key and n.value is not None else 1.0)
            node = numbers
            *path, last = key.split(".")
            for part in path:
                node = node.setdefault(part, {})
            node.setdefault(last, value)
            node[last] = values.get(key, node[last])
    for holder, model in (models or {}).items():
        node = numbers
        for part in holder.split("."):
            node = node[part]
        node["model"] = model
    return numbers


def _real(tmp_path: Path, nb: str, numbers: dict, *, image_size: int = 224, models: tuple[str, ...] = ("dinov2_g",),
          n_images: int = 256) -> None:
    save_results(nb, numbers, models=[{"name": m, "pretrained": True, "image_size": [image_size, image_size]}
                                      for m in models],
                 params={"profile": "real", "image_size": image_size, "n_images": n_images}, output_dir=tmp_path)


_T1 = [n for n in paper.paper_numbers() if n.id.startswith("F6.table1.") and n.id.split(".")[3] in ("normal", "outlier")]
_PAPER_T1 = {n.key: n.value for n in _T1}
_SWAPPED_T1 = {n.key: _PAPER_T1[n.key.replace(".normal", ".X").replace(".outlier", ".normal").replace(".X", ".outlier")]
               for n in _T1}
_DATASETS = sorted({n.key.split(".")[1] for n in _T1})
# the sign-only claim rows read the difference a notebook writes itself: swapped too
_SWAPPED_T1.update({f"claims.outlier_minus_normal.{ds}": _SWAPPED_T1[f"table1.{ds}.outlier"]
                    - _SWAPPED_T1[f"table1.{ds}.normal"] for ds in _DATASETS})
_TTR = {n.key: n.value for n in paper.paper_numbers() if n.id.startswith(("F8.ttr.", "F8.ttr.lost."))
        and n.notebook in ("08_lost", "09_downstream") and n.key and n.key.split(".")[-2] in ("reg", "no_reg")}
_REVERSED = {k.replace("no_reg.", "X.").replace("reg.", "no_reg.").replace("X.", "reg."): v for k, v in _TTR.items()}
_PAIR = {"no_reg": "dinov2_l", "reg": "dinov2_l_reg"}
_PAIRS = {"09_downstream": _PAIR, "08_lost": {f"ttr_sweep.{k}": v for k, v in _PAIR.items()}}  # 08: [TTR]'s protocol


def _statuses(tmp_path: Path) -> tuple[dict[str, str], str]:
    md = rp.build_report(tmp_path / "results", tmp_path / "out").md.read_text()
    return {i: cells[-2] for i, cells in _rows(md).items()}, md


def test_the_paper_own_numbers_are_reproduced(tmp_path: Path) -> None:
    _real(tmp_path, "06_global_information", _real_numbers("06_global_information", _PAPER_T1))
    for nb in ("08_lost", "09_downstream"):
        _real(tmp_path, nb, _real_numbers(nb, _TTR, _PAIRS[nb]), models=("dinov2_l", "dinov2_l_reg"))
    status, md = _statuses(tmp_path)
    deltas = [i for i in status if ".delta." in i]
    assert len(deltas) == 14 + 3 + 3
    assert {status[i] for i in deltas} == {"reproduced"}
    assert {status[n.id] for n in _T1} == {"reproduced"}
    assert re.search(r"\| F6\. Outliers hold global information \| reproduced \|", md)


def test_swapped_table1_columns_differ(tmp_path: Path) -> None:
    """with ±5 per cell, swapped normal and outlier columns passed on CIFAR-10, Places205 and
    ImageNet; now every delta row and every cell differs, and so does the finding."""
    _real(tmp_path, "06_global_information", _real_numbers("06_global_information", _SWAPPED_T1))
    status, md = _statuses(tmp_path)
    assert {status[f"F6.delta.outlier_minus_normal.{ds}.dinov2_g"] for ds in
            ("cifar10", "places205", "imagenet1k", "aircraft", "voc")} == {"differs"}
    assert {status[i] for i in status if i.startswith("F6.delta.")} == {"differs"}
    assert {status[n.id] for n in _T1} == {"differs"}
    counts = re.search(r"\| F6\. Outliers hold global information \| differs \| (\d+) \| (\d+) \|", md)
    assert counts and int(counts.group(2)) >= 14 + 28  # the deltas and the cells; the [CLS] cells agree


def test_reversed_register_effects_differ(tmp_path: Path) -> None:
    """Registers swapped with no registers (Table 2 and LOST): each register delta differs, including RMSE's
    (lower is better), although Table 2's single numbers stay within their tolerances."""
    for nb in ("08_lost", "09_downstream"):
        _real(tmp_path, nb, _real_numbers(nb, _REVERSED, _PAIRS[nb]), models=("dinov2_l", "dinov2_l_reg"))
    status, _ = _statuses(tmp_path)
    for task in ("imagenet_top1", "ade20k_miou", "nyud_rmse"):
        assert status[f"F8.delta.register_gain.{task}.dinov2_l"] == "differs"
        assert status[f"F8.ttr.{task}.dinov2_l_reg"] == "reproduced"  # the single number cannot tell
    for ds in ("voc07", "voc12", "coco20k"):
        assert status[f"F8.delta.lost_register_gain.{ds}.dinov2_l"] == "differs"


def test_a_518_px_measurement_is_not_compared_with_a_224_px_reference(tmp_path: Path) -> None:
    """The course measured 256 images at 224 px; notebook 02 runs at 518 px: those rows are not comparable
    (with the reason), while the paper's own number, measured at no stated resolution, is compared."""
    numbers = _real_numbers("02_high_norm_tokens", {"outliers.outlier_pct": 2.5, "outliers.norm_ratio": 11.0,
                                                    "outliers.norm_ratio_after_ln": 1.05})
    numbers["outliers"].update(image_size=518, n_images=256)
    _real(tmp_path, "02_high_norm_tokens", numbers, image_size=518)
    status, md = _statuses(tmp_path)
    rows = _rows(md)
    for i in ("F2.outlier_pct.dinov2_g.course", "F2.norm_ratio_pre_ln.dinov2_g.course",
              "F2.ratio.post_over_pre_ln_spread.dinov2_g.course"):
        assert status[i] == "not comparable" and "518 px" in rows[i][-1] and "224 px" in rows[i][-1]
    assert status["F2.outlier_pct.dinov2_g"] == "reproduced"
    numbers["outliers"].update(image_size=224)
    _real(tmp_path, "02_high_norm_tokens", numbers, image_size=224)
    status, _ = _statuses(tmp_path)
    assert status["F2.outlier_pct.dinov2_g.course"] == "reproduced"
    assert status["F2.ratio.post_over_pre_ln_spread.dinov2_g.course"] == "reproduced"  # 1.05 / 11 = 0.095


def test_too_few_images_is_not_comparable(tmp_path: Path) -> None:
    """App. A's stripes: 14 images make stripes from noise, so fewer than 256 are not compared."""
    numbers = _real_numbers("02_high_norm_tokens", {"stripes.max_position_pct": 25.0})
    numbers["stripes"]["n_images"] = 14
    _real(tmp_path, "02_high_norm_tokens", numbers, image_size=518)
    status, md = _statuses(tmp_path)
    assert status["F2.stripes_max_position_pct.dinov2"] == "not comparable"
    assert "ours on 14 images, the protocol needs at least 256" in _rows(md)["F2.stripes_max_position_pct.dinov2"][-1]


def test_the_stripes_and_the_course_similarities_at_another_resolution_are_not_comparable(tmp_path: Path) -> None:
    """The stripes sit on the 37x37 grid of 518 px and the course measured its similarities at 224 px: a run at
    another resolution gets "not comparable" for them (with both resolutions), never "differs"."""
    _real(tmp_path, "02_high_norm_tokens", _real_numbers("02_high_norm_tokens", {"stripes.max_position_pct": 5.0}),
          image_size=224)
    _real(tmp_path, "04_redundant_patches", _real_numbers("04_redundant_patches", {"similarity.outlier_mean": 0.5,
                                                                                   "similarity.normal_mean": 0.9}),
          image_size=518)
    status, md = _statuses(tmp_path)
    rows = _rows(md)
    for i in ("F2.stripes_max_position_pct.dinov2", "F4.neighbour_cos.outlier.dinov2_g.repro",
              "F4.neighbour_cos.normal.dinov2_g.repro"):
        assert status[i] == "not comparable" and "224 px" in rows[i][-1] and "518 px" in rows[i][-1]


# --- the runner's outcomes (results/_outcomes.json): what the LAST run did with each notebook ---------------
def _outcomes(results: Path, *outcomes: tuple[str, str, str], interrupted: bool = False) -> None:
    (results / "_outcomes.json").write_text(json.dumps({
        "profile": "real", "interrupted": interrupted,
        "outcomes": [{"notebook": nb, "status": s, "seconds": 1.0, "detail": d} for nb, s, d in outcomes]}))


def _notebook_table(md: str) -> dict[str, list[str]]:
    table = md.split("## Notebooks", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if cells and re.match(r"\[?\d\d_", cells[0]):
            rows[re.sub(r"^\[(.*?)\].*$", r"\1", cells[0])] = cells
    return rows


GOOD_09 = {"no_reg": {"model": "dinov2_l", "imagenet_top1": 86.9, "ade20k_miou": 48.0, "nyud_rmse": 0.39}}


def test_a_failed_notebooks_earlier_results_are_shown_as_stale_never_as_ran(tmp_path: Path, numbers_file: Path) -> None:
    """a failed rerun left the earlier run's results beside it, and the report listed it as ran."""
    _save(tmp_path, "09_downstream", GOOD_09)  # an earlier, successful run
    _save(tmp_path, "02_norms", {"outlier_pct": 2.4, "stripes_pct": 25.0})
    _outcomes(tmp_path / "results", ("02_norms", "ok", ""), ("09_downstream", "failed", "ValueError: planted failure"))
    md = rp.build_report(tmp_path / "results", tmp_path / "b", paper_numbers=numbers_file).md.read_text()
    rows, folded = _rows(md), _folded(md)
    for fid in ("F8.top1", "F8.miou", "F8.rmse"):  # not compared, not shown with the stale numbers
        assert fid not in rows and "(notebook failed)" in folded[fid], folded.get(fid)
        assert "09_downstream failed in the last run (ValueError: planted failure)" in folded[fid]
        assert "results file is from an earlier run" in folded[fid] and "not used" in folded[fid]
    assert rows["F2.outliers"][-2] == "reproduced"  # the notebook that ran is compared as before
    state = _notebook_table(md)["09_downstream"]
    assert state[1].startswith("failed in the last run") and "earlier run" in state[1] and state[3] == "—"
    assert _notebook_table(md)["02_norms"][1] == "ran"
    assert "Not run here, by cause: notebook failed: 3." in md
    assert md.splitlines()[0].startswith("Made from pretrained weights")


def test_an_interrupted_run_says_so_first_and_marks_what_did_not_finish(tmp_path: Path, numbers_file: Path) -> None:
    _save(tmp_path, "09_downstream", GOOD_09)
    _save(tmp_path, "02_norms", {"outlier_pct": 2.4, "stripes_pct": 25.0})
    _outcomes(tmp_path / "results", ("09_downstream", "interrupted", "interrupted (Ctrl-C or SIGTERM)"),
              ("02_norms", "not run", ""), interrupted=True)
    paths = rp.build_report(tmp_path / "results", tmp_path / "b", paper_numbers=numbers_file)
    md = paths.md.read_text()
    first = md.splitlines()[0]
    assert first.startswith("INTERRUPTED RUN") and "No results of the last run" in first
    folded = _folded(md)
    assert "(run interrupted)" in folded["F8.top1"] and "(not run in the last run)" in folded["F2.outliers"]
    assert not _rows(md)
    table = _notebook_table(md)
    assert table["09_downstream"][1].startswith("was interrupted in the last run")
    assert table["02_norms"][1].startswith("was not run in the last run")
    assert paths.html.read_text().split("<body>", 1)[1].lstrip().startswith('<p class="smoke">INTERRUPTED RUN')


def test_a_notebook_outside_the_last_run_keeps_its_earlier_results_marked_so(tmp_path: Path, numbers_file: Path) -> None:
    _save(tmp_path, "09_downstream", GOOD_09)
    _save(tmp_path, "02_norms", {"outlier_pct": 2.4, "stripes_pct": 25.0})
    _outcomes(tmp_path / "results", ("02_norms", "ok", ""))  # `vitreg run --only 02`
    md = rp.build_report(tmp_path / "results", tmp_path / "b", paper_numbers=numbers_file).md.read_text()
    assert _rows(md)["F8.top1"][-2] == "reproduced"
    assert _notebook_table(md)["09_downstream"][1] == "ran in an earlier run (not part of the last run)"


@pytest.mark.parametrize("text", ['{"outcomes": [{"status": "ok"}]}', '{"outcomes": [{"notebook": "02_norms", '
                                  '"status": "exploded"}]}', "not json"])
def test_a_damaged_outcomes_file_is_named(tmp_path: Path, numbers_file: Path, text: str) -> None:
    _save(tmp_path, "02_norms", {"outlier_pct": 2.4, "stripes_pct": 25.0})
    (tmp_path / "results" / "_outcomes.json").write_text(text)
    with pytest.raises(rp.ReportSchemaError, match=r"_outcomes\.json: not the runner's outcomes file"):
        rp.build_report(tmp_path / "results", tmp_path / "b", paper_numbers=numbers_file)


def test_random_weights_render_as_not_applicable_whatever_the_profile(tmp_path: Path, numbers_file: Path) -> None:
    """What ran decides, not the profile: random weights under profile real are "not applicable" (a column of
    the summary, a legend line, a class in the HTML); pretrained weights under another profile are compared."""
    _save(tmp_path, "09_downstream", {"no_reg": {"imagenet_top1": 99.0, "ade20k_miou": 48.3, "nyud_rmse": 0.388}},
          pretrained=False, profile="real")
    _save(tmp_path, "02_norms", {"outlier_pct": 9.0, "stripes_pct": 25.0}, profile="lecture")
    paths = rp.build_report(tmp_path / "results", tmp_path / "b", paper_numbers=numbers_file)
    md, html = paths.md.read_text(), paths.html.read_text()
    rows = _rows(md)
    assert rows["F8.top1"][-2] == "not applicable" and rows["F8.top1"][-1] == "not applicable: random weights"
    assert rows["F2.outliers"][-2] == "differs"  # 9.0 vs 2.37 ± 1.0 on trained weights: compared
    header = next(line for line in md.splitlines() if line.startswith("| finding | verdict |"))
    assert "| not applicable |" in header and "**not applicable**" in md
    f8 = next(line for line in md.splitlines() if line.startswith("| F8."))
    assert "| not applicable |" in f8  # the finding's verdict when nothing else was compared
    assert '<tr class="not-applicable">' in html and ".not-applicable{" in html


def test_a_lecture_run_on_pretrained_weights_is_judged_and_says_it_is_not_the_papers_experiment(tmp_path) -> None:
    """A lecture run loads published weights: its rows are judged (not smoke), and the report says what it is."""
    from vitreg.present.report import _first_line, is_smoke

    lecture = {"profile": "lecture", "models": [{"key": "dinov2_s", "pretrained": True}]}
    random_lecture = {"profile": "lecture", "models": [{"key": "dinov2_s", "pretrained": False}]}
    assert not is_smoke(lecture) and is_smoke(random_lecture) and is_smoke({"profile": "smoke", "models": []})
    first = _first_line({"02_high_norm_tokens": lecture}, tmp_path)
    assert "pretrained weights (profile lecture)" in first and "not the paper's experiment" in first
    assert _first_line({"02": {"profile": "real", "models": []}}, tmp_path).endswith("every notebook that ran.")


def test_a_smoke_run_whose_notebooks_have_a_synthetic_parameter_is_a_smoke_report_not_a_rehearsal(tmp_path):
    """06 and 09 have a `synthetic` parameter (True in smoke runs): only the rehearsal's own files (profile
    `rehearsal`) make the first line say SYNTHETIC REHEARSAL."""
    from vitreg.present.report import _first_line

    smoke = {"profile": "smoke", "params": {"pretrained": False, "synthetic": True}, "models": []}
    first = _first_line({"06_global_information": smoke}, tmp_path)
    assert first.startswith("SMOKE REPORT") and "REHEARSAL" not in first, first
    rehearsal = {"profile": "rehearsal", "params": {"synthetic": "synthetic rehearsal, scenario paper"}, "models": []}
    assert _first_line({"06_global_information": rehearsal}, tmp_path).startswith("SYNTHETIC REHEARSAL")
