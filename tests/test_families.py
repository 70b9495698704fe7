"""Every supported family, random weights: token counts from the model, exact attention (RoPE included), MLP
hidden activations, loading at any size, refusals, and planted outliers found by capture."""

from __future__ import annotations

import pytest
import timm
import torch

from vitreg.core.capture import capture, explicit_attention
from vitreg.core.models import ZOO, NotAPlainViT, get_spec
from vitreg.planting import planted_outliers
from vitreg.core.tokens import TokenLayout, token_counts
from vitreg.core.weights import load_model

#: timm name -> (class tokens, registers): one model per family and layout.
FAMILIES = {
    "vit_small_patch16_dinov3": (1, 4),         # Eva, RoPE only, LayerScale
    "vit_small_patch16_dinov3_qkvb": (1, 4),    # Eva whose attention never calls its qkv module (q/v bias)
    "vit_small_plus_patch16_dinov3": (1, 4),    # Eva with SwiGLU
    "eva02_tiny_patch14_224": (1, 0),           # Eva: absolute + RoPE, SwiGLU with an inner norm
    "vit_betwixt_patch16_rope_reg4_gap_256": (0, 4),  # Eva: registers, no class token
    "vit_small_patch16_rope_mixed_224": (1, 0),  # Eva: AttentionRope, one RoPE per block
    "vit_base_patch16_siglip_224": (0, 0),      # VisionTransformer without prefix tokens
    "vit_medium_patch16_reg4_gap_256": (0, 4),  # VisionTransformer: registers, no class token
    "vit_small_patch14_reg4_dinov2": (1, 4),    # VisionTransformer: class token + registers
}


def tiny(name: str, size: tuple[int, int], depth: int = 2) -> torch.nn.Module:
    """A random 2-block model of ``name`` at ``size``, with every q/v bias and norm weight random too (timm
    starts some at zero or one, where a wrong recomputation could still match)."""
    model = timm.create_model(name, pretrained=False, num_classes=0, depth=depth, img_size=size).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith(("q_bias", "v_bias", "norm.weight", "norm.bias", "gamma_1", "gamma_2")) or ".ls" in pname:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + (1.0 if pname.endswith("weight") else 0.0))
    return model


def size_of(name: str, rows: int = 3, cols: int = 5) -> tuple[int, int]:
    patch = get_spec(name).patch_size
    return rows * patch, cols * patch  # non-square on purpose


@pytest.mark.parametrize("name", list(FAMILIES))
def test_token_counts_come_from_the_model_and_predict_its_sequence(name):
    size = size_of(name)
    model = tiny(name, size, depth=1)
    assert token_counts(model) == FAMILIES[name]
    layout = TokenLayout.from_model(model, size)
    with torch.inference_mode():
        tokens = model.forward_features(torch.randn(2, 3, *size))
    assert tokens.shape[1] == layout.num_tokens and layout.grid == (3, 5)
    assert (layout.num_cls, layout.num_reg) == FAMILIES[name]
    assert get_spec(name).registers == FAMILIES[name][1]


def test_dinov3_has_one_class_token_and_four_registers_and_siglip_none():
    assert get_spec("vit_small_patch16_dinov3.lvd1689m") is ZOO["dinov3_s"]
    dinov3 = load_model("dinov3_s", pretrained=False, image_size=(64, 96))
    assert (dinov3.layout.num_cls, dinov3.layout.num_reg, dinov3.layout.num_prefix) == (1, 4, 5)
    siglip = load_model("vit_base_patch16_siglip_224", pretrained=False, image_size=(48, 80))
    assert siglip.layout.num_prefix == 0


@pytest.mark.parametrize("name", [n for n in FAMILIES if "siglip" not in n])
def test_recomputed_attention_equals_the_blocks_explicit_path(name):
    """RoPE on the patch tokens only, q/v biases as applied, q/k norms, scale: the softmax of timm's own
    non-fused path, hooked, within 1e-5; the fused path stays on during capture."""
    size = size_of(name)
    model = tiny(name, size)
    x = torch.randn(2, 3, *size)
    with torch.inference_mode(), capture(model, attn="all", norms="all") as rec:
        out = model.forward_features(x)
    assert all(blk.attn.fused_attn for blk in model.blocks)
    with torch.inference_mode(), explicit_attention(model, "all") as ref:
        torch.testing.assert_close(model.forward_features(x), out, atol=1e-4, rtol=1e-4)
    for b in range(2):
        torch.testing.assert_close(rec.attn[b], ref[b][0].float(), atol=1e-5, rtol=0)
    prefix = token_counts(model)[0] + token_counts(model)[1]
    if prefix:
        with torch.inference_mode(), capture(model, attn=[-1], attn_rows="prefix") as rows:
            model.forward_features(x)
        torch.testing.assert_close(rows.attn[-1], rec.attn[1][:, :, :prefix], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["vit_small_patch16_dinov3_qkvb", "eva02_tiny_patch14_224",
                                  "vit_small_patch16_rope_mixed_224"])
def test_qkv_after_rope_reproduce_the_block_and_before_rope_leave_prefix_tokens_alone(name):
    size = size_of(name, 4, 3)
    model = tiny(name, size)
    attn_mod = model.blocks[1].attn
    seen = {}
    hook = attn_mod.proj.register_forward_pre_hook(lambda _m, a: seen.__setitem__("proj_in", a[0].detach()))
    x = torch.randn(2, 3, *size)
    try:
        with torch.inference_mode(), capture(model, attn=[1], qkv=[1]) as rec:
            model.forward_features(x)
    finally:
        hook.remove()
    assert rec.qk_rope[1] is True
    B, T, D = rec.v[1].shape
    v = rec.v[1].view(B, T, attn_mod.num_heads, -1).transpose(1, 2)
    with torch.inference_mode():
        mixed = attn_mod.norm((rec.attn[1] @ v).transpose(1, 2).reshape(B, T, D))  # the block's inner norm, if any
    torch.testing.assert_close(mixed, seen["proj_in"], atol=1e-4, rtol=1e-4)
    with torch.inference_mode(), capture(model, qkv=[1], rope_qk=False) as pre:
        model.forward_features(x)
    assert pre.qk_rope[1] is False
    prefix = model.num_prefix_tokens
    torch.testing.assert_close(pre.q[1][:, :prefix], rec.q[1][:, :prefix], atol=0, rtol=0)  # no RoPE on prefix
    assert not torch.allclose(pre.q[1][:, prefix:], rec.q[1][:, prefix:], atol=1e-3)  # RoPE on the patches


@pytest.mark.parametrize("name", ["vit_small_patch16_dinov3", "vit_small_plus_patch16_dinov3",
                                  "eva02_tiny_patch14_224", "vit_small_patch14_reg4_dinov2"])
def test_mlp_hidden_is_the_activation_or_gated_product_before_the_inner_norm(name):
    size = size_of(name)
    model = tiny(name, size)
    mlp = model.blocks[0].mlp
    seen = {}
    hook = mlp.register_forward_hook(lambda _m, a, o: seen.update(inp=a[0].detach(), out=o.detach()))
    try:
        with torch.inference_mode(), capture(model, mlp=[0]) as rec:
            model.forward_features(torch.randn(2, 3, *size))
    finally:
        hook.remove()
    with torch.inference_mode():
        torch.testing.assert_close(mlp.fc2(mlp.norm(rec.mlp[0])), seen["out"], atol=1e-4, rtol=1e-4)
        if hasattr(mlp, "fc1_g"):  # SwiGLU: act(gate) * x
            gated = mlp.act(mlp.fc1_g(seen["inp"])) * mlp.fc1_x(seen["inp"])
            torch.testing.assert_close(rec.mlp[0], gated, atol=1e-5, rtol=1e-5)


def test_patch_embeddings_of_a_dynamic_size_eva_model():
    size = (48, 80)
    model = tiny("vit_small_patch16_dinov3", size, depth=1)
    layout = TokenLayout.from_model(model, size)
    with torch.inference_mode(), capture(model, embed=True) as rec:
        model.forward_features(torch.randn(2, 3, *size))
    assert rec.embed.shape == (2, layout.num_patches, 384)
    torch.testing.assert_close(layout.patches(rec.embed_pos), rec.embed, atol=0, rtol=0)  # no absolute pos embed
    torch.testing.assert_close(layout.split(rec.embed_pos).reg[0], model.reg_token.detach()[0], atol=0, rtol=0)


@pytest.mark.robustness("clear error")
def test_an_attention_class_it_does_not_know_is_refused():
    from timm.models.eva import EvaAttention

    class OtherAttention(EvaAttention):  # a subclass may compute differently: never guessed
        pass

    model = tiny("vit_small_patch16_dinov3", (32, 32))
    model.blocks[1].attn.__class__ = OtherAttention
    with pytest.raises(NotImplementedError, match="OtherAttention"):
        with capture(model, attn=[1]):
            pass
    with capture(model, attn=[0], norms="all"):  # the other block is still fine
        pass


def test_dinov3_zoo_entries_load_at_native_and_other_sizes():
    for key, width in (("dinov3_s", 384), ("dinov3_b", 768), ("dinov3_l", 1024)):
        spec = ZOO[key]
        assert (spec.registers, spec.patch_size, spec.native_resolution, spec.family) == (4, 16, 256, "dinov3")
        assert spec.threshold is None and spec.threshold_note == "no published cut-off: use the scale-free rule"
        assert spec.pos_interp == "rope"
    for size in (None, 224, (224, 320)):
        loaded = load_model("dinov3_s", pretrained=False, image_size=size)
        h, w = loaded.image_size
        with torch.inference_mode():
            assert loaded.forward(torch.zeros(1, 3, h, w)).shape[1] == 5 + (h // 16) * (w // 16)
    assert load_model("vit_small_patch16_dinov3_qkvb", pretrained=False, image_size=(64, 48)).layout.grid == (4, 3)


@pytest.mark.robustness("clear error")
def test_the_refusal_names_eva_among_the_supported_models():
    with pytest.raises(NotAPlainViT) as err:
        get_spec("swin_tiny_patch4_window7_224")
    assert "module='eva'" in str(err.value) and "dinov3" in str(err.value)


@pytest.mark.parametrize("name", ["vit_small_patch16_dinov3", "eva02_tiny_patch14_224"])
def test_outliers_planted_in_an_eva_block_are_found_exactly_by_capture(name):
    size = size_of(name, 4, 6)
    model = tiny(name, size, depth=3)
    layout = TokenLayout.from_model(model, size)
    planted = [layout.num_prefix + i for i in (0, 7, 23)]
    with torch.inference_mode(), planted_outliers(model, 1, planted, norm=1000.0), \
            capture(model, norms="all") as rec:
        model.forward_features(torch.randn(2, 3, *size))
    assert rec.norms[0].max() < 100  # clean before the planting block
    for b in (1, 2):  # carried by the residual stream
        found = [sorted((row > 500).nonzero().flatten().tolist()) for row in rec.norms[b]]
        assert found == [planted, planted]
