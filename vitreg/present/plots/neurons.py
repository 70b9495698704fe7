"""Register neurons ([TTR]): how few MLP units carry the outliers, and where they sit.

Paper: beyond the paper, [TTR] (Jiang et al. 2025; README, References), their ranked-score and per-layer figures.
"""

from __future__ import annotations

from typing import Any

from vitreg.present.plots.style import to_numpy, use_style


def plot_neuron_scores(ranked: dict[str, Any], *, top_k: dict[str, int] | None = None, n_show: int = 200,
                       title: str = "") -> Any:
    """Left: every (block, unit) score of a model sorted in decreasing order (log scale), the top k marked;
    right: how many of the top k sit in each block.

    Args:
        ranked: model label -> ``(scores (L, H), kept (L, H) bool)``: all scores and the selected neurons.
        top_k: model label -> k (drawn as a dotted line).
        n_show: ranks shown on the left.
        title: figure title.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    use_style()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    width = 0.8 / max(len(ranked), 1)
    for i, (label, (scores, kept)) in enumerate(ranked.items()):
        s = to_numpy(scores)
        flat = np.sort(s.ravel())[::-1][:n_show]
        left.plot(np.arange(1, flat.size + 1), np.maximum(flat, 1e-6), marker=".", ms=3, lw=1, color=f"C{i}", label=label)
        if top_k and label in top_k:
            left.axvline(top_k[label], color=f"C{i}", ls=":", lw=1)
        per_block = to_numpy(kept).sum(axis=1)
        right.bar(np.arange(per_block.size) + i * width, per_block, width=width, color=f"C{i}", label=label)
    left.set_yscale("log")
    left.set_xlabel("rank of (block, unit)")
    left.set_ylabel("mean |activation| on outlier tokens")
    left.legend(fontsize=7)
    right.set_xlabel("block")
    right.set_ylabel("selected register neurons")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
