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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from vitreg.core.models import get_spec
from vitreg.core.tokens import TokenLayout, prefix_row


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


def uniform_top_share(grid_patches: int, top_frac: float = 0.02) -> float:
    """What a uniform map scores on :func:`top_share` over ``grid_patches`` patches: ``k / N``, ``k = ceil(top_frac N)``.

    Paper: Fig. 2. The rounding of ``k`` makes it differ between grids (16x16: 6/256 = 0.0234; 37x37:
    28/1369 = 0.0205), which is why :func:`artifact_score` subtracts it.
    """
    return max(1, math.ceil(top_frac * grid_patches)) / grid_patches


def artifact_score(maps: torch.Tensor, *, top_frac: float = 0.02) -> torch.Tensor:
    """ARTIFACT SCORE on any grid: the top-patch share above the uniform baseline of the map's own grid.

    Paper: Fig. 2 made a number that can compare a 37x37 DINOv2 map with a 14x14 DINO map:
    ``(top_share - u) / (1 - u)`` with ``u`` = :func:`uniform_top_share` of the grid. A uniform map scores 0
    on every grid, a map with all its mass on the top patches 1, and a spike holding a mass ``m`` on one
    patch over a uniform rest scores ``(N m - 1) / (N - 1)`` (about ``m``) whatever the grid and ``top_frac``.

    Args:
        maps: ``(..., h, w)`` non-negative maps on the patch grid.
        top_frac: share of patches counted as "top"; at least one patch.

    Returns:
        ``(...)`` scores in [0, 1] (slightly below 0 is impossible: the top k hold at least ``k / N``).
    """
    u = uniform_top_share(maps.shape[-1] * maps.shape[-2], top_frac)
    return (top_share(maps, top_frac=top_frac) - u) / (1 - u)


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
        dict with mean/median :func:`artifact_score` (the grid-normalised score the claims use), mean/median
        raw top share, the grid's uniform baseline (and the outlier share).
    """
    scores = top_share(maps, top_frac=top_frac)
    grid_scores = artifact_score(maps, top_frac=top_frac)
    out = {
        "artifact_score_mean": float(grid_scores.mean()),
        "artifact_score_median": float(grid_scores.median()),
        "top_share_mean": float(scores.mean()),
        "top_share_median": float(scores.median()),
        "top_share_uniform": uniform_top_share(maps.shape[-1] * maps.shape[-2], top_frac),
        "top_frac": top_frac,
    }
    if outliers is not None:
        share = mask_share(maps, outliers)
        out["outlier_share_mean"] = float(share.mean())
        out["outlier_fraction"] = float(outliers.float().mean())
    return out


ARTIFACT_FAMILIES = ("dinov2", "deit3", "clip")   # Fig. 1-2: spiky background patches in the [CLS] maps
CONTROL_FAMILIES = ("mae",)                        # App. E: MAE ViT-L shows none
REFERENCE_FAMILY = "dino"                          # Fig. 2: DINO (v1) shows none; the baseline of the score


@dataclass
class ArtifactMaps:
    """Last-layer [CLS] attention of one model and its artifact scores (Paper: Fig. 2 and App. F, Fig. 18).

    Attributes:
        maps: ``(B, h, w)`` mean-over-heads maps, renormalised over the patches.
        per_head: ``(B, heads, h, w)`` per-head maps.
        scores: ``(B,)`` artifact score (:func:`artifact_score`, grid-normalised) of each image's mean map.
        head_scores: ``(B, heads)`` artifact score of each head.
        summary: :func:`artifact_scores` plus ``per_head_score`` (the mean over images of each head's score).
    """

    maps: torch.Tensor
    per_head: torch.Tensor
    scores: torch.Tensor
    head_scores: torch.Tensor
    summary: dict[str, Any]


def artifact_maps(attn: torch.Tensor, layout: TokenLayout, *, top_frac: float = 0.02,
                  outliers: torch.Tensor | None = None) -> ArtifactMaps:
    """Mean and per-head [CLS] maps of one model with their artifact scores.

    Paper: Fig. 2 (mean over heads, as [TTR]) and App. F, Fig. 18 (every head). Used in notebook 01.

    Args:
        attn: ``(B, heads, rows, T)`` last-block attention (``Recording.attn[-1]``).
        layout: the model's token layout.
        top_frac: see :func:`top_share`.
        outliers: optional ``(B, N)`` high-norm mask (adds the attention share on them to the summary).
    """
    maps = attention_maps(attn, layout)
    per_head = attention_maps(attn, layout, heads="all")
    head_scores = artifact_score(per_head, top_frac=top_frac)
    summary = {"per_head_score": head_scores.mean(dim=0).tolist(),
               **artifact_scores(maps, top_frac=top_frac, outliers=outliers)}
    return ArtifactMaps(maps, per_head, artifact_score(maps, top_frac=top_frac), head_scores, summary)


def artifact_claims(summaries: Mapping[str, Mapping[str, Any]], head_scores: torch.Tensor | None, head_model: str,
                    *, paper_models: Iterable[str] = ()) -> dict[str, Any]:
    """The shape of F1 as numbers: artifact models above DINO, MAE below them, DINOv2's heads above DINO's.

    Paper: Fig. 1-2 (DINOv2, DeiT-III, OpenCLIP have artifacts; DINO none), App. E (MAE none), App. F,
    Fig. 18 (artifacts in all heads of DINOv2-L). Used in notebook 01; the bounds live in
    data/paper_numbers.yaml. Scores are :func:`artifact_score` (above each grid's uniform baseline), so
    DINO at 14x14 and DINOv2 at 37x37 compare on the same scale.

    Args:
        summaries: model key -> :attr:`ArtifactMaps.summary` plus ``family`` (the models run).
        head_scores: ``(B, heads)`` head scores of ``head_model`` (None when it did not run).
        head_model: the model whose heads are compared with DINO's.
        paper_models: model keys the paper makes claims about: those not run get ``{"skipped": ...}``.

    Returns:
        ``{"claims": {"artifact_minus_dino": {model: artifact_score_mean - max DINO's}, "control_minus_artifacts":
        {model: score - min artifact-model score}}, "head_model": {"model", "heads_above_dino_pct",
        ...}}``; a value that cannot be computed is ``{"skipped": why}``.
    """
    def family(name: str) -> str:
        return summaries[name]["family"] if name in summaries else get_spec(name).family

    names = list(dict.fromkeys([*summaries, *paper_models]))
    dino = [n for n in summaries if summaries[n]["family"] == REFERENCE_FAMILY]
    artifact = [n for n in summaries if summaries[n]["family"] in ARTIFACT_FAMILIES]
    above, below = {}, {}
    ref = max(summaries[n]["artifact_score_mean"] for n in dino) if dino else None
    low = min(summaries[n]["artifact_score_mean"] for n in artifact) if artifact else None
    for n in names:
        if family(n) not in ARTIFACT_FAMILIES + CONTROL_FAMILIES:
            continue
        side, base, none = ((above, ref, "no DINO model in models") if family(n) in ARTIFACT_FAMILIES
                            else (below, low, "no artifact model in models"))
        side[n] = ({"skipped": f"{n} not in models"} if n not in summaries else {"skipped": none} if base is None
                   else summaries[n]["artifact_score_mean"] - base)
    head = {"model": head_model}
    if dino and head_scores is not None:
        # per-head maps are spikier than their mean, so heads are compared with DINO's heads, not its mean map
        ref_head = max(sum(summaries[n]["per_head_score"]) / len(summaries[n]["per_head_score"]) for n in dino)
        head.update(heads_above_dino_pct=100 * float((head_scores.mean(dim=0) > ref_head).float().mean()),
                    dino_mean_head_score=ref_head)
    else:
        head["heads_above_dino_pct"] = {"skipped": "no DINO model in models" if not dino else f"{head_model} did not run"}
    return {"claims": {"artifact_minus_dino": above, "control_minus_artifacts": below}, "head_model": head}


def _flat(maps: torch.Tensor) -> torch.Tensor:
    if maps.dim() < 2:
        raise ValueError(f"maps must be (..., h, w) on the patch grid, got shape {tuple(maps.shape)}")
    return maps.float().flatten(-2)
