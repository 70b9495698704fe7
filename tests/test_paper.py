"""The paper module: one reader of the numbers, one rule, and notebook verdicts that agree with the report."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import yaml

from vitreg.claims import paper
from vitreg.present import report as rp
from vitreg.core.models import get_spec


def _put(numbers: dict, key: str, value, model: str | None) -> None:
    node = numbers
    *path, last = key.split(".")
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value
    if model is not None:
        node["model"] = model


def _record(nb: str, key: str, value, *, model: str | None = None, random_weights: bool = False) -> dict:
    """A minimal results record that holds ``value`` at the dotted ``key`` (and ``model`` beside it)."""
    numbers: dict = {}
    _put(numbers, key, value, model)
    return {"notebook": nb, "numbers": numbers, "profile": "smoke" if random_weights else "real",
            "random_weights": random_weights, "models": [{"name": "x", "pretrained": not random_weights}]}


def _operands(n: paper.PaperNumber, ours) -> dict:
    """Two operand values whose delta (or ratio) is ``ours`` (a skip or NaN goes into the first)."""
    if not isinstance(ours, float) or ours != ours:
        return {n.operands[0]: ours, n.operands[1]: 10.0}
    return {n.operands[0]: ours * 10.0 if n.derive == "ratio" else 10.0 + ours, n.operands[1]: 10.0}


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
        if n.notebook is None or n.derive:
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


def test_a_delta_verdict_and_the_report_row_agree_on_every_derived_entry() -> None:
    """The same for derived numbers: ``paper.check_delta`` (both values passed) and the report's row."""
    rng = random.Random(1)
    derived = [n for n in paper.paper_numbers() if n.derive]
    assert len(derived) >= 14 + 3 + 3 + 1
    compared = 0
    for n in derived:
        for ours in _values_around(n, rng):
            ours = ours if isinstance(ours, dict) else float(ours)
            values = _operands(n, ours)
            pair = n.operand_models or (n.model, n.model)
            for models in (None, dict(zip(n.operands, pair)), dict.fromkeys(n.operands, "another_model")):
                for random_weights in (False, True):
                    numbers: dict = {}
                    for k, v in values.items():
                        _put(numbers, k, v, None if models is None else models[k])
                    record = {"notebook": n.notebook, "numbers": numbers, "random_weights": random_weights,
                              "profile": "smoke" if random_weights else "real",
                              "models": [{"name": "x", "pretrained": not random_weights}]}
                    row = rp.row_for(n, record)
                    mine = [v for v in paper.check_delta(n.notebook, values, models=models,
                                                         random_weights=random_weights) if v.id == n.id]
                    assert len(mine) == 1
                    assert mine[0].status == row.status, (n.id, ours, models, random_weights)
                    assert mine[0].ours == row.ours or (mine[0].ours is None and row.ours is None)
                    compared += row.status in ("reproduced", "differs")
    assert compared > 100


@pytest.mark.parametrize("entry_id, a, b, status", [
    ("F6.delta.outlier_minus_normal.cifar10.dinov2_g", 99.3, 97.1, "reproduced"),  # the paper's own columns
    ("F6.delta.outlier_minus_normal.cifar10.dinov2_g", 97.1, 99.3, "differs"),  # swapped: -2.2
    ("F6.delta.outlier_minus_normal.cifar10.dinov2_g", 98.0, 98.0, "differs"),  # no effect
    ("F6.delta.outlier_minus_normal.places205.dinov2_g", 53.1, 55.1, "differs"),
    ("F6.delta.outlier_minus_normal.aircraft.dinov2_g", 75.0, 20.0, "reproduced"),  # 55: same sign, within 10
    ("F8.delta.register_gain.nyud_rmse.dinov2_l", 0.382, 0.388, "reproduced"),  # RMSE: registers LOWER it
    ("F8.delta.register_gain.nyud_rmse.dinov2_l", 0.388, 0.382, "differs"),
    ("F8.delta.register_gain.imagenet_top1.dinov2_l", 86.4, 86.7, "differs"),
    ("F8.delta.lost_register_gain.voc07.dinov2_l", 56.2, 32.2, "reproduced"),
    ("F8.delta.lost_register_gain.voc07.dinov2_l", 35.9, 35.0, "differs"),  # plain LOST: no register gain
    ("F2.ratio.post_over_pre_ln_spread.dinov2_g.course", 1.08, 11.3, "reproduced"),
    ("F2.ratio.post_over_pre_ln_spread.dinov2_g.course", 11.3, 11.3, "differs"),  # the LN hides nothing
])
def test_a_delta_row_checks_sign_and_size(entry_id: str, a: float, b: float, status: str) -> None:
    n = {e.id: e for e in paper.paper_numbers()}[entry_id]
    models = dict(zip(n.operands, n.operand_models or (n.model, n.model)))
    verdicts = [v for v in paper.check_delta(n.notebook, dict(zip(n.operands, (a, b))), models=models)
                if v.id == entry_id]
    assert [v.status for v in verdicts] == [status]
    assert verdicts[0].ours == pytest.approx(a - b if n.derive == "delta" else a / b)


def test_a_delta_row_is_tighter_than_the_cells_it_comes_from() -> None:
    """±5 on each Table 1 cell let swapped columns pass where the gap is small; the delta row's
    tolerance is half the gap (no spread in the notes), and no cell's tolerance reaches the gap."""
    by_id = {n.id: n for n in paper.paper_numbers()}
    deltas = [n for n in by_id.values() if n.id.startswith("F6.delta.outlier_minus_normal.")]
    assert len(deltas) == 14
    for d in deltas:
        ds = d.id.split(".")[3]
        normal, outlier = by_id[f"F6.table1.{ds}.normal.dinov2_g"], by_id[f"F6.table1.{ds}.outlier.dinov2_g"]
        gap = round(outlier.value - normal.value, 1)
        assert d.value == gap and d.operands == (outlier.key, normal.key)
        assert 0 < d.tolerance <= min(gap / 2, 10) and d.why
        assert normal.tolerance < gap and outlier.tolerance < gap and normal.why  # a swapped cell differs
        assert not paper.meets(d, 0.0) and not paper.meets(d, -gap)


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
    assert {v.status for v in smoke} == {"not applicable"} and "random weights" in smoke[0].why
    skipped = paper.check("02_high_norm_tokens", "outliers.outlier_pct", {"skipped": "no images"})
    assert {v.status for v in skipped} == {"not run here"} and "no images" in skipped[0].why
    other = paper.check("02_high_norm_tokens", "outliers.outlier_pct", 2.5, model="dinov2_s")
    assert {v.status for v in other} == {"not run here"} and "dinov2_s" in other[0].why
    assert paper.check("02_high_norm_tokens", "no.such.key", 1.0) == []
    unreleased = paper.check("09_downstream", "reg.imagenet_top1", 84.8, model="dinov2_l_reg")
    assert {v.status for v in unreleased if v.id.startswith("F8.table2.")} == {"not reproducible"}


def test_another_resolution_or_too_few_images_is_not_comparable() -> None:
    """The course measured at 224 px on 256 images; the real 02 runs at 518 px: not comparable, with why."""
    at_518 = paper.check("02_high_norm_tokens", "outliers.outlier_pct", 2.62, model="dinov2_g", resolution=518,
                         n_images=256)
    by_id = {v.id: v for v in at_518}
    assert by_id["F2.outlier_pct.dinov2_g.course"].status == "not comparable"
    assert "518 px" in by_id["F2.outlier_pct.dinov2_g.course"].why and "224 px" in by_id["F2.outlier_pct.dinov2_g.course"].why
    assert by_id["F2.outlier_pct.dinov2_g"].status == "reproduced"  # the paper states no resolution
    at_224 = paper.check("02_high_norm_tokens", "outliers.outlier_pct", 2.62, model="dinov2_g", resolution=[224, 224])
    assert {v.status for v in at_224} == {"reproduced"}
    few = paper.check("02_high_norm_tokens", "stripes.max_position_pct", 25.0, n_images=14)
    assert few[0].status == "not comparable" and "at least 256" in few[0].why
    assert paper.check("02_high_norm_tokens", "stripes.max_position_pct", 25.0, n_images=256)[0].status == "reproduced"
    smoke = paper.check("02_high_norm_tokens", "outliers.outlier_pct", 2.62, resolution=112, random_weights=True)
    assert {v.status for v in smoke} == {"not applicable"}  # random weights: not compared at all
    assert all(v.diff is None for v in smoke) and smoke[0].cause == "random weights"


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


@pytest.mark.parametrize("breakage, message", [
    (lambda e: e.update(key="a.b"), "names its notebook and no key"),
    (lambda e: e.update(delta=["only.one"]), "must be a list of two results keys"),
    (lambda e: e.update(ratio=["a", "b"]), "give delta or ratio, not both"),
    (lambda e: e.update(resolution="224"), "resolution must be a positive integer"),
])
def test_a_malformed_delta_entry_fails_loudly(tmp_path: Path, breakage, message: str) -> None:
    data = yaml.safe_load(paper.PAPER_NUMBERS.read_text())
    entry = next(e for e in data["numbers"] if e.get("delta"))
    breakage(entry)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(paper.PaperNumbersError, match=message):
        paper.paper_numbers(path)


def test_annotations_add_protocol_fields_by_id_and_unknown_ids_fail(tmp_path: Path) -> None:
    course = {n.id: n for n in paper.paper_numbers()}["F2.outlier_pct.dinov2_g.course"]
    assert (course.resolution, course.images, course.min_images) == (224, 256, None)
    data = yaml.safe_load(paper.PAPER_NUMBERS.read_text())
    data["annotations"]["F0.no.such.id"] = {"resolution": 224}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(paper.PaperNumbersError, match="no entry with that id"):
        paper.paper_numbers(path)


def test_table3_reads_the_numbers_file() -> None:
    t = paper.table3()
    assert t[f"[TTR]: {get_spec('dinov2_l').paper_name}"] == {"voc07": 32.2, "voc12": 36.8, "coco20k": 25.4}
    assert t[f"[TTR]: {get_spec('dinov2_l_reg').paper_name}"]["voc07"] == 56.2 and t["paper: DINO ViT-S/16"]["coco20k"] == 50.7
    assert t["paper: DeiT-III B +reg"]["voc12"] == 32.7


def test_unreleased_register_models_are_quoted_not_invented() -> None:
    rows = paper.unreleased_register_models()
    assert rows and all(".deit3." in r["id"] or ".openclip." in r["id"] for r in rows)
    assert {"id": "F8.table3.deit3.reg.voc12", "source": "Table 3", "value": 32.7}.items() <= \
        next(r for r in rows if r["id"] == "F8.table3.deit3.reg.voc12").items()


def test_random_weights_are_not_applicable_whatever_the_value() -> None:
    """A claim about trained models says nothing about random weights: "not applicable", never compared,
    even when ours equals the paper's number or reverses it; the cause says why, and the line printed says so."""
    n = {e.id: e for e in paper.paper_numbers()}["F2.outlier_pct.dinov2_g"]
    far = n.value + 10 * (n.tolerance or 1) + 1
    for ours in (n.value, far):
        v = paper.judge(n, ours, model="dinov2_g", random_weights=True, profile="real")
        assert v.status == "not applicable" and v.cause == "random weights" and v.diff is None and v.ours == ours
        assert str(v).startswith("NOT APPLICABLE") and "random weights" in str(v)
    trained = paper.judge(n, far, model="dinov2_g", random_weights=False)
    assert trained.status == "differs"  # the same value on trained weights is compared
    assert "not applicable" in paper.STATUSES and "random weights" not in str(paper.judge(n, None, random_weights=True))
    at_112 = paper.judge(n, 6.27, random_weights=True, resolution=[112, 112])
    assert at_112.why == "random weights; ours at 112 px"  # a number from a small input says so
