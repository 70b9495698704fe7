"""LOST's three steps (notebook 08's diagram): the intermediate quantities on a planted object, and their drawing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitreg.measure.lost import lost, lost_steps
from vitreg.planting import planted_feature_maps

GRID = (6, 8)
BOX = [2, 1, 5, 4]  # (x0, y0, x1, y1) in patches: a 3 x 3 planted object


def _inside(idx: int, box: list[int]) -> bool:
    y, x = divmod(int(idx), GRID[1])
    return box[0] <= x < box[2] and box[1] <= y < box[3]


def test_steps_find_the_planted_object_and_agree_with_lost():
    feats = planted_feature_maps([BOX], GRID, seed=3)
    steps = lost_steps(feats[0], GRID, k_patches=20)
    n = GRID[0] * GRID[1]
    assert steps["similarity"].shape == (n, n)
    assert steps["degree"].shape == (n,)
    # step 2: the seed has the lowest degree and lies on the planted object (fewest positive correlations)
    assert int(steps["degree"][steps["seed"]]) == int(steps["degree"].min())
    assert _inside(steps["seed"], BOX)
    # step 3: the expanded set is the object's patches (all 9 are among the 20 lowest-degree ones)
    assert sorted(steps["expanded"].tolist()) == sorted(i for i in range(n) if _inside(i, BOX))
    assert set(steps["expanded"].tolist()) <= set(steps["potentials"].tolist())
    assert steps["component"].shape == GRID and int(steps["component"].sum()) == 9
    assert steps["box_patch"].tolist() == BOX
    # the same answer as LOST itself
    res = lost(feats, GRID, k_patches=20)
    assert int(res.seed[0]) == steps["seed"] and res.boxes_patch[0].tolist() == BOX


def test_steps_of_an_artifact_token_take_the_seed():
    """One token dissimilar to everything (a high-norm outlier, to LOST) becomes the seed: the failure of Table 3."""
    artifact = 0  # patch (0, 0), outside the box
    feats = planted_feature_maps([BOX], GRID, artifact=[artifact], seed=3)
    steps = lost_steps(feats, GRID, k_patches=20)
    assert steps["seed"] == artifact
    assert not _inside(steps["seed"], BOX)
    assert steps["box_patch"].tolist() != BOX


def test_steps_take_one_image_only():
    with pytest.raises(ValueError, match="one image"):
        lost_steps(torch.zeros(2, 48, 4), GRID)


def test_diagram_draws_the_three_steps_where_lost_put_them():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.patches import Rectangle

    from vitreg.present.plots.lost_steps import plot_lost_steps

    steps = lost_steps(planted_feature_maps([BOX], GRID, seed=3), GRID, k_patches=20)
    image = np.zeros((60, 80, 3))  # 10 pixels per patch
    fig = plot_lost_steps(image, steps, title="planted object")
    panels = fig.axes[:3]
    assert panels[0].get_images()[0].get_array().shape == (48, 48)  # (1) the similarity matrix
    star = panels[1].get_lines()[0].get_xydata()[0]  # (2) the seed, at the centre of its patch
    sy, sx = divmod(steps["seed"], GRID[1])
    assert star.tolist() == [(sx + 0.5) * 10, (sy + 0.5) * 10]
    boxes = [p for p in panels[2].patches if isinstance(p, Rectangle)]  # (3) the box, in pixels
    assert len(boxes) == 1
    assert [boxes[0].get_x(), boxes[0].get_y(), boxes[0].get_width(), boxes[0].get_height()] == [20, 10, 30, 30]
    assert len(panels[2].collections[0].get_offsets()) == len(steps["expanded"])
    import matplotlib.pyplot as plt

    plt.close(fig)
