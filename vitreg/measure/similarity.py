"""Local redundancy: cosine similarity of each patch to its 4 grid neighbours.

Paper: Fig. 5a (right after the patch embedding, outliers' neighbour similarity sits near 1; normal
patches' is much wider). Used in notebook 04. Whether the paper added the position embedding first is
not stated: notebook 04 measures both (``Recording.embed`` and ``Recording.embed_pos``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F


def neighbour_similarity(grid: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity of every patch to its up/down/left/right neighbours.

    Paper: Fig. 5a. Border patches average over the neighbours they have (2 in corners, 3 on edges).

    Args:
        grid: ``(B, h, w, D)`` patch features on the grid (``TokenLayout.to_grid``).

    Returns:
        ``(B, h, w)`` float similarities in [-1, 1].
    """
    if grid.dim() != 4:
        raise ValueError(f"grid must be (B, h, w, D), got shape {tuple(grid.shape)}; use layout.to_grid first")
    b, h, w, _ = grid.shape
    if h * w < 2:
        raise ValueError("a 1x1 grid has no neighbours")
    x = F.normalize(grid.float(), dim=-1)
    total = torch.zeros(b, h, w, device=x.device)
    count = torch.zeros(1, h, w, device=x.device)
    vert = (x[:, 1:] * x[:, :-1]).sum(-1)  # (B, h-1, w): similarity of (i, j) and (i+1, j)
    horz = (x[:, :, 1:] * x[:, :, :-1]).sum(-1)  # (B, h, w-1)
    total[:, 1:] += vert
    total[:, :-1] += vert
    total[:, :, 1:] += horz
    total[:, :, :-1] += horz
    count[:, 1:] += 1
    count[:, :-1] += 1
    count[:, :, 1:] += 1
    count[:, :, :-1] += 1
    return total / count


def split_by_mask(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split per-patch values into (marked, unmarked) flat tensors.

    Paper: Fig. 5a (outlier vs normal patches).

    Args:
        values: per-patch values ``(B, h, w)`` or ``(B, N)``.
        mask: bool mask covering the same patches, ``(B, h, w)`` or ``(B, N)``.

    Returns:
        ``(values[mask], values[~mask])`` as 1-D tensors.
    """
    if values.numel() != mask.numel() or values.shape[0] != mask.shape[0]:
        raise ValueError(f"values {tuple(values.shape)} and mask {tuple(mask.shape)} cover different patches")
    v = values.reshape(values.shape[0], -1).float()
    m = mask.reshape(mask.shape[0], -1).bool()
    return v[m], v[~m]


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` predicting ``labels`` (ties count one half).

    Paper: Fig. 5a made a number: how well neighbour similarity predicts that a patch becomes an
    outlier. Computed as the Mann-Whitney U statistic with average ranks (equals sklearn's
    ``roc_auc_score``); 1.0 = perfect, 0.5 = chance.

    Args:
        scores: any shape, higher = more likely positive.
        labels: bool/0-1 of the same shape.

    Returns:
        the AUC; raises if one class is empty.
    """
    s = scores.reshape(-1).double()
    y = labels.reshape(-1).bool()
    if s.shape != y.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} differ in size")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs both classes, got {n_pos} positives and {n_neg} negatives; "
                         "lower the threshold or use more images")
    ranks = _average_ranks(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def similarity_summary(sim: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Numbers for Fig. 5a: mean/median similarity of outliers and normal patches, counts, and the AUC.

    Args:
        sim: ``(B, h, w)`` neighbour similarities.
        mask: outlier mask covering the same patches.

    Returns:
        dict; the AUC is ``nan`` when one group is empty.
    """
    out_v, norm_v = split_by_mask(sim, mask)
    nan = float("nan")
    return {
        "n_outlier": int(out_v.numel()),
        "n_normal": int(norm_v.numel()),
        "mean_outlier": float(out_v.mean()) if out_v.numel() else nan,
        "mean_normal": float(norm_v.mean()) if norm_v.numel() else nan,
        "median_outlier": float(out_v.median()) if out_v.numel() else nan,
        "median_normal": float(norm_v.median()) if norm_v.numel() else nan,
        "auc": roc_auc(sim, mask.reshape(sim.shape)) if out_v.numel() and norm_v.numel() else nan,
    }


#: Our read-out threshold (not a paper number) on how far adding the position embedding may move a mean.
POSITION_EMBEDDING_SHIFT = 0.02


def position_embedding_changes(before: Mapping[str, float], after: Mapping[str, float], *,
                               by: float = POSITION_EMBEDDING_SHIFT) -> bool:
    """Whether adding the position embedding moves either group's mean similarity by more than ``by``.

    Paper: Fig. 5a. The paper does not say whether the position embedding was added before measuring
    (notes F4), so notebook 04 measures both and reports this flag as a robustness read-out (no verdict).

    Args:
        before, after: :func:`similarity_summary` outputs at the patch embedding and after the position
            embedding.
        by: largest shift of a mean that still counts as no change.
    """
    return bool(abs(before["mean_outlier"] - after["mean_outlier"]) > by
                or abs(before["mean_normal"] - after["mean_normal"]) > by)


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of ``x`` with ties given their average rank (like scipy's rankdata)."""
    sorted_x, order = torch.sort(x, stable=True)
    n = x.numel()
    # group boundaries of equal values
    new_group = torch.ones(n, dtype=torch.bool)
    new_group[1:] = sorted_x[1:] != sorted_x[:-1]
    group_id = torch.cumsum(new_group.long(), 0) - 1
    positions = torch.arange(1, n + 1, dtype=torch.float64)
    n_groups = int(group_id[-1]) + 1
    sums = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, group_id, positions)
    counts = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, group_id, torch.ones(n, dtype=torch.float64))
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[order] = (sums / counts)[group_id]
    return ranks


def patch_embedding_similarity(loaded, images, *, block: int = -1, batch_size: int = 8,
                               progress: bool = True) -> dict[str, torch.Tensor]:
    """Neighbour similarity at the patch embedding (before and after the position embedding) and the
    patch norms at ``block``'s output, batch by batch so that large models and many images fit in memory.

    Paper: Fig. 5a (similarity before any block; outliers decided by the output norm).

    Args:
        loaded: a :class:`vitreg.core.weights.LoadedModel`.
        images: a sequence of images (paths, PIL, arrays).
        block: block whose output norms decide the outliers (-1: the last, pre final LayerNorm).
        batch_size: images per forward pass.
        progress: show a progress bar.

    Returns:
        dict with ``embed`` and ``embed_pos`` ``(B, h, w)`` similarities and ``norms`` ``(B, N)`` patch norms.
    """
    from vitreg.core.stream import stream

    layout = loaded.layout
    out: dict[str, list[torch.Tensor]] = {"embed": [], "embed_pos": [], "norms": []}
    for batch in stream(loaded, list(images), batch_size=batch_size, progress=progress,
                        desc=f"{loaded.spec.key} similarity", embed=True, norms=[block]):
        out["embed"].append(neighbour_similarity(layout.to_grid(batch.rec.embed)))
        out["embed_pos"].append(neighbour_similarity(layout.patch_grid(batch.rec.embed_pos)))
        out["norms"].append(layout.patches(batch.rec.norms[block]))
    return {k: torch.cat(v) for k, v in out.items()}
