"""The positional artifact that registers do not remove (beyond the paper).

Paper: not in "Vision Transformers Need Registers"; Yang et al., "Denoising Vision Transformers" (ECCV
2024; README, References): ViT features carry a second, input-independent grid pattern driven by the position
embeddings alone; an all-zero image shows it, and registers do not remove it. Used in notebook 11.

The measure: split the variance of patch features over many images into a part explained by the patch
POSITION (the per-position mean across images varies with position), a part explained by the IMAGE (the
per-image mean varies across images) and the rest (content that varies within an image). A feature map
that is the same grid pattern on every image has a high position share; content has a low one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vitreg.core.stream import stream


def variance_shares(features: torch.Tensor) -> dict[str, float]:
    """Split the variance of ``(N images, P positions, D)`` patch features into position, image and rest.

    Paper: Denoising ViT (Yang et al. 2024), the position-driven artifact. Two-way decomposition without
    interaction: ``position`` = variance of the per-position mean (over images) across positions, ``image``
    = variance of the per-image mean (over positions) across images, ``rest`` = the remainder; each a share
    (0-1) of the total variance (summed over channels), corrected for the share that noise alone puts into
    a mean over N images (``position_raw`` is the uncorrected share, about 1/N for pure noise).
    ``within_image_position`` is the position share
    measured within single images (variance across positions of one image / total): high for any spatial
    structure, so only its gap to ``position`` says that the pattern repeats across images.

    Args:
        features: ``(N, P, D)`` with N >= 2 images.
    """
    if features.ndim != 3 or features.shape[0] < 2 or features.shape[1] < 2:
        raise ValueError(f"need (N >= 2, P >= 2, D) patch features, got {tuple(features.shape)}")
    f = features.double()
    n, p = f.shape[:2]
    grand = f.mean(dim=(0, 1), keepdim=True)
    total = float(((f - grand) ** 2).sum(-1).mean())
    if total <= 0:
        return {"position": 0.0, "position_raw": 0.0, "image": 0.0, "rest": 0.0, "within_image_position": 0.0}
    pos_mean, img_mean = f.mean(0, keepdim=True), f.mean(1, keepdim=True)
    # residual variance (two-way ANOVA, (N-1)(P-1) degrees of freedom): the per-position mean of N images
    # carries 1/N of it even when position explains nothing, so it is subtracted (no 1/N floor for noise)
    noise = float(((f - pos_mean - img_mean + grand) ** 2).sum(-1).sum()) / ((n - 1) * (p - 1))
    pos_raw = float(((pos_mean - grand) ** 2).sum(-1).mean())
    img_raw = float(((img_mean - grand) ** 2).sum(-1).mean())
    pos, img = max(0.0, pos_raw - noise / n) / total, max(0.0, img_raw - noise / p) / total
    within = float(((f - img_mean) ** 2).sum(-1).mean()) / total
    return {"position": pos, "position_raw": pos_raw / total, "image": img, "rest": max(0.0, 1.0 - pos - img),
            "within_image_position": within}


def template_correlation(zero_features: torch.Tensor, features: torch.Tensor) -> float:
    """Correlation between an all-zero image's patch features and the per-position mean over images.

    Paper: Denoising ViT Fig. 1 (the artifact is visible on a blank input). Both are centred over positions
    (per channel) and compared as flat vectors: near 1 when the blank image shows the same grid pattern the
    natural images share.

    Args:
        zero_features: ``(P, D)`` features of the all-zero image.
        features: ``(N, P, D)`` features of natural images.
    """
    a = zero_features.double() - zero_features.double().mean(0, keepdim=True)
    m = features.double().mean(0)
    b = m - m.mean(0, keepdim=True)
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))


def patch_features(loaded: Any, images: Sequence[Any], *, batch_size: int = 8, progress: bool = True) -> torch.Tensor:
    """``(N, P, D)`` patch features at the output (after the final norm), split through the token layout.

    Paper: Denoising ViT studies the output features; extra tokens (test-time registers) are dropped by
    the layout, so the same call serves a model with an appended token.
    """
    out = [loaded.layout.patches(b.rec.final_norm) for b in
           stream(loaded, images, batch_size=batch_size, progress=progress, final_norm=True)]
    return torch.cat(out)


def zero_image_features(loaded: Any) -> torch.Tensor:
    """``(P, D)`` output patch features of an all-zero input (zero AFTER normalisation: only positions differ).

    Paper: Denoising ViT Fig. 1: the blank input shows the position-driven grid.
    """
    h, w = loaded.image_size
    x = torch.zeros(1, 3, h, w, device=loaded.device)
    with torch.inference_mode():
        tokens = loaded.forward(x)
    return loaded.layout.patches(tokens)[0].float().cpu()


def first_component_map(features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``(h, w)`` projection of ``(P, D)`` patch features on their first principal component (a picture)."""
    f = features.double() - features.double().mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(f, full_matrices=False)
    return (f @ v[0]).reshape(grid).float()
