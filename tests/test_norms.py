"""Planted ground truth for vitreg.measure.norms (Paper: Fig. 3, Fig. 4a, App. A Fig. 10)."""

import math

import pytest
import torch

from vitreg import planting
from vitreg.measure import norms

from conftest import NO_CUDA


def _tokens(b=6, n=64, d=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, d, generator=gen)  # norms ~ sqrt(32) ~ 5.7


def test_token_norms_match_definition():
    x = _tokens()
    assert torch.allclose(norms.token_norms(x), torch.sqrt((x ** 2).sum(-1)))


def test_planted_outliers_found_exactly_absolute_and_relative():
    x = _tokens()
    truth = planting.random_outlier_mask(6, (8, 8), fraction=0.03, seed=1)
    assert truth.any()
    planted = planting.scale_tokens(x, truth, norm=400.0)
    n = norms.token_norms(planted)
    assert torch.equal(norms.outlier_mask(n, threshold=150.0), truth)
    assert torch.equal(norms.outlier_mask(n, threshold=None, k_std=3.0), truth)
    # unmarked tokens untouched
    assert torch.equal(planted[~truth], x[~truth])


def test_noise_control_has_no_absolute_outliers():
    n = norms.token_norms(_tokens())
    assert not norms.outlier_mask(n, threshold=150.0).any()
    # relative rule on Gaussian-like norms flags only a thin tail
    assert norms.outlier_mask(n, threshold=None).float().mean() < 0.01


def test_threshold_relative_rule():
    n = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert norms.outlier_threshold(n, threshold=None, k_std=1.0) == pytest.approx(2.5 + n.std().item())
    assert norms.outlier_threshold(n, threshold=7) == 7.0


def test_fraction_ci_covers_truth_and_shrinks():
    truth = planting.random_outlier_mask(400, (10, 10), fraction=0.025, seed=3)
    ci = norms.outlier_fraction(truth, n_boot=500)
    assert ci.low <= ci.fraction <= ci.high
    assert ci.low < 0.025 < ci.high
    small = norms.outlier_fraction(truth[:20], n_boot=500)
    assert (small.high - small.low) > (ci.high - ci.low)
    assert ci.n_images == 400 and ci.n_tokens == 40000
    assert "CI over 400 images" in str(ci)


def test_fraction_ci_zero_when_no_outliers():
    ci = norms.outlier_fraction(torch.zeros(10, 50, dtype=torch.bool))
    assert ci.fraction == ci.low == ci.high == 0.0


def test_fraction_rejects_flat_mask():
    with pytest.raises(ValueError, match="one row per image"):
        norms.outlier_fraction(torch.zeros(50, dtype=torch.bool))


def test_block_statistics_find_planted_emergence():
    # 10 blocks; outliers planted from block 6 on
    base = torch.rand(10, 8, 49) * 50
    truth = planting.random_outlier_mask(8, (7, 7), fraction=0.05, seed=2)
    stack = base.clone()
    stack[6:, truth] = 300.0
    frac = norms.block_outlier_fractions(stack, threshold=150.0)
    assert torch.all(frac[:6] == 0)
    assert torch.allclose(frac[6:], truth.float().mean().expand(4))
    assert norms.emergence_block(frac, min_fraction=0.01) == 6
    assert norms.emergence_block(torch.zeros(10)) is None
    # a blip of 2 blocks is not emergence; a drop at the very end (as in DINOv2-L's last block) is tolerated
    blip = torch.tensor([0, 0.02, 0.02, 0, 0, 0.03, 0.03, 0.03, 0.03, 0.0])
    assert norms.emergence_block(blip, min_fraction=0.01, span=3) == 5
    q = norms.block_norm_quantiles(stack, qs=(0.5, 1.0))
    assert q.shape == (10, 2)
    assert torch.all(q[6:, 1] == 300.0) and torch.all(q[:6, 1] < 50)


def test_norm_ratio():
    n = torch.ones(2, 100)
    assert norms.norm_ratio(n) == 1.0
    n[0, 3] = 11.0
    assert norms.norm_ratio(n) == 11.0


def test_frequency_map_border_and_stripes():
    h, w = 8, 10
    bias = torch.ones(w)
    bias[[2, 5, 8]] = 20.0
    mask = planting.random_outlier_mask(500, (h, w), fraction=0.02, seed=0, column_bias=bias)
    freq = norms.outlier_frequency_map(mask, (h, w))
    assert freq.shape == (h, w)
    cols = freq.mean(0)
    assert set(cols.topk(3).indices.tolist()) == {2, 5, 8}
    assert norms.stripe_index(freq) > 3
    # control: no bias -> no stripes
    plain = norms.outlier_frequency_map(planting.random_outlier_mask(500, (h, w), fraction=0.1, seed=1), (h, w))
    assert norms.stripe_index(plain) < 2.5
    border = torch.zeros(h, w)
    border[0] = border[-1] = 0.2
    border[1:-1] = 0.05
    assert norms.border_ratio(border) > 1.5
    assert math.isclose(norms.border_ratio(torch.full((h, w), 0.1)), 1.0, rel_tol=1e-6)


def test_frequency_map_rejects_wrong_grid():
    with pytest.raises(ValueError, match="grid"):
        norms.outlier_frequency_map(torch.zeros(3, 50, dtype=torch.bool), (7, 7))


def test_planted_high_norm_tokens_found_exactly_in_random_timm_model():
    """End to end: plant outliers inside a real (random-init) DINOv2 at block 6, find them at the output."""
    from vitreg.core.capture import capture
    from vitreg.planting import planted_outliers_per_image
    from vitreg.core.weights import load_model

    loaded = load_model("dinov2_s", pretrained=False, image_size=112)
    layout = loaded.layout
    truth = planting.random_outlier_mask(3, layout.grid, fraction=0.05, seed=4)
    truth[0, 0] = True  # every image has at least one
    tokens = planting.mask_to_tokens(truth, layout.num_prefix)
    assert tokens[0][0] == layout.num_prefix
    x = torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with planted_outliers_per_image(loaded.model, 6, tokens, norm=1000.0), capture(loaded.model, norms=[-1]) as rec:
        loaded.forward(x)
    with planting.planted(loaded, truth, norm=1000.0), capture(loaded.model, norms=[-1]) as rec2:
        loaded.forward(x[:2])  # two forward calls: the mask is consumed image after image
        loaded.forward(x[2:])
    with planting.planted(loaded, None), capture(loaded.model, norms=[-1]) as clean:
        loaded.forward(x)
    assert not norms.outlier_mask(layout.patches(clean.norms[-1]), threshold=150.0).any()
    assert torch.equal(norms.outlier_mask(layout.patches(rec2.norms[-1]), threshold=150.0), truth)
    patch_norms = layout.patches(rec.norms[-1])
    assert patch_norms[~truth].max() < 150  # control: random-init tokens stay low
    assert torch.equal(norms.outlier_mask(patch_norms, threshold=150.0), truth)
    assert torch.equal(norms.outlier_mask(patch_norms, threshold=None), truth)


def test_statistics_stay_on_the_input_device():
    """Recordings kept on the GPU (capture(to=None)) must not meet CPU constants; "meta" stands in for it."""
    stack = torch.rand(3, 2, 16, device="meta")
    assert norms.block_norm_quantiles(stack, qs=(0.5, 1.0)).device == stack.device


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_fraction_ci_of_a_gpu_mask():
    truth = planting.random_outlier_mask(50, (6, 6), fraction=0.1, seed=0)
    assert norms.outlier_fraction(truth.cuda(), n_boot=100).fraction == norms.outlier_fraction(truth, n_boot=100).fraction


def test_depth_profile_recovers_planted_emergence_and_quiet_early_blocks():
    """Outliers planted from the block planting.planted_emergence_block picks for a 40-block model."""
    start = planting.planted_emergence_block(40)
    assert start == 14                                    # 0-based: block 15 of 40 counted from 1
    stack = torch.rand(40, 6, 49) * 50
    truth = planting.random_outlier_mask(6, (7, 7), fraction=0.05, seed=1)
    stack[start:, truth] = 300.0
    prof = norms.depth_profile(stack, threshold=150.0, min_fraction=0.01)
    assert prof.emergence == start + 1 and prof.n_blocks == 40
    assert prof.early_outlier_pct == 0.0
    d = prof.to_dict()
    assert d["emergence_block"] == 15 and len(d["fractions_pct"]) == 40
    assert d["max_norm"][start] == 300.0 and d["max_norm"][0] < 50
    assert d["fractions_pct"][-1] == pytest.approx(100 * truth.float().mean().item())
    assert set(prof.plot_stats()) == {"quantiles", "qs", "fractions", "threshold", "emergence"}
    ci = norms.outlier_fraction(truth, n_boot=50)
    assert ci.to_pct_dict()["outlier_pct"] == pytest.approx(100 * ci.fraction)
    with pytest.raises(ValueError, match="0.5 and 1.0"):
        norms.depth_profile(stack, qs=(0.25, 0.75))


# --- scale-free high-norm measure ---------------------------------------------
def _lognormal_norms(median=6.0, sd=0.3, shape=(16, 256), seed=0):
    gen = torch.Generator().manual_seed(seed)
    return median * torch.exp(sd * torch.randn(*shape, generator=gen))


def _with_outliers(base, norm=60.0, share=0.02, seed=1):
    gen = torch.Generator().manual_seed(seed)
    out = base.clone()
    mask = torch.rand(base.shape, generator=gen) < share
    out[mask] = norm * torch.exp(0.1 * torch.randn(int(mask.sum()), generator=gen))
    return out, mask


def test_small_model_with_outliers_at_norm_60_is_found_without_the_150_cut_off():
    """A distilled S/B-like model: median 6, 2% of tokens at ~60 (10x). The 150 cut-off of ViT-g sees none
    (the old size claim), the scale-free fit finds the mode and its tokens."""
    x, planted_mask = _with_outliers(_lognormal_norms())
    assert norms.outlier_mask(x, threshold=150.0).sum() == 0          # the old measure: "no outliers"
    found = norms.high_norm_modes(x)
    assert found.bimodal and found.separation > 2 * norms.SEPARATION_MIN
    assert found.ratio > 8
    assert found.to_dict()["high_mode_pct"] == pytest.approx(100 * planted_mask.float().mean().item(), abs=0.3)
    assert 6 < found.cut < 60


@pytest.mark.parametrize("sd", [0.1, 0.3, 0.6])
def test_unimodal_norms_are_not_bimodal_at_any_spread(sd):
    got = norms.high_norm_modes(_lognormal_norms(sd=sd))
    assert not got.bimodal and got.separation < norms.SEPARATION_MIN
    assert got.to_dict()["high_mode_pct"] == 0.0 and got.cut is None


def test_gaussian_channels_without_outliers_are_not_bimodal():
    assert not norms.high_norm_modes(_tokens(b=8, n=256).norm(dim=-1)).bimodal


def test_high_norm_modes_is_scale_free():
    x, _ = _with_outliers(_lognormal_norms())
    a, b = norms.high_norm_modes(x), norms.high_norm_modes(25 * x)
    assert a.separation == pytest.approx(b.separation, rel=1e-6) and a.high_share == b.high_share
    assert b.cut == pytest.approx(25 * a.cut, rel=1e-6) and a.ratio == pytest.approx(b.ratio, rel=1e-5)


def test_two_close_bumps_of_the_bulk_are_not_a_high_norm_mode():
    """Random-weight norms can split into two narrow bumps 1.6x apart (separated, D > 2): not outliers, which are
    a minority ~10x above the rest (Fig. 3). Neither is a fit that puts most tokens in the high component."""
    gen = torch.Generator().manual_seed(4)
    bumps = torch.cat([10 * torch.exp(0.05 * torch.randn(400, generator=gen)), 16 * torch.exp(0.05 * torch.randn(600, generator=gen))])
    got = norms.high_norm_modes(bumps)
    assert got.separation > norms.SEPARATION_MIN and got.gap < norms.MODE_GAP_MIN and not got.bimodal
    majority = torch.cat([6 * torch.exp(0.1 * torch.randn(300, generator=gen)), 60 * torch.exp(0.1 * torch.randn(700, generator=gen))])
    assert norms.high_norm_modes(majority).high_share > 0.5 and not norms.high_norm_modes(majority).bimodal
