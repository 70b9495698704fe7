"""Register analyses (Fig. 7, Fig. 16, §2.2) on planted ground truth: quantised norms are told apart from a
bell, a register planted to favour the border (or the top) is found, a uniform map is not, FLOPs grow a little."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitreg.measure.registers import (border_mask, flops_overhead_pct, kmeans_1d, norms_by_kind, prefix_attention_summary,
                              quantisation, spatial_shares, top_mask)
from vitreg.core.tokens import TokenLayout


def test_norms_by_kind_slices_cls_registers_and_patches():
    layout = TokenLayout(1, 4, (3, 5))
    norms = torch.arange(2 * layout.num_tokens, dtype=torch.float32).reshape(2, -1)
    kinds = norms_by_kind(norms, layout)
    assert list(kinds) == ["patch", "cls", "reg0", "reg1", "reg2", "reg3"]
    assert kinds["cls"].tolist() == [0, 20] and kinds["reg3"].tolist() == [4, 24]
    assert kinds["patch"].numel() == 30 and kinds["patch"].min() == 5


def test_quantised_values_score_low_and_a_bell_scores_about_one():
    rng = np.random.default_rng(0)
    levels = np.array([20.0, 250.0, 400.0, 520.0])
    quantised = rng.choice(levels, size=800) + rng.normal(0, 3, size=800)
    q = quantisation(quantised, k=4)
    assert q.score < 0.2 and np.allclose(q.levels, levels, atol=2)
    bell = quantisation(rng.normal(300, 80, size=800), k=4)  # noise control: no levels
    assert 0.8 < bell.score < 1.2
    assert 0.3 < bell.reference < 0.4  # Lloyd-Max: sqrt(0.1175) for 4 levels of a Gaussian


def test_kmeans_1d_is_deterministic_and_sorted():
    x = np.array([1.0, 1.1, 0.9, 10.0, 10.2, 5.0, 5.1])
    c, lab = kmeans_1d(x, 3)
    assert np.allclose(c, [1.0, 5.05, 10.1]) and lab.tolist() == [0, 0, 0, 2, 2, 1, 1]
    with pytest.raises(ValueError):
        kmeans_1d(x[:2], 3)


def test_spatial_shares_find_a_planted_border_and_top_preference():
    grid = (8, 10)
    uniform = torch.ones(grid)
    s = spatial_shares(uniform)
    assert float(s["border"]) == pytest.approx(float(border_mask(grid).float().mean()))
    assert float(s["top"]) == pytest.approx(0.5) and float(s["support"]) == pytest.approx(1.0)
    border = uniform + 9 * border_mask(grid).float()
    assert float(spatial_shares(border)["border"]) > 0.85
    assert float(spatial_shares(border)["top"]) == pytest.approx(0.5)
    top = uniform + 9 * top_mask(grid)
    assert float(spatial_shares(top)["top"]) > 0.85
    spike = torch.zeros(grid)
    spike[3, 4] = 1
    assert float(spatial_shares(spike)["support"]) == pytest.approx(1 / 80)
    assert top_mask((5, 2))[:, 0].tolist() == [1, 1, 0.5, 0, 0]


def test_prefix_attention_summary_recovers_planted_register_roles():
    layout = TokenLayout(1, 4, (6, 6))
    gen = torch.Generator().manual_seed(0)
    attn = torch.rand(5, 3, layout.num_prefix, layout.num_tokens, generator=gen)
    patch = attn[:, :, :, layout.patch_slice].reshape(5, 3, layout.num_prefix, 6, 6)
    patch[:, :, 1] += 20 * border_mask((6, 6)).float()  # reg0 favours the border
    patch[:, :, 2] += 20 * top_mask((6, 6))  # reg1 favours the top
    attn[:, :, :, layout.patch_slice] = patch.reshape(5, 3, layout.num_prefix, 36)
    attn = attn / attn.sum(-1, keepdim=True)
    summ = prefix_attention_summary(attn, layout)
    assert list(summ) == ["cls", "reg0", "reg1", "reg2", "reg3"]
    assert summ["reg0"]["border"] > 90 and summ["reg1"]["top"] > 90
    for name in ("cls", "reg2", "reg3"):  # controls: random maps, no preference
        assert abs(summ[name]["border"] - summ[name]["border_uniform"]) < 10 and abs(summ[name]["top"] - 50) < 10
    assert summ["cls"]["mean_map"].shape == (6, 6)


def test_four_registers_add_a_few_percent_flops():
    from vitreg.core.weights import load_model

    a = load_model("dinov2_s", pretrained=False, image_size=224)
    b = load_model("dinov2_s_reg", pretrained=False, image_size=224)
    pct = flops_overhead_pct(a, b)
    assert 0.5 < pct < 2.5  # 256 patches + 1 cls -> + 4 tokens: about 1.6%
    assert flops_overhead_pct(a, a) == 0.0


def test_model_summary_counts_planted_outliers_and_register_levels():
    from vitreg.measure.registers import model_summary

    layout = TokenLayout(1, 4, (4, 5))
    gen = torch.Generator().manual_seed(1)
    norms = 20 + torch.rand(6, layout.num_tokens, generator=gen)
    norms[:, 1:5] = torch.tensor([200.0, 300.0, 450.0, 600.0])  # registers: four levels
    norms[0, layout.num_prefix + 3] = 500.0  # one patch outlier in 6 x 20 patches
    attn = torch.softmax(torch.randn(6, 2, layout.num_prefix, layout.num_tokens, generator=gen), -1)
    s = model_summary(norms, attn, layout, threshold=150.0)
    assert s["patch_outlier_pct"] == pytest.approx(100 / 120)
    assert s["register_norm_quantisation"]["score"] < 0.05 and s["register_above_patch_p99_pct"] == 100.0
    assert s["prefix_norm_median"]["reg2"] == pytest.approx(450.0) and s["mean_maps"]["reg0"].shape == (4, 5)
    clean = model_summary(norms[:, [0] + list(range(5, layout.num_tokens))], attn[:, :, :1, [0] + list(range(5, 25))],
                          TokenLayout(1, 0, (4, 5)), threshold=150.0)
    assert "register_norm_quantisation" not in clean and clean["patch_outlier_pct"] > 0


def test_forward_flops_count_the_attention_products():
    """Planted ground truth: a ViT's FLOPs in closed form, attention (2 x 2 T^2 D per block) included."""
    from vitreg.measure.registers import forward_flops
    from vitreg.core.weights import load_model

    for key in ("dinov2_s", "dinov2_s_reg"):
        loaded = load_model(key, pretrained=False, image_size=112)
        t, d, n, p = loaded.layout.num_tokens, loaded.model.embed_dim, loaded.layout.num_patches, 14
        per_block = 2 * t * d * 3 * d + 2 * t * d * d + 2 * 2 * t * d * 4 * d + 2 * 2 * t * t * d
        expected = loaded.num_blocks * per_block + 2 * n * 3 * p * p * d  # + the patch embedding
        assert forward_flops(loaded) == expected


def test_dinov2_pairs_follow_the_zoos_twins_and_reject_others():
    from vitreg.measure.registers import dinov2_pairs, overhead_pct

    pairs = dinov2_pairs([["dinov2_s", "dinov2_s_reg"], ["dinov2_g", "dinov2_g_reg"]])
    assert [(p.size, p.label, p.no_reg, p.reg) for p in pairs] == [("s", "ViT-S", "dinov2_s", "dinov2_s_reg"),
                                                                   ("g", "ViT-g", "dinov2_g", "dinov2_g_reg")]
    for bad in (["dinov2_s", "dinov2_b_reg"], ["dinov2_s_reg", "dinov2_s"], ["deit3_b16", "deit3_b16_reg"]):
        with pytest.raises(ValueError, match="model_pairs"):
            dinov2_pairs([bad])
    assert overhead_pct(100.0, 101.5) == pytest.approx(1.5)


def test_measure_model_reads_planted_register_norms_from_a_recording():
    from types import SimpleNamespace

    from vitreg.measure.registers import measure_model
    from vitreg.core.weights import load_model

    loaded = load_model("dinov2_s_reg", pretrained=False, image_size=56)
    layout = loaded.layout
    norms = 20 + torch.rand(3, layout.num_tokens, generator=torch.Generator().manual_seed(0))
    norms[:, 1:5] = torch.tensor([200.0, 300.0, 450.0, 600.0])  # planted register levels
    attn = torch.softmax(torch.randn(3, 2, layout.num_prefix, layout.num_tokens), -1)
    m = measure_model(loaded, SimpleNamespace(norms={-1: norms}, attn={-1: attn}), n_show=2)
    assert m.key == "dinov2_s_reg" and "mean_maps" not in m.summary and m.summary["register_above_patch_p99_pct"] == 100.0
    assert m.maps["reg3"].shape == (2, *layout.grid) and set(m.mean_map_shares()) == set(m.shares_text()) == set(m.maps)
    assert m.kinds["patch"].numel() == 3 * layout.num_patches and m.flops > 0 and "patch outliers 0.00%" in str(m)


def test_model_summary_finds_small_model_outliers_the_150_cut_off_misses():
    """(Fig. 7 for S/B): patches of median 6 with 2% at norm 60 have a high-norm mode; the
    registers' twin (no such patches) has none. The absolute 150 says "no outliers" for both."""
    from vitreg.measure.registers import model_summary

    layout = TokenLayout(1, 0, (16, 16))
    gen = torch.Generator().manual_seed(3)
    norms = 6 * torch.exp(0.25 * torch.randn(16, layout.num_tokens, generator=gen))
    attn = torch.softmax(torch.randn(16, 2, 1, layout.num_tokens, generator=gen), -1)
    clean = model_summary(norms.clone(), attn, layout, threshold=150.0)
    spiky_norms = norms.clone()
    spiky_norms[:, 1 + torch.randperm(256, generator=gen)[:5]] = 60.0       # 5 of 256 patches (~2%) per image
    spiky = model_summary(spiky_norms, attn, layout, threshold=150.0)
    assert spiky["patch_outlier_pct"] == 0.0 and clean["patch_outlier_pct"] == 0.0   # the cut-off sees nothing
    assert spiky["high_norms"]["bimodal"] and spiky["patch_high_mode_pct"] == pytest.approx(100 * 5 / 256, abs=0.2)
    assert not clean["high_norms"]["bimodal"] and clean["patch_high_mode_pct"] == 0.0
