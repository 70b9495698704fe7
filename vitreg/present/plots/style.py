"""The one visual style, figure titles that say what the figure is made of, and saving figures.

Paper: every figure. Each is saved as PNG (screen) and PDF (print) under ``<output_dir>/figures`` with
the notebook's number in its name; :func:`title_for` marks any figure computed from random weights, and
:func:`stamp` gives a figure the labels of what ran (``[random weights · planted ground truth]``): the
notebook helper stamps every figure it saves, so a figure whose answer was planted never looks like evidence.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, Literal

RANDOM_LABEL = "random weights"
#: The label of a figure whose answer the run put there (planted outliers, spikes, objects, synthetic data).
PLANTED_LABEL = "planted ground truth"
_LABELS = (RANDOM_LABEL, PLANTED_LABEL)


def token_label(name: str) -> str:
    """How a figure names a token kind: ``cls`` -> ``[CLS]`` (as the paper writes it), others unchanged."""
    return "[CLS]" if name.lower() == "cls" else name


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
    from vitreg.utils.io import atomic_path

    folder = Path(output_dir) / "figures"
    paths = []
    for fmt in formats:
        target = folder / f"{name}.{fmt}"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt)
        paths.append(target)
    return paths


def finish_image_grid(fig: Any, axes: Any, title: str) -> Any:
    """Hide the ticks of every image panel, set the title, tighten the layout (unless the figure has a
    layout engine already, e.g. ``layout="constrained"`` for colour bars beside rows)."""
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    return fig


#: The colour-bar label of attention maps shown relative to the uniform share (:func:`relative_maps`).
RELATIVE_LABEL = "attention ÷ uniform share\n(1 = uniform; log scale)"


def relative_maps(maps: Any) -> Any:
    """Attention maps (each summing to 1 over its patches, any shape ``(..., H, W)``) divided by their
    mean: 1 is the uniform share on every grid, so maps of 14x14 and 37x37 grids share one scale."""
    import numpy as np

    m = np.clip(to_numpy(maps), 0.0, None)
    mean = m.mean(axis=(-2, -1), keepdims=True)
    return m / np.where(mean > 0, mean, 1.0)


def shared_norm(arrays: Iterable[Any], *, log: bool = False, vmin: float | None = None,
                vmax: float | None = None) -> Any:
    """One colour scale for every panel compared in a figure (a matplotlib ``Normalize``).

    Linear from ``vmin`` (default 0) to ``vmax`` (default: the largest value); ``log`` (for
    :func:`relative_maps`, where 1 is uniform): from the smallest value, but no lower than 1/largest, to the
    largest, so 1 is always inside and a nearly uniform map still shows its contrast.
    """
    import numpy as np
    from matplotlib.colors import LogNorm, Normalize

    values = [to_numpy(a) for a in arrays]
    top = vmax if vmax is not None else max((float(np.nanmax(v)) for v in values if v.size), default=1.0)
    if log:
        top = max(top, 1.05)
        smallest = min((float(np.nanmin(v[v > 0])) for v in values if (v > 0).any()), default=1.0 / top)
        low = vmin if vmin is not None else max(min(smallest, 1 / 1.05), 1.0 / top)
        return LogNorm(vmin=low, vmax=top)
    low = 0.0 if vmin is None else vmin
    return Normalize(vmin=low, vmax=top if top > low else low + 1.0)


def show_map(ax: Any, m: Any, norm: Any, cmap: str, **kwargs: Any) -> Any:
    """Draw one map on a shared scale (values below a log scale's floor are drawn at the floor)."""
    import numpy as np
    from matplotlib.colors import LogNorm

    m = to_numpy(m)
    if isinstance(norm, LogNorm):
        m = np.clip(m, norm.vmin, None)
    return ax.imshow(m, cmap=cmap, norm=norm, interpolation="nearest", **kwargs)


def colorbar(fig: Any, image: Any, axes: Any, label: str = "") -> Any:
    """One colour bar for a group of panels (``axes``: an axes or an array of them), labelled."""
    import numpy as np

    axes = list(np.atleast_1d(axes).ravel())
    bar = fig.colorbar(image, ax=axes, fraction=0.046 if len(axes) == 1 else 0.03, pad=0.02, shrink=0.9)
    if label:
        bar.set_label(label, fontsize=7)
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter, NullFormatter

    if isinstance(image.norm, LogNorm):  # plain numbers (0.5, 1, 20), not 10^0 notation
        plain = FuncFormatter(lambda v, _: f"{v:.3g}")
        bar.ax.yaxis.set_major_formatter(plain)
        narrow = image.norm.vmax / image.norm.vmin < 10  # few ticks: label the minor ones too
        bar.ax.yaxis.set_minor_formatter(plain if narrow else NullFormatter())
    bar.ax.tick_params(labelsize=7, which="both")
    return bar


def maps_grid(images: Any, rows: dict[str, Any], *, title: str = "", cmap: str = "inferno",
              col_titles: list[str] | None = None, scale: Literal["row", "all"] = "row",
              attention: bool | Collection[str] = False,
              limits: dict[str, tuple[float, float]] | None = None, labels: dict[str, str] | None = None) -> Any:
    """Images in the first row, then one row per named map (``(B, h, w)`` each), upsampled to the image,
    on shared colour scales with colour bars (never one scale per panel).

    Paper: the layout of Fig. 1-2 (image, then attention maps) and Fig. 21 (norm maps).

    Args:
        images: ``(B, H, W, 3)`` floats in [0, 1] (``vitreg.core.images.to_display``).
        rows: label -> ``(B, h, w)`` tensor or array; each map is shown at the image's size (nearest).
        scale: ``row``: one colour scale (and bar) per row; ``all``: one for every map of the figure.
        attention: the maps are attention (each sums to 1): shown relative to the uniform share on a log
            scale (:func:`relative_maps`), comparable across grids; or the labels of the rows that are.
        limits: row label -> ``(vmin, vmax)`` for that row's scale (e.g. two norm rows on one scale).
        labels: row label -> colour-bar label (default: the row label; attention: :data:`RELATIVE_LABEL`).
    """
    import matplotlib.pyplot as plt

    use_style()
    images = to_numpy(images)
    n = len(images)
    is_attn = {label: (label in attention) if isinstance(attention, (set, list, tuple)) else bool(attention)
               for label in rows}
    data = {label: (relative_maps(maps) if is_attn[label] else to_numpy(maps)) for label, maps in rows.items()}
    fig, axes = plt.subplots(1 + len(rows), n, figsize=(2.0 * n + 0.9, 2.0 * (1 + len(rows)) + 0.3), squeeze=False,
                             layout="constrained")
    common = shared_norm(list(data.values()), log=any(is_attn.values()))
    for j in range(n):
        axes[0, j].imshow(images[j])
        if col_titles:
            axes[0, j].set_title(col_titles[j])
    for i, (label, maps) in enumerate(data.items(), start=1):
        lo_hi = (limits or {}).get(label)
        norm = shared_norm([maps], log=is_attn[label], vmin=lo_hi[0], vmax=lo_hi[1]) if lo_hi else \
            common if scale == "all" else shared_norm([maps], log=is_attn[label])
        for j in range(n):
            im = show_map(axes[i, j], maps[j], norm, cmap, extent=(0, images[j].shape[1], images[j].shape[0], 0))
        axes[i, 0].set_ylabel(label)
        if scale == "row" or lo_hi:
            colorbar(fig, im, axes[i, :], (labels or {}).get(label, RELATIVE_LABEL if is_attn[label] else ""))
    if scale == "all" and rows:
        colorbar(fig, im, axes[1:, :], RELATIVE_LABEL if any(is_attn.values()) else "")
    return finish_image_grid(fig, axes, title)


def to_numpy(x: Any) -> Any:
    """A tensor or array as a float numpy array on the CPU."""
    import numpy as np

    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)
