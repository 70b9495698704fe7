"""Dense datasets (vitreg.data.dense): layouts, targets aligned with the image, the synthetic stand-in.

Paper: Table 2 (ADE20k, NYUd).
"""

from __future__ import annotations

import numpy as np
import pytest

from vitreg.data import dense as dense_data
from vitreg.data.datasets import DatasetUnavailable


def test_targets_stay_aligned_with_the_preprocessed_image() -> None:
    from vitreg.core.images import preprocess

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


def test_a_planted_square_keeps_its_label_through_the_joint_transform() -> None:
    """transforms.v2 + tv_tensors.Mask: image and label move together, also off-centre and non-square."""
    from PIL import Image

    for h, w, size in ((300, 500, (112, 112)), (480, 640, (98, 126)), (500, 375, (70, 70))):
        img = np.zeros((h, w, 3), dtype=np.uint8)
        lab = np.zeros((h, w), dtype=np.uint8)
        top, left = h // 3, w // 2
        img[top:top + h // 4, left:left + w // 5] = 255  # a white square ...
        lab[top:top + h // 4, left:left + w // 5] = 7   # ... and its label on the same pixels
        out_img, out_lab = dense_data.transform_pair(Image.fromarray(img), lab, dense_data.cover_crop(size))
        arr = np.asarray(out_img)
        assert arr.shape[:2] == out_lab.shape == size
        white, labelled = arr.mean(-1) > 127, out_lab == 7
        assert labelled.sum() > 20
        assert (white == labelled).mean() > 0.98  # only the antialiased border may disagree
        assert set(np.unique(out_lab)) <= {0, 7}  # nearest: no blended class ids


def test_synthetic_targets_follow_a_transform_as_a_dict() -> None:
    d = dense_data.SyntheticDenseDataset(n=2, image_size=56, tile=14, n_classes=4, seed=0,
                                         transform=dense_data.cover_crop((28, 42)))
    img, tgt = d[0]
    assert np.asarray(img).shape[:2] == tgt["seg"].shape == tgt["depth"].shape == (28, 42)
    assert tgt["depth"].dtype == np.float32 and tgt["depth"].min() >= 1.0


def test_resize_and_pad_keeps_the_whole_image_in_the_canvas() -> None:
    from PIL import Image

    assert dense_data.fit_in_canvas((375, 500), 686) == (514, 686)
    assert dense_data.fit_in_canvas((640, 480), 70) == (70, 52)
    out = dense_data.resize_and_pad(Image.new("RGB", (500, 375), (255, 255, 255)), 70)
    arr = np.asarray(out)
    assert arr.shape == (70, 70, 3) and arr[:52, :].min() > 200 and arr[53:, :].max() < 200
