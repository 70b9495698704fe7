"""Charts of numbers: histograms, densities, per-block curves and bars beside the paper's values.

Paper: Fig. 3-5, Fig. 7 and App. D.1, Table 1, Table 2, Table 3.
"""

from __future__ import annotations

import textwrap
from typing import Any

from vitreg.present.plots.style import to_numpy, token_label, use_style


def plot_artifact_scores(scores: dict[str, Any], *, uniform: float | None = None, title: str = "",
                         ylabel: str = "artifact score\n(0: uniform map, 1: all mass on the top patches)") -> Any:
    """Artifact score of every image (dots) and its mean (bar) per model.

    Paper: Fig. 2 made a number ("all but DINO show artifacts").

    Args:
        scores: model label -> ``(B,)`` scores.
        uniform: the score of a uniform map (drawn as a dashed line).
        title: figure title.
        ylabel: axis label.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    use_style()
    fig, ax = plt.subplots(figsize=(1.2 * len(scores) + 2, 3.2))
    rng = np.random.default_rng(0)
    for i, (label, s) in enumerate(scores.items()):
        v = to_numpy(s).ravel()
        ax.bar(i, v.mean(), color="C0", alpha=0.35, width=0.7)
        ax.scatter(i + rng.uniform(-0.2, 0.2, v.size), v, s=8, color="C0")
    if uniform is not None:
        ax.axhline(uniform, ls="--", color="grey", lw=1, label="uniform map")
        ax.legend(loc="upper right")
    ax.set_xticks(range(len(scores)))
    ax.set_xticklabels([textwrap.fill(k, 18) for k in scores], fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_norm_histograms(norms: dict[str, Any], *, thresholds: dict[str, float | None] | None = None,
                         title: str = "", bins: int = 100, log: bool = True, xlabel: str = "patch-token norm",
                         sharex: bool = False) -> Any:
    """One histogram of patch-token norms per panel (model, or before/after the final LayerNorm).

    Paper: Fig. 3 (DINO ViT-B/16 vs DINOv2 ViT-g/14; bimodal, cut-off 150).

    Args:
        norms: panel label -> norms (any shape; pooled).
        thresholds: panel label -> cut-off drawn as a red line (None: none).
        title: figure title.
        bins: histogram bins.
        log: logarithmic count axis (the outlier mode is small).
        xlabel: x-axis label.
        sharex: one norm axis for all panels (before/after the LayerNorm: the same scale shows the collapse).
    """
    import matplotlib.pyplot as plt
    import numpy as np

    use_style()
    fig, axes = plt.subplots(1, len(norms), figsize=(3.4 * len(norms), 2.8), squeeze=False)
    values = {label: to_numpy(n).ravel() for label, n in norms.items()}
    if sharex:
        every = np.concatenate(list(values.values()))
        common = np.linspace(0, every.max() * 1.02, bins + 1)
    for ax, (label, v) in zip(axes[0], values.items()):
        edges = common if sharex else bins
        if not sharex and v.size and v.max() - v.min() < 1e-3 * max(abs(v.max()), 1e-12):
            edges = np.linspace(v.min() * 0.99, v.max() * 1.01 + 1e-12, bins + 1)  # a constant: widen the range
        ax.hist(v, bins=edges, color="C0", log=log)
        ax.ticklabel_format(axis="x", useOffset=False)
        t = (thresholds or {}).get(label)
        if t is not None:
            ax.axvline(t, color="C3", ls="--", lw=1, label=f"cut-off {t:.3g}")
            ax.legend(loc="upper right")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel(xlabel)
    axes[0, 0].set_ylabel("tokens" + (" (log)" if log else ""))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_block_norms(stats: dict[str, dict[str, Any]], *, title: str = "") -> Any:
    """Norm distribution along depth (quantile bands) and the outlier fraction per block, per model.

    Paper: Fig. 4a (ViT-g: high-norm tokens separate from the rest around block 15 of 40).

    Args:
        stats: model label -> dict with ``quantiles`` ``(L, Q)`` (``norms.block_norm_quantiles`` at
            levels ``qs``), ``qs``, ``fractions`` ``(L,)`` and ``threshold`` (float or None).
        title: figure title.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    use_style()
    fig, axes = plt.subplots(2, len(stats), figsize=(4.2 * len(stats), 5.4), squeeze=False, sharex="col")
    for j, (label, s) in enumerate(stats.items()):
        q, qs = to_numpy(s["quantiles"]), list(s["qs"])
        blocks = np.arange(1, q.shape[0] + 1)
        ax = axes[0, j]
        median = q[:, qs.index(0.5)]
        for lo_q, hi_q, a in ((0.05, 0.95, 0.2), (0.25, 0.75, 0.4)):
            if lo_q in qs and hi_q in qs:
                ax.fill_between(blocks, q[:, qs.index(lo_q)], q[:, qs.index(hi_q)], color="C0", alpha=a,
                                lw=0, label=f"{int(lo_q * 100)}-{int(hi_q * 100)}%")
        ax.plot(blocks, median, color="C0", label="median")
        if 0.99 in qs:
            ax.plot(blocks, q[:, qs.index(0.99)], color="C1", lw=1, label="99%")
        if 1.0 in qs:
            ax.plot(blocks, q[:, qs.index(1.0)], color="C3", lw=1, label="max")
        if s.get("threshold") is not None:
            ax.axhline(s["threshold"], color="grey", ls="--", lw=1, label=f"cut-off {s['threshold']:.3g}")
        ax.set_yscale("log")
        ax.set_title(label, fontsize=9)
        ax.set_ylabel("patch norm (log)")
        ax.legend(fontsize=6, loc="upper left")
        ax2 = axes[1, j]
        ax2.plot(blocks, 100 * to_numpy(s["fractions"]), marker="o", ms=3, color="C3")
        if s.get("emergence") is not None:
            ax2.axvline(s["emergence"], color="grey", ls=":", lw=1, label=f"emerges at block {s['emergence']}")
            ax2.legend(fontsize=7, loc="upper left")
        ax2.set_xlabel("block (1 = first)")
        ax2.set_ylabel("outliers (% of patches)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_size_trend(labels: list[str], fractions: Any, lows: Any, highs: Any, *, title: str = "") -> Any:
    """Outlier fraction at the output per model size, with confidence intervals.

    Paper: Fig. 4c (only L, H and g have outliers; public S/B/L are distilled: a proxy).

    Args:
        labels: model labels, smallest first.
        fractions, lows, highs: fractions and CI bounds in [0, 1].
        title: figure title.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    use_style()
    f, lo, hi = (100 * to_numpy(v) for v in (fractions, lows, highs))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(labels) + 2), 3.2))
    x = np.arange(len(labels))
    ax.bar(x, f, color="C0", alpha=0.7)
    ax.errorbar(x, f, yerr=[f - lo, hi - f], fmt="none", color="k", capsize=3)
    ax.set_xticks(x)
    ax.set_xticklabels([textwrap.fill(label, 18) for label in labels], fontsize=7)
    ax.set_ylabel("outliers at output (% patches)")
    ax.set_title("\n".join(textwrap.fill(line, 70) for line in title.split("\n")))
    fig.tight_layout()
    return fig


def plot_similarity_densities(groups: dict[str, tuple[Any, Any]], *, title: str = "", bins: int = 60) -> Any:
    """Densities of neighbour cosine similarity, outlier vs normal patches, one panel per variant.

    Paper: Fig. 5a (outliers near 1, normal patches much wider). Drawn with seaborn's ``histplot``: a
    density histogram per group with its kernel density estimate, the figure the paper shows.

    Args:
        groups: panel label -> ``(outlier values, normal values)`` 1-D.
        title: figure title.
        bins: histogram bins over the data range.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    use_style()
    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3), squeeze=False)
    for ax, (label, (out_v, norm_v)) in zip(axes[0], groups.items()):
        o, nrm = to_numpy(out_v).ravel(), to_numpy(norm_v).ravel()
        both = np.concatenate([o, nrm])
        edges = np.linspace(both.min(), both.max(), bins + 1) if both.size and np.ptp(both) > 0 else bins
        for values, colour, name in ((nrm, "C0", "normal"), (o, "C3", "outlier")):
            if values.size:  # a KDE needs spread: planted or tiny groups can be constant
                sns.histplot(x=values, bins=edges, stat="density", kde=np.unique(values).size > 2, alpha=0.45,
                             color=colour, edgecolor=None, label=f"{name} (n={values.size})", ax=ax)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("cosine similarity to the 4 neighbours")
        ax.set_ylabel("")
        ax.legend(fontsize=7, loc="upper left")
    axes[0, 0].set_ylabel("density")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_downstream(table: dict[str, dict[str, tuple[float | None, float | None]]], *, title: str = "") -> Any:
    """Table 2 as the claim is made: with minus without registers, one panel per task, one bar per source.

    Paper: Table 2 (IN1k linear top-1, ADE20k mIoU, NYUd RMSE; notebook 09). Gains of 0.3-1.3 points vanish
    on bars drawn from zero, so the difference is drawn, around a line at 0 (no effect); each bar is labelled
    with the difference and the two values it comes from.

    Args:
        table: ``{source: {metric: (without registers, with registers)}}``, e.g. sources "paper (own
            DINOv2-L)", "[TTR] public pair", "ours"; metrics ``imagenet_top1``, ``ade20k_miou``,
            ``nyud_rmse``. A pair with a ``None`` is left out (and marked "n/a").
        title: figure title (use :func:`title_for`).
    """
    import matplotlib.pyplot as plt

    use_style()
    metrics = {"imagenet_top1": "ImageNet-1k top-1 (points) ↑ better", "ade20k_miou": "ADE20k mIoU (points) ↑ better",
               "nyud_rmse": "NYUd RMSE (m) ↓ better"}
    sources = list(table)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 0.6 * len(sources) + 2.0), squeeze=False,
                             sharey=True)
    for ax, (key, label) in zip(axes[0], metrics.items()):
        for i, src in enumerate(sources):
            without, with_reg = table[src].get(key, (None, None))
            if without is None or with_reg is None:
                ax.text(0, i, " n/a (not measured)", ha="left", va="center", fontsize=7, color="0.4")
                continue
            diff = with_reg - without
            ax.barh(i, diff, color=f"C{i}", edgecolor="black", linewidth=0.5, height=0.6)
            ax.annotate(f"{diff:+.3g} ({without:.3g} → {with_reg:.3g})", (max(diff, 0.0), i), xytext=(3, 0),
                        textcoords="offset points", ha="left", va="center", fontsize=7)  # right of the bar or of 0
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(sources)), sources)
        ax.set_ylim(len(sources) - 0.5, -0.5)  # first source on top; a row without a bar keeps its place
        ax.set_title(label)
        ax.set_xlabel("with minus without registers")
        lo, hi = ax.get_xlim()
        span = max(abs(lo), abs(hi), 1e-3)
        ax.set_xlim(-1.6 * span, 3.2 * span)  # room for the labels on the right
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_local_probes(ours: dict[str, dict[str, dict[str, float]]], paper: dict[str, dict[str, float]] | None = None,
                      *, title: str = "") -> Any:
    """Position and pixel probes, normal vs outlier patches, ours beside the paper's.

    Paper: Fig. 5b (position top-1 41.7 vs 22.8 %, distance 0.79 vs 5.09 cells, pixel L2 18.38 vs 25.23).

    Args:
        ours: series label (model) -> group (``normal``/``outlier``) -> metrics (``position_top1``,
            ``position_distance``, ``reconstruction_l2``); a missing or None metric is left out.
        paper: group -> the same metrics, drawn as hatched bars (optional).
        title: figure title.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    use_style()
    metrics = [("position_top1", "position top-1 (%) ↑"), ("position_distance", "position avg. distance (cells) ↓"),
               ("reconstruction_l2", "pixel reconstruction L2 ↓")]
    groups = ["normal", "outlier"]
    series = list(ours.items()) + ([("paper (ViT-g)", paper)] if paper else [])
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    width = 0.8 / max(len(series), 1)
    for ax, (metric, label) in zip(axes, metrics):
        for s, (name, vals) in enumerate(series):
            ys = [np.nan if (vals.get(g) or {}).get(metric) is None else float(vals[g][metric]) for g in groups]
            is_paper = paper is not None and s == len(series) - 1
            ax.bar(np.arange(2) + (s - (len(series) - 1) / 2) * width, ys, width,
                   color=["C0", "C3"], alpha=0.35 if is_paper else 0.85, hatch="//" if is_paper else None,
                   edgecolor="k", linewidth=0.5, label=name)
        ax.set_xticks(np.arange(2))
        ax.set_xticklabels(groups)
        ax.set_title(label)
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor="0.5", alpha=0.35 if paper is not None and i == len(series) - 1
                             else 0.85, hatch="//" if paper is not None and i == len(series) - 1 else None,
                             edgecolor="k") for i in range(len(series))]
    fig.legend(handles, [n for n, _ in series], fontsize=8, loc="lower center", ncol=len(series))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_global_probes(ours: dict[str, dict[str, dict[str, float]]], paper: dict[str, dict[str, float]] | None = None,
                       *, kinds: tuple[str, ...] = ("normal", "outlier", "cls"), title: str = "") -> Any:
    """Single-token classification per dataset, and the outlier-minus-normal gap, ours beside the paper's.

    Paper: Table 1 / App. G Table 6 (outlier > normal everywhere; biggest gaps on Aircraft, CUB, Cars).

    Args:
        ours: dataset -> token kind -> ``{"mean": %, "std": %}`` (missing/None: not measured).
        paper: dataset -> token kind -> % (drawn as black ticks, and as hatched bars in the gap panel).
        kinds: token kinds to draw, in order.
        title: figure title.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    use_style()
    names = list(ours)
    x = np.arange(len(names))
    fig, (ax, gap_ax) = plt.subplots(2, 1, figsize=(max(6, 1.1 * len(names) + 2), 6.5), sharex=True)
    width = 0.8 / len(kinds)
    colours = {"normal": "C0", "outlier": "C3", "cls": "C2", "central": "C1"}

    def get(d: dict, name: str, kind: str, field: str | None = "mean") -> float:
        v = (d.get(name) or {}).get(kind)
        if isinstance(v, dict):
            v = v.get(field)
        return np.nan if v is None else float(v)

    for k, kind in enumerate(kinds):
        off = (k - (len(kinds) - 1) / 2) * width
        means = [get(ours, n, kind) for n in names]
        stds = [get(ours, n, kind, "std") for n in names]
        ax.bar(x + off, means, width, yerr=np.nan_to_num(stds), capsize=2, color=colours.get(kind, f"C{4 + k}"),
               label=token_label(kind))
        if paper:
            ax.scatter(x + off, [get(paper, n, kind, None) for n in names], marker="_", s=120, color="k",
                       zorder=3, label="paper" if k == 0 else None)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 122)
    ax.set_yticks(range(0, 101, 20))
    ax.legend(fontsize=7, ncol=len(kinds) + 1, loc="upper left")
    ours_gap = [get(ours, n, "outlier") - get(ours, n, "normal") for n in names]
    if paper:
        gap_ax.bar(x - 0.2, ours_gap, 0.4, color="C3", label="ours: outlier − normal")
        gap_ax.bar(x + 0.2, [get(paper, n, "outlier", None) - get(paper, n, "normal", None) for n in names], 0.4,
                   color="C3", alpha=0.35, hatch="//", edgecolor="k", linewidth=0.5, label="paper")
    else:
        gap_ax.bar(x, ours_gap, 0.6, color="C3", label="ours: outlier − normal")
    gap_ax.axhline(0, color="k", linewidth=0.8)
    gap_ax.set_ylabel("gap (points)")
    gap_ax.legend(fontsize=7)
    gap_ax.set_xticks(x)
    gap_ax.set_xticklabels(names, rotation=30, ha="right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_norm_distributions(pairs: dict[str, tuple[dict[str, Any], dict[str, Any]]], *,
                            threshold: float | None = None, title: str = "") -> Any:
    """One column per model pair: norm histograms without (top) and with registers (bottom).

    Paper: Fig. 7 / App. D.1 Fig. 15 (patch, [CLS] and register norms side by side).

    Args:
        pairs: label (``"ViT-L"``) -> (norms_by_kind without registers, norms_by_kind with registers).
        threshold: draw the outlier cut-off (150 for DINOv2).
        title: figure title (use :func:`vitreg.present.plots.title_for`).
    """
    import matplotlib.pyplot as plt
    import numpy as np

    use_style()
    fig, axes = plt.subplots(2, len(pairs), figsize=(3.2 * len(pairs), 5.0), squeeze=False)
    for j, (label, (no_reg, reg)) in enumerate(pairs.items()):
        for i, (kinds, sub) in enumerate(((no_reg, "no registers"), (reg, "4 registers"))):
            ax = axes[i, j]
            hi = max(float(v.max()) for v in kinds.values()) * 1.05
            bins = np.linspace(0, hi, 60)
            ax.hist(kinds["patch"].numpy(), bins=bins, density=True, color="0.6", label="patches")
            for name, v in kinds.items():
                if name == "patch":
                    continue
                ax.hist(v.numpy(), bins=bins, density=True, histtype="step", lw=1.5, label=token_label(name))
            if threshold is not None:
                ax.axvline(threshold, color="k", ls=":", lw=1)
            ax.set_yscale("log")
            ax.set_title(f"{label}, {sub}")
            ax.set_xlabel("token norm (pre final LayerNorm)")
            if j == 0:
                ax.set_ylabel("density (log)")
            ax.legend(fontsize=6)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_corloc(table: dict[str, dict[str, float]], reference: dict[str, dict[str, float]], *, title: str = "") -> Any:
    """Bars: our CorLoc per model and dataset; black ticks: the reference value for that model (paper / [TTR]).

    Paper: Table 3.

    Args:
        table: our rows, model label -> dataset -> CorLoc (%); missing datasets are left out.
        reference: OUR row label -> dataset -> reference CorLoc (%) to mark on that bar.
    """
    import matplotlib.pyplot as plt

    from vitreg.measure.lost import TABLE3_DATASETS

    use_style()
    datasets = [d for d in TABLE3_DATASETS + ("synthetic",) if any(d in r for r in table.values())]
    nd = max(1, len(datasets))
    fig, ax = plt.subplots(figsize=(2.0 + max(1.3, 0.5 * nd) * len(table), 3.6))
    width = 0.8 / nd
    labelled = False
    for j, d in enumerate(datasets):
        xs = [i + (j - (nd - 1) / 2) * width for i in range(len(table))]
        ax.bar(xs, [r.get(d, float("nan")) for r in table.values()], width=width * 0.95, label=d)
        for x, row in zip(xs, table):
            ref = reference.get(row, {}).get(d)
            if ref is not None:
                ax.plot([x - width / 2, x + width / 2], [ref, ref], color="k", lw=2,
                        label=None if labelled else "reference (paper / [TTR])")
                labelled = True
    ax.set_xticks(range(len(table)), [textwrap.fill(k, 16) for k in table], fontsize=7)  # side by side, no overlap
    ax.set_ylabel("CorLoc (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, ncol=nd + 1)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_bias_sweep(curves: dict[str, dict[str, dict[str, float]]], *, dataset: str,
                    plain: dict[str, float] | None = None, title: str = "") -> Any:
    """[TTR]'s sweep: LOST CorLoc against the bias on normalised features, one panel per model, one line per
    features x block (``k-1``...); dashed: plain LOST (last block, dot product, bias 0).

    Paper: Table 3 (the paper's bias is "hand-tuned", value not given; [TTR] reports the best of this sweep,
    chosen on the evaluation set: the top of these curves).

    Args:
        curves: model key -> line label -> bias (a number or its text) -> CorLoc (%) on ``dataset``
            (:func:`vitreg.measure.lost.bias_curves`).
        dataset: the dataset's name, for the axis label.
        plain: model key -> plain LOST's CorLoc (%), drawn as a dashed line.
    """
    import matplotlib.pyplot as plt

    use_style()
    fig, axes = plt.subplots(1, max(1, len(curves)), figsize=(3.6 * max(1, len(curves)), 3.2), squeeze=False,
                             sharey=True)
    for ax, (key, lines) in zip(axes[0], curves.items()):
        best = max((v for line in lines.values() for v in line.values()), default=float("nan"))
        for label, line in lines.items():  # colour: q/k/v; the last block darkest
            xs = sorted(line, key=float)
            depth = int(label[1:]) if label[1:].lstrip("-").isdigit() else -1
            ax.plot([float(x) for x in xs], [line[x] for x in xs], "o-", ms=3, lw=1, label=label,
                    color={"q": "C0", "k": "C1", "v": "C2"}.get(label[:1], "C3"), alpha=max(0.3, 1 + 0.2 * (depth + 1)))
        if plain and key in plain:
            ax.axhline(plain[key], color="k", ls="--", lw=1, label="plain LOST")
        ax.set_title(f"{key} (best {best:.1f}%)", fontsize=8)
        ax.set_xlabel("bias added to the cosine similarity")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=6, ncol=2)
    axes[0, 0].set_ylabel(f"CorLoc on {dataset} (%)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_massive_activations(per_block: dict[str, list[dict[str, float]]], *, title: str = "") -> Any:
    """Top-1/2/3 |activation| and the median of every block's output, one panel per model (log scale).

    Paper: beyond the paper, Sun et al. 2024 (massive activations: > 100 and >= 1000x the median).

    Args:
        per_block: model label -> :meth:`vitreg.measure.massive.MassiveActivations.per_block`.
        title: figure title.
    """
    import matplotlib.pyplot as plt

    use_style()
    fig, axes = plt.subplots(1, len(per_block), figsize=(4.2 * len(per_block), 3.2), squeeze=False, sharey=True)
    for ax, (label, rows) in zip(axes[0], per_block.items()):
        for key, style in (("top1", "-o"), ("top2", "-s"), ("top3", "-^"), ("median", "--")):
            ax.plot(range(len(rows)), [max(r[key], 1e-6) for r in rows], style, ms=3, label=key)
        ax.axhline(100, color="grey", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("block")
        ax.set_title(textwrap.fill(label, 40), fontsize=8)
    axes[0][0].set_ylabel("|activation| (median over images)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
