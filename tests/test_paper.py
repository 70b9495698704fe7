"""The paper module: one reader of the numbers, one rule, and notebook verdicts that agree with the report."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import yaml

from vitreg import paper
from vitreg import report as rp


def _record(nb: str, key: str, value, *, model: str | None = None, random_weights: bool = False) -> dict:
    """A minimal results record that holds ``value`` at the dotted ``key`` (and ``model`` beside it)."""
    numbers: dict = {}
    node = numbers
    *path, last = key.split(".")
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value
    if model is not None:
        node["model"] = model
    return {"notebook": nb, "numbers": numbers, "profile": "smoke" if random_weights else "real",
            "random_weights": random_weights, "models": [{"name": "x", "pretrained": not random_weights}]}


def _values_around(n: paper.PaperNumber, rng: random.Random) -> list:
    """Values on both sides of every edge of ``n``'s rule, plus skips and non-numbers."""
    v = n.value if n.value is not None else 1.0
    t = n.tolerance or max(abs(v) * 0.1, 0.01)
    edges = [v, v + t, v - t]
    out = [e + d for e in edges for d in (-1e-6, 1e-6, -t / 3, t / 3)]
    out += [rng.uniform(v - 4 * t, v + 4 * t) for _ in range(6)]
    return out + [{"skipped": "not measured"}, math.nan]


def test_a_notebook_verdict_and_the_report_row_agree_on_every_entry_and_value() -> None:
    """By construction: for every entry of the real data file, and values inside and outside every rule,
    ``paper.check`` (what a notebook prints) gives the status the report's row gives."""
    rng = random.Random(0)
    numbers = paper.paper_numbers()
    assert len(numbers) > 100
    compared = 0
    for n in numbers:
        if n.notebook is None:
            continue
        for value in _values_around(n, rng):
            for model in (None, n.model, "another_model"):
                for random_weights in (False, True):
                    record = _record(n.notebook, n.key, value, model=model, random_weights=random_weights)
                    row = rp.row_for(n, record)
                    same_key = [v for v in paper.check(n.notebook, n.key, value, model=model,
                                                       random_weights=random_weights) if v.id == n.id]
                    assert len(same_key) == 1
                    assert same_key[0].status == row.status, (n.id, value, model, random_weights)
                    compared += row.status in ("reproduced", "differs")
    assert compared > 500  # the agreement covers real comparisons, not only "not run here"


@pytest.mark.parametrize("entry_id", ["F2.outlier_pct.dinov2_g", "F3.emergence_block.dinov2_g",
                                      "F2.stripes_max_position_pct.dinov2", "F7.flops_overhead_pct.4reg"])
def test_every_rule_can_fail(entry_id: str) -> None:
    """A value that reverses the claim is "differs"; the paper's own value is "reproduced"."""
    n = {e.id: e for e in paper.paper_numbers()}[entry_id]
    far = {"approx": n.value + 10 * (n.tolerance or 1) + 1, "at_least": n.value - 1, "at_most": n.value + 1}[n.compare]
    model = n.model if paper._is_zoo_key(n.model) else None
    ok = [v for v in paper.check(n.notebook, n.key, n.value, model=model) if v.id == entry_id]
    bad = [v for v in paper.check(n.notebook, n.key, far, model=model) if v.id == entry_id]
    assert ok[0].status == "reproduced" and bad[0].status == "differs"
    assert entry_id in str(bad[0]) and "DIFFERS" in str(bad[0]) and bad[0].rule in str(bad[0])


def test_check_returns_every_entry_on_a_key_and_says_why() -> None:
    verdicts = paper.check("02_high_norm_tokens", "outliers.outlier_pct", 2.5, model="dinov2_g")
    assert {v.id for v in verdicts} == {"F2.outlier_pct.dinov2_g", "F2.outlier_pct.dinov2_g.course"}
    assert all(v.status == "reproduced" and v.ours == 2.5 for v in verdicts)
    assert "tolerance ±1.0" in verdicts[0].rule
    smoke = paper.check("02_high_norm_tokens", "outliers.outlier_pct", 2.5, random_weights=True, profile="smoke")
    assert {v.status for v in smoke} == {"not run here"} and "random weights" in smoke[0].why
    skipped = paper.check("02_high_norm_tokens", "outliers.outlier_pct", {"skipped": "no images"})
    assert {v.status for v in skipped} == {"not run here"} and "no images" in skipped[0].why
    other = paper.check("02_high_norm_tokens", "outliers.outlier_pct", 2.5, model="dinov2_s")
    assert {v.status for v in other} == {"not run here"} and "dinov2_s" in other[0].why
    assert paper.check("02_high_norm_tokens", "no.such.key", 1.0) == []
    unreleased = paper.check("09_downstream", "reg.imagenet_top1", 84.8, model="dinov2_l_reg")
    assert {v.status for v in unreleased if v.id.startswith("F8.table2.")} == {"not reproducible"}


def test_a_rounded_zero_is_compared_as_rounded() -> None:
    """The course reproduction printed 0.00% for ViT-g+reg: 0.003% (1 token in 33,000) rounds to it, 0.01% not."""
    zero = {n.id: n for n in paper.paper_numbers()}["F7.outlier_pct.dinov2_g_reg.course"]
    assert paper.meets(zero, 0.0) and paper.meets(zero, 0.003)
    assert not paper.meets(zero, 0.01)


def test_the_paper_numbers_file_matches_the_notes() -> None:
    findings, numbers = paper.findings(), paper.paper_numbers()
    by_id = {n.id: n for n in numbers}
    assert set(findings) == set(paper.FINDINGS)
    assert by_id["F2.outlier_pct.dinov2_g"].value == 2.37
    assert by_id["F8.table2.dinov2.reg.nyud_rmse"].value == 0.366
    assert by_id["F8.ttr.ade20k_miou.dinov2_l_reg"].value == 49.1
    assert by_id["F6.table1.aircraft.outlier.dinov2_g"].value == 79.1
    assert sum(n.id.startswith("F6.table1.") for n in numbers) == 14 * 3
    order = yaml.safe_load((paper.PAPER_NUMBERS.parents[1] / "notebooks" / "order.yaml").read_text())
    known = {e["notebook"] for e in order}
    assert {n.notebook for n in numbers if n.notebook} <= known
    assert all(n.reason for n in numbers if n.reproducible is False)


def test_a_malformed_paper_numbers_file_fails_loudly(tmp_path: Path) -> None:
    data = yaml.safe_load(paper.PAPER_NUMBERS.read_text())
    bad = json.loads(json.dumps(data))
    bad["numbers"].append(dict(bad["numbers"][0]))  # duplicate id
    first_approx = next(e for e in bad["numbers"] if e.get("compare") == "approx")
    first_approx.pop("tolerance")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(paper.PaperNumbersError, match="duplicate id") as err:
        paper.paper_numbers(path)
    assert "needs a numeric tolerance" in str(err.value)
    with pytest.raises(rp.ReportSchemaError, match="duplicate id"):
        rp.build_report(tmp_path / "results", tmp_path / "out", paper_numbers=path)


def test_table3_reads_the_numbers_file() -> None:
    t = paper.table3()
    assert t["[TTR]: dinov2_l"] == {"voc07": 32.2, "voc12": 36.8, "coco20k": 25.4}
    assert t["[TTR]: dinov2_l_reg"]["voc07"] == 56.2 and t["paper: DINO ViT-S/16"]["coco20k"] == 50.7
    assert t["paper: DeiT-III B +reg"]["voc12"] == 32.7


def test_unreleased_register_models_are_quoted_not_invented() -> None:
    rows = paper.unreleased_register_models()
    assert rows and all(".deit3." in r["id"] or ".openclip." in r["id"] for r in rows)
    assert {"id": "F8.table3.deit3.reg.voc12", "source": "Table 3", "value": 32.7}.items() <= \
        next(r for r in rows if r["id"] == "F8.table3.deit3.reg.voc12").items()
