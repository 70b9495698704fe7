"""The token sequence of a ViT: ``[CLS, REG x R, PATCH x N, EXTRA x E]``.

Paper: §2.2 (registers are inserted between [CLS] and the patches, with no position embedding).
The classic slicing mistake of other reproductions is dropping one prefix token instead of
``1 + R`` (845 vs 841 tokens for a 4-register DINOv2 at 406 px); every analysis in vitreg goes
through :class:`TokenLayout` so that it cannot happen.

``EXTRA`` tokens come after the patches: that is where a test-time register is appended.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn


class TokenParts(NamedTuple):
    """The named parts of a token tensor; a part that the layout lacks is ``None``."""

    cls: torch.Tensor | None
    reg: torch.Tensor | None
    patch: torch.Tensor
    extra: torch.Tensor | None


@dataclass(frozen=True)
class TokenLayout:
    """Where each kind of token sits in a ViT's sequence, and the patch grid.

    Args:
        num_cls: 1 for a model with a class token, 0 without.
        num_reg: number of register tokens (0, 4, 16, ...).
        grid: patch grid ``(h, w)``; ``h * w`` patch tokens in row-major order.
        num_extra: tokens appended after the patches (test-time registers).
    """

    num_cls: int
    num_reg: int
    grid: tuple[int, int]
    num_extra: int = 0

    def __post_init__(self) -> None:
        if self.num_cls not in (0, 1):
            raise ValueError(f"num_cls must be 0 or 1, got {self.num_cls}")
        if self.num_reg < 0 or self.num_extra < 0 or min(self.grid) <= 0:
            raise ValueError(f"invalid token layout {self}")

    @classmethod
    def from_model(cls, model: nn.Module, image_hw: tuple[int, int] | None = None) -> TokenLayout:
        """Read the layout of a timm VisionTransformer or Eva for an input of ``image_hw`` pixels
        (token counts by :func:`token_counts`).

        Without ``image_hw`` the model's own (fixed) image size is used.
        """
        patch = _patch_size(model)
        if image_hw is None:
            image_hw = tuple(model.patch_embed.img_size)  # type: ignore[assignment]
        h, w = int(image_hw[0]), int(image_hw[1])
        if h % patch[0] or w % patch[1]:
            raise ValueError(
                f"image size {h}x{w} is not a multiple of the patch size {patch[0]}x{patch[1]}; "
                "resize with vitreg.core.images.preprocess, which rounds to the patch grid"
            )
        num_cls, num_reg = token_counts(model)
        return cls(num_cls=num_cls, num_reg=num_reg, grid=(h // patch[0], w // patch[1]))

    # --- sizes -------------------------------------------------------------------------------
    @property
    def num_prefix(self) -> int:
        """Tokens before the first patch: ``[CLS]`` and the registers (1 + R for DINOv2-reg)."""
        return self.num_cls + self.num_reg

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_tokens(self) -> int:
        return self.num_prefix + self.num_patches + self.num_extra

    # --- index ranges ------------------------------------------------------------------------
    @property
    def cls_slice(self) -> slice:
        return slice(0, self.num_cls)

    @property
    def reg_slice(self) -> slice:
        return slice(self.num_cls, self.num_prefix)

    @property
    def patch_slice(self) -> slice:
        return slice(self.num_prefix, self.num_prefix + self.num_patches)

    @property
    def extra_slice(self) -> slice:
        return slice(self.num_prefix + self.num_patches, self.num_tokens)

    def kinds(self) -> list[str]:
        """One label per token position: ``cls``, ``reg0``.., ``patch``, ``extra0``..."""
        return (
            ["cls"] * self.num_cls
            + [f"reg{i}" for i in range(self.num_reg)]
            + ["patch"] * self.num_patches
            + [f"extra{i}" for i in range(self.num_extra)]
        )

    # --- splitting ---------------------------------------------------------------------------
    def check(self, x: torch.Tensor, dim: int = 1) -> None:
        """Raise a clear error if ``x`` does not have this layout's number of tokens along ``dim``."""
        if x.shape[dim] != self.num_tokens:
            raise ValueError(
                f"expected {self.num_tokens} tokens ({self.num_cls} cls + {self.num_reg} reg + "
                f"{self.num_patches} patches {self.grid[0]}x{self.grid[1]} + {self.num_extra} extra) "
                f"along dim {dim}, got shape {tuple(x.shape)}"
            )

    def split(self, x: torch.Tensor, dim: int = 1) -> TokenParts:
        """Split a token tensor into named parts along ``dim`` (1 for ``(B, T, D)`` and ``(B, T)``).

        ``cls`` has the token dimension removed (``(B, D)``); ``reg``/``extra`` keep it.
        """
        self.check(x, dim)

        def part(s: slice) -> torch.Tensor | None:
            n = s.stop - s.start
            return x.narrow(dim, s.start, n) if n else None

        cls_tok = part(self.cls_slice)
        return TokenParts(
            cls=cls_tok.squeeze(dim) if cls_tok is not None else None,
            reg=part(self.reg_slice),
            patch=x.narrow(dim, self.num_prefix, self.num_patches),
            extra=part(self.extra_slice),
        )

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """The patch tokens of ``(B, T, ...)`` as ``(B, N, ...)``."""
        return self.split(x, dim=1).patch

    def to_grid(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, N, ...)`` patch values to ``(B, h, w, ...)`` (row-major, as the patch embedding)."""
        if patches.shape[1] != self.num_patches:
            raise ValueError(f"expected {self.num_patches} patches, got shape {tuple(patches.shape)}")
        return patches.reshape(patches.shape[0], *self.grid, *patches.shape[2:])

    def patch_grid(self, x: torch.Tensor) -> torch.Tensor:
        """Full token tensor ``(B, T, ...)`` to its patch grid ``(B, h, w, ...)``."""
        return self.to_grid(self.patches(x))

    def with_extra(self, num_extra: int) -> TokenLayout:
        """The same layout with ``num_extra`` tokens appended after the patches."""
        return TokenLayout(self.num_cls, self.num_reg, self.grid, num_extra)


def token_counts(model: nn.Module) -> tuple[int, int]:
    """``(class tokens, register tokens)`` of a timm ``VisionTransformer`` or ``Eva``, read from the model itself.

    Paper: §2.2 (the 1 + R prefix). Never from the name: the class token is ``cls_token`` (None for SigLIP and
    timm's ``*_gap_*`` models); the registers are ``num_reg_tokens`` (``VisionTransformer``) or the rows of
    ``reg_token`` (``Eva``, which has no ``num_reg_tokens``: DINOv3 has 4). Both must add up to the model's
    ``num_prefix_tokens``, or a distillation token (or another prefix) would be read as a patch.
    """
    num_cls = 1 if getattr(model, "cls_token", None) is not None else 0
    if hasattr(model, "num_reg_tokens"):
        num_reg = int(model.num_reg_tokens)
    else:
        reg = getattr(model, "reg_token", None)
        num_reg = int(reg.shape[1]) if reg is not None else 0
    prefix = int(getattr(model, "num_prefix_tokens", num_cls + num_reg))
    if prefix != num_cls + num_reg:
        raise ValueError(f"model has {prefix} prefix tokens but {num_cls} class + {num_reg} register tokens")
    return num_cls, num_reg


def prefix_names(layout: TokenLayout) -> list[str]:
    """Names of the prefix rows in order: ``["cls", "reg0", ...]`` (the query rows of :func:`vitreg.measure.attention.attention_maps`)."""
    return layout.kinds()[: layout.num_prefix]


def prefix_row(layout: TokenLayout, token: int | str = "cls") -> int:
    """Row index of a prefix token given as an index or a name (``"cls"``, ``"reg2"``)."""
    names = prefix_names(layout)
    if isinstance(token, str):
        if token not in names:
            raise ValueError(f"token {token!r} is not a prefix token of this layout; choose one of {names}")
        return names.index(token)
    if not 0 <= token < layout.num_prefix:
        raise ValueError(f"prefix row {token} out of range: this layout has {layout.num_prefix} prefix tokens {names}")
    return int(token)


def _patch_size(model: nn.Module) -> tuple[int, int]:
    ps = model.patch_embed.patch_size
    return (ps, ps) if isinstance(ps, int) else (int(ps[0]), int(ps[1]))
