"""The positional artifact (Denoising ViT, Yang et al. 2024; notebook 11) on planted ground truth: a
position-only signal is recovered by the variance share, a content-only signal is not, and the all-zero
image of a model with a planted grid matches the per-position mean of natural images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import small_vit
from vitreg import planting
from vitreg.measure import positional
from vitreg.core.models import get_spec
from vitreg.core.weights import LoadedModel


def test_position_only_signal_is_recovered_and_content_only_is_not():
    gen = torch.Generator().manual_seed(0)
    n, p, d = 16, 49, 8
    pattern = torch.randn(p, d, generator=gen)
    noise = 0.3 * torch.randn(n, p, d, generator=gen)
    pos = positional.variance_shares(pattern + noise)
    assert pos["position"] > 0.85
    content = positional.variance_shares(torch.randn(n, p, d, generator=gen))  # nothing shared by position
    assert content["position"] < 0.02 and content["position_raw"] == pytest.approx(1 / n, abs=0.03)
    per_image = positional.variance_shares(torch.randn(n, 1, d, generator=gen) + noise)  # image, not position
    assert per_image["position"] < 0.02 and per_image["image"] > 0.8


def test_variance_shares_rejects_a_single_image():
    with pytest.raises(ValueError):
        positional.variance_shares(torch.randn(1, 4, 3))


def test_planted_grid_on_a_model_is_measured_and_shows_on_the_zero_image():
    loaded = LoadedModel(model=small_vit("dinov2_s_reg", depth=2, image_size=56), spec=get_spec("dinov2_s_reg"),
                         image_size=(56, 56), pretrained=False, source="random init")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (56, 56, 3), dtype=np.uint8) for _ in range(8)]
    with planting.planted_grid_signal(loaded, kind="position"):
        feats = positional.patch_features(loaded, images, batch_size=4, progress=False)
        zero = positional.zero_image_features(loaded)
    assert feats.shape == (8, loaded.layout.num_patches, loaded.model.embed_dim)
    assert positional.variance_shares(feats)["position"] > 0.7
    assert positional.template_correlation(zero, feats) > 0.9
    with planting.planted_grid_signal(loaded, kind="content"):
        control = positional.patch_features(loaded, images, batch_size=4, progress=False)
    assert positional.variance_shares(control)["position"] < 0.1
    assert positional.first_component_map(zero, loaded.layout.grid).shape == loaded.layout.grid


def test_with_a_test_time_register_the_extra_token_is_dropped_and_the_planted_grid_still_found():
    """Notebook 11 measures the positional artifact also with a test-time register ([TTR]): the features are
    the patches only (the extra token dropped through the layout), and a planted position-only grid is found."""
    from vitreg.measure import ttr

    loaded = LoadedModel(model=small_vit("dinov2_s", depth=3, image_size=56), spec=get_spec("dinov2_s"),
                         image_size=(56, 56), pretrained=False, source="random init")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (56, 56, 3), dtype=np.uint8) for _ in range(8)]
    with ttr.test_time_register(loaded, {1: [3, 17]}), planting.planted_grid_signal(loaded, kind="position"):
        feats = positional.patch_features(loaded, images, batch_size=4, progress=False)
        zero = positional.zero_image_features(loaded)
    assert feats.shape == (8, loaded.layout.num_patches, loaded.model.embed_dim) and zero.shape == feats.shape[1:]
    assert positional.variance_shares(feats)["position"] > 0.7
    assert positional.template_correlation(zero, feats) > 0.9
