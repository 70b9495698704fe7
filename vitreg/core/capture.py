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

Attention probabilities are recomputed exactly as the block computes them (softmax(q kᵀ · scale)), so
fused attention (SDPA) stays on for every other block: the model is never switched to the slow path.
One code path per attention class, and a class it does not know is refused, never guessed:

- timm ``VisionTransformer`` (``Attention``): from the block's own ``qkv`` output, after its q/k norms;
- timm ``Eva`` (``EvaAttention``, ``AttentionRope``: DINOv3, EVA-02, timm's RoPE ViTs): from the block's
  input and the rotary embedding it is given, step by step as its forward does: the q/v biases as applied
  (with the k bias buffer, also when the block never calls its ``qkv`` module, as in ``*_dinov3_qkvb``), q/k
  norms, RoPE on the patch tokens only (not on [CLS] and registers), grouped k/v heads repeated, scale.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vitreg.core import hooks

Blocks = Literal["all"] | Sequence[int] | int | None
AttnRows = Literal["all", "prefix"]


@dataclass
class Recording:
    """What a :func:`capture` context recorded; dicts are keyed by the block indices as asked (e.g. -1).

    ``qk_rope[b]`` says whether the recorded ``q``/``k`` of block ``b`` carry the rotary embedding (True: as
    the attention uses them; False: the block has no RoPE, or ``capture(..., rope_qk=False)`` asked for them
    before it). ``v`` never has RoPE.
    """

    norms: dict[int, torch.Tensor] = field(default_factory=dict)
    outputs: dict[int, torch.Tensor] = field(default_factory=dict)
    attn: dict[int, torch.Tensor] = field(default_factory=dict)
    q: dict[int, torch.Tensor] = field(default_factory=dict)
    k: dict[int, torch.Tensor] = field(default_factory=dict)
    v: dict[int, torch.Tensor] = field(default_factory=dict)
    mlp: dict[int, torch.Tensor] = field(default_factory=dict)
    qk_rope: dict[int, bool] = field(default_factory=dict)
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
            out.qk_rope.update(rec.qk_rope)
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
    rope_qk: bool = True,
    to: str | torch.device | None = None,
    dtype: torch.dtype | None = torch.float32,
) -> Iterator[Recording]:
    """Record only what is asked, for every forward pass inside the ``with`` block.

    Paper: every figure (norms Fig. 3-4, attention Fig. 1-2, q/k/v for LOST Table 3). Longer than 60
    lines on purpose: it registers every reader (:mod:`vitreg.core.hooks`) in one ``ExitStack``, so the hooks'
    lifecycle is read in one place.

    Args:
        model: a timm VisionTransformer or Eva (``blocks``, ``patch_embed``, ``norm``).
        norms: blocks whose output L2 norms per token to keep, ``(B, T)`` each: the cheap way to
            record all blocks (memory: blocks x batch x tokens floats).
        outputs: blocks whose full output ``(B, T, D)`` to keep (pre final LayerNorm).
        attn: blocks whose attention probabilities to recompute from q and k.
        attn_rows: ``"all"`` keeps ``(B, heads, T, T)``; ``"prefix"`` only the [CLS]/register query
            rows ``(B, heads, 1 + R, T)``, far cheaper at high resolution.
        qkv: blocks whose q, k, v to keep, ``(B, T, D)`` with heads concatenated (LOST): after the q/k norms,
            and after RoPE unless ``rope_qk=False`` (see ``Recording.qk_rope``).
        mlp: blocks whose MLP hidden activations to keep, ``(B, T, hidden)``: ``act(fc1 x)``, for a gated
            MLP (SwiGLU) the gated product ``act(gate) * x``, before the MLP's inner norm (EVA-02's
            ``scale_mlp``); without one, exactly the input of ``fc2``.
        embed: keep the patch embeddings before position embedding (``embed``, ``(B, N, D)``) and the
            token sequence right before the first block (``embed_pos``, ``(B, T, D)``).
        final_norm: keep the output of the final norm (to show that it hides the outliers).
        rope_qk: record q and k after the rotary embedding (as attention uses them); False: before it.
        to: move recordings to this device (``"cpu"`` for datasets that do not fit on the GPU).
        dtype: store recordings in this dtype (None keeps the model's).
    """
    depth = hooks.depth(model)
    rec = Recording()
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
    mlp_blocks = resolve_blocks(mlp, depth)
    for b in mlp_blocks:
        hooks.mlp_hidden_size(model, b)  # a MLP it does not know is refused before any hook
    attn_mods = {b: _attention_module(model, b) for b in sorted(attn_set | qkv_set)}
    with ExitStack() as stack:
        for b in sorted(norm_set | out_set):
            stack.enter_context(hooks.read(model, f"blocks.{b}.out",
                                           _block_hook(rec, b, b in norm_set, b in out_set, keep)))
        for b, module in attn_mods.items():
            rows = num_prefix if attn_rows == "prefix" else None
            if _is_eva_attention(module):
                stack.enter_context(hooks.read(model, f"blocks.{b}.attn.in", _eva_attention_hook(
                    rec, module, b, b in attn_set, b in qkv_set, rows, rope_qk, keep), site=True))
            else:
                stack.enter_context(hooks.read(model, f"blocks.{b}.attn.qkv",
                                               _qkv_hook(rec, module, b, b in attn_set, b in qkv_set, rows, keep)))
        for b in mlp_blocks:
            stack.enter_context(hooks.read(model, f"blocks.{b}.mlp.hidden", lambda x, b=b: rec._add("mlp", b, keep(x))))
        if embed:
            stack.enter_context(hooks.read(model, "patch_embed",
                                           lambda x: rec._add("embed", None, keep(x.flatten(1, -2)))))
            stack.enter_context(hooks.read(model, "embed", lambda x: rec._add("embed_pos", None, keep(x))))
        if final_norm:
            stack.enter_context(hooks.read(model, "norm", lambda x: rec._add("final_norm", None, keep(x))))
        yield rec
    rec._finalise()


def _block_hook(rec: Recording, b: int, want_norm: bool, want_out: bool, keep: Callable) -> Callable:
    def hook(out: torch.Tensor) -> None:
        if want_norm:
            rec._add("norms", b, keep(out.float().norm(dim=-1)))
        if want_out:
            rec._add("outputs", b, keep(out))

    return hook


def _qkv_hook(rec: Recording, attn_mod: nn.Module, b: int, want_attn: bool, want_qkv: bool, rows: int | None,
              keep: Callable) -> Callable:
    """timm ``Attention``: q, k, v from the ``qkv`` output, then the block's q/k norms (no RoPE)."""
    def hook(out: torch.Tensor) -> None:
        bsz, n, _ = out.shape
        heads = attn_mod.num_heads
        q, k, v = out.reshape(bsz, n, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = attn_mod.q_norm(q), attn_mod.k_norm(k)
        rec.qk_rope[b] = False
        if want_qkv:
            _keep_qkv(rec, b, q, k, v, keep)
        if want_attn:
            rec._add("attn", b, keep(attention_probs(q, k, attn_mod.scale, rows=rows)))

    return hook


def _keep_qkv(rec: Recording, b: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: Callable) -> None:
    """Store ``(B, heads, T, hd)`` q, k, v as ``(B, T, heads * hd)``."""
    bsz, _, n, _ = q.shape
    for name, t in (("q", q), ("k", k), ("v", v)):
        rec._add(name, b, keep(t.transpose(1, 2).reshape(bsz, n, -1)))


def _eva_attention_hook(rec: Recording, attn_mod: nn.Module, b: int, want_attn: bool, want_qkv: bool,
                        rows: int | None, rope_qk: bool, keep: Callable) -> Callable:
    """timm ``EvaAttention``/``AttentionRope``: a reader of ``blocks.{b}.attn.in``, which sees the block's
    input and its ``rope`` argument, and recomputes q, k, v with :func:`eva_qkv`."""
    def hook(x: torch.Tensor, site: hooks.Site) -> None:
        args, kwargs = site.args, site.kwargs
        rope = kwargs.get("rope", args[1] if len(args) > 1 else None)
        mask = kwargs.get("attn_mask", args[2] if len(args) > 2 else None)
        causal = bool(kwargs.get("is_causal", args[3] if len(args) > 3 else False))
        (q0, k0), (q, k, v) = eva_qkv(attn_mod, x, rope)
        rec.qk_rope[b] = rope is not None and rope_qk
        if want_qkv:
            _keep_qkv(rec, b, q if rope_qk else q0, k if rope_qk else k0, _repeat_kv(attn_mod, v, expand=False), keep)
        if want_attn:
            rec._add("attn", b, keep(attention_probs(q, k, attn_mod.scale, rows=rows, mask=mask, causal=causal)))

    return hook


def eva_qkv(mod: nn.Module, x: torch.Tensor, rope: torch.Tensor | None
            ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """q, k, v of a timm ``EvaAttention``/``AttentionRope`` for its input ``x``, as its forward computes them.

    Paper: Fig. 1-2 (attention maps of DINOv3/EVA-02 blocks). Returns ``((q, k) after the q/k norms, before
    RoPE)`` and ``(q, k, v)`` as attention uses them: RoPE applied to the patch tokens only (the first
    ``num_prefix_tokens`` are left alone) and grouped k/v heads repeated; each ``(B, heads, T, head_dim)``.
    """
    from timm.layers import apply_rot_embed_cat

    bsz, n, _ = x.shape
    if mod.qkv is not None:
        bias = getattr(mod, "q_bias", None)
        if bias is not None:  # EvaAttention: q/v biases around a zero k bias buffer; the qkv module is not called
            bias = torch.cat((mod.q_bias, mod.k_bias, mod.v_bias))
            if mod.qkv_bias_separate:
                qkv = F.linear(x, mod.qkv.weight, mod.qkv.bias)
                qkv += bias
            else:
                qkv = F.linear(x, weight=mod.qkv.weight, bias=bias)
        else:
            qkv = F.linear(x, mod.qkv.weight, mod.qkv.bias)
        q, k, v = qkv.reshape(bsz, n, 3, mod.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    else:
        kv_heads = getattr(mod, "num_kv_heads", mod.num_heads)
        q = mod.q_proj(x).reshape(bsz, n, mod.num_heads, -1).transpose(1, 2)
        k = mod.k_proj(x).reshape(bsz, n, kv_heads, -1).transpose(1, 2)
        v = mod.v_proj(x).reshape(bsz, n, kv_heads, -1).transpose(1, 2)
    q0, k0 = mod.q_norm(q), mod.k_norm(k)
    q, k = q0, k0
    if rope is not None:
        npt, half = mod.num_prefix_tokens, getattr(mod, "rotate_half", False)
        q = torch.cat([q[:, :, :npt, :], apply_rot_embed_cat(q[:, :, npt:, :], rope, half=half)], dim=2).type_as(v)
        k = torch.cat([k[:, :, :npt, :], apply_rot_embed_cat(k[:, :, npt:, :], rope, half=half)], dim=2).type_as(v)
    return (q0, k0), (q, _repeat_kv(mod, k), _repeat_kv(mod, v))


def _repeat_kv(mod: nn.Module, t: torch.Tensor, expand: bool = True) -> torch.Tensor:
    """Grouped-query attention (``AttentionRope`` with fewer k/v heads): k/v heads repeated as the block does."""
    groups = getattr(mod, "num_kv_groups", 1)
    return t.repeat_interleave(groups, dim=1) if expand and groups > 1 else t


def attention_probs(q: torch.Tensor, k: torch.Tensor, scale: float, rows: int | None = None, *,
                    mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
    """softmax(q kᵀ · scale) over keys for the first ``rows`` queries (all when None).

    The product runs in the model's precision (bf16 under autocast, like its fused kernel); the softmax
    in float32. ``mask``/``causal``: the attention mask a block was given, applied as timm applies it.

    Args:
        q, k: ``(B, heads, T, head_dim)`` after the block's q/k norms (and RoPE, where the block has it).
    """
    masked = mask is not None or causal
    if rows is not None and not masked:
        q = q[:, :, :rows]  # only the rows asked: far cheaper at high resolution
    logits = (q * scale) @ k.transpose(-2, -1)  # the model's own precision, as its fused kernel uses
    if masked:
        from timm.layers.attention import maybe_add_mask, resolve_self_attn_mask

        logits = maybe_add_mask(logits, resolve_self_attn_mask(q.shape[2], logits, mask, causal))
        logits = logits[:, :, :rows] if rows is not None else logits
    return logits.float().softmax(dim=-1)


def _is_eva_attention(mod: nn.Module) -> bool:
    from timm.layers.attention import AttentionRope
    from timm.models.eva import EvaAttention

    return type(mod) in (EvaAttention, AttentionRope)


def _attention_module(model: nn.Module, b: int) -> nn.Module:
    """The attention module of block ``b``, if it is a class whose attention vitreg recomputes exactly.

    Only exact classes are accepted (a subclass may compute differently): timm's ``Attention`` (the
    ``VisionTransformer`` block) and ``EvaAttention``/``AttentionRope`` (``Eva`` blocks). A sigmoid output gate
    (``gated_attn``) acts after the softmax, so it does not change the recorded probabilities or q/k/v.
    """
    from timm.layers.attention import Attention

    mod = getattr(hooks.block(model, b), "attn", None)
    if _is_eva_attention(mod):
        return mod
    if type(mod) is not Attention:
        raise NotImplementedError(
            f"block {b} uses {type(mod).__name__}, whose attention vitreg does not recompute (it knows timm's "
            "Attention of VisionTransformer blocks and EvaAttention/AttentionRope of Eva blocks); capture the "
            "block outputs instead, or open an issue with the model name"
        )
    if getattr(mod, "gate", None) is not None or hasattr(mod, "rope"):
        raise NotImplementedError(f"block {b}: gated or rotary attention is not supported by attention recomputation")
    return mod


@contextmanager
def explicit_attention(model: nn.Module, blocks: Blocks = "all") -> Iterator[dict[int, list[torch.Tensor]]]:
    """Switch ``blocks`` to timm's explicit softmax path and record its attention weights.

    The slow reference path: tests check :func:`capture`'s recomputed attention against it (every attention
    class :func:`capture` knows: timm's ``Attention``, ``EvaAttention``, ``AttentionRope``). Restores the fused
    setting on exit.
    """
    got: dict[int, list[torch.Tensor]] = defaultdict(list)
    saved: dict[int, bool] = {}
    with ExitStack() as stack:
        try:
            for b in resolve_blocks(blocks, hooks.depth(model)):
                mod = _attention_module(model, b)
                saved[b] = mod.fused_attn
                mod.fused_attn = False
                stack.enter_context(hooks.read(model, f"blocks.{b}.attn.probs", lambda p, b=b: got[b].append(p.detach())))
            yield got
        finally:
            for b, fused in saved.items():
                hooks.module(model, f"blocks.{b}.attn").fused_attn = fused
