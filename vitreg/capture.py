"""Record what happens inside a ViT: block outputs, norms, attention, q/k/v, MLP activations.

Paper: Fig. 1-2 (attention), Fig. 3-4 (norms of block outputs, before the final LayerNorm),
Fig. 5a (patch embeddings), Table 3 (keys/values for LOST); later: register neurons (MLP activations).

``capture`` is a context manager: hooks exist only inside the ``with`` block and are removed on exit,
also on exceptions. It works for any batch size, keeps only what was asked for, and accumulates across
forward calls (concatenating along the batch), so one context can cover a whole dataset::

    with capture(model, norms="all", attn=[-1]) as rec:
        for x in batches:
            model.forward_features(x)
    rec.norms[-1]   # (N_images, T), block -1 output norms
    rec.attn[-1]    # (N_images, heads, T, T)

Attention probabilities are recomputed from the block's own ``qkv`` output (softmax(q kᵀ · scale)), so
fused attention (SDPA) stays on for every other block: the model is never switched to the slow path.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

Blocks = Literal["all"] | Sequence[int] | int | None
AttnRows = Literal["all", "prefix"]


@dataclass
class Recording:
    """What a :func:`capture` context recorded; dicts are keyed by the block indices as asked (e.g. -1)."""

    norms: dict[int, torch.Tensor] = field(default_factory=dict)
    outputs: dict[int, torch.Tensor] = field(default_factory=dict)
    attn: dict[int, torch.Tensor] = field(default_factory=dict)
    q: dict[int, torch.Tensor] = field(default_factory=dict)
    k: dict[int, torch.Tensor] = field(default_factory=dict)
    v: dict[int, torch.Tensor] = field(default_factory=dict)
    mlp: dict[int, torch.Tensor] = field(default_factory=dict)
    embed: torch.Tensor | None = None
    embed_pos: torch.Tensor | None = None
    final_norm: torch.Tensor | None = None
    _parts: dict[tuple[str, int | None], list[torch.Tensor]] = field(default_factory=lambda: defaultdict(list),
                                                                      repr=False)

    def _add(self, kind: str, block: int | None, value: torch.Tensor) -> None:
        self._parts[(kind, block)].append(value)

    def _finalise(self) -> None:
        """Concatenate the per-forward pieces along the batch dimension."""
        for (kind, block), pieces in self._parts.items():
            value = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=0)
            if block is None:
                setattr(self, kind, value)
            else:
                getattr(self, kind)[block] = value
        self._parts.clear()

    @classmethod
    def concat(cls, recordings: Sequence[Recording]) -> Recording:
        """One recording of several runs over consecutive batches (concatenated along the batch)."""
        out = cls()
        for rec in recordings:
            for kind in ("norms", "outputs", "attn", "q", "k", "v", "mlp"):
                for b, t in getattr(rec, kind).items():
                    out._add(kind, b, t)
            for kind in ("embed", "embed_pos", "final_norm"):
                if getattr(rec, kind) is not None:
                    out._add(kind, None, getattr(rec, kind))
        out._finalise()
        return out

    def norm_stack(self) -> torch.Tensor:
        """Norms of every recorded block, ``(L, B, T)``, in block order."""
        if not self.norms:
            raise ValueError("no norms recorded: use capture(model, norms='all')")
        return torch.stack([self.norms[b] for b in self.norms], dim=0)


def resolve_blocks(blocks: Blocks, depth: int) -> list[int]:
    """Block indices as asked (negative allowed), checked against the model's depth."""
    if blocks is None:
        return []
    if blocks == "all":
        return list(range(depth))
    if isinstance(blocks, int):
        blocks = [blocks]
    out = []
    for b in blocks:
        if not -depth <= int(b) < depth:
            raise IndexError(f"block {b} does not exist: the model has {depth} blocks (0..{depth - 1}, or -1..-{depth})")
        out.append(int(b))
    return out


@contextmanager
def capture(
    model: nn.Module,
    *,
    norms: Blocks = None,
    outputs: Blocks = None,
    attn: Blocks = None,
    attn_rows: AttnRows = "all",
    qkv: Blocks = None,
    mlp: Blocks = None,
    embed: bool = False,
    final_norm: bool = False,
    to: str | torch.device | None = None,
    dtype: torch.dtype | None = torch.float32,
) -> Iterator[Recording]:
    """Record only what is asked, for every forward pass inside the ``with`` block.

    Paper: every figure (norms Fig. 3-4, attention Fig. 1-2, q/k/v for LOST Table 3). Longer than 60
    lines on purpose: it installs every hook and removes all of them in one ``finally``, so the hooks'
    lifecycle is read in one place.

    Args:
        model: a timm VisionTransformer (``blocks``, ``patch_embed``, ``norm``).
        norms: blocks whose output L2 norms per token to keep, ``(B, T)`` each: the cheap way to
            record all blocks (memory: blocks x batch x tokens floats).
        outputs: blocks whose full output ``(B, T, D)`` to keep (pre final LayerNorm).
        attn: blocks whose attention probabilities to recompute from q and k.
        attn_rows: ``"all"`` keeps ``(B, heads, T, T)``; ``"prefix"`` only the [CLS]/register query
            rows ``(B, heads, 1 + R, T)``, far cheaper at high resolution.
        qkv: blocks whose q, k, v to keep, ``(B, T, D)`` with heads concatenated (LOST).
        mlp: blocks whose MLP hidden activations (input of ``fc2``) to keep, ``(B, T, hidden)``.
        embed: keep the patch embeddings before position embedding (``embed``, ``(B, N, D)``) and the
            token sequence right before the first block (``embed_pos``, ``(B, T, D)``).
        final_norm: keep the output of the final norm (to show that it hides the outliers).
        to: move recordings to this device (``"cpu"`` for datasets that do not fit on the GPU).
        dtype: store recordings in this dtype (None keeps the model's).
    """
    depth = len(model.blocks)
    rec = Recording()
    handles: list[torch.utils.hooks.RemovableHandle] = []
    num_prefix = int(getattr(model, "num_prefix_tokens", 1))

    def keep(t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        if dtype is not None:
            t = t.to(dtype)
        # Blocking copy: a non_blocking device->CPU copy into pageable memory may still be in flight
        # when the pieces are concatenated (seen on CUDA: norms of one batch leaking into the next).
        return t.to(to) if to is not None else t

    norm_set, out_set = set(resolve_blocks(norms, depth)), set(resolve_blocks(outputs, depth))
    attn_set, qkv_set = set(resolve_blocks(attn, depth)), set(resolve_blocks(qkv, depth))
    try:
        for b in sorted(norm_set | out_set):
            handles.append(model.blocks[b].register_forward_hook(_block_hook(rec, b, b in norm_set, b in out_set, keep)))
        for b in sorted(attn_set | qkv_set):
            module = _attention_module(model, b)
            handles.append(module.qkv.register_forward_hook(
                _qkv_hook(rec, module, b, b in attn_set, b in qkv_set, attn_rows, num_prefix, keep)))
        for b in resolve_blocks(mlp, depth):
            handles.append(model.blocks[b].mlp.fc2.register_forward_pre_hook(
                lambda _m, args, b=b: rec._add("mlp", b, keep(args[0]))))
        if embed:
            handles.append(model.patch_embed.register_forward_hook(
                lambda _m, _a, out: rec._add("embed", None, keep(out.flatten(1, -2)))))
            handles.append(model.pos_drop.register_forward_hook(lambda _m, _a, out: rec._add("embed_pos", None, keep(out))))
        if final_norm:
            handles.append(model.norm.register_forward_hook(lambda _m, _a, out: rec._add("final_norm", None, keep(out))))
        yield rec
    finally:
        for h in handles:
            h.remove()
    rec._finalise()


def _block_hook(rec: Recording, b: int, want_norm: bool, want_out: bool, keep: Callable) -> Callable:
    def hook(_m: nn.Module, _args: tuple, out: torch.Tensor) -> None:
        if want_norm:
            rec._add("norms", b, keep(out.float().norm(dim=-1)))
        if want_out:
            rec._add("outputs", b, keep(out))

    return hook


def _qkv_hook(rec: Recording, attn_mod: nn.Module, b: int, want_attn: bool, want_qkv: bool, rows: AttnRows,
              num_prefix: int, keep: Callable) -> Callable:
    def hook(_m: nn.Module, _args: tuple, out: torch.Tensor) -> None:
        bsz, n, _ = out.shape
        heads = attn_mod.num_heads
        q, k, v = out.reshape(bsz, n, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = attn_mod.q_norm(q), attn_mod.k_norm(k)
        if want_qkv:
            for name, t in (("q", q), ("k", k), ("v", v)):
                rec._add(name, b, keep(t.transpose(1, 2).reshape(bsz, n, -1)))
        if want_attn:
            rec._add("attn", b, keep(attention_probs(q, k, attn_mod.scale, rows=num_prefix if rows == "prefix" else None)))

    return hook


def attention_probs(q: torch.Tensor, k: torch.Tensor, scale: float, rows: int | None = None) -> torch.Tensor:
    """softmax(q kᵀ · scale) over keys for the first ``rows`` queries (all when None).

    The product runs in the model's precision (bf16 under autocast, like its fused kernel); the softmax
    in float32.

    Args:
        q, k: ``(B, heads, T, head_dim)`` after the block's q/k norms.
    """
    if rows is not None:
        q = q[:, :, :rows]
    logits = (q * scale) @ k.transpose(-2, -1)  # the model's own precision, as its fused kernel uses
    return logits.float().softmax(dim=-1)


def _attention_module(model: nn.Module, b: int) -> nn.Module:
    mod = model.blocks[b].attn
    if not all(hasattr(mod, a) for a in ("qkv", "num_heads", "scale", "q_norm", "k_norm")):
        raise NotImplementedError(
            f"block {b} uses {type(mod).__name__}, whose attention vitreg cannot recompute from a fused qkv "
            "projection; capture its outputs instead, or open an issue with the model name"
        )
    if getattr(mod, "gate", None) is not None or hasattr(mod, "rope"):
        raise NotImplementedError(f"block {b}: gated or rotary attention is not supported by attention recomputation")
    return mod


@contextmanager
def explicit_attention(model: nn.Module, blocks: Blocks = "all") -> Iterator[dict[int, list[torch.Tensor]]]:
    """Switch ``blocks`` to timm's explicit softmax path and record its attention weights.

    The slow reference path: tests check :func:`capture`'s recomputed attention against it. Restores
    the fused setting on exit.
    """
    depth = len(model.blocks)
    got: dict[int, list[torch.Tensor]] = defaultdict(list)
    saved, handles = {}, []
    try:
        for b in resolve_blocks(blocks, depth):
            mod = _attention_module(model, b)
            saved[b] = mod.fused_attn
            mod.fused_attn = False
            handles.append(mod.attn_drop.register_forward_hook(lambda _m, args, _o, b=b: got[b].append(args[0].detach())))
        yield got
    finally:
        for h in handles:
            h.remove()
        for b, fused in saved.items():
            model.blocks[b].attn.fused_attn = fused
