"""Figures drawn over images or the patch grid: attention maps, norm maps, frequency maps, boxes.

Paper: Fig. 1-2 and App. F (attention), Fig. 21 (norms beside attention), App. A Fig. 10 (where outliers
sit), App. D.3 Fig. 16 (register maps), Table 3 (LOST boxes).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

from vitreg.present.plots.style import (RELATIVE_LABEL, colorbar, finish_image_grid, relative_maps, shared_norm, show_map,
                                to_numpy, token_label, use_style)


def plot_attention_grid(images: Any, maps: dict[str, Any], *, scores: dict[str, Any] | None = None,
                        title: str = "", alpha: float = 0.0) -> Any:
    """Images (rows) and one attention map per model (columns), like the paper's Fig. 2, every map on one
    colour scale (attention ÷ the grid's uniform share, log; one colour bar), never min-max per panel.

    Paper: Fig. 1-2 (last-layer [CLS] attention, mean over heads). Used in notebook 01.

    Args:
        images: ``(B, H, W, 3)`` display images in [0, 1] (``vitreg.core.images.to_display``).
        maps: column label -> ``(B, H, W)`` maps at image resolution (``attention.upsample_maps``).
        scores: column label -> ``(B,)`` artifact score printed in each panel.
        title: figure title (use ``title_for`` so random weights are labelled).
        alpha: > 0 overlays the map on the image with this opacity instead of showing it alone.

    Returns:
        the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    use_style()
    imgs = to_numpy(images)
    n, cols = imgs.shape[0], 1 + len(maps)
    rel = {label: relative_maps(m) for label, m in maps.items()}
    norm = shared_norm(list(rel.values()), log=True)
    fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols + 0.8, 1.9 * n + 0.6), squeeze=False, layout="constrained")
    im = None
    for i in range(n):
        axes[i, 0].imshow(imgs[i])
        for j, (label, m) in enumerate(rel.items(), start=1):
            ax = axes[i, j]
            if alpha > 0:
                ax.imshow(imgs[i])
            im = show_map(ax, m[i], norm, "inferno", alpha=alpha if alpha > 0 else None)
            if scores is not None and label in scores:
                ax.text(0.02, 0.03, f"{float(to_numpy(scores[label])[i]):.2f}", transform=ax.transAxes, color="white",
                        fontsize=7, bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})
            if i == 0:
                ax.set_title(textwrap.fill(label, 22), fontsize=8)
        axes[0, 0].set_title("image", fontsize=8)
    if im is not None:
        colorbar(fig, im, axes[:, 1:], RELATIVE_LABEL)
    return finish_image_grid(fig, axes, title)


def plot_head_maps(image: Any, maps: Any, *, scores: Any | None = None, title: str = "", ncols: int = 8) -> Any:
    """One image and the attention map of every head, on one colour scale (÷ uniform share, log) with a bar.

    Paper: App. F, Fig. 18 (DINOv2 ViT-L: artifacts in all heads).

    Args:
        image: ``(H, W, 3)`` display image.
        maps: ``(heads, H, W)`` maps at image resolution.
        scores: ``(heads,)`` artifact score per head, printed in each panel.
        title: figure title.
        ncols: panels per row.
    """
    import matplotlib.pyplot as plt

    use_style()
    m = to_numpy(maps)
    heads = m.shape[0]
    ncols = min(ncols, heads + 1)
    nrows = -(-(heads + 1) // ncols)
    m = relative_maps(m)
    norm = shared_norm([m], log=True)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols + 0.8, 1.6 * nrows + 0.5), squeeze=False,
                             layout="constrained")
    axes.flat[0].imshow(to_numpy(image))
    axes.flat[0].set_title("image", fontsize=8)
    for h in range(heads):
        ax = axes.flat[h + 1]
        im = show_map(ax, m[h], norm, "inferno")
        label = f"head {h}" + (f" ({float(to_numpy(scores)[h]):.2f})" if scores is not None else "")
        ax.set_title(label, fontsize=7)
    for ax in axes.flat[heads + 1:]:
        ax.axis("off")
    colorbar(fig, im, axes, RELATIVE_LABEL)
    return finish_image_grid(fig, axes, title)


def plot_norm_maps(images: Any, norm_maps: Any, attn_maps: Any | None = None, *, title: str = "",
                   vmax: float | None = None) -> Any:
    """Each image beside its patch-norm map (and its [CLS] attention map): every norm map on one scale,
    every attention map on another (÷ uniform share, log), one colour bar per column.

    Paper: Fig. 21 (the high-norm tokens are where the attention spikes sit).

    Args:
        images: ``(B, H, W, 3)`` display images.
        norm_maps: ``(B, h, w)`` patch norms on the grid.
        attn_maps: ``(B, h, w)`` attention maps on the grid, or None.
        title: figure title.
        vmax: colour-scale maximum of the norm maps (None: the largest norm shown).
    """
    import matplotlib.pyplot as plt

    use_style()
    imgs, nm = to_numpy(images), to_numpy(norm_maps)
    cols = 2 + (attn_maps is not None)
    fig, axes = plt.subplots(imgs.shape[0], cols, figsize=(2.2 * cols + 1.2, 2.1 * imgs.shape[0] + 0.5), squeeze=False,
                             layout="constrained")
    norms = shared_norm([nm], vmax=vmax)
    am = relative_maps(attn_maps) if attn_maps is not None else None
    attn_norm = shared_norm([am], log=True) if am is not None else None
    for i in range(imgs.shape[0]):
        axes[i, 0].imshow(imgs[i])
        im = show_map(axes[i, 1], nm[i], norms, "viridis")
        if am is not None:
            im_attn = show_map(axes[i, 2], am[i], attn_norm, "inferno")
    colorbar(fig, im, axes[:, 1], "patch-token norm (one scale for all images)")
    if am is not None:
        colorbar(fig, im_attn, axes[:, 2], RELATIVE_LABEL)
    for j, t in enumerate(["image", "patch norm", "[CLS] attention"][:cols]):
        axes[0, j].set_title(t, fontsize=8)
    return finish_image_grid(fig, axes, title)


def plot_frequency_map(freq: Any, *, title: str = "") -> Any:
    """Outlier frequency per grid position, with its column and row profiles.

    Paper: App. A, Fig. 10 (borders; vertical stripes in the no-register DINOv2).

    Args:
        freq: ``(h, w)`` frequencies in [0, 1] (``norms.outlier_frequency_map``).
        title: figure title.
    """
    import matplotlib.pyplot as plt

    use_style()
    f = 100 * to_numpy(freq)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2), gridspec_kw={"width_ratios": [1.2, 1, 1]})
    im = axes[0].imshow(f, cmap="magma", vmin=0)
    fig.colorbar(im, ax=axes[0], fraction=0.046, pad=0.03, label="% of images")
    axes[0].set_title("outlier frequency per position")
    axes[0].set_xlabel("column")
    axes[0].set_ylabel("row")
    axes[1].bar(range(f.shape[1]), f.mean(axis=0), color="C0")
    axes[1].set_title("mean over rows (stripes: peaks)")
    axes[1].set_xlabel("column")
    axes[1].set_ylabel("% of images")
    axes[2].bar(range(f.shape[0]), f.mean(axis=1), color="C1")
    axes[2].set_title("mean over columns")
    axes[2].set_xlabel("row")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_mean_maps(summaries: dict[str, dict[str, dict]], *, title: str = "") -> Any:
    """Mean attention maps of [CLS] and each register over images, one row per model (Fig. 16).

    Args:
        summaries: model label -> :func:`vitreg.measure.registers.prefix_attention_summary` output.
    """
    import matplotlib.pyplot as plt

    use_style()
    ncol = max(len(s) for s in summaries.values())
    fig, axes = plt.subplots(len(summaries), ncol, figsize=(2.1 * ncol + 0.8, 2.3 * len(summaries)), squeeze=False,
                             layout="constrained")
    rel = {label: {name: relative_maps(s["mean_map"]) for name, s in summ.items()} for label, summ in summaries.items()}
    norm = shared_norm([m for r in rel.values() for m in r.values()], log=True)
    for i, (label, summ) in enumerate(summaries.items()):
        for j in range(ncol):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(summ):
                ax.axis("off")
                continue
            name, s = list(summ.items())[j]
            im = show_map(ax, rel[label][name], norm, "inferno")
            ax.set_title(f"{token_label(name)}: border {s['border']:.0f}% (unif. {s['border_uniform']:.0f}%)\n"
                         f"top {s['top']:.0f}%, support {s['support']:.0f}%", fontsize=6)
            if j == 0:
                ax.set_ylabel(label)
    colorbar(fig, im, axes, RELATIVE_LABEL)
    if title:
        fig.suptitle(title)
    return fig


def plot_discoveries(dataset: Any, discoveries: dict[str, Any], indices: Sequence[int], *,
                     setting: str | dict[str, str], title: str = "") -> Any:
    """Images with their ground-truth boxes (white) and each model's LOST box (green hit, red miss).

    Paper: Fig. 1 / Table 3 illustrated (boxes discovered with and without registers).

    Args:
        dataset: the dataset the discoveries were computed on.
        discoveries: row label -> :class:`vitreg.measure.lost.Discovery` (e.g. ``{"no registers": d0, "4 registers": d4}``).
        indices: which images (positions in the dataset) to show.
        setting: which setting's boxes to draw (:attr:`vitreg.measure.lost.Setting.name`), or row label -> setting
            (plain LOST's features differ per model; the sweep's best setting too).
        title: figure title (use :func:`vitreg.present.plots.title_for`).

    Returns:
        the matplotlib figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    use_style()
    rows = list(discoveries.items())
    fig, axes = plt.subplots(len(rows), len(indices), figsize=(2.3 * len(indices), 2.3 * len(rows)), squeeze=False)
    for j, idx in enumerate(indices):
        sample = dataset[idx]
        for i, (label, d) in enumerate(rows):
            ax = axes[i, j]
            ax.imshow(sample.image)
            for g in sample.boxes:
                ax.add_patch(Rectangle((g[0], g[1]), g[2] - g[0], g[3] - g[1], fill=False, ec="white", lw=1.2, ls="--"))
            name = setting if isinstance(setting, str) else setting[label]
            b, hit = d.boxes[name][idx], bool(d.hits[name][idx])
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False,
                                   ec="lime" if hit else "red", lw=2))
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label)
            if i == 0:
                ax.set_title(sample.name, fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_positional_artifact(maps: dict[str, tuple[Any, Any]], shares: dict[str, dict[str, float]], *,
                             title: str = "") -> Any:
    """Per model: the all-zero image's first principal component, the per-position mean's, and the shares.

    Paper: beyond the paper, Denoising ViT (Yang et al. 2024, Fig. 1: the grid on a blank input).

    Args:
        maps: model label -> ``((h, w) zero-image map, (h, w) per-position-mean map)``.
        shares: model label -> :func:`vitreg.measure.positional.variance_shares` (position / image / rest).
        title: figure title.
    """
    import matplotlib.pyplot as plt

    use_style()
    fig, axes = plt.subplots(len(maps), 3, figsize=(9, 2.8 * len(maps)), squeeze=False)
    for row, (label, (zero, mean)) in zip(axes, maps.items()):
        for ax, m, name in ((row[0], zero, "all-zero image"), (row[1], mean, "mean over images")):
            ax.imshow(to_numpy(m), cmap="coolwarm")
            ax.set_title(f"{label}: {name}, PC1", fontsize=8)
            ax.axis("off")
        s = shares[label]
        keys = ["position", "image", "rest"]
        row[2].bar(keys, [100 * s[k] for k in keys], color=["C3", "C0", "C7"])
        row[2].set_ylim(0, 100)
        row[2].set_ylabel("% of feature variance")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
