"""F5 local probes (vitreg.measure.local_probes): positions and pixels are recovered when planted, not from noise.

Paper: Fig. 5b.
"""

from __future__ import annotations

import math

import pytest
import torch

from vitreg.measure import features, local_probes




def test_grid_distance() -> None:
    grid = (4, 5)
    pred = torch.tensor([0, 6, 19])
    true = torch.tensor([0, 0, 0])
    assert torch.allclose(local_probes.grid_distance(pred, true, grid), torch.tensor([0.0, math.sqrt(2), 5.0]))


def planted_position_tokens(n_images: int, grid: tuple[int, int], d: int, seed: int):
    """Tokens = a fixed vector per grid cell (planted position code) + small noise."""
    n = grid[0] * grid[1]
    code = torch.randn(n, d, generator=torch.Generator().manual_seed(99)) * 2
    gen = torch.Generator().manual_seed(seed)
    pos = local_probes.patch_positions(n_images, grid).reshape(-1)
    return code[pos] + 0.3 * torch.randn(len(pos), d, generator=gen), pos


def test_position_probe_recovers_positions_and_not_from_noise() -> None:
    grid, d = (4, 4), 32
    xtr, ptr = planted_position_tokens(20, grid, d, seed=0)
    xte, pte = planted_position_tokens(10, grid, d, seed=1)
    outlier = torch.zeros(len(pte), dtype=torch.bool)
    outlier[::4] = True
    xte = xte.clone()
    xte[outlier] = torch.randn(int(outlier.sum()), d, generator=torch.Generator().manual_seed(5)) * 2  # no code
    res = local_probes.position_probe(xtr, ptr, xte, pte, grid=grid, groups={"normal": ~outlier, "outlier": outlier},
                                l2_grid=(1e-2, 1e-4), device="cpu")
    g = res["groups"]
    assert g["normal"]["top1"] > 98.0 and g["normal"]["avg_distance"] < 0.05
    assert g["outlier"]["top1"] < 30.0 and g["outlier"]["avg_distance"] > 1.0
    assert g["normal"]["n"] + g["outlier"]["n"] == len(pte)
    assert res["chance_top1"] == pytest.approx(100 / 16)


def test_patch_pixels_follow_the_patch_embedding_order() -> None:
    p = 4
    img = torch.randn(2, 3, 8, 12)
    pix = features.patch_pixels(img, p)
    assert pix.shape == (2, 6, 3 * p * p)
    r, c = 1, 2  # row-major: index r * w + c with w = 3
    assert torch.equal(pix[1, r * 3 + c], img[1, :, r * p:(r + 1) * p, c * p:(c + 1) * p].reshape(-1))
    conv = torch.nn.Conv2d(3, 5, p, p, bias=False)  # the patch embedding is this conv, flattened row-major
    emb = conv(img).flatten(2).transpose(1, 2)
    assert torch.allclose(emb, pix @ conv.weight.reshape(5, -1).T, atol=1e-5)
    with pytest.raises(ValueError, match="multiple"):
        features.patch_pixels(torch.zeros(1, 3, 9, 8), 4)


def test_reconstruction_probe_recovers_a_linear_map_and_not_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    d, pdim = 24, 48
    a = torch.randn(d, pdim, generator=gen)
    x = torch.randn(1500, d, generator=gen)
    pixels = x @ a + 0.05 * torch.randn(1500, pdim, generator=gen)
    xtr, ytr, xte, yte = x[:1000], pixels[:1000], x[1000:].clone(), pixels[1000:]
    outlier = torch.zeros(500, dtype=torch.bool)
    outlier[:100] = True
    xte[outlier] = torch.randn(100, d, generator=gen)  # tokens unrelated to their pixels
    res = local_probes.reconstruction_probe(xtr, ytr, xte, yte, groups={"normal": ~outlier, "outlier": outlier},
                                      device="cpu")
    g = res["groups"]
    assert g["normal"]["l2_error"] == pytest.approx(0.05 * math.sqrt(pdim), rel=0.3)
    assert g["normal"]["relative"] < 0.05
    assert g["outlier"]["relative"] > 1.0  # no better than predicting the mean patch


def test_outlier_minus_normal_is_the_difference_or_a_skip() -> None:
    groups = {"normal": {"position_top1": 40.0, "position_distance": 0.8, "reconstruction_l2": 18.0, "n_test": 90},
              "outlier": {"position_top1": 20.0, "position_distance": 5.0, "reconstruction_l2": 25.0, "n_test": 10}}
    got = local_probes.outlier_minus_normal(groups, "dinov2_g")
    assert got["model"] == "dinov2_g"
    assert got["position_top1"] == pytest.approx(-20.0)
    assert got["position_distance"] == pytest.approx(4.2)
    assert got["reconstruction_l2"] == pytest.approx(7.0)
    groups["outlier"]["n_test"] = 0
    got = local_probes.outlier_minus_normal(groups, "dinov2_g")
    assert got["position_top1"] == {"skipped": "no outlier tokens among the test images"}


def test_probe_model_finds_planted_outliers_with_less_local_information() -> None:
    from vitreg import planting
    from vitreg.core.images import sample_photos
    from vitreg.core.weights import load_model

    loaded = load_model("dinov2_s", pretrained=False, image_size=56, device="cpu")
    images = [im for _, im in sample_photos()][:6]
    with planting.planted_outlier_share(loaded, fraction=0.25, norm=1000.0, seed=0):
        res = local_probes.probe_model(loaded, images, dataset="test-photos", batch_size=6, cache=False,
                                       l2_grid=[1e-3], ridge_grid=[1.0], device="cpu")
    assert res["loaded"] is loaded
    assert 0.1 < res["outlier_fraction"] < 0.4            # the planted quarter, found by the norm cut-off
    assert res["outlier"]["n_test"] > 0 and res["normal"]["n_test"] > 0
    assert res["outlier"]["reconstruction_l2"] > res["normal"]["reconstruction_l2"]
