"""Teaching diagrams drawn from code: the token sequence of a ViT and the outlier-norm picture.

Paper: §2.2 and Fig. 6 (registers: extra learnable tokens, discarded at the output), Fig. 3 (a few patch
tokens with a norm ~10x the rest, before the final LayerNorm). Used in notebooks 00 (both) and 07 (the
token sequence). These are schematics, not measurements: every figure says so in its title.
"""

from __future__ import annotations

from typing import Any

from vitreg.present.plots.style import use_style

SCHEMATIC = "schematic, not measured"
COLOURS = {"cls": "#f4a261", "reg": "#8ecae6", "patch": "#d9d9d9", "outlier": "#e63946", "block": "#f1faee"}


def _box(ax: Any, x: float, y: float, label: str, colour: str, *, width: float = 0.9, height: float = 0.6,
         dashed: bool = False) -> None:
    """One token: a rounded box centred on (x, y) with its label."""
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.02",
                                facecolor=colour, edgecolor="black", linewidth=0.8,
                                linestyle="--" if dashed else "-", alpha=0.45 if dashed else 1.0))
    ax.text(x, y, label, ha="center", va="center", fontsize=8)


def _token_labels(n_registers: int, n_patches: int) -> list[tuple[str, str]]:
    """(kind, label) of every token drawn: [CLS], the registers, then the patches (long rows elided)."""
    tokens = [("cls", "[CLS]")] + [("reg", f"reg{i + 1}") for i in range(n_registers)]
    if n_patches <= 6:
        return tokens + [("patch", f"p{i + 1}") for i in range(n_patches)]
    return tokens + [("patch", "p1"), ("patch", "p2"), ("patch", "p3"), ("dots", "…"), ("patch", f"p{n_patches}")]


def _captions(ax: Any, tokens: list[tuple[str, str]], n_registers: int, n_patches: int,
              grid: tuple[int, int] | None, y_in: float, y_out: float) -> None:
    """Where each kind of token comes from (above the input row) and where it goes (below the output row)."""
    xs = range(len(tokens))
    patch_x = [x for x, (kind, _) in zip(xs, tokens) if kind in ("patch", "dots")]
    reg_x = [x for x, (kind, _) in zip(xs, tokens) if kind == "reg"]
    mid_patches = (patch_x[0] + patch_x[-1]) / 2
    shape = f" ({grid[0]}×{grid[1]} grid)" if grid else ""
    ax.text(0, y_in + 0.75, "learned\n+ position emb.", ha="center", va="bottom", fontsize=7)
    ax.text(mid_patches, y_in + 0.75, f"{n_patches} image patches{shape}\nlinear embedding + position embedding",
            ha="center", va="bottom", fontsize=7)
    ax.text(0, y_out - 0.7, "→ image-level heads\n(classification)", ha="center", va="top", fontsize=7)
    ax.text(mid_patches, y_out - 0.7, "→ dense heads (segmentation, depth),\nattention maps, object discovery", ha="center", va="top", fontsize=7)
    if reg_x:
        mid_regs = (reg_x[0] + reg_x[-1]) / 2
        ax.text(mid_regs, y_in + 0.75, f"{n_registers} register{'s' if n_registers > 1 else ''}: learned,\n"
                "no image content, no position emb.", ha="center", va="bottom", fontsize=7, color="#1d3557")
        ax.text(mid_regs, y_out - 0.7, "discarded\n(read by no head)", ha="center", va="top", fontsize=7, color="#1d3557")


def token_sequence(n_registers: int = 4, n_patches: int = 256, *, grid: tuple[int, int] | None = None,
                   title: str | None = None) -> Any:
    """Draw a ViT's token sequence ``[CLS] | registers | patches``: where registers enter and where they leave.

    Paper: §2.2, Fig. 6. The image is cut into patches, each patch is embedded (a linear map) and gets a
    position embedding; [CLS] is one learned token; the registers are ``n_registers`` more learned tokens,
    with no image content and no position embedding, inserted between [CLS] and the patches. All tokens go
    through the same Transformer blocks; at the output [CLS] feeds image-level heads, the patches feed dense
    heads, and the registers are discarded. Used in notebooks 00 and 07.

    Args:
        n_registers: number of register tokens R (0 draws a model without registers).
        n_patches: number of patch tokens N (more than 6 are elided as ``p1 p2 p3 … pN``).
        grid: the patch grid (rows, cols), only for the caption; ``n_patches`` wins for the drawing.
        title: the figure title; None writes one that says the figure is a schematic.

    Returns:
        The matplotlib Figure (each token box carries its label as text: ``[CLS]``, ``reg1`` ..., ``p1`` ...).
    """
    import matplotlib.pyplot as plt

    if n_registers < 0 or n_patches < 1:
        raise ValueError(f"need n_registers >= 0 and n_patches >= 1, got {n_registers}, {n_patches}")
    use_style()
    tokens = _token_labels(n_registers, n_patches)
    xs = list(range(len(tokens)))
    width = max(7.0, 0.75 * len(tokens) + 2.5)
    fig, ax = plt.subplots(figsize=(width, 4.2))
    y_in, y_out = 3.0, 0.0
    ax.add_patch(plt.Rectangle((-0.6, 0.75), len(tokens) + 0.2, 1.5, facecolor=COLOURS["block"], edgecolor="grey"))
    ax.text((len(tokens) - 1) / 2, 1.5, "L Transformer blocks\n(attention: every token reads every token)",
            ha="center", va="center", fontsize=9)
    for x, (kind, label) in zip(xs, tokens):
        if kind == "dots":
            ax.text(x, y_in, label, ha="center", va="center", fontsize=12)
            ax.text(x, y_out, label, ha="center", va="center", fontsize=12)
            continue
        _box(ax, x, y_in, label, COLOURS[kind])
        _box(ax, x, y_out, label, COLOURS[kind], dashed=kind == "reg")
        ax.annotate("", xy=(x, 2.25), xytext=(x, y_in - 0.3), arrowprops={"arrowstyle": "->", "lw": 0.6})
        ax.annotate("", xy=(x, y_out + 0.3), xytext=(x, 0.75), arrowprops={"arrowstyle": "->", "lw": 0.6})
    _captions(ax, tokens, n_registers, n_patches, grid, y_in, y_out)
    ax.text(-1.0, y_in, "input", ha="right", va="center", fontsize=9, style="italic")
    ax.text(-1.0, y_out, "output", ha="right", va="center", fontsize=9, style="italic")
    ax.set_xlim(-2.2, len(tokens) + 0.2)
    ax.set_ylim(-1.6, 4.6)
    ax.axis("off")
    regs = f"{n_registers} register{'s' if n_registers != 1 else ''}" if n_registers else "no registers"
    ax.set_title(title or f"The token sequence of a ViT with {regs}: [CLS] | registers | patches ({SCHEMATIC})")
    fig.tight_layout()
    return fig


def outlier_norms(n_tokens: int = 48, outliers: tuple[int, ...] = (6, 21, 22, 37), *, normal: float = 40.0,
                  high: float = 400.0, seed: int = 0, title: str | None = None) -> Any:
    """Draw the outlier-norm picture: token norms before and after the final LayerNorm (a schematic).

    Paper: Fig. 3 (a few patch tokens with a norm ~10x the others at the output, before the final
    LayerNorm) and the pitfall behind dinov2 issues #293 and #373 (after the LayerNorm every token has
    about the same norm, so the outliers are invisible). Used in notebook 00.

    Args:
        n_tokens: number of patch tokens drawn.
        outliers: indices of the high-norm tokens.
        normal, high: typical norm of a normal and of an outlier token (illustrative values).
        seed: seed of the small jitter of the normal norms.
        title: the figure title; None writes one that says the figure is a schematic.

    Returns:
        The matplotlib Figure, two panels: "before the final LayerNorm" and "after the final LayerNorm".
    """
    import matplotlib.pyplot as plt
    import numpy as np

    bad = [i for i in outliers if not 0 <= i < n_tokens]
    if bad:
        raise ValueError(f"outlier indices {bad} outside 0..{n_tokens - 1}")
    use_style()
    rng = np.random.default_rng(seed)
    before = normal * (1 + 0.25 * rng.standard_normal(n_tokens)).clip(0.4)
    before[list(outliers)] = high * (1 + 0.1 * rng.standard_normal(len(outliers)))
    after = np.sqrt(384) * (1 + 0.03 * rng.standard_normal(n_tokens))   # LN output: norm ~ sqrt(d) times the gain
    colours = [COLOURS["outlier"] if i in outliers else "#6c757d" for i in range(n_tokens)]
    fig, axes = plt.subplots(1, 2, figsize=(9, 2.8), sharey=True)
    for ax, values, label in zip(axes, (before, after), ("before the final LayerNorm", "after the final LayerNorm")):
        ax.bar(range(n_tokens), values, color=colours, width=0.8)
        ax.set_title(label)
        ax.set_xlabel("patch token")
    axes[0].set_ylabel("‖x‖₂ (norm of the token)")
    axes[0].text(max(outliers), high * 1.1, "high-norm tokens\n(outliers)", color=COLOURS["outlier"], ha="center",
                 va="bottom", fontsize=8)
    axes[0].set_ylim(0, high * 1.45)
    fig.suptitle(title or f"A few tokens with ~10× the norm of the rest, hidden by the final LayerNorm ({SCHEMATIC})")
    fig.tight_layout()
    return fig
