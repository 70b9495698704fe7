"""Massive activations (Sun et al. 2024; notebook 11) on planted ground truth: planted huge scalars at known
(token, channel) are found exactly, a clean random model has none, and fixing the registers to their mean
replaces exactly the register features and leaves the model untouched after the context exits."""

from __future__ import annotations

import numpy as np
import torch

from conftest import small_vit
from vitreg import planting
from vitreg.measure import massive
from vitreg.core.models import get_spec
from vitreg.core.weights import LoadedModel


def _loaded(name: str = "dinov2_s_reg", depth: int = 3) -> LoadedModel:
    return LoadedModel(model=small_vit(name, depth=depth, image_size=56), spec=get_spec(name), image_size=(56, 56),
                       pretrained=False, source="random init")


def _images(n: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (56, 56, 3), dtype=np.uint8) for _ in range(n)]


def test_top_activations_and_criterion_on_a_tensor():
    out = torch.randn(2, 7, 16) * 0.1
    out[0, 3, 5] = -500.0  # sign does not matter: magnitudes
    out[1, 6, 2] = 50.0    # large but under the absolute bound of 100
    values, tokens, channels, median = massive.top_activations(out, k=2)
    assert tokens[:, 0].tolist() == [3, 6] and channels[:, 0].tolist() == [5, 2]
    mass = massive.is_massive(values, median)
    assert mass[0, 0] and not mass[0, 1] and not mass[1].any()


def test_planted_massive_activations_are_found_exactly():
    loaded = _loaded()
    cells = [(0, 7), (2, 100)]  # [CLS] channel 7, the second register channel 100
    with planting.planted_massive(loaded, 1, cells):
        found = massive.measure(loaded, _images(), k=5, batch_size=2, progress=False)
    assert found.positions() == set(cells)
    s = found.summary()
    assert s["blocks_with_massive"] == [1, 2]  # from the planted block on (the residual stream carries it)
    assert s["pct_on_cls"] == 50 and s["pct_on_reg"] == 50 and s["pct_on_patch"] == 0
    assert sorted(s["channels"][:2]) == [7, 100] and s["channel_share_pct"] == 100


def test_a_clean_random_model_has_no_massive_activations():
    found = massive.measure(_loaded(), _images(), k=5, batch_size=5, progress=False)
    assert found.positions() == set() and found.summary()["n_massive"] == 0


def test_fixed_register_means_replaces_registers_and_is_removed_on_exit():
    loaded = _loaded()
    x = torch.randn(3, 3, 56, 56)
    before = loaded.forward(x)
    means = massive.register_means(loaded, _images(4), batch_size=2, progress=False)
    assert set(means) == {0, 1, 2} and means[0].shape == (4, loaded.model.embed_dim)
    seen = {}
    with massive.fixed_register_means(loaded, means):
        h = loaded.model.blocks[2].register_forward_hook(lambda _m, _a, out: seen.setdefault("out", out))
        fixed = loaded.forward(x)
        h.remove()
    assert torch.allclose(seen["out"][:, loaded.layout.reg_slice], means[2].expand(3, -1, -1))
    assert not torch.allclose(fixed, before)
    assert torch.equal(loaded.forward(x), before)  # hooks gone
