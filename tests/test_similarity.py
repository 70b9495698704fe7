"""Planted ground truth for vitreg.measure.similarity (Paper: Fig. 5a)."""

import pytest
import torch
from sklearn.metrics import roc_auc_score

from vitreg.measure import similarity


def test_constant_region_similarity_is_one_and_noise_near_zero():
    gen = torch.Generator().manual_seed(0)
    grid = torch.randn(2, 8, 9, 256, generator=gen)
    grid[:, 2:5, 3:7] = torch.randn(256, generator=gen)  # a constant 3x4 region
    sim = similarity.neighbour_similarity(grid)
    assert torch.allclose(sim[:, 3, 4:6], torch.ones(2, 2), atol=1e-5)  # interior of the region: all 4 alike
    outside = torch.ones(8, 9, dtype=torch.bool)
    outside[1:6, 2:8] = False  # the region and its ring
    assert sim[:, outside].abs().mean() < 0.05
    assert sim[:, outside].abs().max() < 0.3


def test_border_and_corner_use_available_neighbours():
    grid = torch.zeros(1, 3, 3, 2)
    grid[..., 0] = 1.0
    grid[0, 0, 1] = torch.tensor([0.0, 1.0])  # right neighbour of the corner is orthogonal
    sim = similarity.neighbour_similarity(grid)
    assert sim[0, 0, 0].item() == pytest.approx(0.5)  # corner: (0 + 1) / 2 neighbours
    assert sim[0, 0, 1].item() == pytest.approx(0.0)  # edge: 3 orthogonal neighbours
    assert sim[0, 1, 1].item() == pytest.approx(0.75)  # centre: 3 of 4 alike
    assert sim[0, 2, 2].item() == pytest.approx(1.0)


def test_auc_separable_noise_and_sklearn():
    gen = torch.Generator().manual_seed(1)
    labels = torch.rand(2000, generator=gen) < 0.1
    separable = labels.float() + 0.01 * torch.rand(2000, generator=gen)
    assert similarity.roc_auc(separable, labels) == 1.0
    assert similarity.roc_auc(-separable, labels) == 0.0
    noise = torch.rand(2000, generator=gen)
    assert abs(similarity.roc_auc(noise, labels) - 0.5) < 0.06
    mixed = labels.float() * 0.5 + torch.randn(2000, generator=gen)
    ties = torch.round(mixed * 2) / 2  # many ties
    for s in (noise, mixed, ties):
        assert similarity.roc_auc(s, labels) == pytest.approx(roc_auc_score(labels.numpy(), s.numpy()), abs=1e-9)


def test_auc_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        similarity.roc_auc(torch.rand(10), torch.zeros(10, dtype=torch.bool))


def test_planted_redundant_outliers_summary():
    gen = torch.Generator().manual_seed(2)
    grid = torch.randn(4, 6, 6, 64, generator=gen)
    mask = torch.zeros(4, 6, 6, dtype=torch.bool)
    mask[:, 1:5, 1:5] = True  # outliers planted on a flat (redundant) region
    grid[:, 1:5, 1:5] = grid[:, 1:2, 1:2]
    sim = similarity.neighbour_similarity(grid)
    summary = similarity.similarity_summary(sim, mask.flatten(1))
    assert summary["n_outlier"] == 64 and summary["n_normal"] == 80
    assert summary["mean_outlier"] > 0.7 > 0.3 > summary["mean_normal"]
    assert summary["auc"] == 1.0
    # control: a mask unrelated to redundancy
    control = torch.zeros_like(mask)
    control[:, 0, :] = True
    ctrl = similarity.similarity_summary(similarity.neighbour_similarity(torch.randn(4, 6, 6, 64, generator=gen)),
                                         control)
    assert abs(ctrl["auc"] - 0.5) < 0.2


def test_split_by_mask_and_errors():
    values = torch.arange(6.0).reshape(1, 2, 3)
    mask = torch.tensor([[True, False, False, False, False, True]])
    a, b = similarity.split_by_mask(values, mask)
    assert a.tolist() == [0.0, 5.0] and b.tolist() == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="different patches"):
        similarity.split_by_mask(values, torch.zeros(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="to_grid"):
        similarity.neighbour_similarity(torch.zeros(2, 9, 4))


def test_patch_embedding_similarity_on_random_timm_model():
    """A flat image has identical patch embeddings (similarity 1); a noise image does not."""
    import numpy as np
    from PIL import Image

    from vitreg.core.weights import load_model

    loaded = load_model("dinov2_s", pretrained=False, image_size=56)
    rng = np.random.default_rng(0)
    flat = Image.fromarray(np.full((56, 56, 3), 128, np.uint8))
    noise = Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8))
    out = similarity.patch_embedding_similarity(loaded, [flat, noise, flat], batch_size=2, progress=False)
    assert out["embed"].shape == (3, 4, 4) and out["norms"].shape == (3, 16)
    assert torch.allclose(out["embed"][[0, 2]], torch.ones(2, 4, 4), atol=1e-5)
    assert out["embed"][1].max() < 0.9
    assert out["embed_pos"][0].min() < 1 - 1e-4  # the position embedding makes flat patches differ


def test_similarity_is_computed_on_the_input_device():
    """Patch embeddings left on the GPU must not be summed into CPU buffers; "meta" stands in for it."""
    grid = torch.randn(2, 4, 5, 8, device="meta")
    assert similarity.neighbour_similarity(grid).device == grid.device


def test_position_embedding_changes_flags_a_shift_of_either_mean():
    base = {"mean_outlier": 0.90, "mean_normal": 0.60}
    assert not similarity.position_embedding_changes(base, {"mean_outlier": 0.91, "mean_normal": 0.59})
    assert similarity.position_embedding_changes(base, {"mean_outlier": 0.85, "mean_normal": 0.60})
    assert similarity.position_embedding_changes(base, {"mean_outlier": 0.90, "mean_normal": 0.70})
    # no outliers (NaN means): only the normal patches can show a change
    nan = float("nan")
    assert not similarity.position_embedding_changes({"mean_outlier": nan, "mean_normal": 0.6},
                                                     {"mean_outlier": nan, "mean_normal": 0.6})
