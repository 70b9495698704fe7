"""Planted truth for the follow-ups: register neurons (test-time registers, notebook 10), massive
activations and position-only / content-only signals (notebook 11).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from vitreg.core import hooks


if TYPE_CHECKING:
    from vitreg.core.weights import LoadedModel


@contextlib.contextmanager
def planted_register_neurons(model: nn.Module, block: int, units: Sequence[int], tokens: Sequence[int], *,
                             activation: float = 10.0, norm: float = 500.0, seed: int = 0) -> Iterator[torch.Tensor]:
    """Make MLP ``units`` of ``block`` fire on ``tokens`` and write a high-norm vector there ([TTR], planted).

    Paper: [TTR] register neurons (Jiang et al. 2025), as a known answer: the units' activation (the hook
    point ``blocks.{block}.mlp.hidden``) is set to ``activation`` on ``tokens`` (full-sequence indices, every
    image), and the block adds ``sum over units of their hidden activation x direction`` scaled so that the
    planted tokens gain ``norm``. The write reads the hidden activation every writer has left (what ``fc2``
    receives), so a test-time register entered inside this context moves the high norm with it. Hooks
    installed on ``with``, removed on exit; yields the unit direction.
    """
    idx = torch.tensor(list(units), dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    vec = torch.randn(hooks.residual_width(model, block), generator=gen)
    vec = vec / vec.norm()
    gain = norm / (len(idx) * activation)
    stash: list[torch.Tensor] = []

    def fire(out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        rows = torch.tensor(list(tokens), dtype=torch.long, device=out.device)
        out[:, rows[:, None], idx.to(out.device)] = activation
        return out

    def read(hidden: torch.Tensor) -> None:
        stash.append(hidden[:, :, idx.to(hidden.device)].sum(-1))

    def write(out: torch.Tensor) -> torch.Tensor:
        return out + stash.pop()[..., None] * gain * vec.to(out.device, out.dtype)

    hidden = f"blocks.{block}.mlp.hidden"
    with hooks.write(model, hidden, fire), hooks.read(model, hidden, read), \
            hooks.write(model, f"blocks.{block}.out", write):
        yield vec


# --- planted massive activations and position-only / content-only signals (notebook 11) -----------


@contextlib.contextmanager
def planted_massive(loaded: "LoadedModel", block: int, cells: Sequence[tuple[int, int]], *,
                    value: float = 5000.0) -> Iterator[None]:
    """Write ``value`` at each ``(token, channel)`` of ``block``'s output, for every image (input-independent,
    as Sun et al.'s massive activations are); the residual stream carries it to the later blocks."""
    tokens, channels = [t for t, _ in cells], [c for _, c in cells]

    def hook(out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, tokens, channels] = value
        return out

    with hooks.write(loaded.model, f"blocks.{block}.out", hook):
        yield


@contextlib.contextmanager
def planted_grid_signal(loaded: "LoadedModel", *, kind: str = "position", strength: float = 3.0,
                        seed: int = 0) -> Iterator[None]:
    """Add a signal to the patch tokens of the final norm's output: ``kind="position"`` one fixed random
    pattern per position (the same on every image: Denoising ViT's artifact); ``"content"`` a fresh random
    pattern on every forward (no position in it: the control)."""
    gen = torch.Generator().manual_seed(seed)
    layout, dim = loaded.layout, int(loaded.model.embed_dim)
    fixed = strength * torch.randn(layout.num_patches, dim, generator=gen)

    def hook(out: torch.Tensor) -> torch.Tensor:
        add = fixed if kind == "position" else strength * torch.randn(len(out), layout.num_patches, dim, generator=gen)
        out = out.clone()
        out[:, layout.patch_slice] += add.to(out.device, out.dtype)
        return out

    if kind not in ("position", "content"):
        raise ValueError(f"kind must be 'position' or 'content', got {kind!r}")
    with hooks.write(loaded.model, "norm", hook):
        yield
