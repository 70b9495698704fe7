"""Planted high-norm tokens, attention peaks and objects (capture, norms, attention, registers, LOST).

Paper: Fig. 1-4 and Table 3 under a known answer: tests and smoke runs of random-weight models.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from vitreg.core import hooks
from vitreg.core.capture import resolve_blocks
from vitreg.core.tokens import TokenLayout, prefix_row

if TYPE_CHECKING:
    from vitreg.core.weights import LoadedModel


# --- planted high-norm tokens, attention and objects (capture, norms, attention, registers, LOST) ---

# tensor ops -----------------------------------------------------------------------------------------
def scale_tokens(tokens: torch.Tensor, mask: torch.Tensor, *, norm: float = 400.0) -> torch.Tensor:
    """Rescale the marked tokens to a given L2 norm (they become high-norm outliers; Fig. 3 in tests).

    Args:
        tokens: ``(B, N, D)`` patch tokens.
        mask: ``(B, N)`` bool, the tokens to rescale.
        norm: their new L2 norm (above the cut-off).

    Returns:
        a new tensor; the unmarked tokens are unchanged.
    """
    if mask.shape != tokens.shape[:2]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match tokens {tuple(tokens.shape)}")
    scale = norm / tokens.float().norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.where(mask.unsqueeze(-1), tokens * scale.to(tokens.dtype), tokens)


def random_outlier_mask(batch: int, grid: tuple[int, int], *, fraction: float = 0.02, seed: int = 0,
                        column_bias: torch.Tensor | None = None) -> torch.Tensor:
    """A random ``(B, N)`` outlier mask with about ``fraction`` of positions set (Fig. 3, App. A Fig. 10).

    Args:
        batch: number of images.
        grid: ``(h, w)`` patch grid.
        fraction: expected share of outliers.
        seed: random seed.
        column_bias: optional ``(w,)`` non-negative weights per column (plants App. A's stripes).

    Returns:
        bool mask ``(B, h * w)``.
    """
    h, w = grid
    gen = torch.Generator().manual_seed(seed)
    prob = torch.full((h, w), float(fraction))
    if column_bias is not None:
        bias = column_bias.float().reshape(1, w)
        prob = prob * bias / bias.mean()
    return (torch.rand(batch, h, w, generator=gen) < prob.clamp(0, 1)).reshape(batch, h * w)


def mask_to_tokens(mask: torch.Tensor, num_prefix: int) -> list[list[int]]:
    """Per-image token indices (prefix included) of a ``(B, N)`` patch mask, as
    :func:`planted_outliers_per_image` takes them.

    Args:
        mask: ``(B, N)`` bool mask over patches.
        num_prefix: ``layout.num_prefix`` (1 + R): offset of the first patch in the sequence.
    """
    return [(num_prefix + torch.nonzero(row).flatten()).tolist() for row in mask.bool()]


def attention_peak(attn: torch.Tensor, layout: TokenLayout, positions: torch.Tensor, *,
                   token: int | str = "cls", mass: float = 0.8) -> torch.Tensor:
    """Move ``mass`` of one prefix row's attention onto one patch per image (Fig. 2 spikes, planted).

    Args:
        attn: ``(B, heads, rows, T)`` attention probabilities.
        layout: the token layout.
        positions: ``(B,)`` patch indices (row-major) to receive the peak.
        token: which prefix row (index or name, ``"cls"``, ``"reg0"``...).
        mass: share of the row's probability moved onto the patch, in every head.

    Returns:
        a new attention tensor whose rows still sum to 1.
    """
    out = attn.clone().float()
    row = prefix_row(layout, token)
    cols = layout.num_prefix + positions.long()
    out[:, :, row] *= 1 - mass
    b = torch.arange(attn.shape[0])
    out[b, :, row, cols] += mass
    return out


# hooks (context managers) ----------------------------------------------------------------------------
@contextlib.contextmanager
def planted_outliers(model: nn.Module, block: int, tokens: Sequence[int], *, norm: float = 1000.0,
                     seed: int = 0) -> Iterator[torch.Tensor]:
    """Add a high-norm vector to ``tokens`` at the output of ``block``, for every image of every batch.

    Paper: Fig. 3-4 (planted): the residual stream carries the vector to every later block. Installs a
    forward hook on ``with`` and removes it on exit. Yields the planted vector.

    Args:
        tokens: token indices in the full sequence (prefix included); see :func:`planted_outliers_per_image`.
    """
    with planted_outliers_per_image(model, block, [list(tokens)], norm=norm, seed=seed, broadcast=True) as vec:
        yield vec


@contextlib.contextmanager
def planted_outliers_per_image(model: nn.Module, block: int, tokens: Sequence[Sequence[int]], *,
                               norm: float = 1000.0, seed: int = 0, broadcast: bool = False) -> Iterator[torch.Tensor]:
    """Like :func:`planted_outliers`, with a different token set for each image, in order.

    With several forward calls the lists are consumed batch after batch (image ``i`` of the whole run
    gets ``tokens[i]``), unless ``broadcast`` (one list for every image).
    """
    (b,) = resolve_blocks(block, hooks.depth(model))
    dim = hooks.residual_width(model, b)
    gen = torch.Generator().manual_seed(seed)
    vec = torch.randn(dim, generator=gen)
    vec = vec / vec.norm() * norm
    seen = [0]

    def hook(out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        for i in range(out.shape[0]):
            idx = tokens[0] if broadcast else tokens[seen[0] + i]
            if len(idx):
                out[i, list(idx)] += vec.to(out.device, out.dtype)
        seen[0] += out.shape[0]
        return out

    with hooks.write(model, f"blocks.{b}.out", hook):
        yield vec


@contextlib.contextmanager
def planted(loaded: "LoadedModel", mask: torch.Tensor | None, *, block: int | None = None,
            norm: float = 400.0, seed: int = 0) -> Iterator[None]:
    """Plant high-norm tokens at the ``mask`` positions for every forward pass inside the ``with``.

    Paper: Fig. 3, 4a, 5a, 10 (notebooks 02-04 check their claims on this planted truth in smoke runs).
    ``mask=None`` plants nothing (the real experiment). The vector is added at the output of ``block``
    (default: the middle block) and the residual stream carries it on.

    Args:
        loaded: a :class:`vitreg.core.weights.LoadedModel`.
        mask: ``(B, N)`` bool patch mask over ALL images that will be forwarded, in order; or None.
        block: block at whose output the vector is added.
        norm: norm of the added vector.
        seed: seed of its direction.
    """
    if mask is None:
        yield
        return
    block = loaded.num_blocks // 2 if block is None else block
    tokens = mask_to_tokens(mask, loaded.layout.num_prefix)
    with planted_outliers_per_image(loaded.model, block, tokens, norm=norm, seed=seed):
        yield


def planted_emergence_block(num_blocks: int, *, depth: float = 15 / 40) -> int:
    """The 0-based block after which notebook 03 plants high-norm tokens: ``depth`` of the way down.

    Paper: Fig. 4a (ViT-g's outliers separate around block 15 of 40; smoke runs copy that depth, so the
    emergence block recovered on a planted model is this block + 1, counted from 1).
    """
    return max(0, round(depth * num_blocks) - 1)


@contextlib.contextmanager
def planted_registers(loaded: "LoadedModel", n_images: int, *, seed: int = 0,
                      norms: Sequence[float] = (200, 300, 450, 600), outlier_pct: float = 2.0) -> Iterator[None]:
    """Planted truth for notebook 07 (Fig. 7: the high norms leave the patches for the registers).

    Without registers: high-norm tokens on ``outlier_pct`` % of random patches of every image (at least
    one). With registers: register ``i`` gets a vector of norm ``norms[i]`` (the "quantised" levels of
    Fig. 7) and the patches stay clean. Added at the middle block's output; hooks install on ``with``.
    """
    lay = loaded.layout
    with contextlib.ExitStack() as stack:
        if lay.num_reg == 0:
            gen = torch.Generator().manual_seed(seed)
            mask = torch.rand(n_images, lay.num_patches, generator=gen) < outlier_pct / 100.0
            mask[:, 0] = True  # at least one per image
            stack.enter_context(planted(loaded, mask, norm=float(max(norms)), seed=seed))
        else:
            for i in range(lay.num_reg):
                stack.enter_context(planted_outliers(loaded.model, loaded.num_blocks // 2, [lay.num_cls + i],
                                                     norm=float(norms[i % len(norms)]), seed=seed + i))
        yield
