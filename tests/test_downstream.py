"""Downstream linear heads (Table 2): they learn a planted relation and do not learn noise.

Planted ground truth: patch tokens that carry their cell's class (a prototype) or depth (a direction),
and noise controls whose tokens come from an independent map.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitreg import downstream as ds
from vitreg.data import DatasetUnavailable

FAST = ds.TrainConfig(epochs=15, batch_size=8, lr=1e-2, device="cpu")


@pytest.mark.parametrize("planted", [True, False])
def test_segmentation_head_learns_planted_classes_not_noise(planted: bool) -> None:
    train, test = ds.planted_segmentation(24, 12, upsample=2, n_classes=5, planted=planted, seed=3)
    r = ds.segmentation_probe(train, test, 5, cfg=FAST)
    if planted:
        assert r["miou"] > 90.0, r["miou"]
        assert r["miou"] > 5 * r["chance_miou"]
    else:  # labels cannot be read from the tokens: no better than 1/C (uniform guessing scores 1/(2C-1))
        assert r["miou"] < 100.0 / 5, r["miou"]


@pytest.mark.parametrize("planted", [True, False])
def test_depth_head_learns_planted_depth_not_noise(planted: bool) -> None:
    train, test = ds.planted_depth(16, 8, grid=(6, 6), upsample=4, planted=planted, seed=4)
    head = ds.train_depth_head(train["patch"], train["cls"], train["depth"], n_bins=32, cfg=FAST)
    pred = ds.predict_depth(head, test["patch"], test["cls"], tuple(test["depth"].shape[-2:]))
    rmse = ds.depth_metrics(pred, test["depth"])["rmse"]
    constant = ds.constant_depth_rmse(train["depth"], test["depth"])
    if planted:
        assert rmse < 0.5 * constant, (rmse, constant)
    else:
        assert rmse > 0.9 * constant, (rmse, constant)


def test_mean_iou_counts_over_the_dataset_and_ignores_255() -> None:
    labels = torch.tensor([[[0, 0, 1, 255]], [[1, 1, 2, 2]]], dtype=torch.uint8)
    pred = torch.tensor([[[0, 1, 1, 0]], [[1, 1, 2, 0]]], dtype=torch.uint8)
    # kept (gt, pred): (0,0) (0,1) (1,1) (1,1) (1,1) (2,2) (2,0)
    # class 0: inter 1, union 2 + 2 - 1 = 3; class 1: 3 / (4 + 3 - 3); class 2: 1 / (1 + 2 - 1)
    r = ds.mean_iou(pred, labels, 3)
    assert r["iou"] == pytest.approx([100 / 3, 75.0, 50.0], abs=1e-2)
    assert r["miou"] == pytest.approx((100 / 3 + 75 + 50) / 3, abs=1e-6)
    assert ds.mean_iou(labels, labels, 4)["iou"][3] is None  # absent class: not averaged


def test_depth_metrics_use_valid_pixels_and_the_crop() -> None:
    gt = torch.full((2, 48, 64), 3.0)
    gt[:, :4] = 0.0  # missing measurements
    pred = gt.clone()
    pred[:, :4] = 9.0  # wrong only where gt is missing: must not count
    assert ds.depth_metrics(pred, gt)["rmse"] == pytest.approx(0.0)
    pred[:, :, :2] = 5.0  # wrong in a border strip: outside the Eigen crop
    assert ds.depth_metrics(pred, gt, crop=ds.EIGEN_CROP)["rmse"] == pytest.approx(0.0)
    assert ds.depth_metrics(pred, gt)["rmse"] > 0.1


def test_targets_stay_aligned_with_the_preprocessed_image() -> None:
    from vitreg.images import preprocess

    seg = np.repeat(np.repeat(np.arange(4)[None], 60, 0), 40, 1).astype(np.uint8)  # 60 x 160, 4 column blocks
    colours = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    img = (colours[seg] * 255).astype(np.uint8)
    x = preprocess([img], size=28, mean=(0, 0, 0), std=(1, 1, 1))[0]  # (3, 28, 28): centre crop of the middle
    t = ds.resize_crop_target(seg, (28, 28))
    assert t.shape == (28, 28) and set(np.unique(t)) == {1, 2}
    agree = (x.argmax(0).numpy() == np.array([0, 1, 2, 0])[t]).mean()
    assert agree > 0.9


def test_classification_probe_reads_the_token_that_carries_the_class() -> None:
    gen = torch.Generator().manual_seed(0)
    protos = torch.randn(4, 16, generator=gen) * 2

    def split(n: int) -> dict:
        y = torch.arange(n) % 4
        return {"labels": y, "cls": protos[y] + 0.5 * torch.randn(n, 16, generator=gen),
                "patch_mean": torch.randn(n, 16, generator=gen)}

    r = ds.classification_probe(split(160), split(80), l2_grid=(1e-2, 1e-4))
    assert r["cls"]["top1"] > 90 and r["cls+patch_mean"]["top1"] > 80
    assert r["patch_mean"]["top1"] < 50  # noise: near the 25% chance


def test_missing_datasets_say_what_to_do(tmp_path) -> None:
    with pytest.raises(DatasetUnavailable, match="ADEChallengeData2016"):
        ds.ade20k_pairs("val", root=tmp_path / "ade20k")
    with pytest.raises(DatasetUnavailable, match="sync_depth"):
        ds.nyud_pairs("test", root=tmp_path / "nyud")


def test_local_layouts_are_read(tmp_path) -> None:
    from PIL import Image

    ade = tmp_path / "ade20k" / "ADEChallengeData2016"
    (ade / "images" / "validation").mkdir(parents=True)
    (ade / "annotations" / "validation").mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(ade / "images" / "validation" / "a.jpg")
    Image.fromarray(np.array([[0, 1, 150]] * 6, dtype=np.uint8).repeat(3, 1)[:, :8]).save(
        ade / "annotations" / "validation" / "a.png")
    pairs = ds.ade20k_pairs("val", root=tmp_path / "ade20k")
    assert pairs == ds.ade20k_pairs("val", data_dir=tmp_path) and len(pairs) == 1
    lab = ds.read_ade20k_label(pairs[0][1])
    assert lab[0, 0] == 255 and lab[0, 3] == 0 and lab[0, 7] == 149  # reduce_zero_label

    nyu = tmp_path / "nyud" / "official_splits" / "test" / "kitchen"
    nyu.mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(nyu / "rgb_00001.jpg")
    Image.fromarray(np.full((6, 8), 2500, dtype=np.uint16)).save(nyu / "sync_depth_00001.png")
    pairs = ds.nyud_pairs("test", root=tmp_path / "nyud")
    assert pairs == ds.nyud_pairs("test", data_dir=tmp_path) and len(pairs) == 1
    assert ds.read_nyud_depth(pairs[0][1])[0, 0] == pytest.approx(2.5)


def test_synthetic_dense_images_carry_their_targets() -> None:
    d = ds.SyntheticDenseDataset(n=3, image_size=56, tile=14, n_classes=4, seed=1)
    img, tgt = d[2]
    again, _ = ds.SyntheticDenseDataset(n=3, image_size=56, tile=14, n_classes=4, seed=1)[2]
    assert np.array_equal(np.asarray(img), np.asarray(again))
    arr = np.asarray(img, dtype=np.float32) / 255
    dominant = ds.SyntheticDenseDataset.PALETTE[tgt["seg"]]
    assert (np.abs(arr - dominant * arr.max(-1, keepdims=True)) < 0.2).mean() > 0.95
    assert tgt["depth"].min() >= 1.0 and tgt["depth"].max() <= 9.0


@pytest.mark.parametrize("name", ["dinov2_s", "dinov2_s_reg"])
def test_dense_features_drop_every_prefix_token(name: str) -> None:
    from vitreg.weights import load_model

    loaded = load_model(name, pretrained=False, image_size=56)
    imgs = [ds.SyntheticDenseDataset(n=2, image_size=56, tile=14)[i][0] for i in range(2)]
    f = ds.dense_features(loaded, imgs, batch_size=2)
    assert f["patch"].shape == (2, 4, 4, loaded.model.embed_dim)
    assert f["cls"].shape == f["patch_mean"].shape == (2, loaded.model.embed_dim)
    assert torch.allclose(f["patch_mean"].float(), f["patch"].float().mean((1, 2)), atol=1e-2)


def test_task_features_are_cached_and_reloaded_without_the_model(tmp_path, monkeypatch) -> None:
    from vitreg.weights import load_model

    loaded = load_model("dinov2_s_reg", pretrained=False, image_size=56)
    data = ds.SyntheticDenseDataset(n=3, image_size=56, tile=14, seed=2)
    kw = dict(dataset_name="synthetic_dense", split="train", target="seg+depth", label_size=(28, 28),
              batch_size=2, cache_root=tmp_path, chunk_size=2, progress=False)
    first = ds.cached_task_features(loaded, data, range(3), **kw)
    assert first["patch"].shape == (3, 4, 4, 384) and first["labels"].shape == first["depth"].shape == (3, 28, 28)
    # targets follow the image: tile (row 0, col 0) of image 1, at half resolution
    assert int(first["labels"][1, 0, 0]) == int(data.sample(1)[1][0, 0])
    monkeypatch.setattr(ds, "dense_features", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = ds.cached_task_features(loaded, data, range(3), **kw)
    assert torch.equal(again["patch"], first["patch"]) and torch.equal(again["depth"], first["depth"])
    with pytest.raises(AssertionError, match="recomputed"):  # another subset is another cache entry
        ds.cached_task_features(loaded, data, [0, 2], **kw)


def test_dinov2_eval_crop_keeps_the_central_224_of_256() -> None:
    from PIL import Image

    img = Image.new("RGB", (320, 256))
    crop = ds.dinov2_eval_crop(img)
    assert crop.size == (224, 224)


def test_heads_are_seeded_without_touching_the_global_rng() -> None:
    """No global state: training a head leaves the caller's random stream where it was, and a seed gives one head."""
    train, _ = ds.planted_depth(4, 1, grid=(2, 2), upsample=1, seed=0)
    cfg = ds.TrainConfig(epochs=1, batch_size=4, device="cpu", seed=3)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = ds.train_segmentation_head(train["patch"], (train["depth"] > 5).to(torch.uint8), 2, cfg=cfg)
    b = ds.train_depth_head(train["patch"], train["cls"], train["depth"], n_bins=8, cfg=cfg)
    assert torch.equal(torch.rand(3), expected)
    again = ds.train_segmentation_head(train["patch"], (train["depth"] > 5).to(torch.uint8), 2, cfg=cfg)
    assert torch.equal(again.linear.weight, a.linear.weight) and b.linear.weight.shape == (8, 64)
