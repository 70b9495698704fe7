"""Token layout: counts and order for every family in the zoo, registers, no class token, non-square."""

from __future__ import annotations

import pytest
import torch

from conftest import small_vit
from vitreg.core.models import ZOO
from vitreg.core.tokens import TokenLayout


@pytest.mark.parametrize("key", sorted(ZOO))
def test_layout_matches_the_model_sequence(key):
    """Every zoo family, random weights: the layout's counts equal the real token sequence."""
    spec = ZOO[key]
    size = (3 * spec.patch_size, 5 * spec.patch_size)  # non-square on purpose
    model = small_vit(key, depth=1, image_size=size)
    layout = TokenLayout.from_model(model, size)
    with torch.inference_mode():
        tokens = model.forward_features(torch.randn(2, 3, *size))
    assert tokens.shape[1] == layout.num_tokens
    assert layout.num_reg == spec.registers
    assert layout.grid == (3, 5)
    assert layout.num_cls == 1


def test_register_dinov2_at_406px_has_841_patches_not_845():
    """Paper-notes §5: slicing one prefix token instead of 1 + R (845 vs 841 tokens)."""
    model = small_vit("dinov2_s_reg", depth=1, image_size=406)
    layout = TokenLayout.from_model(model, (406, 406))
    with torch.inference_mode():
        tokens = model.forward_features(torch.randn(1, 3, 406, 406))
    assert tokens.shape[1] == 846
    assert layout.num_prefix == 5
    assert layout.patches(tokens).shape[1] == 841
    assert tokens[:, 1:].shape[1] == 845  # the classic mistake, for contrast


@pytest.mark.parametrize("num_cls,num_reg,num_extra", [(1, 0, 0), (1, 4, 0), (1, 16, 0), (0, 4, 0), (0, 0, 0), (1, 4, 1)])
def test_split_puts_each_token_in_its_part(num_cls, num_reg, num_extra):
    layout = TokenLayout(num_cls, num_reg, (3, 4), num_extra)
    ids = torch.arange(layout.num_tokens).view(1, -1, 1).expand(2, -1, 3)  # token i holds value i
    parts = layout.split(ids)
    if num_cls:
        assert parts.cls.shape == (2, 3) and (parts.cls == 0).all()
    else:
        assert parts.cls is None
    if num_reg:
        assert parts.reg[0, :, 0].tolist() == list(range(num_cls, num_cls + num_reg))
    else:
        assert parts.reg is None
    assert parts.patch[0, :, 0].tolist() == list(range(layout.num_prefix, layout.num_prefix + 12))
    assert (parts.extra is None) == (num_extra == 0)
    grid = layout.patch_grid(ids)
    assert grid.shape == (2, 3, 4, 3)
    assert grid[0, 1, 2, 0].item() == layout.num_prefix + 1 * 4 + 2  # row-major
    assert layout.kinds().count("patch") == 12


def test_split_works_on_norms_and_rejects_wrong_counts():
    layout = TokenLayout(1, 4, (2, 2))
    norms = torch.arange(9.0).view(1, 9)
    assert layout.split(norms).patch.tolist() == [[5.0, 6.0, 7.0, 8.0]]
    with pytest.raises(ValueError, match="expected 9 tokens"):
        layout.split(torch.zeros(1, 8, 3))


def test_from_model_rejects_sizes_off_the_patch_grid():
    model = small_vit("dinov2_s", depth=1, image_size=112)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        TokenLayout.from_model(model, (113, 112))
