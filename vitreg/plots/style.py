"""The one visual style, figure titles that say what the figure is made of, and saving figures.

Paper: every figure. Each is saved as PNG (screen) and PDF (print) under ``<output_dir>/figures`` with
the notebook's number in its name; :func:`title_for` marks any figure computed from random weights, and
:func:`stamp` gives a figure the labels of what ran (``[random weights · planted ground truth]``): the
notebook helper stamps every figure it saves, so a figure whose answer was planted never looks like evidence.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RANDOM_LABEL = "random weights"
#: The label of a figure whose answer the run put there (planted outliers, spikes, objects, synthetic data).
PLANTED_LABEL = "planted ground truth"
_LABELS = (RANDOM_LABEL, PLANTED_LABEL)


def use_style() -> None:
    """Apply vitreg's plotting style (called by the plot functions, never at import)."""
    import matplotlib

    matplotlib.rcParams.update({
        "figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight", "axes.spines.top": False,
        "axes.spines.right": False, "axes.titlesize": 10, "axes.labelsize": 9, "font.size": 9,
        "legend.fontsize": 8, "image.cmap": "viridis",
    })


def is_random(models: Iterable[Any]) -> bool:
    """True when any model (a LoadedModel, its ``describe()`` dict, or a bool "pretrained") is random."""
    for m in models:
        pretrained = m if isinstance(m, bool) else (m.get("pretrained", True) if isinstance(m, dict)
                                                    else getattr(m, "pretrained", True))
        if not pretrained:
            return True
    return False


def title_for(text: str, *models: Any, planted: bool = False) -> str:
    """``text``, plus a line ``[random weights]`` when any of ``models`` is randomly initialised, and
    ``planted ground truth`` in it when ``planted`` (see :func:`label_line`)."""
    line = label_line(random_weights=is_random(models), planted=planted)
    return f"{text}\n{line}" if line else text


def label_line(*, random_weights: bool, planted: bool) -> str:
    """``[random weights · planted ground truth]``, either part alone, or "" when neither applies."""
    parts = [label for label, on in zip(_LABELS, (random_weights, planted)) if on]
    return f"[{' · '.join(parts)}]" if parts else ""


def stamp(fig: Any, *, random_weights: bool, planted: bool) -> Any:
    """Give ``fig``'s title the label line of what ran (:func:`label_line`), replacing any label line there.

    Paper: none; honesty. The title is the figure's suptitle, else the title of its only axes, else a new
    suptitle. A figure that needs no label is left as it is. Returns ``fig``.
    """
    line = label_line(random_weights=random_weights, planted=planted)
    if not line:
        return fig
    target = fig.get_suptitle() and fig._suptitle
    if not target and len(fig.axes) == 1 and fig.axes[0].get_title():
        target = fig.axes[0].title
    if not target:
        fig.suptitle(line)
        return fig
    lines = target.get_text().split("\n")
    had_label = lines[-1].startswith("[") and any(label in lines[-1] for label in (*_LABELS, "random weights"))
    target.set_text("\n".join([*(lines[:-1] if had_label else lines), line]))
    if not had_label and fig.get_layout_engine() is None:  # one more line: make room for it
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fig.tight_layout()
    return fig


def save_figure(fig: Any, name: str, output_dir: str | os.PathLike = ".", *, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``<output_dir>/figures/<name>.<fmt>`` (atomically) and return the paths.

    ``name`` should start with the notebook number (``02_norm_histogram``).
    """
    from vitreg.io import atomic_path

    folder = Path(output_dir) / "figures"
    paths = []
    for fmt in formats:
        target = folder / f"{name}.{fmt}"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt)
        paths.append(target)
    return paths


def finish_image_grid(fig: Any, axes: Any, title: str) -> Any:
    """Hide the ticks of every image panel, set the title, tighten the layout."""
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def maps_grid(images: Any, rows: dict[str, Any], *, title: str = "", cmap: str = "inferno", col_titles: list[str] | None = None) -> Any:
    """Images in the first row, then one row per named map (``(B, h, w)`` each), upsampled to the image.

    Paper: the layout of Fig. 1-2 (image, then attention maps) and Fig. 21 (norm maps).

    Args:
        images: ``(B, H, W, 3)`` floats in [0, 1] (``vitreg.images.to_display``).
        rows: label -> ``(B, h, w)`` tensor or array; each map is shown at the image's size (nearest).
    """
    import matplotlib.pyplot as plt
    import numpy as np

    use_style()
    n = len(images)
    fig, axes = plt.subplots(1 + len(rows), n, figsize=(2.0 * n, 2.0 * (1 + len(rows))), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(images[j])
        if col_titles:
            axes[0, j].set_title(col_titles[j])
        for i, (label, maps) in enumerate(rows.items(), start=1):
            m = np.asarray(maps[j].detach().float().cpu() if hasattr(maps[j], "detach") else maps[j])
            axes[i, j].imshow(m, cmap=cmap, extent=(0, images[j].shape[1], images[j].shape[0], 0), interpolation="nearest")
            if j == 0:
                axes[i, j].set_ylabel(label)
    return finish_image_grid(fig, axes, title)


def to_numpy(x: Any) -> Any:
    """A tensor or array as a float numpy array on the CPU."""
    import numpy as np

    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)
