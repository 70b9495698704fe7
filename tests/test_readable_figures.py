"""Figures a reader can read: tick labels that do not run into each other (08's CorLoc bars)."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from vitreg.present.plots import plot_corloc  # noqa: E402


def _overlaps(fig) -> list[tuple[str, str]]:
    fig.canvas.draw()
    labels = fig.axes[0].get_xticklabels()
    boxes = [(t.get_text(), t.get_window_extent()) for t in labels]
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]


def test_the_corloc_bars_labels_do_not_overlap():
    rows = {f"ours, {how}: DINOv2 ViT-S/14{reg}": {"synthetic": 90.0}
            for how in ("plain LOST", "[TTR]'s sweep") for reg in ("", " +reg")}
    fig = plot_corloc(rows, {})
    assert _overlaps(fig) == []
    plt.close(fig)
