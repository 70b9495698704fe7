"""LOST on planted feature maps (Table 3): the planted object is found, noise is not, prefix tokens are dropped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitreg.boxes import corloc
from vitreg.lost import discover, lost, mask_to_box, patch_features, planted_corloc, seed_component
from vitreg.planting import planted_feature_maps
from vitreg.tokens import TokenLayout

GRID = (12, 14)
BOXES = [[2, 3, 7, 8], [8, 0, 13, 4], [0, 6, 4, 12], [5, 4, 10, 9]]  # (x0, y0, x1, y1) in patches


def test_lost_finds_the_planted_object():
    feats = planted_feature_maps(BOXES, GRID, seed=1)
    res = lost(feats, GRID)
    assert res.boxes_patch.tolist() == BOXES
    for i, (x0, y0, x1, y1) in enumerate(BOXES):  # the seed lies on the object
        sy, sx = divmod(int(res.seed[i]), GRID[1])
        assert x0 <= sx < x1 and y0 <= sy < y1
        assert int(res.component[i].sum()) == (x1 - x0) * (y1 - y0)


def test_lost_with_cosine_similarity_and_bias_finds_the_object():
    feats = 7.0 * planted_feature_maps(BOXES, GRID, seed=2)
    for bias in (0.0, -0.2):
        res = lost(feats, GRID, normalize=True, bias=bias)
        assert res.boxes_patch.tolist() == BOXES


def test_noise_features_do_not_recover_the_planted_boxes():
    """Noise control: with no object in the features, CorLoc against the 'planted' boxes is low."""
    gen = torch.Generator().manual_seed(0)
    boxes = [BOXES[i % 4] for i in range(32)]
    feats = torch.randn(32, GRID[0] * GRID[1], 32, generator=gen)
    res = lost(feats, GRID)
    assert corloc(res.boxes, np.asarray(boxes, dtype=float)[:, None]) < 25.0
    planted = lost(planted_feature_maps(boxes, GRID, seed=3), GRID)
    assert corloc(planted.boxes, np.asarray(boxes, dtype=float)[:, None]) == 100.0


def test_batch_gives_the_same_as_one_by_one():
    feats = planted_feature_maps(BOXES, GRID, noise=0.4, seed=4)  # noisy: ties and near-ties happen
    batch = lost(feats, GRID, k_patches=30)
    for i in range(len(BOXES)):
        one = lost(feats[i : i + 1], GRID, k_patches=30)
        assert one.boxes_patch[0].tolist() == batch.boxes_patch[i].tolist()
        assert int(one.seed[0]) == int(batch.seed[i])
        assert torch.equal(one.component[0], batch.component[i])


def test_registers_are_sliced_off_and_an_outlier_there_does_not_move_the_box():
    layout = TokenLayout(num_cls=1, num_reg=4, grid=GRID)
    tokens = planted_feature_maps(BOXES, GRID, num_prefix=layout.num_prefix, seed=5)
    # a high-norm register pointing away from every patch: the seed a wrongly sliced LOST would pick
    tokens[:, 2] = -50.0 * tokens[:, layout.num_prefix:].mean(1)
    res = lost(patch_features(tokens, layout), GRID)
    assert res.boxes_patch.tolist() == BOXES
    reference = lost(planted_feature_maps(BOXES, GRID, seed=5), GRID)
    assert torch.equal(res.boxes_patch, reference.boxes_patch)
    # the classic mistake, dropping one prefix token, keeps the registers as "patches": the box moves
    wrong = lost(tokens[:, 1 : 1 + layout.num_patches], GRID)
    assert wrong.boxes_patch.tolist() != BOXES
    with pytest.raises(ValueError, match="prefix"):
        lost(tokens[:, 1:], GRID)


def test_an_artifact_patch_steals_the_seed():
    """What high-norm outliers do to LOST (why registers help): the box collapses onto the artifact."""
    artifact = [0, GRID[1] * GRID[0] - 1, 5, 150]
    res = lost(planted_feature_maps(BOXES, GRID, artifact=artifact, seed=6), GRID)
    assert res.seed.tolist() == artifact
    assert ((res.boxes_patch[:, 2:] - res.boxes_patch[:, :2]) == 1).all()


def test_flood_fill_matches_scipy_label():
    ndimage = pytest.importorskip("scipy.ndimage")
    gen = torch.Generator().manual_seed(7)
    mask = torch.rand(16, 9, 11, generator=gen) > 0.45
    seeds = torch.stack([torch.nonzero(m.flatten())[0, 0] for m in mask])
    comp = seed_component(mask, seeds)
    for i in range(16):
        labels, _ = ndimage.label(mask[i].numpy())  # default structure: 4-connectivity
        sy, sx = divmod(int(seeds[i]), 11)
        assert np.array_equal(comp[i].numpy(), labels == labels[sy, sx])


def test_mask_to_box_hand_case():
    m = torch.zeros(2, 5, 6, dtype=torch.bool)
    m[0, 1:3, 2:5] = True
    m[1, 4, 0] = True
    assert mask_to_box(m).tolist() == [[2, 1, 5, 3], [0, 4, 1, 5]]
    with pytest.raises(ValueError):
        mask_to_box(torch.zeros(1, 3, 3, dtype=torch.bool))


def test_boxes_map_to_pixels_and_clip_to_the_image():
    feats = planted_feature_maps([[2, 3, 7, 8], [8, 0, 14, 4]], GRID, seed=8)
    res = lost(feats, GRID, scale=[[16.0, 16.0], [10.0, 20.0]], image_hw=[[1000, 1000], [100, 270]])
    assert res.boxes[0].tolist() == [32.0, 48.0, 112.0, 128.0]
    assert res.boxes[1].tolist() == [160.0, 0.0, 270.0, 40.0]  # x1 = 14 * 20 = 280 clipped to 270


def test_planted_corloc_separates_clean_objects_from_artifacts():
    got = planted_corloc(n_images=16, seed=1)
    assert got["clean"] == 100.0 and got["artifact"] < 20.0


def test_discover_runs_a_model_over_a_box_dataset_and_maps_boxes_to_original_pixels():
    from vitreg.boxes import SyntheticBoxes
    from vitreg.weights import load_model

    loaded = load_model("dinov2_s_reg", pretrained=False, image_size=56)
    ds = SyntheticBoxes(n=5, image_size=(60, 90), seed=2)
    d = discover(loaded, ds, settings=[(False, 0.0), (True, -0.2)], batch_size=2, progress=False)
    assert list(d.corloc) == ["dot+0.00", "cos-0.20"] and d.names == [f"synthetic_{i:03d}" for i in range(5)]
    b = d.boxes["dot+0.00"]
    assert b.shape == (5, 4) and (b[:, 0] < b[:, 2]).all() and (b[:, 1] < b[:, 3]).all()
    assert (b >= 0).all() and (b[:, 2] <= 90).all() and (b[:, 3] <= 60).all()
    # boxes are multiples of one patch in original pixels: 90/4 wide, 60/4 high (grid 4x4 at 56 px)
    assert np.allclose(b[:, [0, 2]] / 22.5, np.round(b[:, [0, 2]] / 22.5))
    assert np.allclose(b[:, [1, 3]] / 15.0, np.round(b[:, [1, 3]] / 15.0))
    assert 0 <= d.corloc["dot+0.00"] <= 100 and d.hits["dot+0.00"].shape == (5,)
    workers = discover(loaded, ds, settings=[(False, 0.0)], batch_size=2, num_workers=2, progress=False)
    assert np.array_equal(workers.boxes["dot+0.00"], b)  # reader processes change nothing


def test_degree_leaves_the_patch_itself_out():
    """LOST zeroes A's diagonal: with a bias a weak patch can be dissimilar to itself, and must not gain a rank.

    Dot product, bias -0.5: p0 = (0.3, 0) (self 0.09 - 0.5 < 0), p1 = (2, 0), p2 = (0, 2). Correlations with the
    OTHER patches: p0 1 (p1), p1 1 (p0), p2 0, so p2 is the seed; counting the diagonal would tie p0 with p2.
    """
    feats = torch.tensor([[[0.3, 0.0], [2.0, 0.0], [0.0, 2.0]]])
    res = lost(feats, (1, 3), bias=-0.5)
    assert res.degree.tolist() == [[1, 1, 0]]
    assert int(res.seed[0]) == 2 and res.boxes_patch.tolist() == [[2, 0, 3, 1]]


def test_corloc_rows_roles_and_the_register_gain_of_the_zoos_twin_pair():
    from types import SimpleNamespace

    from vitreg.lost import corloc_numbers, planted_corloc_checks, register_gain, sweep_settings

    assert sweep_settings(False, 0.0, [0.0, -0.2]) == [(False, 0.0), (True, 0.0), (True, -0.2)]
    assert sweep_settings(True, -0.2, [0.0, -0.2]) == [(True, -0.2), (True, 0.0)]
    d = lambda c: SimpleNamespace(corloc={"dot+0.00": c}, names=["a", "b"])  # noqa: E731
    results = {("dinov2_l", "VOC07"): d(30.0), ("dinov2_l_reg", "VOC07"): d(55.0), ("dino_s16", "VOC07"): d(60.0)}
    models = ["dino_s16", "dinov2_l", "dinov2_l_reg"]
    out = corloc_numbers(results, models, ["VOC07", "VOC12"], main="dot+0.00", which=None, root="/data")
    assert out["no_reg"] is out["by_model"]["dinov2_l"] and out["dino"]["voc07"] == 60.0
    assert out["reg"]["voc12"] == {"skipped": "VOC12 not found under /data"} and out["reg"]["voc07_n_images"] == 2
    assert out["reg"]["coco20k"] == {"skipped": "COCO20k not in `datasets`"} and out["dino"]["features"] == "k"
    gain = register_gain(out["by_model"], models)
    assert gain["model"] == "dinov2_l_reg" and gain["voc07"] == 25.0 and gain["voc12"] == out["reg"]["voc12"]
    assert "model" not in register_gain(out["by_model"], ["dinov2_l", "dino_s16"])  # no twin listed: all skipped
    assert all(planted_corloc_checks({"clean": 100.0, "artifact": 10.0}).values())
    assert not any(planted_corloc_checks({"clean": 90.0, "artifact": 60.0}).values())
