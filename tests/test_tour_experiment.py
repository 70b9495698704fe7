"""Notebook 00's steps and results record (§2: token layout, norms around the final LayerNorm, attention)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitreg.claims.paper import paper_numbers
from vitreg.experiments import tour as exp
from vitreg.experiments.base import as_numbers, record_paths

#: The keys the tour has always saved (the report and the verdicts read them).
SAVED = {"num_tokens", "num_patches", "max_over_median_norm_pre_ln", "max_over_median_norm_post_ln",
         "outlier_fraction_pre_ln", "attention_recompute_max_abs_diff", "n_images", "claims"}


@pytest.fixture(scope="module")
def run_parts():
    """A random-weight DINOv2 ViT-S/14 +reg at 56 px (4x4 patches) on 2 noise images, with and without planting."""
    images = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(2)]
    out = {}
    torch.manual_seed(0)   # the random weights
    for plant in (True, False):
        p = exp.EXPERIMENT.build({"model": "dinov2_s_reg", "pretrained": False, "device": "cpu", "image_size": 56,
                                  "plant": plant, "batch_size": 2})
        loaded = exp.load(p)
        with exp.planted(loaded, p):
            rec = exp.record_tokens(loaded, images, p)
        out[plant] = (p, loaded, rec)
    return out


def test_the_tour_number_resolves_to_a_record_field():
    keys = {n.key for n in paper_numbers() if n.notebook == "00_tour" and n.key}
    assert keys == {"claims.ln_spread_ratio"} and keys <= record_paths(exp.EXPERIMENT.record)


def test_the_planted_outliers_show_before_the_final_layernorm_and_vanish_after(run_parts):
    p, loaded, rec = run_parts[True]
    spread = exp.norm_spread(rec, loaded)
    planted_cols = list(exp.PLANTED_PATCHES)
    assert bool((spread.pre[:, planted_cols] > 10 * spread.pre.median()).all())   # exactly the planted patches
    assert spread.pre.argsort(dim=1, descending=True)[:, :2].sort(dim=1).values.tolist() == [planted_cols] * 2
    assert spread.ratio_post < 2
    r = exp.build_record(p, loaded, spread, 0.0, 2)
    assert r.num_tokens == 1 + 4 + 16 and r.num_patches == 16
    assert r.claims.ln_spread_ratio == pytest.approx(spread.ratio_pre / spread.ratio_post)
    assert all(exp.planted_truths(r).values())
    assert set(as_numbers(r)) == SAVED and set(as_numbers(r)["claims"]) == {"model", "ln_spread_ratio"}


def test_nothing_is_planted_in_a_real_run(run_parts):
    p, loaded, rec = run_parts[False]
    r = exp.build_record(p, loaded, exp.norm_spread(rec, loaded), 0.0, 2)
    assert not any(exp.planted_truths(r).values())


def test_recomputed_attention_matches_the_explicit_path(run_parts):
    p, loaded, _ = run_parts[False]
    x = torch.randn(2, 3, 56, 56)
    assert exp.attention_difference(loaded, x) < 1e-4
    assert isinstance(exp.fused_attention(), bool)
