"""Notebook 07's experiment: its steps measure the DINOv2 pairs and build the results record (Fig. 7, §2.2)."""

from __future__ import annotations

import dataclasses

import pytest

from vitreg.experiments import registers as experiment
from vitreg.experiments.base import as_numbers, record_paths


def _params(**over):
    return experiment.EXPERIMENT.build({"pretrained": False, "device": "cpu", "images": "photos", "image_size": 56,
                                        "model_pairs": [["dinov2_s", "dinov2_s_reg"]], "batch_size": 2, "n_show": 1,
                                        **over})


@pytest.fixture(scope="module")
def planted_run():
    """Smoke-sized run of the steps with planted norms: patches without registers, registers with them."""
    from vitreg.core.images import sample_photos

    p = _params(plant=True)
    images = [img for _, img in sample_photos()[:2]]
    pairs = experiment.register_pairs(p)
    measured = experiment.measure(p, images, pairs)
    skipped: list[tuple[str, str]] = []
    record = experiment.build_record(p, pairs, measured, n_images=len(images),
                                     skip=lambda what, why: skipped.append((what, why)) or {"skipped": why})
    return p, measured, record, skipped


def test_every_paper_key_of_07_is_a_path_of_its_record():
    from vitreg.claims.paper import paper_numbers

    mine = [n for n in paper_numbers() if n.notebook == "07_registers"]
    assert mine and experiment.EXPERIMENT.record is experiment.Record
    assert {n.key for n in mine if n.key} <= record_paths(experiment.Record)


def test_measure_loads_each_pair_in_order_and_recovers_the_planted_norms(planted_run):
    p, measured, record, _ = planted_run
    assert list(measured) == ["dinov2_s", "dinov2_s_reg"]
    reg = record.pairs.s.reg
    # the planted register levels (200, 300, 450, 600) are far above every patch: all 4 x 2 register norms
    assert reg.register_above_patch_p99_pct == 100.0 and reg.model == "dinov2_s_reg"
    assert sorted(round(v) for v in reg.prefix_norm_median.values())[-4:] == [200, 300, 450, 600]
    assert record.norms.no_reg_outlier_pct > 0.1 and record.norms.reg_outlier_pct < record.norms.no_reg_outlier_pct
    assert all(experiment.planted_checks(record).values())


def test_record_holds_the_notebooks_numbers_and_skips_the_sizes_not_run(planted_run):
    p, measured, record, skipped = planted_run
    assert skipped == [(f"pairs.{s}", f"dinov2_{s}_reg not in model_pairs") for s in "blg"]
    numbers = as_numbers(record)
    why = {"skipped": "dinov2_b_reg not in model_pairs"}
    assert numbers["pairs"]["b"] == {"reg": {"register_above_patch_p99_pct": why, "patch_high_mode_pct": why}}
    assert numbers["pairs"]["s"]["no_reg"] == measured["dinov2_s"].summary
    assert numbers["pairs"]["s"]["reg"] == {"model": "dinov2_s_reg", **measured["dinov2_s_reg"].summary}
    assert numbers["cost"] == {"model": "dinov2_s_reg", "image_size": 56,  # no L pair: the largest
                               "flops_overhead_pct": numbers["pairs"]["s"]["flops_overhead_pct"]}
    assert 0 < numbers["cost"]["flops_overhead_pct"] < 50 and numbers["n_images"] == 2 and numbers["planted"] is True
    assert list(record.pairs.measured()) == ["s"]
    keys = [k for k, _, _ in experiment.claims(record)]
    assert set(keys) <= record_paths(experiment.Record) and "pairs.g.reg.register_above_patch_p99_pct" in keys
    assert dict((k, m) for k, _, m in experiment.claims(record))["norms.no_reg.outlier_pct"] == "dinov2_s"


def test_planted_checks_fail_without_the_planted_norms(planted_run):
    _, _, record, _ = planted_run
    clean = dataclasses.replace(record, norms=dataclasses.replace(record.norms, no_reg_outlier_pct=0.0))
    assert not all(experiment.planted_checks(clean).values())


def test_an_empty_or_foreign_pair_list_says_what_to_list():
    with pytest.raises(ValueError, match="model_pairs"):
        experiment.register_pairs(_params(model_pairs=[["dinov2_s", "dinov2_b_reg"]]))
    with pytest.raises(ValueError, match="at least one"):
        experiment.build_record(_params(model_pairs=[]), [], {}, n_images=0)
