"""Dense datasets (vitreg.dense_data): layouts, targets aligned with the image, the synthetic stand-in.

Paper: Table 2 (ADE20k, NYUd).
"""

from __future__ import annotations

import numpy as np
import pytest

from vitreg import dense_data
from vitreg.data import DatasetUnavailable


def test_targets_stay_aligned_with_the_preprocessed_image() -> None:
    from vitreg.images import preprocess

    seg = np.repeat(np.repeat(np.arange(4)[None], 60, 0), 40, 1).astype(np.uint8)  # 60 x 160, 4 column blocks
    colours = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    img = (colours[seg] * 255).astype(np.uint8)
    x = preprocess([img], size=28, mean=(0, 0, 0), std=(1, 1, 1))[0]  # (3, 28, 28): centre crop of the middle
    t = dense_data.resize_crop_target(seg, (28, 28))
    assert t.shape == (28, 28) and set(np.unique(t)) == {1, 2}
    agree = (x.argmax(0).numpy() == np.array([0, 1, 2, 0])[t]).mean()
    assert agree > 0.9


def test_missing_datasets_say_what_to_do(tmp_path) -> None:
    with pytest.raises(DatasetUnavailable, match="ADEChallengeData2016"):
        dense_data.ade20k_pairs("val", root=tmp_path / "ade20k")
    with pytest.raises(DatasetUnavailable, match="sync_depth"):
        dense_data.nyud_pairs("test", root=tmp_path / "nyud")


def test_local_layouts_are_read(tmp_path) -> None:
    from PIL import Image

    ade = tmp_path / "ade20k" / "ADEChallengeData2016"
    (ade / "images" / "validation").mkdir(parents=True)
    (ade / "annotations" / "validation").mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(ade / "images" / "validation" / "a.jpg")
    Image.fromarray(np.array([[0, 1, 150]] * 6, dtype=np.uint8).repeat(3, 1)[:, :8]).save(
        ade / "annotations" / "validation" / "a.png")
    pairs = dense_data.ade20k_pairs("val", root=tmp_path / "ade20k")
    assert pairs == dense_data.ade20k_pairs("val", data_dir=tmp_path) and len(pairs) == 1
    lab = dense_data.read_ade20k_label(pairs[0][1])
    assert lab[0, 0] == 255 and lab[0, 3] == 0 and lab[0, 7] == 149  # reduce_zero_label

    nyu = tmp_path / "nyud" / "official_splits" / "test" / "kitchen"
    nyu.mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(nyu / "rgb_00001.jpg")
    Image.fromarray(np.full((6, 8), 2500, dtype=np.uint16)).save(nyu / "sync_depth_00001.png")
    pairs = dense_data.nyud_pairs("test", root=tmp_path / "nyud")
    assert pairs == dense_data.nyud_pairs("test", data_dir=tmp_path) and len(pairs) == 1
    assert dense_data.read_nyud_depth(pairs[0][1])[0, 0] == pytest.approx(2.5)


def test_synthetic_dense_images_carry_their_targets() -> None:
    d = dense_data.SyntheticDenseDataset(n=3, image_size=56, tile=14, n_classes=4, seed=1)
    img, tgt = d[2]
    again, _ = dense_data.SyntheticDenseDataset(n=3, image_size=56, tile=14, n_classes=4, seed=1)[2]
    assert np.array_equal(np.asarray(img), np.asarray(again))
    arr = np.asarray(img, dtype=np.float32) / 255
    dominant = dense_data.SyntheticDenseDataset.PALETTE[tgt["seg"]]
    assert (np.abs(arr - dominant * arr.max(-1, keepdims=True)) < 0.2).mean() > 0.95
    assert tgt["depth"].min() >= 1.0 and tgt["depth"].max() <= 9.0
