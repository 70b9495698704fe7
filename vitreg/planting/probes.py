"""Planted outliers for the probes and planted relations for the dense heads (notebooks 05, 06, 09).

Paper: Fig. 5b, Table 1 and Table 2 under a known answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from vitreg.core import context, hooks
from vitreg.planting.outliers import random_outlier_mask


def plant_mask(n_images: int, grid: tuple[int, int], *, fraction: float, seed: int, start: int = 0) -> torch.Tensor:
    """Planted outlier positions for images ``start .. start + n_images - 1`` (smoke runs only).

    Each image's mask depends only on ``seed`` and its own index (so chunking does not change it), and
    every image gets at least one planted token (the outlier branch of every probe runs).
    """
    rows = []
    for i in range(start, start + n_images):
        row = random_outlier_mask(1, grid, fraction=fraction, seed=seed * 1_000_003 + i)[0]
        if not row.any():
            row[(seed + i * 7919) % row.numel()] = True
        rows.append(row)
    return torch.stack(rows) if rows else torch.zeros(0, grid[0] * grid[1], dtype=torch.bool)


@dataclass
class PlantedOutliers:
    """The outliers a :func:`planted_outlier_share` context adds (its settings enter the feature cache key).

    Attributes:
        fraction: expected share of planted patches per image (at least one per image).
        norm: norm of the vector added at the planted tokens.
        seed: seed of the masks (with the image index) and of the vector's direction.
        block: block at whose output the vector is added.
        next_image: index, in the current extraction, of the next image the model will see.
    """

    fraction: float
    norm: float
    seed: int
    block: int
    next_image: int = field(default=0, compare=False)

    def fingerprint(self) -> dict:
        """The settings that change the features (for cache keys: :func:`vitreg.utils.cache.model_fields`)."""
        return {k: v for k, v in asdict(self).items() if k != "next_image"}

    key = fingerprint

    def at_image(self, index: int) -> None:
        """The next image the model sees is image ``index`` of the current extraction."""
        self.next_image = int(index)

    def mask(self, start: int, n_images: int, grid: tuple[int, int]) -> torch.Tensor:
        """``(n_images, h*w)`` planted positions of images ``start .. start + n_images - 1``."""
        return plant_mask(n_images, grid, fraction=self.fraction, seed=self.seed, start=start)


@contextlib.contextmanager
def planted_outlier_share(loaded: Any, *, fraction: float, norm: float = 1000.0, seed: int = 0,
                     block: int | None = None) -> Iterator[PlantedOutliers | None]:
    """Plant high-norm patch tokens in every forward pass of ``loaded`` inside the block (smoke runs).

    Paper: Fig. 5b, Table 1 (notebooks 05 and 06 check their claims on planted outliers when the
    weights are random). Image ``i`` of an extraction gets :func:`plant_mask`'s row ``i`` (seeded by
    ``seed`` and ``i`` only, so chunk and batch sizes do not change it). While active, the settings are the
    model's experiment context (:func:`vitreg.core.context.current`): the feature functions tell it which image
    comes next and pass its fingerprint to the cache key, so planted and clean features never share an entry.
    ``fraction <= 0`` plants nothing (the real experiment) and yields None.

    Args:
        loaded: a :class:`vitreg.core.weights.LoadedModel`.
        fraction: share of patches planted per image.
        norm: norm of the added vector.
        seed: seed of the masks and of the vector's direction.
        block: block at whose output the vector is added (default: the middle block).
    """
    if fraction <= 0:
        yield None
        return
    spec = PlantedOutliers(float(fraction), float(norm), int(seed),
                           loaded.num_blocks // 2 if block is None else int(block))
    gen = torch.Generator().manual_seed(spec.seed)
    vec = torch.randn(hooks.residual_width(loaded.model, spec.block), generator=gen)
    vec = vec / vec.norm() * spec.norm
    prefix = loaded.layout.num_prefix

    def hook(out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        masks = spec.mask(spec.next_image, out.shape[0], loaded.layout.grid)
        for i, row in enumerate(masks):
            idx = (row.nonzero().flatten() + prefix).tolist()
            if idx:
                out[i, idx] += vec.to(out.device, out.dtype)
        spec.next_image += out.shape[0]
        return out

    with hooks.write(loaded.model, f"blocks.{spec.block}.out", hook), context.entered(loaded.model, spec):
        yield spec


def at_image(loaded: Any, index: int) -> None:
    """Tell an active :func:`planted_outlier_share` context that the next image forwarded is image ``index``
    of the extraction (a no-op on a clean model)."""
    spec = context.current(loaded.model)
    if spec is not None:
        spec.at_image(index)


def planted_mask(loaded: Any, start: int, n_images: int) -> torch.Tensor:
    """``(n_images, N)`` bool: the patches planted in images ``start ..`` (all False on a clean model)."""
    spec = context.current(loaded.model)
    if spec is None:
        return torch.zeros(n_images, loaded.layout.num_patches, dtype=torch.bool)
    return spec.mask(start, n_images, loaded.layout.grid)


# ---------------------------------------------------------------------------------------------------
def _cell_maps(gen: torch.Generator, n: int, grid: tuple[int, int], n_values: int) -> torch.Tensor:
    """Random piecewise-constant class maps: blocks of 2x2 cells share a class."""
    h, w = grid
    coarse = torch.randint(0, n_values, (n, (h + 1) // 2, (w + 1) // 2), generator=gen)
    return coarse.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, :h, :w]


def planted_segmentation(n_train: int, n_test: int, *, grid: tuple[int, int] = (8, 8), dim: int = 32,
                         n_classes: int = 5, upsample: int = 4, noise: float = 0.5, planted: bool = True,
                         seed: int = 0) -> tuple[dict, dict]:
    """Patch tokens whose class is planted: token = prototype of its cell's class + noise.

    Train and test share the prototypes (the relation) but not the images. With ``planted=False`` the
    tokens come from an independent class map (the noise control: the labels cannot be read from them).

    Returns:
        ``(train, test)``, each ``{"patch": (n, h, w, dim), "labels": (n, h*upsample, w*upsample) uint8}``.
    """
    gen = torch.Generator().manual_seed(seed)
    protos = torch.randn(n_classes, dim, generator=gen)

    def make(n: int) -> dict:
        labels = _cell_maps(gen, n, grid, n_classes)
        source = labels if planted else _cell_maps(gen, n, grid, n_classes)
        patch = protos[source] + noise * torch.randn(n, *grid, dim, generator=gen)
        up = labels.repeat_interleave(upsample, 1).repeat_interleave(upsample, 2).to(torch.uint8)
        return {"patch": patch, "labels": up}

    return make(n_train), make(n_test)


def planted_depth(n_train: int, n_test: int, *, grid: tuple[int, int] = (8, 8), dim: int = 32, upsample: int = 4,
                  depth_range: tuple[float, float] = (1.0, 9.0), noise: float = 0.3, planted: bool = True,
                  seed: int = 0) -> tuple[dict, dict]:
    """Patch tokens that encode their cell's depth along a planted direction (+ noise).

    ``token = 3 * (depth - mid) / half_range * u + noise``, ``u`` a random unit direction shared by train
    and test. With ``planted=False`` the tokens encode an independent depth map (the noise control).

    Returns:
        ``(train, test)``, each ``{"patch": (n, h, w, dim), "cls": (n, dim), "depth": (n, h*upsample, w*upsample)}``.
    """
    gen = torch.Generator().manual_seed(seed)
    lo, hi = depth_range
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    u = torch.randn(dim, generator=gen)
    u = u / u.norm()

    def depth_map(n: int) -> torch.Tensor:
        return lo + (hi - lo) * _cell_maps(gen, n, grid, 16).float() / 15.0

    def make(n: int) -> dict:
        depth = depth_map(n)
        source = depth if planted else depth_map(n)
        patch = ((source - mid) / half)[..., None] * u * 3.0 + noise * torch.randn(n, *grid, dim, generator=gen)
        up = depth.repeat_interleave(upsample, 1).repeat_interleave(upsample, 2)
        return {"patch": patch, "cls": noise * torch.randn(n, dim, generator=gen), "depth": up}

    return make(n_train), make(n_test)
