"""Notebook 02's steps and results record (Fig. 3, App. A Fig. 10, Fig. 21) on planted norms and attention."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from vitreg.claims.paper import paper_numbers
from vitreg.core.tokens import TokenLayout
from vitreg.experiments import high_norm_tokens as exp
from vitreg.experiments.base import as_numbers, record_paths

GRID = (4, 6)
LAYOUT = TokenLayout(num_cls=1, num_reg=0, grid=GRID)

#: The keys notebook 02 has always saved (the report and the verdicts read them).
SAVED = {
    "outliers": {"model", "block", "image_size", "threshold", "outlier_pct", "ci_low_pct", "ci_high_pct", "ci_level",
                 "n_images", "n_tokens", "norm_ratio", "norm_ratio_after_ln", "n_images_after_ln"},
    "reference": {"model", "image_size", "threshold", "rule", "outlier_pct", "ci_low_pct", "ci_high_pct",
                  "norm_ratio"},
    "attention": {"model", "cls_share_on_outliers_pct", "cls_share_over_patch_share", "n_images"},
    "stripes": {"model", "max_position_pct", "stripe_index", "border_ratio"},
    "claims": {"model", "reference_over_model_norm_ratio"},
    "planted": None,
}


def _planted_norms(n_images: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch norms of about 10 with 400 at column 2 of row 1 in every image, and at one more place in image 0."""
    gen = torch.Generator().manual_seed(0)
    norms = 10 + torch.rand(n_images, GRID[0] * GRID[1], generator=gen)
    truth = torch.zeros_like(norms, dtype=torch.bool)
    truth[:, 1 * GRID[1] + 2] = True
    truth[0, 3 * GRID[1] + 5] = True
    norms[truth] = 400.0
    return norms, truth


def _record(plant: bool = True) -> exp.Record:
    p = exp.EXPERIMENT.build({"plant": plant, "n_bootstrap": 50})
    norms, truth = _planted_norms()
    main = exp.outliers(norms, threshold=150.0, k_std=3.0, n_bootstrap=50, seed=0)
    ref = exp.outliers(10 + torch.rand_like(norms), threshold=None, k_std=3.0, n_bootstrap=50, seed=0)
    attn = torch.full((8, 2, 1, 1 + norms.shape[1]), 1.0 / (1 + norms.shape[1]))
    d = exp.Detail(norms, torch.full_like(norms, 5.0), attn, 1.0)
    _, _, share = exp.cls_attention(d, SimpleNamespace(layout=LAYOUT), main.cut, plant=plant)
    return exp.build_record(p, main, ref, "relative rule", d, share, exp.positions(main.mask, GRID))


def test_every_paper_number_of_02_resolves_to_a_record_field():
    keys = {n.key for n in paper_numbers() if n.notebook == "02_high_norm_tokens" and n.key}
    assert keys and keys <= record_paths(exp.EXPERIMENT.record)


def test_the_record_finds_the_planted_outliers_and_their_position():
    r = _record()
    assert r.outliers.outlier_pct == pytest.approx(100 * 9 / (8 * 24))
    assert r.outliers.threshold == 150.0 and r.outliers.n_images == 8 and r.outliers.n_tokens == 8 * 24
    assert r.stripes.max_position_pct == 100.0   # row 1, column 2 holds an outlier in every image
    assert r.reference.outlier_pct < 1 and r.claims.reference_over_model_norm_ratio < 0.1
    assert r.outliers.norm_ratio == pytest.approx(400 / float(_planted_norms()[0].median()))


def test_the_planted_attention_spike_lands_on_the_outliers():
    r = _record(plant=True)
    assert r.attention.cls_share_on_outliers_pct >= 50   # half the mass moved onto one outlier per image
    assert r.attention.cls_share_over_patch_share > 1
    assert all(exp.planted_truths(r).values())


def test_without_a_spike_uniform_attention_is_no_recovered_truth():
    r = _record(plant=False)
    assert r.attention.cls_share_over_patch_share == pytest.approx(1.0)
    truths = exp.planted_truths(r)
    assert not truths["[CLS] attention on them above their patch share"]


def test_a_run_without_outliers_records_why_instead_of_nan():
    p = exp.EXPERIMENT.build({"n_bootstrap": 20})
    flat = 10 + torch.rand(4, 24)
    main = exp.outliers(flat, threshold=150.0, k_std=3.0, n_bootstrap=20, seed=0)
    d = exp.Detail(flat, flat, torch.full((4, 1, 1, 25), 0.04), 1.0)
    _, _, share = exp.cls_attention(d, SimpleNamespace(layout=LAYOUT), main.cut)
    r = exp.build_record(p, main, main, "rule", d, share, exp.positions(main.mask, GRID))
    assert r.attention.cls_share_over_patch_share == {"skipped": exp.NO_OUTLIERS}
    assert r.stripes.stripe_index == {"skipped": exp.NO_OUTLIERS}


def test_the_saved_numbers_keep_the_keys_of_the_results_file():
    numbers = as_numbers(_record())
    assert set(numbers) == set(SAVED)
    for part, fields in SAVED.items():
        if fields is not None:
            assert set(numbers[part]) == fields, part


def test_checks_name_the_reference_model_for_its_own_number():
    r = _record()
    models = {key: model for key, _, model in exp.checks(r)}
    assert models["reference.outlier_pct"] == r.reference.model == "dino_b16"
    assert models["outliers.outlier_pct"] == "dinov2_g"


def test_plant_mask_plants_three_percent_in_three_columns_and_nothing_unplanted():
    p = exp.EXPERIMENT.build({"plant": True})
    mask = exp.plant_mask(p, 400, (16, 16))
    assert 0.02 < mask.float().mean() < 0.04
    per_column = mask.reshape(400, 16, 16).float().mean(dim=(0, 1))
    assert set(per_column.topk(3).indices.tolist()) == {1, 8, 14}
    assert exp.plant_mask(exp.EXPERIMENT.build({"plant": False}), 4, (16, 16)) is None
