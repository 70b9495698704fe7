"""Notebook 03's steps and results record (Fig. 4a, Fig. 4c proxy) on planted norm stacks."""

from __future__ import annotations

import pytest
import torch

from vitreg import planting
from vitreg.claims.paper import paper_numbers
from vitreg.experiments import emergence as exp
from vitreg.experiments.base import as_numbers, record_paths

N_BLOCKS, N_IMAGES, N_PATCHES = 12, 8, 64


def _stack(start: int) -> torch.Tensor:
    """Patch norms of about 10 at every block, with 400 on 3 patches per image from block ``start`` (0-based) on."""
    gen = torch.Generator().manual_seed(0)
    stack = 10 + torch.rand(N_BLOCKS, N_IMAGES, N_PATCHES, generator=gen)
    stack[start:, :, :3] = 400.0
    return stack


def _params(**kw):
    return exp.EXPERIMENT.build({"depth_models": ["dinov2_s"], "size_models": ["dinov2_s"], "n_bootstrap": 50,
                                 "plant": True, **kw})


def _record(p, stack):
    profiles = {n: exp.depth(stack, p) for n in exp.model_order(p)}
    sizes = {n: exp.size_measures(stack, p) for n in p.size_models}
    return exp.build_record(p, profiles, {n: s[0] for n, s in sizes.items()}, {n: s[1] for n, s in sizes.items()})


def test_every_paper_number_of_03_resolves_to_a_record_field():
    keys = {n.key for n in paper_numbers() if n.notebook == "03_emergence" and n.key}
    assert keys and keys <= record_paths(exp.EXPERIMENT.record)


def test_the_record_finds_the_planted_emergence_block_and_size_mode():
    p = _params()
    start = planting.planted_emergence_block(N_BLOCKS)   # planted at that block's output (0-based)
    r = _record(p, _stack(start))
    assert r.depth.model == "dinov2_s" and r.depth.n_blocks == N_BLOCKS
    assert r.depth.emergence_block == start + 1   # counted from 1
    assert r.depth.fractions_pct[start] == pytest.approx(100 * 3 / N_PATCHES)
    assert r.depth_models["dinov2_s"].early_outlier_pct == 0.0
    size = r.size_proxy["dinov2_s"]
    assert size.outlier_pct == pytest.approx(100 * 3 / N_PATCHES) and size.bimodal and size.distilled
    assert size.high_mode_pct == pytest.approx(100 * 3 / N_PATCHES)
    assert all(exp.planted_truths(r, p).values())


def test_outliers_one_block_late_miss_the_planted_block():
    p = _params()
    r = _record(p, _stack(planting.planted_emergence_block(N_BLOCKS) + 1))
    assert not exp.planted_truths(r, p)["dinov2_s: emergence at the planted block"]


def test_models_of_the_claim_that_did_not_run_are_skipped_with_the_reason():
    r = _record(_params(), _stack(5))
    assert r.depth_models["dinov2_g"].early_outlier_pct == {"skipped": "dinov2_g not in depth_models"}
    for n in ("dinov2_b", "dinov2_l", "dinov2_g"):
        assert r.size_proxy[n].high_mode_pct == {"skipped": f"{n} not in size_models"}
    numbers = as_numbers(r)
    assert set(numbers["depth_models"]["dinov2_g"]) == {"early_outlier_pct"}
    assert set(numbers["size_proxy"]["dinov2_b"]) == {"outlier_pct", "high_mode_pct"}
    assert set(numbers) == {"depth", "depth_models", "size_proxy", "size_rule", "training_time", "threshold",
                            "min_fraction", "span", "image_size", "planted"}
    assert set(numbers["depth_models"]["dinov2_s"]) == {"emergence_block", "n_blocks", "fractions_pct",
                                                        "median_norm", "max_norm", "early_outlier_pct"}


def test_checks_cover_every_size_model_and_the_claims_of_vit_g():
    p = _params(size_models=["dinov2_s", "dinov2_b"])
    keys = [k for k, _, _ in exp.checks(_record(p, _stack(5)), p)]
    assert keys == ["depth.emergence_block", "depth_models.dinov2_g.early_outlier_pct",
                    "size_proxy.dinov2_g.outlier_pct", "size_proxy.dinov2_s.high_mode_pct",
                    "size_proxy.dinov2_b.high_mode_pct"]


def test_models_load_once_size_panel_first():
    p = exp.EXPERIMENT.build({})
    assert exp.model_order(p) == ["dinov2_s", "dinov2_b", "dinov2_l", "dinov2_g"]
    assert exp.model_order(_params(depth_models=["dinov2_l_reg", "dinov2_s"])) == ["dinov2_s", "dinov2_l_reg"]


def test_no_outliers_at_any_depth_records_why_there_is_no_emergence_block():
    """Random weights without planting (a lecture run): no block has outliers, so the results file holds
    ``{"skipped": why}`` where the block would be, never null (which the report refuses)."""
    p = _params(plant=False)
    r = _record(p, 10 + torch.rand(N_BLOCKS, N_IMAGES, N_PATCHES, generator=torch.Generator().manual_seed(1)))
    assert isinstance(r.depth.emergence_block, dict) and "no block" in r.depth.emergence_block["skipped"]
    assert as_numbers(r)["depth"]["emergence_block"] == r.depth.emergence_block
