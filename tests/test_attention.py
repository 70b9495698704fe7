"""Planted ground truth for vitreg.measure.attention (Paper: Fig. 2, App. F, Fig. 9)."""

import math

import pytest
import torch

from vitreg import planting
from vitreg.measure import attention
from vitreg.core.tokens import TokenLayout, prefix_names, prefix_row


def _attn(layout, b=4, heads=3, rows=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rows = layout.num_tokens if rows is None else rows
    logits = torch.randn(b, heads, rows, layout.num_tokens, generator=gen) * 0.1
    return logits.softmax(-1)


@pytest.mark.parametrize("num_reg", [0, 4])
def test_planted_peak_found_for_cls_and_registers(num_reg):
    layout = TokenLayout(1, num_reg, (6, 7))
    attn = _attn(layout)
    pos = torch.tensor([0, 13, 41, 20])
    for token in prefix_names(layout):
        planted = planting.attention_peak(attn, layout, pos, token=token, mass=0.5)
        assert torch.allclose(planted.sum(-1), torch.ones(()))
        maps = attention.attention_maps(planted, layout, token=token)
        assert maps.shape == (4, 6, 7)
        peaks = attention.peak_positions(maps, k=1)[:, 0]
        assert torch.equal(peaks[:, 0] * 7 + peaks[:, 1], pos)
        # the spike dominates the score; the un-planted map is near uniform
        assert torch.all(attention.top_share(maps, top_frac=0.02) > 0.5)
        clean = attention.attention_maps(attn, layout, token=token)
        assert torch.all(attention.top_share(clean, top_frac=0.02) < 0.1)


def test_registers_rows_are_distinct():
    layout = TokenLayout(1, 4, (5, 5))
    attn = _attn(layout)
    planted = planting.attention_peak(attn, layout, torch.tensor([3, 3, 3, 3]), token="reg2", mass=0.9)
    assert attention.top_share(attention.attention_maps(planted, layout, token="reg2"), top_frac=0.04).min() > 0.8
    assert attention.top_share(attention.attention_maps(planted, layout, token="cls"), top_frac=0.04).max() < 0.2
    assert prefix_row(layout, "reg2") == 3


def test_prefix_rows_capture_equals_all_rows():
    layout = TokenLayout(1, 4, (4, 4))
    attn = _attn(layout)
    prefix_only = attn[:, :, : layout.num_prefix]
    for t in range(layout.num_prefix):
        assert torch.equal(attention.attention_maps(attn, layout, token=t),
                           attention.attention_maps(prefix_only, layout, token=t))


def test_mean_over_heads_and_per_head():
    layout = TokenLayout(1, 0, (4, 4))
    attn = _attn(layout, heads=2)
    per_head = attention.attention_maps(attn, layout, heads="all")
    assert per_head.shape == (4, 2, 4, 4)
    assert torch.allclose(per_head.flatten(-2).sum(-1), torch.ones(4, 2))
    mean = attention.attention_maps(attn, layout, heads="mean")
    raw_mean = attention.attention_maps(attn, layout, heads="all", renormalize=False).mean(1)
    assert torch.allclose(mean, raw_mean / raw_mean.flatten(-2).sum(-1)[..., None, None])
    assert torch.allclose(mean.flatten(-2).sum(-1), torch.ones(4))
    raw = attention.attention_maps(attn, layout, renormalize=False)
    assert raw.flatten(-2).sum(-1).max() < 1.0  # mass on [CLS] itself left out


def test_planted_peak_in_one_head_only():
    layout = TokenLayout(1, 0, (5, 5))
    attn = _attn(layout, heads=4)
    attn[:, 2, 0] = 0.0
    attn[:, 2, 0, 1 + 7] = 1.0
    per_head = attention.attention_maps(attn, layout, heads="all")
    scores = attention.top_share(per_head, top_frac=0.04)  # (B, heads)
    assert torch.all(scores.argmax(-1) == 2)
    assert torch.all(scores[:, 2] == 1.0)


def test_mask_share_and_summary():
    layout = TokenLayout(1, 0, (4, 4))
    attn = planting.attention_peak(_attn(layout), layout, torch.tensor([5, 5, 5, 5]), mass=0.7)
    maps = attention.attention_maps(attn, layout)
    outliers = torch.zeros(4, 16, dtype=torch.bool)
    outliers[:, 5] = True
    share = attention.mask_share(maps, outliers)
    assert torch.all(share > 0.7)
    control = torch.zeros_like(outliers)
    control[:, 9] = True
    assert torch.all(attention.mask_share(maps, control) < 0.1)
    summary = attention.artifact_scores(maps, top_frac=0.05, outliers=outliers)
    assert summary["top_share_mean"] > 0.7 and summary["outlier_share_mean"] > 0.7
    assert summary["top_share_uniform"] == pytest.approx(1 / 16)


def test_uniform_map_scores_its_top_fraction():
    maps = torch.ones(2, 10, 10)
    assert torch.allclose(attention.top_share(maps, top_frac=0.05), torch.tensor(0.05))


def test_upsample_nearest_keeps_peak_square_and_normalize():
    maps = torch.zeros(2, 3, 4)
    maps[:, 1, 2] = 1.0
    up = attention.upsample_maps(maps, (30, 40))
    assert up.shape == (2, 30, 40)
    assert up[:, 10:20, 20:30].min() == 1.0 and up.sum() == 2 * 100
    smooth = attention.upsample_maps(maps, (30, 40), mode="bilinear")
    assert smooth.shape == (2, 30, 40)
    assert smooth[0, 15, 25] >= smooth[0].max() - 1e-6 and smooth[0, 0, 0] == 0.0
    n = attention.normalize_maps(torch.rand(3, 2, 5, 5) * 7 + 2)
    assert torch.allclose(n.flatten(-2).amin(-1), torch.zeros(3, 2))
    assert torch.allclose(n.flatten(-2).amax(-1), torch.ones(3, 2))


def test_errors_are_clear():
    layout = TokenLayout(1, 4, (4, 4))
    with pytest.raises(ValueError, match="prefix token"):
        attention.attention_maps(_attn(layout), layout, token="reg7")
    wrong = TokenLayout(1, 0, (4, 4))
    with pytest.raises(ValueError, match="tokens"):
        attention.attention_maps(_attn(layout), wrong)


def test_head_mean_is_ttr_mean_over_heads_not_blown_up_by_register_heads():
    """Planted: head 0 sends 99% of [CLS]'s attention to a register and 1% to patch 3; head 1 puts half of it on
    patch 9. The mean over heads ([TTR]) peaks at 9; renormalising head 0 first would move the peak to 3."""
    layout = TokenLayout(1, 4, (4, 4))
    attn = torch.zeros(2, 2, layout.num_prefix, layout.num_tokens)
    attn[:, :, 0] = 0.5 / layout.num_patches  # [CLS] row: the rest spread evenly over the patches
    attn[:, 0, 0] = 0.0
    attn[:, 0, 0, 1] = 0.99  # reg0
    attn[:, 0, 0, layout.num_prefix + 3] = 0.01
    attn[:, 1, 0, layout.num_prefix + 9] += 0.5
    maps = attention.attention_maps(attn, layout, token="cls")
    peaks = attention.peak_positions(maps, k=1)[:, 0]
    assert (peaks[:, 0] * 4 + peaks[:, 1]).tolist() == [9, 9]


def test_share_on_mask_against_a_planted_spike():
    """Every map puts half its mass on one planted patch; the mask marks that patch in two of three images."""
    b, h, w = 3, 4, 4
    maps = torch.full((b, h, w), 0.5 / (h * w - 1))
    maps[:, 1, 2] = 0.5
    mask = torch.zeros(b, h * w, dtype=torch.bool)
    mask[:2, 1 * w + 2] = True
    out = attention.share_on_mask(maps, mask)
    assert out["n_images"] == 2
    assert out["mean_share"] == pytest.approx(0.5)
    assert out["patch_share"] == pytest.approx(2 / (b * h * w))
    assert out["ratio"] == pytest.approx(0.5 / (2 / (b * h * w)))
    none = attention.share_on_mask(maps, torch.zeros(b, h * w, dtype=torch.bool))
    assert none["n_images"] == 0 and math.isnan(none["mean_share"]) and math.isnan(none["ratio"])


def test_artifact_claims_on_planted_spikes():
    """A planted spike makes the "dinov2" model score above the clean "dino" and "mae" ones (Fig. 2, App. E)."""
    layout = TokenLayout(1, 0, (8, 8))
    clean, spiky = _attn(layout, seed=1), planting.attention_peak(_attn(layout, seed=2), layout, torch.tensor([3, 9, 27, 60]), mass=0.6)
    arts = {n: attention.artifact_maps(a, layout) for n, a in [("dino_s16", clean), ("dinov2_s", spiky), ("mae_b16", clean)]}
    assert arts["dinov2_s"].maps.shape == (4, 8, 8) and arts["dinov2_s"].head_scores.shape == (4, 3)
    fam = {"dino_s16": "dino", "dinov2_s": "dinov2", "mae_b16": "mae"}
    summaries = {n: {"family": fam[n], **a.summary} for n, a in arts.items()}
    out = attention.artifact_claims(summaries, arts["dinov2_s"].head_scores, "dinov2_s", paper_models=["dinov2_l", "mae_l16", "dino_b16"])
    above, below = out["claims"]["artifact_minus_dino"], out["claims"]["control_minus_artifacts"]
    assert above["dinov2_s"] > 0.4 and below["mae_b16"] < -0.4
    assert above["dinov2_l"] == {"skipped": "dinov2_l not in models"} and below["mae_l16"] == {"skipped": "mae_l16 not in models"}
    assert "dino_b16" not in above and "dino_b16" not in below          # the reference makes no claim
    assert out["head_model"]["heads_above_dino_pct"] == 100.0 and out["head_model"]["model"] == "dinov2_s"
    no_dino = attention.artifact_claims({n: s for n, s in summaries.items() if n != "dino_s16"}, None, "dinov2_s")
    assert no_dino["claims"]["artifact_minus_dino"]["dinov2_s"] == {"skipped": "no DINO model in models"}
    assert no_dino["head_model"]["heads_above_dino_pct"] == {"skipped": "no DINO model in models"}


# --- grid-normalised artifact score -------------------------------------------
def _uniform_attn(layout, b=4, heads=3):
    attn = torch.full((b, heads, layout.num_prefix, layout.num_tokens), 1.0 / layout.num_tokens)
    return attn


def test_artifact_score_is_the_same_on_a_16x16_and_a_37x37_grid():
    """The uniform baseline differs by grid (6/256 vs 28/1369 at top 2%): the raw top share does too; the
    artifact score is 0 for a uniform map and about the spike's mass for a planted spike on both grids."""
    scores = {}
    for side in (16, 37):
        layout = TokenLayout(1, 0, (side, side))
        flat = attention.attention_maps(_uniform_attn(layout), layout)
        spike = attention.attention_maps(planting.attention_peak(_uniform_attn(layout), layout, torch.tensor([3, 9, 27, 60]),
                                                                  mass=0.6), layout)
        scores[side] = (attention.artifact_score(flat), attention.artifact_score(spike), attention.top_share(flat))
    assert torch.allclose(scores[16][0], torch.zeros(4), atol=1e-6) and torch.allclose(scores[37][0], torch.zeros(4), atol=1e-6)
    assert torch.allclose(scores[16][1], scores[37][1], atol=3e-3) and float(scores[37][1][0]) == pytest.approx(0.6, abs=3e-3)
    assert float(scores[16][2][0] - scores[37][2][0]) > 2e-3          # the raw share is grid-dependent


def test_artifact_claims_do_not_see_an_artifact_in_a_uniform_map_on_a_coarser_grid():
    """A uniform DINOv2 map on 16x16 against a uniform DINO map on 37x37: no artifact (score difference 0).
    The raw top share (the old score) called it an artifact (+0.003 > 0)."""
    summaries = {}
    for name, fam, side in (("dino_b16", "dino", 37), ("dinov2_l", "dinov2", 16)):
        layout = TokenLayout(1, 0, (side, side))
        summaries[name] = {"family": fam, **attention.artifact_maps(_uniform_attn(layout), layout).summary}
    gap = attention.artifact_claims(summaries, None, "dinov2_l")["claims"]["artifact_minus_dino"]["dinov2_l"]
    assert abs(gap) < 1e-6
    assert summaries["dinov2_l"]["top_share_mean"] - summaries["dino_b16"]["top_share_mean"] > 2e-3
