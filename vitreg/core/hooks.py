"""One hook namespace: named points inside any supported ViT, read and written through one registry.

Paper: every figure that looks inside the model (norms Fig. 3-4, attention Fig. 1-2, q/k/v for LOST Table 3) and
every follow-up that changes it ([TTR]'s test-time registers, Sun et al.'s fixed register means, planted truth in
smoke runs). Capture, planting, test-time registers, massive activations and the notebooks all go through here,
so no module outside :mod:`vitreg.core` walks ``model.blocks``.

The points (TransformerLens's ``blocks.{i}.hook_*`` names, shortened; ``i`` may be negative, ``-1`` the last block),
on timm ``VisionTransformer`` and ``Eva`` models:

=========================  ==================================================================================
``patch_embed``            output of the patch embedding, before the position embedding
``embed``                  the token sequence entering the first block (output of ``pos_drop``)
``blocks.{i}.attn.in``     input of block ``i``'s attention (its ``args``/``kwargs``, e.g. RoPE, in the site)
``blocks.{i}.attn.qkv``    output of the ``qkv`` projection (timm ``Attention`` only)
``blocks.{i}.attn.probs``  attention probabilities on timm's explicit path (see ``capture.explicit_attention``)
``blocks.{i}.attn``        output of block ``i``'s attention module
``blocks.{i}.mlp.hidden``  MLP hidden activation: after the activation (for SwiGLU the gated product), before
                           the MLP's inner norm (an identity unless ``scale_mlp``) and ``fc2``
``blocks.{i}.out``         output of block ``i`` (the residual stream, before the final norm)
``norm``                   output of the final norm
=========================  ==================================================================================

One mechanism for reading and writing (nnsight's idea): :func:`read` and :func:`write` are context managers that
register a function at a point and remove it on exit, also on exceptions. At each point the writers run first,
in the order they were entered, each seeing the value the previous one returned; then every reader sees the final
value (what the model goes on with)::

    with hooks.write(model, "blocks.-1.out", lambda x: x * 2), hooks.read(model, "norm", seen.append):
        model.forward_features(images)

A function gets the value (a tensor, any batch size); with ``site=True`` also a :class:`Site` (the point's name,
module, block and the call's ``args``/``kwargs``). A writer returns the new value, or None to keep it. One
PyTorch hook is installed per point while at least one function is registered there, and removed with the last.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

#: The point names, with ``{i}`` for a block index.
POINTS = ("patch_embed", "embed", "blocks.{i}.attn.in", "blocks.{i}.attn.qkv", "blocks.{i}.attn.probs",
          "blocks.{i}.attn", "blocks.{i}.mlp.hidden", "blocks.{i}.out", "norm")

_BLOCK_POINT = re.compile(r"^blocks\.(-?\d+)\.(attn\.in|attn\.qkv|attn\.probs|attn|mlp\.hidden|out)$")
#: Points read at a module's input (a forward pre-hook); the others at its output (a forward hook).
_INPUT_POINTS = ("attn.in", "attn.probs", "mlp.hidden")


@dataclass(frozen=True)
class Site:
    """Where a hook function runs: the point's name (block index as asked), its module, its block (resolved,
    None outside the blocks), and the call's positional and keyword arguments."""

    name: str
    module: nn.Module
    block: int | None
    args: tuple
    kwargs: dict


@dataclass
class _Fn:
    fn: Callable
    site: bool
    name: str
    block: int | None


@dataclass
class _Point:
    """The functions registered at one module (input or output side) and the one PyTorch hook that runs them."""

    writers: list[_Fn] = field(default_factory=list)
    readers: list[_Fn] = field(default_factory=list)
    handle: Any = None


#: (module, "in" | "out") -> the functions at that point; weak, so nothing outlives the model.
_REGISTRY: weakref.WeakKeyDictionary[nn.Module, dict[str, _Point]] = weakref.WeakKeyDictionary()


def depth(model: nn.Module) -> int:
    """Number of blocks of a timm ViT."""
    return len(model.blocks)


def resolve_block(block: int, model: nn.Module) -> int:
    """``block`` as a non-negative index (negative counts from the end), checked against the model's depth."""
    n = depth(model)
    if not -n <= int(block) < n:
        raise IndexError(f"block {block} does not exist: the model has {n} blocks (0..{n - 1}, or -1..-{n})")
    return int(block) % n


def block(model: nn.Module, i: int) -> nn.Module:
    """Block ``i`` (negative allowed) of a timm ViT."""
    return model.blocks[resolve_block(i, model)]


def parse(name: str) -> tuple[str, int | None]:
    """``"blocks.-1.out"`` -> ``("out", -1)``; ``"norm"`` -> ``("norm", None)``; an unknown name is refused."""
    if name in ("patch_embed", "embed", "norm"):
        return name, None
    m = _BLOCK_POINT.match(name)
    if m is None:
        raise ValueError(f"unknown hook point {name!r}: use one of {', '.join(POINTS)} (block index i may be negative)")
    return m.group(2), int(m.group(1))


def module(model: nn.Module, name: str) -> nn.Module:
    """The module a point's name refers to: ``blocks.{i}.attn`` the attention module, ``blocks.{i}.out`` the block,
    ``blocks.{i}.mlp.hidden`` the MLP, ``norm`` the final norm, ``embed`` ``pos_drop`` (for reading settings such
    as ``fused_attn``; hooks go through :func:`read` and :func:`write`)."""
    kind, i = parse(name)
    if i is None:
        return {"patch_embed": model.patch_embed, "embed": model.pos_drop, "norm": model.norm}[kind]
    blk = block(model, i)
    if kind == "out":
        return blk
    if kind == "mlp.hidden":
        return blk.mlp
    return blk.attn


def mlp_hidden_size(model: nn.Module, i: int) -> int:
    """Width of ``blocks.{i}.mlp.hidden`` (the units [TTR]'s register neurons are counted in)."""
    return int(_mlp(model, i).fc2.in_features)


def residual_width(model: nn.Module, i: int) -> int:
    """Width of ``blocks.{i}.out`` (the residual stream)."""
    return int(block(model, i).norm1.normalized_shape[0])


def _mlp(model: nn.Module, i: int) -> nn.Module:
    """Block ``i``'s MLP, if it is one whose hidden activation this namespace knows: timm's ``Mlp``, ``GluMlp``
    (packed SwiGLU) and ``SwiGLU``, which all call their inner ``norm`` right after the activation (the gated
    product for the gated ones) and dropout."""
    from timm.layers import GluMlp, Mlp, SwiGLU

    mlp = getattr(block(model, i), "mlp", None)
    if type(mlp) not in (Mlp, GluMlp, SwiGLU) or not isinstance(mlp.fc2, nn.Linear):
        raise NotImplementedError(f"block {i} uses the MLP {type(mlp).__name__}: vitreg hooks the hidden "
                                  "activations of timm's Mlp, GluMlp and SwiGLU only")
    return mlp


def _target(model: nn.Module, name: str) -> tuple[nn.Module, str, int | None]:
    """The module a point hooks, which side (``"in"``: its input, ``"out"``: its output) and the resolved block."""
    kind, i = parse(name)
    if i is None:
        return module(model, name), "out", None
    b = resolve_block(i, model)
    if kind == "mlp.hidden":
        return _mlp(model, b).norm, "in", b
    attn = getattr(block(model, b), "attn", None)
    targets = {"out": block(model, b), "attn": attn, "attn.in": attn,
               "attn.qkv": getattr(attn, "qkv", None), "attn.probs": getattr(attn, "attn_drop", None)}
    if targets[kind] is None:
        raise NotImplementedError(f"block {i}'s attention ({type(attn).__name__}) has no {kind} point")
    return targets[kind], "in" if kind in _INPUT_POINTS else "out", b


def _run(point: _Point, value: torch.Tensor, site: Site) -> torch.Tensor:
    """The writers in order, then the readers on the final value."""
    for f in point.writers:
        new = f.fn(value, _site(f, site)) if f.site else f.fn(value)
        if new is not None:
            value = new
    for f in point.readers:
        if f.site:
            f.fn(value, _site(f, site))
        else:
            f.fn(value)
    return value


def _site(f: _Fn, site: Site) -> Site:
    return Site(f.name, site.module, f.block, site.args, site.kwargs)


def _install(mod: nn.Module, side: str, point: _Point) -> Any:
    """The one PyTorch hook of a point: a forward pre-hook (input side) or a forward hook (output side)."""
    if side == "in":
        def pre(m: nn.Module, args: tuple, kwargs: dict) -> tuple | None:
            value = _run(point, args[0], Site("", m, None, args, kwargs))
            return None if value is args[0] else ((value, *args[1:]), kwargs)

        return mod.register_forward_pre_hook(pre, with_kwargs=True)

    def post(m: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor | None:
        value = _run(point, out, Site("", m, None, args, {}))
        return None if value is out else value

    return mod.register_forward_hook(post)


@contextmanager
def _register(model: nn.Module, name: str, fn: Callable, *, writer: bool, site: bool) -> Iterator[None]:
    mod, side, b = _target(model, name)
    points = _REGISTRY.setdefault(mod, {})
    point = points.setdefault(side, _Point())
    entry = _Fn(fn, site, name, b)
    (point.writers if writer else point.readers).append(entry)
    try:
        if point.handle is None:
            point.handle = _install(mod, side, point)
        yield
    finally:
        (point.writers if writer else point.readers).remove(entry)
        if not point.writers and not point.readers:
            if point.handle is not None:
                point.handle.remove()
            del points[side]


def read(model: nn.Module, name: str, fn: Callable, *, site: bool = False) -> AbstractContextManager[None]:
    """Call ``fn(value)`` (``fn(value, site)`` with ``site=True``) with the value at point ``name`` on every
    forward inside the ``with`` block, after every writer of that point. Its return value is ignored.

    Args:
        model: a timm VisionTransformer or Eva.
        name: a point of :data:`POINTS` (``"blocks.-1.out"``).
        fn: the reader.
        site: also pass the :class:`Site`.
    """
    return _register(model, name, fn, writer=False, site=site)


def write(model: nn.Module, name: str, fn: Callable, *, site: bool = False) -> AbstractContextManager[None]:
    """Replace the value at point ``name`` by ``fn(value)`` (``fn(value, site)``) on every forward inside the
    ``with`` block; ``fn`` returns the new value (a new tensor: do not change the one given in place) or None to
    keep it. Writers of one point run in the order they were entered.

    Args:
        model: a timm VisionTransformer or Eva.
        name: a point of :data:`POINTS`.
        fn: the writer.
        site: also pass the :class:`Site`.
    """
    return _register(model, name, fn, writer=True, site=site)


def active(model: nn.Module) -> list[str]:
    """The names of the points of ``model`` with a function registered (empty outside every context)."""
    out = []
    for mod, points in list(_REGISTRY.items()):
        for point in points.values():
            out += [f.name for f in point.writers + point.readers if _owned_by(model, mod)]
    return out


def _owned_by(model: nn.Module, mod: nn.Module) -> bool:
    return any(m is mod for m in model.modules())
