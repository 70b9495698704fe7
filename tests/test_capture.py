"""Capture: recomputed attention vs the explicit softmax path, hook hygiene, batches (planting: test_planting)."""

from __future__ import annotations

import pytest
import torch

from conftest import small_vit
from vitreg.core.capture import capture, explicit_attention
from vitreg.core.tokens import TokenLayout


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("key", ["dinov2_s", "dinov2_s_reg", "clip_b16_laion"])
@pytest.mark.parametrize("cells", [4, 7])
def test_recomputed_attention_equals_explicit_softmax(key, cells):
    """R = 0 and R = 4, two resolutions, DINOv2-style (LayerScale) and CLIP-style (pre-norm) blocks."""
    model = small_vit(key, depth=2, image_size=cells * model_patch(key))
    x = torch.randn(3, 3, cells * model_patch(key), cells * model_patch(key))
    with torch.inference_mode(), capture(model, attn="all") as rec:
        model.forward_features(x)
    assert all(model.blocks[b].attn.fused_attn for b in range(2))  # the fast path stayed on
    with torch.inference_mode(), explicit_attention(model, "all") as ref:
        model.forward_features(x)
    assert all(model.blocks[b].attn.fused_attn for b in range(2))  # restored
    for b in range(2):
        assert rec.attn[b].shape == ref[b][0].shape
        torch.testing.assert_close(rec.attn[b], ref[b][0].float(), atol=1e-5, rtol=0)
    # prefix rows only: the same numbers, fewer of them
    with torch.inference_mode(), capture(model, attn=[-1], attn_rows="prefix") as rows:
        model.forward_features(x)
    prefix = int(model.num_prefix_tokens)
    torch.testing.assert_close(rows.attn[-1], rec.attn[1][:, :, :prefix], atol=1e-6, rtol=0)


def model_patch(key: str) -> int:
    from vitreg.core.models import get_spec

    return get_spec(key).patch_size


def test_hooks_are_removed_on_exit_and_on_exceptions():
    model = small_vit("dinov2_s_reg", depth=2, image_size=56)
    before = _hooks(model)
    with capture(model, norms="all", outputs=[0], attn=[1], qkv=[1], mlp=[0], embed=True, final_norm=True):
        assert _hooks(model) > before
    assert _hooks(model) == before
    with pytest.raises(RuntimeError, match="boom"):
        with capture(model, norms="all", attn="all"):
            raise RuntimeError("boom")
    assert _hooks(model) == before
    with pytest.raises(IndexError, match="2 blocks"):
        with capture(model, norms=[5]):
            pass
    assert _hooks(model) == before


def test_batch_equals_images_one_by_one_and_runs_do_not_leak():
    model = small_vit("dinov2_s_reg", depth=2, image_size=56)
    x = torch.randn(3, 3, 56, 56)
    with torch.inference_mode(), capture(model, norms="all", qkv=[-1], attn=[-1]) as batch:
        model.forward_features(x)
    with torch.inference_mode(), capture(model, norms="all", qkv=[-1], attn=[-1]) as single:
        for i in range(3):
            model.forward_features(x[i:i + 1])
    for b in (0, 1):
        torch.testing.assert_close(batch.norms[b], single.norms[b], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(batch.k[-1], single.k[-1], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(batch.attn[-1], single.attn[-1], atol=1e-5, rtol=1e-5)
    assert batch.outputs == {} and batch.mlp == {} and batch.embed is None  # only what was asked


def test_qkv_and_mlp_recordings_reproduce_the_block():
    """v: attention @ v is what the projection receives; mlp: fc2 of the hidden activations is the MLP output."""
    model = small_vit("clip_b16_laion", depth=2, image_size=64)
    attn_mod, mlp_mod = model.blocks[1].attn, model.blocks[1].mlp
    seen = {}
    h1 = attn_mod.proj.register_forward_pre_hook(lambda _m, a: seen.__setitem__("proj_in", a[0].detach()))
    h2 = mlp_mod.register_forward_hook(lambda _m, _a, o: seen.__setitem__("mlp_out", o.detach()))
    try:
        with torch.inference_mode(), capture(model, attn=[1], qkv=[1], mlp=[1]) as rec:
            model.forward_features(torch.randn(2, 3, 64, 64))
    finally:
        h1.remove(), h2.remove()
    B, T, D = rec.v[1].shape
    heads = attn_mod.num_heads
    v = rec.v[1].view(B, T, heads, -1).transpose(1, 2)
    mixed = (rec.attn[1] @ v).transpose(1, 2).reshape(B, T, D)
    torch.testing.assert_close(mixed, seen["proj_in"], atol=1e-4, rtol=1e-4)
    with torch.inference_mode():
        torch.testing.assert_close(mlp_mod.fc2(rec.mlp[1]), seen["mlp_out"], atol=1e-4, rtol=1e-4)


def test_embeddings_before_the_first_block():
    model = small_vit("dinov2_s_reg", depth=1, image_size=56)  # registers: no position embedding on prefix
    layout = TokenLayout.from_model(model, (56, 56))
    with torch.inference_mode(), capture(model, embed=True, outputs=[0]) as rec:
        model.forward_features(torch.randn(2, 3, 56, 56))
    assert rec.embed.shape == (2, layout.num_patches, 384)
    torch.testing.assert_close(layout.patches(rec.embed_pos), rec.embed + model.pos_embed.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(layout.split(rec.embed_pos).reg[0], model.reg_token.detach()[0], atol=1e-6, rtol=0)


def test_norms_only_keeps_blocks_times_batch_times_tokens_floats():
    model = small_vit("dinov2_s", depth=4, image_size=56)
    with torch.inference_mode(), capture(model, norms="all") as rec:
        model.forward_features(torch.randn(3, 3, 56, 56))
    kept = sum(t.numel() for t in rec.norms.values())
    assert kept == 4 * 3 * (1 + 16)
    assert rec.outputs == {} and rec.attn == {}
