"""The report card of ``vitreg scan``: norms along depth, attention maps, massive activations.

Paper: Fig. 4a (norm distribution per block and where outliers emerge), Fig. 2 (last-layer [CLS] maps),
Fig. 3 (outlier share); massive activations after Sun et al. 2024.
"""

from __future__ import annotations

import io
from typing import Any

from vitreg.present.plots.style import RANDOM_LABEL, to_numpy, use_style


def plot_scan_card(card: dict[str, Any], maps: Any, images: Any) -> Any:
    """One figure: patch-norm quantiles and outlier share per block, massive activations, a few maps.

    Paper: Fig. 4a (top left), Fig. 2 (bottom row), Fig. 3 (the cut-off line). The verdict is the title;
    a random-weight card says so in it.

    Args:
        card: :meth:`vitreg.measure.scan.ScanReport.to_dict`.
        maps: ``(k, h, w)`` attention maps of the last block.
        images: ``(k, H, W, 3)`` the maps' images in [0, 1].
    """
    import matplotlib.pyplot as plt
    import numpy as np

    use_style()
    k = min(len(maps), 6)
    fig = plt.figure(figsize=(11.0, 7.4))
    grid = fig.add_gridspec(2, 12, height_ratios=(1.2, 1.0))
    ax_n, ax_f, ax_m = (fig.add_subplot(grid[0, 4 * i:4 * i + 4]) for i in range(3))
    blocks = card["blocks"]
    q, qs = np.asarray(blocks["norm_quantiles"]), list(blocks["qs"])
    x = np.arange(1, q.shape[0] + 1)
    ax_n.fill_between(x, q[:, qs.index(0.05)], q[:, qs.index(0.95)], color="C0", alpha=0.25, lw=0, label="5-95%")
    ax_n.plot(x, q[:, qs.index(0.5)], color="C0", label="median")
    ax_n.plot(x, q[:, qs.index(1.0)], color="C3", lw=1, label="max")
    out = card["outliers"]
    if out["threshold"] is not None:
        ax_n.axhline(out["threshold"], color="grey", ls="--", lw=1, label=f"cut {out['threshold']:.3g}")
    if out["emergence_block"] is not None:
        ax_n.axvline(out["emergence_block"], color="grey", ls=":", lw=1, label=f"emerges at {out['emergence_block']}")
    ax_n.set_yscale("log")
    ax_n.set_xlabel("block (1 = first)")
    ax_n.set_ylabel("patch norm before the final LN (log)")
    ax_n.legend(fontsize=6, loc="upper left")
    ax_f.plot(x, blocks["outlier_pct"], color="C1", marker="o", ms=3)
    ax_f.set_xlabel("block (1 = first)")
    ax_f.set_ylabel("high-norm patches (%)")
    ax_f.set_title(f"last block: {out['outlier_pct']:.2f}% [{out['ci_low_pct']:.2f}, {out['ci_high_pct']:.2f}]",
                   fontsize=8)
    mas = card["massive_activations"]
    ax_m.plot(x, mas["ratio"], marker="o", ms=3, color="C2")
    ax_m.axhline(mas["ratio_min"], color="grey", ls="--", lw=1, label=f"massive at {mas['ratio_min']:.0f}x")
    ax_m.set_yscale("log")
    ax_m.set_xlabel("block (1 = first)")
    ax_m.set_ylabel("top |activation| / median")
    ax_m.legend(fontsize=6)
    att = card["attention"]
    for j in range(k):
        width = 12 // max(k, 1)
        ax = fig.add_subplot(grid[1, width * j:width * j + width])
        img, m = images[j], to_numpy(maps[j])
        ax.imshow(img)
        ax.imshow(m, cmap="inferno", alpha=0.6, extent=(0, img.shape[1], img.shape[0], 0), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if j == 0:
            ax.set_title(f"last block, {att['query']}: artifact score {att['score_median']:.2f} (median)",
                         fontsize=7, loc="left")
    title = f"{card['model']['paper_name']}: {card['verdict']}"
    if card["random_weights"] and "random weights" not in title:
        title += f"\n[{RANDOM_LABEL}]"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def figure_png(fig: Any, *, dpi: int = 110) -> bytes:
    """The figure as PNG bytes, and close it (the card's renderer writes them atomically)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
