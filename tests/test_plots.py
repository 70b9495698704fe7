"""Figure craft: compared panels share one colour scale with a colour bar; Table 2 is drawn as differences;
labels of what ran are stamped once."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from vitreg.present import plots  # noqa: E402


def _maps(n: int = 3, grid: int = 8, spike: float = 0.0) -> torch.Tensor:
    m = torch.rand(n, grid, grid, generator=torch.Generator().manual_seed(0))
    m[0, 2, 3] += spike
    return m / m.sum(dim=(1, 2), keepdim=True)


def _norms(fig) -> set:
    """The (vmin, vmax) of every map drawn in the figure (images with a colormap, not the photos)."""
    return {(round(im.norm.vmin, 6), round(im.norm.vmax, 6)) for ax in fig.axes for im in ax.images
            if im.get_array().ndim == 2}


def test_norm_maps_share_one_scale_per_column_with_a_bar_each():
    """Planted: one image's norms reach 400, another's 19: both on 0-400, not one scale per row."""
    imgs = torch.rand(2, 32, 32, 3)
    norms = torch.rand(2, 8, 8) * 19
    norms[0, 1, 1] = 400.0
    fig = plots.plot_norm_maps(imgs, norms, _maps(2, spike=50.0))
    scales = _norms(fig)
    assert (0.0, 400.0) in scales and len(scales) == 2  # norms on one scale, attention on another
    assert sum(1 for ax in fig.axes if ax.get_label() == "<colorbar>") == 2
    plt.close(fig)


@pytest.mark.parametrize("draw", ["attention_grid", "maps_grid", "head_maps", "mean_maps"])
def test_attention_panels_share_one_scale_and_a_colour_bar(draw):
    """Planted: a spike in one map; every panel of the figure still uses the same (log) scale, with one bar."""
    imgs = torch.rand(3, 32, 32, 3)
    a, b = _maps(spike=40.0), _maps(grid=4)
    up = lambda m: torch.nn.functional.interpolate(m[:, None], size=(32, 32), mode="nearest")[:, 0]  # noqa: E731
    if draw == "attention_grid":
        fig = plots.plot_attention_grid(imgs, {"A": up(a), "B": up(b)})
    elif draw == "maps_grid":
        fig = plots.maps_grid(imgs, {"A": a, "B": b}, scale="all", attention=True)
    elif draw == "head_maps":
        fig = plots.plot_head_maps(imgs[0], up(a), scores=torch.rand(3))
    else:
        fig = plots.plot_mean_maps({"m": {k: {"mean_map": a[i], "border": 1, "border_uniform": 2, "top": 3,
                                              "support": 4} for i, k in enumerate(["cls", "reg0", "reg1"])}})
    scales = _norms(fig)
    assert len(scales) == 1 and next(iter(scales))[1] > 10  # the spike sets the top of the one shared scale
    assert sum(1 for ax in fig.axes if ax.get_label() == "<colorbar>") == 1
    plt.close(fig)


def test_maps_grid_limits_put_two_rows_on_one_scale():
    imgs = torch.rand(2, 32, 32, 3)
    fig = plots.maps_grid(imgs, {"pre": torch.rand(2, 4, 4) * 300, "post": torch.rand(2, 4, 4)},
                          limits={"pre": (0, 300), "post": (0, 300)})
    assert _norms(fig) == {(0.0, 300.0)}
    plt.close(fig)


def test_downstream_draws_the_differences_around_zero():
    """A 0.5-point gain on 84 points: the bar is 0.5 long, not 84."""
    table = {"paper": {"imagenet_top1": (84.3, 84.8), "ade20k_miou": (46.6, 47.9), "nyud_rmse": (0.378, 0.366)},
             "ours": {"imagenet_top1": (50.0, 49.0), "ade20k_miou": (None, None), "nyud_rmse": (1.0, 1.1)}}
    fig = plots.plot_downstream(table)
    widths = [round(p.get_width(), 3) for p in fig.axes[0].patches]
    assert widths == [0.5, -1.0]
    assert any("n/a" in t.get_text() for t in fig.axes[1].texts)
    plt.close(fig)


def test_stamp_replaces_the_label_line_once():
    fig, _ = plt.subplots(1, 2)
    fig.suptitle(plots.title_for("Fig. 2", False))
    plots.stamp(fig, random_weights=True, planted=True)
    plots.stamp(fig, random_weights=True, planted=True)
    assert fig.get_suptitle() == "Fig. 2\n[random weights · planted ground truth]"
    fig2, ax = plt.subplots()
    plots.stamp(fig2, random_weights=False, planted=False)
    assert fig2.get_suptitle() == ""
    ax.set_title("one panel")
    plots.stamp(fig2, random_weights=False, planted=True)
    assert ax.get_title() == "one panel\n[planted ground truth]"
    plt.close("all")


def test_register_gain_draws_each_difference_with_its_spread_and_marks_a_missing_metric() -> None:
    from vitreg.present.plots import plot_register_gain

    values = {"ours": {"imagenet_top1": 0.5, "ade20k_miou": -0.2}, "paper": {"imagenet_top1": 0.3}}
    errors = {"ours": {"imagenet_top1": 0.1, "ade20k_miou": 0.05}, "paper": {"imagenet_top1": 0.0}}
    fig = plot_register_gain(values, errors, title="planted differences")
    top1, miou = fig.axes
    assert [round(p.get_width(), 6) for p in top1.patches] == [0.5, 0.3]
    assert [round(p.get_width(), 6) for p in miou.patches] == [-0.2]  # "paper" has no mIoU: no bar ...
    assert any(t.get_text().strip() == "n/a" for t in miou.texts)     # ... but its row says so
    assert [t.get_text() for t in top1.get_yticklabels()] == ["ours", "paper"]
