"""LOST's three steps on one image: similarity, seed, expansion and box (a teaching diagram).

Paper: Table 3, §3.3 (LOST, Siméoni et al. 2021). Used in notebook 08. Draws what
:func:`vitreg.measure.lost.lost_steps` returns; computes nothing itself.
"""

from __future__ import annotations

from typing import Any

from vitreg.present.plots.style import finish_image_grid, to_numpy, use_style


def plot_lost_steps(image: Any, steps: dict[str, Any], *, title: str = "") -> Any:
    """Three panels: (1) the patch-patch similarity, (2) each patch's degree and the seed, (3) the expansion,
    the seed's connected component and its box, drawn over ``image``.

    Paper: §3.3 (LOST's steps). Used in notebook 08.

    Args:
        image: ``(H, W, 3)`` floats in [0, 1] (one image of :func:`vitreg.core.images.to_display`), the image the
            patch grid covers.
        steps: :func:`vitreg.measure.lost.lost_steps` of this image.
        title: the figure title (:func:`vitreg.present.plots.title_for`).

    Returns:
        the figure; ``fig.axes[:3]`` are the three panels (colour bars follow).
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle

    use_style()
    img = to_numpy(image)
    (h, w), (height, width) = steps["grid"], img.shape[:2]
    sy, sx = height / h, width / w
    extent = (0, width, height, 0)
    seed_y, seed_x = divmod(int(steps["seed"]), w)
    seed_xy = ((seed_x + 0.5) * sx, (seed_y + 0.5) * sy)
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.3))

    a = to_numpy(steps["similarity"])
    lim = float(np.abs(a).max()) or 1.0
    im = axes[0].imshow(a, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    fig.colorbar(im, ax=axes[0], fraction=0.046, pad=0.03, label="similarity $A_{ij}$")
    axes[0].set_title("(1) patch-patch similarity $A = F F^\\top$\n(last block's keys; blue < 0 < red)")
    axes[0].set_xlabel("patch $j$")
    axes[0].set_ylabel("patch $i$")

    axes[1].imshow(img, extent=extent)
    deg = to_numpy(steps["degree"]).reshape(h, w)
    im = axes[1].imshow(deg, cmap="viridis", alpha=0.65, extent=extent, interpolation="nearest")
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.03, label="degree (positive correlations)")
    axes[1].plot(*seed_xy, marker="*", color="red", markersize=18, markeredgecolor="white")
    axes[1].set_title(f"(2) seed = the patch of lowest degree\n(red star: degree {int(deg.flat[steps['seed']])})")

    axes[2].imshow(img, extent=extent)
    comp = to_numpy(steps["component"]).reshape(h, w)
    overlay = np.zeros((h, w, 4))
    overlay[comp > 0] = (1.0, 0.55, 0.0, 0.5)  # the component in orange, the rest untouched
    axes[2].imshow(overlay, extent=extent, interpolation="nearest")
    ys, xs = np.divmod(to_numpy(steps["expanded"]).astype(int), w)
    axes[2].scatter((xs + 0.5) * sx, (ys + 0.5) * sy, s=14, color="cyan", edgecolor="black", linewidth=0.4,
                    label=f"expanded set: {len(xs)} of the {len(to_numpy(steps['potentials']))} lowest-degree patches")
    axes[2].plot(*seed_xy, marker="*", color="red", markersize=18, markeredgecolor="white", linestyle="none")
    x0, y0, x1, y1 = (float(v) for v in to_numpy(steps["box_patch"]))
    axes[2].add_patch(Rectangle((x0 * sx, y0 * sy), (x1 - x0) * sx, (y1 - y0) * sy, fill=False, edgecolor="lime",
                                linewidth=2.5, label="box of the seed's connected component"))
    axes[2].legend(loc="upper center", bbox_to_anchor=(0.5, -0.02), fontsize=7, frameon=False)
    axes[2].set_title("(3) expansion: similar low-degree patches,\ntheir component (orange) and the box")
    for ax in axes[1:]:
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
    finish_image_grid(fig, axes[1:], title)
    fig.tight_layout(rect=(0, 0, 1, 0.9 if title.count("\n") else 0.95))  # room for a two-line title
    return fig
