"""Attention maps of prefix tokens ([CLS], registers) over the patch grid, and an artifact score.

Paper: Fig. 1-2 (last-layer [CLS] attention: spiky background patches in DeiT-III, OpenCLIP and DINOv2,
none in DINO), App. F Fig. 18 (per-head maps), Fig. 9 and App. D.3 Fig. 16 (register maps).
Used in notebooks 01 (artifacts), 02 (Fig. 21 norm map beside attention) and 07 (registers).

Input is ``Recording.attn[b]``: ``(B, heads, rows, T)`` softmax probabilities, where ``rows`` is either
all ``T`` tokens or only the prefix tokens (``attn_rows="prefix"``); prefix tokens come first in both,
so row ``i`` is always prefix token ``i`` (0 = [CLS], 1.. = registers when there is a [CLS]).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from vitreg.tokens import TokenLayout, prefix_names, prefix_row  # noqa: F401  (prefix_*: re-exported, they live in tokens)


def attention_maps(attn: torch.Tensor, layout: TokenLayout, *, token: int | str = "cls",
                   heads: Literal["mean", "all"] = "mean", renormalize: bool = True) -> torch.Tensor:
    """Attention of one prefix token to the patches, on the patch grid.

    Paper: Fig. 2 (mean over heads of last-layer [CLS] attention, as in [TTR]); App. F (per head).

    Args:
        attn: ``(B, heads, rows, T)`` attention probabilities from ``Recording.attn[block]``.
        layout: the model's :class:`TokenLayout` (drops ``1 + R`` prefix tokens, not 1).
        token: which prefix row: index or name (``"cls"``, ``"reg0"``...).
        heads: ``"mean"`` averages heads -> ``(B, h, w)``; ``"all"`` keeps them -> ``(B, heads, h, w)``.
        renormalize: rescale each map to sum to 1 over the patches (the mass on prefix tokens removed).
            With ``"mean"`` the heads are averaged first, so the map is [TTR]'s mean over heads, rescaled: a
            head that sends almost all its attention to the registers keeps its small weight on the patches
            instead of being blown up to the weight of the others.

    Returns:
        the maps, float.
    """
    if attn.dim() != 4:
        raise ValueError(f"attn must be (B, heads, rows, T), got shape {tuple(attn.shape)}")
    layout.check(attn, dim=3)
    row = prefix_row(layout, token)
    if row >= attn.shape[2]:
        raise ValueError(f"attn has {attn.shape[2]} query rows; capture with attn_rows='prefix' or 'all'")
    patches = attn[:, :, row, layout.patch_slice].float()  # (B, H, N)
    if heads == "mean":
        patches = patches.mean(dim=1)
    elif heads != "all":
        raise ValueError(f"heads must be 'mean' or 'all', got {heads!r}")
    if renormalize:
        patches = patches / patches.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return patches.reshape(*patches.shape[:-1], *layout.grid)


def upsample_maps(maps: torch.Tensor, size: tuple[int, int], *,
                  mode: Literal["nearest", "bilinear", "bicubic"] = "nearest") -> torch.Tensor:
    """Upsample grid maps to image resolution for display.

    Paper: Fig. 2 ("computed in high resolution"); record the mode used. ``nearest`` keeps single
    artifact patches visible as squares; ``bilinear`` smooths them.

    Args:
        maps: ``(..., h, w)`` maps.
        size: ``(H, W)`` target size in pixels.
        mode: interpolation mode.

    Returns:
        ``(..., H, W)`` maps.
    """
    lead = maps.shape[:-2]
    flat = maps.float().reshape(-1, 1, *maps.shape[-2:])
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    out = F.interpolate(flat, size=tuple(size), mode=mode, **kwargs)
    return out.reshape(*lead, *out.shape[-2:])


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale every map (last two dims) to [0, 1] for display."""
    flat = maps.float().flatten(-2)
    lo = flat.min(dim=-1, keepdim=True).values
    hi = flat.max(dim=-1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).reshape(maps.shape)


def top_share(maps: torch.Tensor, *, top_frac: float = 0.02) -> torch.Tensor:
    """ARTIFACT SCORE: share of a map's attention mass on its top ``top_frac`` of patches.

    Paper: Fig. 2 made a number: artifact maps put most of their mass on a handful of patches
    (DINOv2, DeiT-III, OpenCLIP); DINO spreads it over the object. A uniform map scores ``k / N``
    (about ``top_frac``), a map with all mass on k patches scores 1.

    Args:
        maps: ``(..., h, w)`` non-negative maps on the patch grid (need not sum to 1).
        top_frac: share of patches counted as "top"; at least one patch.

    Returns:
        ``(...)`` scores in [0, 1].
    """
    flat = _flat(maps)
    k = max(1, math.ceil(top_frac * flat.shape[-1]))
    top = flat.topk(k, dim=-1).values.sum(dim=-1)
    return top / flat.sum(dim=-1).clamp_min(1e-12)


def mask_share(maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of a map's attention mass on masked patches (e.g. the high-norm outliers).

    Paper: Fig. 2 and Fig. 21 (the attention spikes sit on the high-norm tokens).

    Args:
        maps: ``(B, h, w)`` non-negative maps on the patch grid.
        mask: bool mask ``(B, h, w)`` or ``(B, h * w)`` (row-major, as ``outlier_mask`` gives).

    Returns:
        ``(B,)`` shares in [0, 1]; 0 for images without masked patches.
    """
    if maps.dim() != 3 or mask.shape[0] != maps.shape[0] or mask[0].numel() != maps[0].numel():
        raise ValueError(f"maps {tuple(maps.shape)} must be (B, h, w) and mask {tuple(mask.shape)} cover the same patches")
    flat, m = _flat(maps), mask.reshape(maps.shape[0], -1).bool()
    return (flat * m).sum(dim=-1) / flat.sum(dim=-1).clamp_min(1e-12)


def share_on_mask(maps: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Attention mass on masked patches (the high-norm outliers) against their share of the patches.

    Paper: Fig. 2 and Fig. 21 (the [CLS] attention spikes sit on the high-norm tokens). Used in notebook 02:
    a ``ratio`` above 1 means the maps attend to the outliers more than their number alone explains.

    Args:
        maps: ``(B, h, w)`` non-negative maps on the patch grid.
        mask: bool mask ``(B, h, w)`` or ``(B, h * w)`` (row-major, as ``outlier_mask`` gives).

    Returns:
        ``mean_share``: the mean of :func:`mask_share` over the images that have a masked patch (NaN when
        none has); ``patch_share``: the share of masked patches over all images; ``ratio``: ``mean_share /
        patch_share`` (NaN when nothing is masked); ``n_images``: images with a masked patch.
    """
    share = mask_share(maps, mask)
    marked = mask.reshape(mask.shape[0], -1).any(dim=1)
    mean_share = float(share[marked].mean()) if marked.any() else float("nan")
    patch_share = float(mask.float().mean())
    ratio = mean_share / patch_share if patch_share > 0 else float("nan")
    return {"mean_share": mean_share, "patch_share": patch_share, "ratio": ratio, "n_images": int(marked.sum())}


def peak_positions(maps: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Grid positions ``(row, col)`` of the ``k`` largest values of each map.

    Args:
        maps: ``(..., h, w)`` maps.
        k: number of peaks.

    Returns:
        ``(..., k, 2)`` long tensor of (row, col), strongest first.
    """
    w = maps.shape[-1]
    idx = _flat(maps).topk(k, dim=-1).indices
    return torch.stack([idx // w, idx % w], dim=-1)


def artifact_scores(maps: torch.Tensor, *, top_frac: float = 0.02,
                    outliers: torch.Tensor | None = None) -> dict[str, float]:
    """Summary of artifact scores over images, for a results file.

    Args:
        maps: ``(B, h, w)`` mean-over-heads maps.
        top_frac: see :func:`top_share`.
        outliers: optional ``(B, N)`` high-norm mask; adds the mass share on outliers.

    Returns:
        dict with mean/median top share (and outlier share), plus the uniform baseline.
    """
    scores = top_share(maps, top_frac=top_frac)
    n = maps.shape[-1] * maps.shape[-2]
    out = {
        "top_share_mean": float(scores.mean()),
        "top_share_median": float(scores.median()),
        "top_share_uniform": max(1, math.ceil(top_frac * n)) / n,
        "top_frac": top_frac,
    }
    if outliers is not None:
        share = mask_share(maps, outliers)
        out["outlier_share_mean"] = float(share.mean())
        out["outlier_fraction"] = float(outliers.float().mean())
    return out


def _flat(maps: torch.Tensor) -> torch.Tensor:
    if maps.dim() < 2:
        raise ValueError(f"maps must be (..., h, w) on the patch grid, got shape {tuple(maps.shape)}")
    return maps.float().flatten(-2)
