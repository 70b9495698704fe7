"""Three verdicts with uncertainty (reproduced, inconclusive, differs), no effect never reproduced, and a
finding decided by its primary claims alone: on the real data file and planted intervals."""

from __future__ import annotations

import pytest

from vitreg.claims import paper
from vitreg.claims.measured import Measured
from vitreg.present import report as rp
from vitreg.present.report_render import finding_verdict
from vitreg.utils.results import save_results

BY_ID = {n.id: n for n in paper.paper_numbers()}
GAIN = BY_ID["F8.delta.register_gain.imagenet_top1.dinov2_l"]  # [TTR]: +0.3, tolerance 0.3
SIGN = BY_ID["F4.claim.outlier_minus_normal_cos.dinov2_g"]  # at least 0, a sign claim
BOUND = BY_ID["F7.claim.register_above_patch_p99_pct.dinov2_l_reg"]  # at least 50
LEVEL = BY_ID["F3.emergence_block.dinov2_g"]  # 15 ± 3, no "no effect" value


@pytest.mark.parametrize("number, ours, status", [
    (GAIN, Measured(0.3, (0.15, 0.45), n=50000), "reproduced"),
    (GAIN, Measured(0.3, (-0.2, 0.8), n=2000), "inconclusive"),  # holds 0 and +0.3
    (GAIN, Measured(0.0, (-0.1, 0.1), n=50000), "inconclusive"),  # no effect, but +0.05 is accepted too
    (GAIN, Measured(-0.4, (-0.6, -0.2), n=50000), "differs"),  # the wrong side
    (GAIN, Measured(1.5, (1.2, 1.8), n=50000), "differs"),  # five times the effect: excludes the paper's size
    (GAIN, 0.0, "differs"),  # a plain number at no effect is never reproduced (the tolerance used to pass it)
    (GAIN, 0.25, "reproduced"),  # a plain number is judged as a point
    (SIGN, Measured(0.2, (0.15, 0.25), n=256), "reproduced"),
    (SIGN, Measured(0.02, (-0.03, 0.07), n=16), "inconclusive"),
    (SIGN, Measured(-0.1, (-0.15, -0.05), n=256), "differs"),
    (SIGN, 0.0, "differs"),
    (BOUND, Measured(80.0, (70.0, 90.0), n=64), "reproduced"),
    (BOUND, Measured(55.0, (40.0, 70.0), n=64), "inconclusive"),  # both sides of the bound
    (BOUND, Measured(20.0, (10.0, 30.0), n=64), "differs"),
    (LEVEL, Measured(15.0, (13.0, 17.0), n=256), "reproduced"),
    (LEVEL, Measured(20.0, (10.0, 30.0), n=256), "inconclusive"),  # both inside and far outside 12-18
    (LEVEL, Measured(30.0, (26.0, 34.0), n=256), "differs"),
])
def test_the_interval_decides_among_three_verdicts(number, ours, status) -> None:
    v = paper.judge(number, ours, model=number.model)
    assert v.status == status, v.why
    if isinstance(ours, Measured):
        assert v.ci == ours.ci and v.n == ours.n and f"[{paper.fmt(ours.lo, number)}, " in str(v)


def test_no_table2_delta_row_reproduces_no_effect() -> None:
    """The tolerance of the Table 2 gains equals the effect: 0 sat on its edge and was reproduced."""
    for task in ("imagenet_top1", "ade20k_miou", "nyud_rmse"):
        n = BY_ID[f"F8.delta.register_gain.{task}.dinov2_l"]
        assert n.tolerance == pytest.approx(abs(n.value)) and n.no_effect == 0
        assert paper.judge(n, 0.0, model=n.model).status == "differs"
        assert paper.judge(n, n.value, model=n.model).status == "reproduced"


def test_an_inconclusive_verdict_says_how_many_images_would_decide_it() -> None:
    """Half-width 0.5 on 2,000 samples around 0.3: resolving the paper's +0.3 needs (0.5 / 0.3)^2 x 2,000."""
    v = paper.judge(GAIN, Measured(0.3, (-0.2, 0.8), n=2000), model=GAIN.model)
    assert v.needed == 5556 and "about 5,556 would decide it" in v.why and "n = 2000" in v.why
    null = paper.judge(GAIN, Measured(0.0, (-0.1, 0.1), n=50000), model=GAIN.model)
    assert null.status == "inconclusive" and null.needed is None and "narrower than the paper's effect" in null.why


def test_a_measured_value_in_a_results_file_reaches_the_report_and_the_notebook_alike(tmp_path) -> None:
    value = {"value": 0.3, "ci": [-0.2, 0.8], "n": 2000}
    n = BY_ID["F6.delta.outlier_minus_normal.cifar10.dinov2_g"]
    assert paper.check("04_redundant_patches", "similarity.outlier_minus_normal", value,
                       model="dinov2_g")[0].status == "inconclusive"
    numbers = {"table1": {"cifar10": {"outlier": {"value": 99.3, "ci": [99.1, 99.5], "n": 10000},
                                      "normal": {"value": 97.1, "ci": [96.8, 97.4], "n": 10000}}}}
    row = rp.row_for(n, {"notebook": n.notebook, "numbers": numbers, "profile": "real", "models": []})
    assert row.status == "reproduced" and row.ci is not None and row.ci[0] < 2.2 < row.ci[1]
    broken = {"table1": {"cifar10": {"outlier": {"value": 99.3, "ci": [99.5, 99.1]}, "normal": 97.1}}}
    assert rp.lookup(broken, "table1.cifar10.outlier")[0] == "missing"


def _row(status: str, nid: str, proxy: str | None = None) -> paper.Verdict:
    return paper.Verdict(BY_ID[nid], status, "planted", 1.0, proxy=proxy)  # type: ignore[arg-type]


def test_a_finding_is_decided_by_its_primary_claims_and_never_by_levels_or_proxies() -> None:
    primary = paper.findings()["F8"].primary
    gains = [i for i in primary if ".delta." in i]
    level = "F8.ttr.imagenet_top1.dinov2_l"  # an absolute accuracy: context
    assert level not in primary
    ok = [_row("reproduced", i) for i in primary]
    assert finding_verdict(ok + [_row("differs", level)], primary) == "reproduced"
    assert finding_verdict([_row("inconclusive", gains[0])] + ok[1:], primary) == "inconclusive"
    assert finding_verdict([_row("differs", gains[0])] + ok[1:], primary) == "differs"
    proxied = [_row("differs", gains[0], proxy="trained on 8,000 of 24,231 images")] + ok[1:]
    assert finding_verdict(proxied, primary) == "reproduced"  # a proxy never flips the finding
    only_proxies = [_row("differs", i, proxy="reduced budget") for i in primary]
    assert finding_verdict(only_proxies, primary) == "proxy only"
    assert finding_verdict([_row("differs", level)], primary) == "not run"
    assert finding_verdict([_row("reproduced", "F3.emergence_block.dinov2_g")], ()) == "no primary claim"


def test_a_reduced_budget_in_the_results_makes_the_row_a_proxy(tmp_path) -> None:
    n = BY_ID["F8.delta.register_gain.nyud_rmse.dinov2_l"]
    numbers = {"no_reg": {"model": "dinov2_l", "nyud_rmse": 0.388}, "reg": {"model": "dinov2_l_reg", "nyud_rmse": 0.382},
               "budget": {"nyud": {"proxy": True, "why": "trained on 8,000 of 24,231 images: a proxy of the protocol"},
                          "imagenet": {"proxy": False, "why": "full protocol"}}}
    row = rp.row_for(n, {"notebook": n.notebook, "numbers": numbers, "profile": "real", "models": []})
    assert row.status == "reproduced" and row.proxy and "8,000 of 24,231" in row.why
    full = BY_ID["F8.ttr.imagenet_top1.dinov2_l"]
    numbers["no_reg"]["imagenet_top1"] = 86.4
    assert rp.row_for(full, {"notebook": n.notebook, "numbers": numbers, "profile": "real", "models": []}).proxy is None
    measured = paper.judge(n, Measured(-0.006, (-0.01, -0.002), n=654, proxy=True, budget={"n_train": 8000}),
                           model=n.model)
    assert measured.proxy and "reduced budget" in measured.why


def test_the_primary_claims_section_is_checked(tmp_path) -> None:
    import yaml

    data = yaml.safe_load(paper.PAPER_NUMBERS.read_text())
    data["primary"] = {"F8": ["F8.delta.register_gain.imagenet_top1.dinov2_l", "F2.outlier_pct.dinov2_g",
                              "F8.table2.deit3.no_reg.imagenet_top1", "F8.nothing"]}
    path = tmp_path / "numbers.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(paper.PaperNumbersError) as err:
        paper.paper_numbers(path)
    text = str(err.value)
    assert "belongs to F2" in text and "not compared by any notebook" in text and "'F8.nothing' is not an entry" in text


def test_every_finding_with_compared_claims_names_its_primary_claims() -> None:
    """All but F3, whose only emergence block is cut at an absolute 150 at every depth: no claim decides it."""
    findings = paper.findings()
    for fid, f in findings.items():
        compared = [n for n in BY_ID.values() if n.finding == fid and n.notebook and n.reproducible is not False]
        assert bool(f.primary) == (bool(compared) and fid != "F3"), fid
        for i in f.primary:  # primary claims are deltas, signs, ratios or shares, never absolute accuracies
            assert BY_ID[i].unit not in ("%",) or BY_ID[i].derive or BY_ID[i].no_effect is not None \
                or "share" in BY_ID[i].what, i


def test_a_printed_verdict_shows_a_bound_as_a_bound_and_the_papers_number_as_the_papers():
    """A check line printed "paper 75 %" for a bound the paper never gave; a bound now reads "needs ≥ 75"."""
    from vitreg.claims.paper import judge, paper_numbers

    numbers = paper_numbers()
    bound = next(n for n in numbers if n.compare == "at_least" and n.value is not None and n.notebook)
    line = str(judge(bound, bound.value + 1.0))
    assert f"needs ≥ " in line and ", paper " not in line, line
    approx = next(n for n in numbers if n.compare == "approx" and n.value is not None and n.notebook)
    assert ", paper " in str(judge(approx, approx.value)), str(judge(approx, approx.value))
