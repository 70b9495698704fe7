"""Planted outliers (vitreg.planting.planted_outlier_share) around ordinary feature calls.

Paper: Fig. 5b, Table 1 (the smoke checks of notebooks 05 and 06 run on planted outliers).
"""

from __future__ import annotations

import torch

from vitreg import planting
from vitreg.core import context
from vitreg.utils import cache
from vitreg.measure import features
from vitreg.data.datasets import SyntheticGlobalDataset
from vitreg.core.weights import load_model


def test_planted_masks_depend_on_the_image_index_not_on_batching() -> None:
    loaded = load_model("dinov2_s", pretrained=False, image_size=56)
    images = [SyntheticGlobalDataset(n=5, image_size=56)[i][0] for i in range(5)]
    runs = []
    for batch, chunk in ((1, 5), (2, 3), (5, 2)):
        with planting.planted_outlier_share(loaded, fraction=0.1, seed=3):
            runs.append(features.patch_token_features(loaded, images, dataset="x", batch_size=batch, chunk_size=chunk,
                                                      cache=False, progress=False))
    for r in runs[1:]:
        assert torch.equal(r["planted"], runs[0]["planted"])
        assert torch.allclose(r["norms"], runs[0]["norms"], rtol=1e-3)
    assert torch.equal(runs[0]["planted"], planting.plant_mask(5, loaded.layout.grid, fraction=0.1, seed=3))
    assert torch.equal(runs[0]["norms"] > 150, runs[0]["planted"])
    assert context.current(loaded.model) is None  # the context and the hook go on exit
    assert all(not b._forward_hooks for b in loaded.model.blocks)
    clean = features.patch_token_features(loaded, images, dataset="x", cache=False, progress=False)
    assert not clean["planted"].any() and not (clean["norms"] > 150).any()


def test_planting_is_part_of_the_cache_key_and_zero_plants_nothing() -> None:
    loaded = load_model("dinov2_s", pretrained=False, image_size=56)
    clean = features._model_key(loaded, "final_norm")
    with planting.planted_outlier_share(loaded, fraction=0.0) as spec:
        assert spec is None and context.current(loaded.model) is None
        assert features._model_key(loaded, "final_norm") == clean
    with planting.planted_outlier_share(loaded, fraction=0.1, norm=500.0, seed=1) as spec:
        assert context.current(loaded.model) is spec
        planted = features._model_key(loaded, "final_norm")
        assert cache.model_fields(loaded) == {k: v for k, v in clean.items() if k != "layer"}  # only as an argument
    assert planted["planted"] == {"fraction": 0.1, "norm": 500.0, "seed": 1, "block": loaded.num_blocks // 2}
    assert {k: v for k, v in planted.items() if k != "planted"} == clean
    assert features._model_key(loaded, "final_norm") == clean  # the context leaves with the ``with``


def test_the_cache_key_takes_the_context_fingerprint_as_an_argument() -> None:
    loaded = load_model("dinov2_s", pretrained=False, image_size=56)
    assert "planted" not in cache.model_fields(loaded)
    fields = cache.model_fields(loaded, {"fraction": 0.5, "seed": 2})
    assert fields["planted"] == {"fraction": 0.5, "seed": 2}
    assert not hasattr(loaded, "planted")  # nothing is written on the model


def test_nested_contexts_restore_the_outer_one() -> None:
    loaded = load_model("dinov2_s", pretrained=False, image_size=56)
    with planting.planted_outlier_share(loaded, fraction=0.1, seed=1) as outer:
        with planting.planted_outlier_share(loaded, fraction=0.2, seed=2) as inner:
            assert context.current(loaded.model) is inner
        assert context.current(loaded.model) is outer
    assert context.current(loaded.model) is None
