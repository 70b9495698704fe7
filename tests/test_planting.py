"""Planting (vitreg.planting): planted truth is found, hooks exist only inside ``with`` and for any batch size.

Paper: Fig. 3-4 (planted high-norm tokens), Fig. 7 (planted register norms). A planted test must fail when
the code it guards is broken: the hooks here are checked by what a capture then finds.
"""

from __future__ import annotations

import pytest
import torch

from conftest import small_vit
from vitreg.core.capture import capture
from vitreg.planting import planted, planted_outliers, planted_outliers_per_image, planted_registers
from vitreg.core.tokens import TokenLayout


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_planted_outliers_are_found_exactly_from_their_block_on():
    """High-norm vectors added at block 3 on known patches: those patches, and only those, from block 3 on."""
    model = small_vit("dinov2_s_reg", depth=6, image_size=112)
    layout = TokenLayout.from_model(model, (112, 112))
    planted = [layout.num_prefix + i for i in (0, 9, 40, 63)]
    with torch.inference_mode(), planted_outliers(model, 3, planted, norm=500.0), capture(model, norms="all") as rec:
        model.forward_features(torch.randn(2, 3, 112, 112))
    norms = rec.norm_stack()  # (L, B, T)
    assert norms.shape == (6, 2, layout.num_tokens)
    for b in range(6):
        found = {int(t) for t in (norms[b, 0] > 150).nonzero().flatten()}
        assert found == (set(planted) if b >= 3 else set()), b
        assert torch.equal(norms[b, 0] > 150, norms[b, 1] > 150)  # every image in the batch


def test_per_image_planting_follows_images_across_batches():
    model = small_vit("dinov2_s", depth=2, image_size=56)
    layout = TokenLayout.from_model(model, (56, 56))
    plan = [[layout.num_prefix + i] for i in range(5)]  # image i: patch i
    with torch.inference_mode(), planted_outliers_per_image(model, 0, plan, norm=400.0), capture(model, norms=[-1]) as rec:
        for chunk in torch.randn(5, 3, 56, 56).split(2):
            model.forward_features(chunk)
    patches = layout.patches(rec.norms[-1])
    assert patches.shape == (5, layout.num_patches)
    assert patches.argmax(dim=1).tolist() == [0, 1, 2, 3, 4]


def test_hooks_install_on_with_only_and_leave_on_exit_and_exceptions():
    model = small_vit("dinov2_s_reg", depth=2, image_size=56)
    before = _hooks(model)
    ctx = planted_outliers(model, 0, [5])
    assert _hooks(model) == before  # creating the context installs nothing
    with ctx:
        assert _hooks(model) == before + 1
    assert _hooks(model) == before
    with pytest.raises(RuntimeError, match="boom"):
        with capture(model, norms="all", attn="all"), planted_outliers(model, 0, [5]):
            raise RuntimeError("boom")
    assert _hooks(model) == before


def test_planted_registers_installs_on_enter_and_plants_the_register_levels():
    """Fig. 7 planted: with registers, register i gets norm levels[i]; without, patches get outliers."""
    from vitreg.core.weights import load_model

    for key in ("dinov2_s_reg", "dinov2_s"):
        loaded = load_model(key, pretrained=False, image_size=56)
        lay, before = loaded.layout, _hooks(loaded.model)
        ctx = planted_registers(loaded, 3, norms=(2000, 3000, 4500, 6000))
        assert _hooks(loaded.model) == before  # not on call (the old smoke_plant installed here)
        with torch.inference_mode(), ctx, capture(loaded.model, norms=[-1]) as rec:
            assert _hooks(loaded.model) > before
            loaded.forward(torch.randn(3, 3, 56, 56))
        assert _hooks(loaded.model) == before
        norms = rec.norms[-1]
        if lay.num_reg:
            reg = norms[:, lay.reg_slice]
            assert reg.argsort(dim=1).tolist() == [[0, 1, 2, 3]] * 3  # ordered like the planted levels
            assert reg.min() > 10 * lay.patches(norms).max()
        else:
            assert (lay.patches(norms)[:, 0] > 10 * lay.patches(norms)[:, 1:].median()).all()


def test_planted_none_plants_nothing():
    model = small_vit("dinov2_s", depth=2, image_size=56)
    loaded = type("L", (), {"model": model, "num_blocks": 2, "layout": TokenLayout.from_model(model, (56, 56))})()
    before = _hooks(model)
    with planted(loaded, None):
        assert _hooks(model) == before
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, 3] = True
    with planted(loaded, mask, block=0, norm=500.0):
        assert _hooks(model) == before + 1
    assert _hooks(model) == before
