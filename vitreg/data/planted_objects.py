"""Synthetic token features with a planted object, and the object boxes: LOST's data with a known answer.

Paper: Table 3 (LOST on feature maps where the object is known). Plain tensors, no model: the data behind
:func:`vitreg.measure.lost.planted_corloc`, re-exported by :mod:`vitreg.planting` with the rest of the planted truth.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def planted_feature_maps(
    boxes_patch: torch.Tensor | Sequence[Sequence[int]],
    grid: tuple[int, int],
    *,
    dim: int = 32,
    noise: float = 0.1,
    num_prefix: int = 0,
    artifact: Sequence[int] | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Synthetic token features with a planted object: what LOST must find (Table 3, planted).

    Background patches share one direction, object patches another (negatively correlated with the
    background), both with a little noise: the object patches are mutually similar and distinct from
    the rest, as the features of a self-supervised ViT are. Prefix tokens (random, large) can be put in
    front to check that they are sliced off.

    Args:
        boxes_patch: ``(B, 4)`` object boxes ``(x0, y0, x1, y1)`` in patch units, end exclusive.
        grid: ``(h, w)``.
        dim: feature width.
        noise: per-entry Gaussian noise (relative to unit-norm directions).
        num_prefix: number of [CLS]/register tokens to put in front (given huge norms).
        artifact: optional ``(B,)`` patch index per image turned into an "artifact": a token pointing
            in its own direction, dissimilar to everything (what a high-norm outlier looks like to LOST).
        seed: random seed.

    Returns:
        ``(B, num_prefix + h * w, dim)`` float32.
    """
    gen = torch.Generator().manual_seed(seed)
    boxes = torch.as_tensor(np.asarray(boxes_patch, dtype=np.int64)).reshape(-1, 4)
    b, (h, w) = len(boxes), grid
    basis = torch.linalg.qr(torch.randn(dim, 4, generator=gen)).Q.T  # 4 orthonormal directions
    bg_dir, obj_dir, art_dir = basis[0], basis[1] - 0.5 * basis[0], basis[2] - 0.5 * basis[0] - 0.5 * basis[1]
    x = bg_dir.repeat(b, h, w, 1)
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        x[i, y0:y1, x0:x1] = obj_dir
    x = x + noise * torch.randn(b, h, w, dim, generator=gen)
    x = x.reshape(b, h * w, dim)
    if artifact is not None:
        idx = torch.as_tensor(list(artifact)).reshape(b)
        x[torch.arange(b), idx] = 10.0 * art_dir
    if num_prefix:
        prefix = 100.0 * torch.randn(b, num_prefix, dim, generator=gen)
        x = torch.cat([prefix, x], dim=1)
    return x


def planted_objects(n_images: int, grid: tuple[int, int], *, seed: int = 0) -> tuple[list[list[int]], list[int]]:
    """Random object boxes (3-7 patches a side) and one background "artifact" patch per image.

    The draws behind :func:`vitreg.measure.lost.planted_corloc` (Table 3's mechanism with a known answer).

    Returns:
        ``(boxes, artifacts)``: ``(x0, y0, x1, y1)`` patch boxes, end exclusive, and patch indices
        outside each box.
    """
    rng = np.random.default_rng(seed)
    h, w = grid
    boxes, artifacts = [], []
    for _ in range(n_images):
        bh, bw = rng.integers(3, 8, size=2)
        y0, x0 = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        boxes.append([x0, y0, x0 + int(bw), y0 + int(bh)])
        free = [i for i in range(h * w) if not (y0 <= i // w < y0 + bh and x0 <= i % w < x0 + bw)]
        artifacts.append(int(rng.choice(free)))
    return boxes, artifacts
