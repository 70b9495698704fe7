"""The one hook namespace (vitreg.core.hooks): named points, reading and writing, and the paths rewired onto it.

Paper: Fig. 1-4 (capture), [TTR] (test-time registers), Sun et al. (fixed register means), planted truth. The
rewired paths are checked bit for bit against the hooks they replaced (written out here as plain PyTorch hooks
on a random model), and no module outside vitreg/core (nor any notebook) walks ``model.blocks``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import small_vit

from vitreg import planting
from vitreg.core import hooks
from vitreg.core.capture import capture
from vitreg.core.models import get_spec
from vitreg.core.weights import LoadedModel
from vitreg.measure import massive, ttr

ROOT = Path(__file__).resolve().parents[1]


def _loaded(name: str = "dinov2_s", depth: int = 3) -> LoadedModel:
    spec = get_spec(name)
    size = 56 if spec.patch_size == 14 else 64
    return LoadedModel(small_vit(name, depth=depth, image_size=size), spec, (size, size), False, "random init")


def _x(loaded: LoadedModel, n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, *loaded.image_size, generator=torch.Generator().manual_seed(1))


def _no_hooks_left(model: torch.nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# --- the namespace -------------------------------------------------------------------------------
def test_names_resolve_with_negative_indices_and_unknown_ones_are_refused() -> None:
    model = _loaded().model
    assert hooks.module(model, "blocks.-1.out") is model.blocks[2]
    assert hooks.module(model, "blocks.0.attn") is model.blocks[0].attn
    assert hooks.module(model, "norm") is model.norm and hooks.module(model, "embed") is model.pos_drop
    assert hooks.mlp_hidden_size(model, -1) == model.blocks[2].mlp.fc2.in_features
    with pytest.raises(ValueError, match="unknown hook point 'blocks.0.resid'"):
        hooks.read(model, "blocks.0.resid", print).__enter__()
    with pytest.raises(IndexError, match="3 blocks"):
        hooks.read(model, "blocks.3.out", print).__enter__()
    assert _no_hooks_left(model)


def test_writers_run_in_order_then_readers_see_the_final_value_and_all_go_on_exit() -> None:
    loaded = _loaded()
    model, x = loaded.model, _x(loaded, n=4)
    plain = model.forward_features(x)
    seen_early, seen_late = [], []
    with hooks.read(model, "blocks.1.out", seen_early.append), \
            hooks.write(model, "blocks.1.out", lambda v: v + 1.0), \
            hooks.write(model, "blocks.1.out", lambda v: v * 2.0), \
            hooks.read(model, "blocks.1.out", seen_late.append):
        changed = model.forward_features(x)
        assert set(hooks.active(model)) == {"blocks.1.out"}
    assert len(seen_early) == len(seen_late) == 1 and seen_early[0].shape[0] == 4  # one call, batch of 4
    assert torch.equal(seen_early[0], seen_late[0])  # both readers see (out + 1) * 2, whatever their order
    with hooks.read(model, "blocks.1.out", seen_early.append):
        model.forward_features(x)
    assert torch.allclose((seen_early[1] + 1.0) * 2.0, seen_late[0])
    assert not torch.equal(changed, plain)
    assert _no_hooks_left(model) and hooks.active(model) == []
    assert torch.equal(model.forward_features(x), plain)


def test_hooks_are_removed_on_an_exception() -> None:
    loaded = _loaded()
    with pytest.raises(RuntimeError, match="boom"):
        with hooks.write(loaded.model, "norm", lambda v: v * 0), hooks.read(loaded.model, "blocks.0.mlp.hidden", print):
            raise RuntimeError("boom")
    assert _no_hooks_left(loaded.model)


def test_the_mlp_hidden_point_is_the_activation_on_every_family() -> None:
    for name in ("dinov2_s", "clip_b16_laion", "dinov2_g"):  # GELU Mlp, QuickGELU Mlp, SwiGLU (gated product)
        loaded = _loaded(name, depth=1)
        model, x = loaded.model, _x(loaded, n=2)
        mlp, got, inp = model.blocks[0].mlp, [], []
        h = mlp.register_forward_pre_hook(lambda _m, a: inp.append(a[0]))
        with hooks.read(model, "blocks.0.mlp.hidden", got.append):
            model.forward_features(x)
        h.remove()
        if hasattr(mlp, "fc1_g"):  # timm SwiGLU: act(gate) * x
            want = mlp.act(mlp.fc1_g(inp[0])) * mlp.fc1_x(inp[0])
        elif mlp.fc1.out_features == 2 * mlp.fc2.in_features:  # GluMlp: packed halves
            a, b = mlp.fc1(inp[0]).chunk(2, dim=-1)
            want = mlp.act(a) * b if not getattr(mlp, "gate_last", False) else a * mlp.act(b)
        else:
            want = mlp.act(mlp.fc1(inp[0]))
        assert got[0].shape[-1] == hooks.mlp_hidden_size(model, 0)
        assert torch.allclose(got[0], want, atol=1e-5), name


# --- the rewired paths, bit for bit against the hooks they replaced --------------------------------
def test_capture_equals_plain_hooks_bit_for_bit() -> None:
    loaded = _loaded()
    model, x = loaded.model, _x(loaded)
    ref: dict[str, torch.Tensor] = {}
    handles = [model.blocks[1].register_forward_hook(lambda _m, _a, o: ref.__setitem__("out", o.detach().float())),
               model.blocks[2].mlp.norm.register_forward_pre_hook(lambda _m, a: ref.__setitem__("mlp", a[0].detach())),
               model.blocks[0].attn.qkv.register_forward_hook(lambda _m, _a, o: ref.__setitem__("qkv", o.detach())),
               model.pos_drop.register_forward_hook(lambda _m, _a, o: ref.__setitem__("embed_pos", o.detach())),
               model.norm.register_forward_hook(lambda _m, _a, o: ref.__setitem__("norm", o.detach()))]
    model.forward_features(x)
    for h in handles:
        h.remove()
    with capture(model, outputs=[-2], norms=[1], mlp=[-1], qkv=[0], embed=True, final_norm=True) as rec:
        model.forward_features(x)
    assert torch.equal(rec.outputs[-2], ref["out"]) and torch.equal(rec.norms[1], ref["out"].norm(dim=-1))
    assert torch.equal(rec.mlp[-1], ref["mlp"]) and torch.equal(rec.embed_pos, ref["embed_pos"])
    assert torch.equal(rec.final_norm, ref["norm"])
    attn = model.blocks[0].attn
    q, k, v = ref["qkv"].reshape(3, -1, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    assert torch.equal(rec.v[0], v.transpose(1, 2).reshape(v.shape[0], v.shape[2], -1))
    assert _no_hooks_left(model)


@pytest.mark.parametrize("name", ["vit_small_patch16_dinov3", "eva02_tiny_patch14_224"])
def test_capture_of_eva_attention_equals_a_plain_pre_hook_bit_for_bit(name: str) -> None:
    import timm

    from vitreg.core.capture import eva_qkv

    model = timm.create_model(name, pretrained=False, num_classes=0, depth=2, img_size=64 if "16" in name else 56).eval()
    x = torch.randn(2, 3, *model.patch_embed.img_size, generator=torch.Generator().manual_seed(1))
    seen = []
    h = model.blocks[1].attn.register_forward_pre_hook(
        lambda _m, a, kw: seen.append((a[0], kw.get("rope", a[1] if len(a) > 1 else None))), with_kwargs=True)
    model.forward_features(x)
    h.remove()
    with capture(model, qkv=[-1], rope_qk=True) as rec:
        model.forward_features(x)
    _, (q, k, v) = eva_qkv(model.blocks[1].attn, *seen[0])
    assert torch.equal(rec.q[-1], q.transpose(1, 2).reshape(2, q.shape[2], -1))
    assert torch.equal(rec.k[-1], k.transpose(1, 2).reshape(2, k.shape[2], -1))
    assert _no_hooks_left(model)


def _old_planted_outliers(model, block, tokens, vec):
    def hook(_m, _a, out):
        out = out.clone()
        for i in range(out.shape[0]):
            out[i, list(tokens)] += vec.to(out.device, out.dtype)
        return out
    return [model.blocks[block].register_forward_hook(hook)]


def test_planted_outliers_equal_the_plain_hook_bit_for_bit() -> None:
    loaded = _loaded()
    model, x = loaded.model, _x(loaded)
    with planting.planted_outliers(model, 1, [2, 7], norm=300.0, seed=4) as vec:
        new = model.forward_features(x)
    handles = _old_planted_outliers(model, 1, [2, 7], vec)
    old = model.forward_features(x)
    for h in handles:
        h.remove()
    assert torch.equal(new, old) and _no_hooks_left(model)


def _old_register_neurons(model, block, units, tokens, vec, activation=10.0, norm=500.0):
    """The planted register neurons as written before the namespace: act output, fc2 input, block output."""
    blk, idx = model.blocks[block], torch.tensor(list(units), dtype=torch.long)
    gain, stash = norm / (len(idx) * activation), []

    def fire(_m, _a, out):
        out = out.clone()
        out[:, torch.tensor(list(tokens))[:, None], idx] = activation
        return out

    def read(_m, args, _out):
        stash.append(args[0][:, :, idx].sum(-1))

    def write(_m, _a, out):
        return out + stash.pop()[..., None] * gain * vec.to(out.device, out.dtype)

    return [blk.mlp.act.register_forward_hook(fire), blk.mlp.fc2.register_forward_hook(read),
            blk.register_forward_hook(write)]


def _old_ttr(model, by_block, num_prefix):
    """The test-time register as written before the namespace: pos_drop output, fc2 input."""
    hs = [model.pos_drop.register_forward_hook(
        lambda _m, _a, out: torch.cat([out, out.new_zeros(out.shape[0], 1, out.shape[2])], dim=1))]
    for b, units in by_block.items():
        move = ttr._move_hook(torch.tensor(sorted(units)), num_prefix, None)
        hs.append(model.blocks[b].mlp.fc2.register_forward_pre_hook(lambda _m, args, move=move: (move(args[0]),)))
    return hs


@pytest.mark.parametrize("name", ["dinov2_s", "clip_b16_laion"])
def test_planted_register_neurons_and_the_test_time_register_equal_the_plain_hooks(name: str) -> None:
    loaded = _loaded(name)
    model, x, lay = loaded.model, _x(loaded), loaded.layout
    units, tokens = [3, 17, 40], [lay.num_prefix + 1, lay.num_prefix + 5]
    with planting.planted_register_neurons(model, 1, units, tokens) as vec:
        planted_new = model.forward_features(x)
        with ttr.test_time_register(loaded, {1: units}):
            ttr_new = model.forward_features(x)
    handles = _old_register_neurons(model, 1, units, tokens, vec)
    planted_old = model.forward_features(x)
    handles += _old_ttr(model, {1: units}, lay.num_prefix)
    ttr_old = model.forward_features(x)
    for h in handles:
        h.remove()
    assert torch.equal(planted_new, planted_old) and torch.equal(ttr_new, ttr_old)
    assert ttr_new.shape[1] == planted_new.shape[1] + 1 and _no_hooks_left(model)


def test_fixed_register_means_equal_the_plain_hooks_bit_for_bit() -> None:
    loaded = _loaded("dinov2_s_reg")
    model, x, sl = loaded.model, _x(loaded), loaded.layout.reg_slice
    means = {0: torch.randn(4, 384), 2: torch.randn(4, 384)}
    with massive.fixed_register_means(loaded, means):
        new = model.forward_features(x)

    def hook_for(mean):
        def hook(_m, _a, out):
            out = out.clone()
            out[:, sl] = mean
            return out
        return hook

    handles = [model.blocks[b].register_forward_hook(hook_for(m)) for b, m in means.items()]
    old = model.forward_features(x)
    for h in handles:
        h.remove()
    assert torch.equal(new, old) and _no_hooks_left(model)


# --- nobody else walks the blocks ----------------------------------------------------------------
_BLOCKS = re.compile(r"\.blocks\b")


def test_no_module_outside_the_core_nor_any_notebook_walks_model_blocks() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "vitreg").rglob("*.py")
                 if "core" not in p.relative_to(ROOT / "vitreg").parts[:1] and _BLOCKS.search(p.read_text())]
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        code = "".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")
        if _BLOCKS.search(code):
            offenders.append(nb.name)
    assert offenders == [], f"use vitreg.core.hooks instead of model.blocks in {offenders}"
