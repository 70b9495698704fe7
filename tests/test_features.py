"""Probe features (vitreg.measure.features) of a random model under planted outliers (vitreg.planting).

Paper: Fig. 5b, Table 1 (planted ground truth for the smoke checks).
"""

from __future__ import annotations

import pytest
import torch

from vitreg import planting
from vitreg.data import dense as dense_data
from vitreg.measure import features, local_probes


def test_features_of_a_random_model_find_exactly_the_planted_outliers(tmp_path) -> None:
    """End to end on a random-weight DINOv2-S+reg: planted tokens are the outliers, draws come from them."""
    from vitreg.data.datasets import SyntheticGlobalDataset
    from vitreg.core.weights import load_model

    loaded = load_model("dinov2_s_reg", pretrained=False, image_size=56)
    ds = SyntheticGlobalDataset(n=6, image_size=56)
    kw = dict(name="synthetic", split="train", n_draws=2, seed=0, batch_size=3, cache_root=tmp_path, chunk_size=4,
              progress=False)
    with planting.planted_outlier_share(loaded, fraction=0.1, seed=0):
        feats = features.single_token_features(loaded, ds, **kw)
    mask = planting.plant_mask(6, loaded.layout.grid, fraction=0.1, seed=0)
    assert mask.any(1).all()
    assert torch.equal(feats["n_outliers"], mask.sum(1))  # the planted tokens and nothing else exceed 150
    assert feats["reg"].shape == (6, 4, 384) and feats["cls"].shape == (6, 384)
    assert feats["normal"].shape == (6, 2, 384) and feats["labels"].tolist() == ds.labels.tolist()
    with planting.planted_outlier_share(loaded, fraction=0.1, seed=0):
        local = features.patch_token_features(loaded, [ds[i][0] for i in range(6)], dataset="syn6", batch_size=3,
                                              cache=False, progress=False)
    assert torch.equal(local["norms"] > 150, mask) and torch.equal(local["planted"], mask)
    assert local["pixels"].shape == (6, 16, 3 * 14 * 14)
    for i in range(6):
        planted_tokens = local["patches"][i, mask[i]].float()
        for k in range(2):
            dist = (planted_tokens - feats["outlier"][i, k].float()).norm(dim=1)
            assert dist.min() < 0.05 * feats["outlier"][i, k].float().norm()
    h, w = loaded.layout.grid
    assert torch.allclose(feats["central"].float(), local["patches"][:, (h // 2) * w + w // 2].float(), atol=0.05)
    with planting.planted_outlier_share(loaded, fraction=0.1, seed=0):
        again = features.single_token_features(loaded, ds, **kw)  # from the cache
    clean = features.single_token_features(loaded, ds, **kw)  # not planted: another cache entry
    assert not torch.equal(clean["n_outliers"], feats["n_outliers"]) and getattr(loaded, "planted", None) is None
    assert all(torch.equal(again[k], feats[k]) for k in feats)
    summary = local_probes.local_information(local, mask, grid=loaded.layout.grid, l2_grid=(1e-2,), ridge_grid=(1.0,),
                                       device="cpu")
    assert summary["normal"]["n_test"] + summary["outlier"]["n_test"] == summary["n_test_images"] * h * w


@pytest.mark.parametrize("name", ["dinov2_s", "dinov2_s_reg"])
def test_dense_features_drop_every_prefix_token(name: str) -> None:
    from vitreg.core.weights import load_model

    loaded = load_model(name, pretrained=False, image_size=56)
    imgs = [dense_data.SyntheticDenseDataset(n=2, image_size=56, tile=14)[i][0] for i in range(2)]
    f = features.dense_features(loaded, imgs, batch_size=2)
    assert f["patch"].shape == (2, 4, 4, loaded.model.embed_dim)
    assert f["cls"].shape == f["patch_mean"].shape == (2, loaded.model.embed_dim)
    assert torch.allclose(f["patch_mean"].float(), f["patch"].float().mean((1, 2)), atol=1e-2)


def test_task_features_are_cached_and_reloaded_without_the_model(tmp_path, monkeypatch) -> None:
    from vitreg.core.weights import load_model

    loaded = load_model("dinov2_s_reg", pretrained=False, image_size=56)
    data = dense_data.SyntheticDenseDataset(n=3, image_size=56, tile=14, seed=2)
    kw = dict(dataset_name="synthetic_dense", split="train", target="seg+depth", label_size=(28, 28),
              batch_size=2, cache_root=tmp_path, chunk_size=2, progress=False)
    first = features.cached_task_features(loaded, data, range(3), **kw)
    assert first["patch"].shape == (3, 4, 4, 384) and first["labels"].shape == first["depth"].shape == (3, 28, 28)
    # targets follow the image: tile (row 0, col 0) of image 1, at half resolution
    assert int(first["labels"][1, 0, 0]) == int(data.sample(1)[1][0, 0])
    monkeypatch.setattr(features, "dense_features", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = features.cached_task_features(loaded, data, range(3), **kw)
    assert torch.equal(again["patch"], first["patch"]) and torch.equal(again["depth"], first["depth"])
    with pytest.raises(AssertionError, match="recomputed"):  # another subset is another cache entry
        features.cached_task_features(loaded, data, [0, 2], **kw)


def test_dinov2_eval_crop_keeps_the_central_224_of_256() -> None:
    from PIL import Image

    img = Image.new("RGB", (320, 256))
    crop = features.dinov2_eval_crop(img)
    assert crop.size == (224, 224)


def test_draws_do_not_depend_on_the_chunk_size(tmp_path) -> None:
    """Table 1: an image's random normal/outlier tokens are fixed by the seed and its index, not its chunk."""
    from vitreg.data.datasets import SyntheticGlobalDataset
    from vitreg.core.weights import load_model

    loaded = load_model("dinov2_s_reg", pretrained=False, image_size=56)
    ds = SyntheticGlobalDataset(n=6, image_size=56)
    kw = dict(name="synthetic", split="train", n_draws=3, seed=0, batch_size=2, cache=False, progress=False)
    with planting.planted_outlier_share(loaded, fraction=0.1, seed=0):
        three, five = (features.single_token_features(loaded, ds, chunk_size=size, **kw) for size in (3, 5))
        cached = features.single_token_features(loaded, ds, chunk_size=5, **{**kw, "cache": True},
                                                cache_root=tmp_path)
    assert three["has_outlier"].all() and three["has_normal"].all()
    for name in ("normal", "outlier", "n_outliers"):
        assert torch.equal(three[name], five[name]) and torch.equal(cached[name], five[name])


def test_outliers_are_found_at_the_models_detection_block_where_the_last_block_loses_them(tmp_path, monkeypatch) -> None:
    """([TTR]: DINOv2-L's norms drop at the last block, so outliers are detected at block -2).
    Planted: outliers at block -2, and a last block that squashes every token to norm 5. Detection at the
    model's block (-2, recorded) finds exactly the planted tokens; the last block (the old rule) finds none."""
    from vitreg.data.datasets import SyntheticGlobalDataset
    from vitreg.core.weights import load_model

    loaded = load_model("dinov2_s", pretrained=False, image_size=56)
    monkeypatch.setitem(features.DETECTION_BLOCKS, "dinov2_s", -2)
    assert features.detection_block(loaded) == -2 and features.detection_block(loaded, -1) == -1
    assert features.DETECTION_BLOCKS["dinov2_l"] == -2
    ds = SyntheticGlobalDataset(n=4, image_size=56)
    squash = loaded.model.blocks[-1].register_forward_hook(lambda _m, _a, out: 5 * out / out.norm(dim=-1, keepdim=True))
    kw = dict(name="synthetic", split="train", n_draws=1, seed=0, batch_size=4, cache=False, progress=False)
    try:
        with planting.planted_outlier_share(loaded, fraction=0.1, seed=0, block=loaded.num_blocks - 2):
            found = features.single_token_features(loaded, ds, **kw)
        with planting.planted_outlier_share(loaded, fraction=0.1, seed=0, block=loaded.num_blocks - 2):
            last = features.single_token_features(loaded, ds, detect_block=-1, **kw)
    finally:
        squash.remove()
    mask = planting.plant_mask(4, loaded.layout.grid, fraction=0.1, seed=0)
    assert torch.equal(found["n_outliers"], mask.sum(1)) and found["has_outlier"].all()
    assert int(last["n_outliers"].sum()) == 0
