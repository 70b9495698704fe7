"""Differences with minus without registers, with their seed spread: one panel per metric.

Paper: Table 2 (notebook 09's register gain over seeds, beside the paper's and [TTR]'s differences).
"""

from __future__ import annotations

from typing import Any

from vitreg.present.plots.style import use_style


def plot_register_gain(values: dict[str, dict[str, float]], errors: dict[str, dict[str, float]], *,
                       title: str = "") -> Any:
    """Horizontal bars of ``values`` (``{source: {metric: with minus without}}``, as
    :func:`vitreg.experiments.table2.gain_table` returns them) with ``errors`` (seed std) as error bars, around a line
    at 0 (no effect). One panel per metric, sources in the same order on every panel; a source without a
    metric keeps its row, marked "n/a". Paper: Table 2."""
    import matplotlib.pyplot as plt

    use_style()
    sources = list(values)
    metrics = list(dict.fromkeys(m for v in values.values() for m in v))
    fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(4 * max(len(metrics), 1), 0.55 * len(sources) + 2.2),
                             squeeze=False, sharey=True)
    for ax, metric in zip(axes[0], metrics):
        for i, src in enumerate(sources):
            if metric not in values[src]:
                ax.text(0, i, " n/a", ha="left", va="center", fontsize=7, color="0.4")
                continue
            ax.barh(i, values[src][metric], xerr=errors.get(src, {}).get(metric, 0.0), color=f"C{i}",
                    edgecolor="black", linewidth=0.5, height=0.6, capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)  # no effect
        ax.set_yticks(range(len(sources)), sources)
        ax.set_ylim(len(sources) - 0.5, -0.5)  # first source on top
        ax.set_title(metric)
        ax.set_xlabel("with minus without registers")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
