"""Resizing a loaded ViT to another input size in place, position embeddings as the official code does.

Paper: resolution is an experimental variable (224 vs 518 px changes the numbers). DINOv2 models resize
their position embeddings exactly as the official ``interpolate_pos_encoding``; one model serves every size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitreg.core.models import ModelSpec, PosInterp
from vitreg.core.tokens import TokenLayout


def resize_in_place(model: nn.Module, spec: ModelSpec, size: tuple[int, int]) -> None:
    """Make ``model`` take ``size`` images: no second model is built (for ViT-g that saved about 4.2 GiB).

    timm's ``set_input_size`` updates the patch grid and the model's recorded input size; the position
    embedding values are then replaced by :func:`resize_pos_embed` of the original ones, per
    ``spec.pos_interp`` (the official DINOv2 interpolation for DINOv2 models). A model without an absolute
    position embedding (DINOv3: rotary only) is resized by its grid alone: timm's ``set_input_size`` updates
    the patch grid and the RoPE grid, and the rotary embeddings are recomputed from the new grid.
    """
    if getattr(model, "pos_embed", None) is None:
        model.set_input_size(img_size=size)
        return
    old_pos, old_grid = model.pos_embed.detach(), tuple(model.patch_embed.grid_size)
    model.set_input_size(img_size=size)
    prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
    new_pos = resize_pos_embed(old_pos, old_grid, tuple(model.patch_embed.grid_size), num_prefix=prefix,
                               mode=spec.pos_interp)
    model.pos_embed = nn.Parameter(new_pos, requires_grad=model.pos_embed.requires_grad)


def resize_pos_embed(pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], *,
                     num_prefix: int, mode: PosInterp) -> torch.Tensor:
    """Resize absolute position embeddings ``(1, prefix + h*w, D)`` to ``new_grid``.

    ``dinov2_noreg`` and ``dinov2_reg`` follow the official DINOv2 ``interpolate_pos_encoding``:
    models without registers use bicubic, no antialiasing, and a scale factor of ``(n + 0.1) / M``;
    register models bicubic with antialiasing to the exact size. ``timm`` uses timm's own resampling.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    if mode == "rope":
        raise ValueError("a RoPE-only model has no absolute position embedding to resize: resize its grid only "
                         "(resize_in_place does)")
    if mode == "timm":
        from timm.layers import resample_abs_pos_embed

        return resample_abs_pos_embed(pos_embed, new_size=list(new_grid), old_size=list(old_grid),
                                      num_prefix_tokens=num_prefix)
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    dim, dtype = grid.shape[-1], grid.dtype
    grid = grid.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    if mode == "dinov2_noreg":
        offset = 0.1
        scale = ((new_grid[0] + offset) / old_grid[0], (new_grid[1] + offset) / old_grid[1])
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
    elif mode == "dinov2_reg":
        grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", antialias=True)
    else:
        raise ValueError(f"unknown position-embedding resize mode {mode!r}")
    if tuple(grid.shape[-2:]) != tuple(new_grid):
        raise RuntimeError(f"resized position grid is {tuple(grid.shape[-2:])}, expected {tuple(new_grid)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(dtype)
    return torch.cat([prefix, grid], dim=1)


@contextmanager
def resizable(loaded: Any) -> Iterator[Callable[[tuple[int, int]], None]]:
    """Yield ``to(hw)``, which makes ``loaded`` (a :class:`vitreg.core.weights.LoadedModel`) take ``hw`` inputs
    in place; restore its size on exit.

    Paper: Table 3 protocol (LOST runs each image at its own padded size). Position embeddings are resized from the loaded ones (exact at the native size:
    the official DINOv2 interpolation from 37x37, as the official model does on every forward); one cheap
    interpolation per size, one model for every size group.
    """
    model = loaded.model
    has_pos = getattr(model, "pos_embed", None) is not None  # False for RoPE-only models (DINOv3): grid only
    src_pos = model.pos_embed.detach().clone() if has_pos else None
    src_grid, src_size = tuple(model.patch_embed.grid_size), loaded.image_size
    prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens

    def to(hw: tuple[int, int], pos: torch.Tensor | None = None) -> None:
        if tuple(hw) == tuple(loaded.image_size):
            return
        model.set_input_size(img_size=tuple(hw))
        if has_pos:
            new = pos if pos is not None else resize_pos_embed(src_pos, src_grid, tuple(model.patch_embed.grid_size),
                                                               num_prefix=prefix, mode=loaded.spec.pos_interp)
            model.pos_embed = torch.nn.Parameter(new.clone(), requires_grad=False)
        loaded.image_size = tuple(hw)
        loaded.layout = TokenLayout.from_model(model, loaded.image_size)

    try:
        yield to
    finally:
        to(src_size, src_pos)
