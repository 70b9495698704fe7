"""Official DINOv3 ``.pth`` files (facebookresearch/dinov3 layout), written by the tests from random tiny models:
loaded exactly (the file's bf16 RoPE periods, masked q/v biases), at any resolution, and refused when they
cannot be (a k bias surviving its mask, a missing or extra key)."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F

from vitreg.core.models import ZOO, get_spec
from vitreg.core.weight_files import OfficialLayoutError, keep_rope_periods, load_official_dinov3
from vitreg.core.weights import load_model

TINY = dict(depth=2, embed_dim=64, num_heads=2, num_classes=0)  # head_dim 32: 8 RoPE periods


def _random_official(name: str = "vit_small_patch16_dinov3_qkvb", seed: int = 0, **kw) -> dict[str, torch.Tensor]:
    """A random DINOv3-shaped model's weights in the official layout: ``storage_tokens``, ``ls1.gamma``, one
    ``qkv.bias`` with a random k part and a ``bias_mask`` that zeroes it, ``rope_embed.periods`` in bf16 (the
    official schedule base 100, shifted so bf16 rounding shows), ``mask_token``."""
    gen = torch.Generator().manual_seed(seed)
    model = timm.create_model(name, pretrained=False, **{**TINY, **kw})
    out: dict[str, torch.Tensor] = {}
    for key, t in model.state_dict().items():
        t = torch.randn(t.shape, generator=gen) * (0.5 if t.ndim > 1 else 0.3)
        key = key.replace("reg_token", "storage_tokens").replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        if key.endswith("norm1.weight") or key.endswith("norm2.weight") or key == "norm.weight":
            t = t + 1.0
        out[key] = t
    dim = model.embed_dim
    for b in range(len(model.blocks)):
        q, v = out.pop(f"blocks.{b}.attn.q_bias", None), out.pop(f"blocks.{b}.attn.v_bias", None)
        q = torch.zeros(dim) if q is None else q
        v = torch.zeros(dim) if v is None else v
        out[f"blocks.{b}.attn.qkv.bias"] = torch.cat([q, torch.randn(dim, generator=gen), v])
        out[f"blocks.{b}.attn.qkv.bias_mask"] = torch.cat([torch.ones(dim), torch.zeros(dim), torch.ones(dim)])
    head = dim // model.blocks[0].attn.num_heads
    periods = 100.0 ** (2 * torch.arange(head // 4, dtype=torch.float32) / (head // 2)) * 1.013
    out["rope_embed.periods"] = periods.to(torch.bfloat16)
    out["mask_token"] = torch.zeros(1, dim)
    return out


def _official_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int, prefix: int = 5) -> torch.Tensor:
    """The official DINOv3 forward (``dinov3/models/vision_transformer.py``, ``layers/attention.py``,
    ``layers/rope_position_encoding.py``) written out: ``bias * bias_mask``, RoPE from the file's periods (fp32)
    on the patch tokens only, rotate-half, LayerScale; all tokens after the final norm."""
    w = sd["patch_embed.proj.weight"]
    tok = F.conv2d(x, w, sd["patch_embed.proj.bias"], stride=w.shape[-1])
    bsz, dim, h, wd = tok.shape
    tok = tok.flatten(2).transpose(1, 2)
    tok = torch.cat([sd["cls_token"].expand(bsz, -1, -1), sd["storage_tokens"].expand(bsz, -1, -1), tok], dim=1)
    periods = sd["rope_embed.periods"].float()
    ch, cw = torch.arange(0.5, h) / h, torch.arange(0.5, wd) / wd
    coords = 2.0 * torch.stack(torch.meshgrid(ch, cw, indexing="ij"), dim=-1).flatten(0, 1) - 1.0
    angles = (2 * math.pi * coords[:, :, None] / periods[None, None, :]).flatten(1, 2).tile(2)
    sin, cos = torch.sin(angles), torch.cos(angles)

    def rope(t: torch.Tensor) -> torch.Tensor:
        p = t[:, :, prefix:]
        half = torch.cat([-p.chunk(2, -1)[1], p.chunk(2, -1)[0]], dim=-1)
        return torch.cat([t[:, :, :prefix], p * cos + half * sin], dim=2)

    def ln(t: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(t, (dim,), sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-5)

    b = 0
    while f"blocks.{b}.norm1.weight" in sd:
        p = f"blocks.{b}."
        bias = sd[p + "attn.qkv.bias"] * sd[p + "attn.qkv.bias_mask"]
        qkv = F.linear(ln(tok, p + "norm1"), sd[p + "attn.qkv.weight"], bias)
        q, k, v = qkv.reshape(bsz, -1, 3, heads, dim // heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        att = F.scaled_dot_product_attention(rope(q), rope(k), v).transpose(1, 2).reshape(bsz, -1, dim)
        tok = tok + sd[p + "ls1.gamma"] * F.linear(att, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        hid = F.gelu(F.linear(ln(tok, p + "norm2"), sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        tok = tok + sd[p + "ls2.gamma"] * F.linear(hid, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        b += 1
    return ln(tok, "norm")


def _tiny_model(name: str = "vit_small_patch16_dinov3_qkvb", size=(48, 80)) -> torch.nn.Module:
    return timm.create_model(name, pretrained=False, img_size=size, **TINY).eval()


def test_loaded_model_computes_the_official_forward_with_the_files_periods():
    sd = _random_official()
    model = _tiny_model()
    periods = load_official_dinov3(model, sd)
    keep_rope_periods(model, periods)
    assert torch.equal(model.rope.periods, sd["rope_embed.periods"].float())  # bf16 values, not timm's float32
    assert not torch.equal(model.rope.periods, model.rope._compute_periods())
    for size in [(48, 80), (64, 32)]:  # any resolution: RoPE only, no absolute position embedding
        x = torch.randn(2, 3, *size)
        with torch.inference_mode():
            got = model.forward_features(x)
        torch.testing.assert_close(got, _official_forward(sd, x, heads=2), atol=2e-5, rtol=2e-5)
    wrong = dict(sd, **{"rope_embed.periods": model.rope._compute_periods()})  # the test can fail: timm's periods
    assert (_official_forward(wrong, x, heads=2) - got).abs().max() > 1e-3


def test_the_files_periods_survive_a_dtype_cast():
    sd = _random_official()
    model = _tiny_model()
    keep_rope_periods(model, load_official_dinov3(model, sd))
    model.to(torch.bfloat16)  # timm recomputes its float32 periods here
    with torch.inference_mode():
        model.forward_features(torch.randn(1, 3, 48, 80, dtype=torch.bfloat16))
    assert model.rope.periods.dtype == torch.float32
    assert torch.equal(model.rope.periods, sd["rope_embed.periods"].float())


def test_the_bias_mask_is_applied_and_the_k_bias_is_masked_out():
    sd = _random_official()
    model = _tiny_model()
    load_official_dinov3(model, sd)
    qkv_bias = sd["blocks.1.attn.qkv.bias"]
    q, k, v = qkv_bias.chunk(3)
    assert k.abs().min() > 0  # the file's k bias is non-zero before its mask
    torch.testing.assert_close(model.blocks[1].attn.q_bias.detach(), q)
    torch.testing.assert_close(model.blocks[1].attn.v_bias.detach(), v)
    # a mask that also zeroes half of q must change what is loaded
    half = sd["blocks.1.attn.qkv.bias_mask"].clone()
    half[:16] = 0
    load_official_dinov3(model, dict(sd, **{"blocks.1.attn.qkv.bias_mask": half}))
    assert model.blocks[1].attn.q_bias[:16].abs().max() == 0 and torch.equal(model.blocks[1].attn.q_bias[16:], q[16:])


def test_a_k_bias_that_survives_its_mask_is_refused():
    sd = _random_official()
    sd["blocks.1.attn.qkv.bias_mask"] = torch.ones(3 * 64)
    with pytest.raises(OfficialLayoutError, match=r"blocks\.1\.attn\.qkv\.bias has a k bias that survives"):
        load_official_dinov3(_tiny_model(), sd)
    unmasked = _random_official()
    del unmasked["blocks.0.attn.qkv.bias_mask"]  # no mask at all: the raw k bias counts
    with pytest.raises(OfficialLayoutError, match=r"blocks\.0\.attn\.qkv\.bias has a k bias"):
        load_official_dinov3(_tiny_model(), unmasked)


def test_q_v_biases_for_a_model_without_them_are_refused_and_zero_ones_accepted():
    sd = _random_official()
    with pytest.raises(OfficialLayoutError, match="_qkvb"):
        load_official_dinov3(_tiny_model("vit_small_patch16_dinov3"), sd)
    for b in range(2):  # the distilled models' biases are all zero: nothing to load
        sd[f"blocks.{b}.attn.qkv.bias"] = sd[f"blocks.{b}.attn.qkv.bias"] * sd[f"blocks.{b}.attn.qkv.bias_mask"] * 0
    model = _tiny_model("vit_small_patch16_dinov3")
    load_official_dinov3(model, sd)
    x = torch.randn(1, 3, 48, 80)
    with torch.inference_mode():
        torch.testing.assert_close(model.forward_features(x), _official_forward(sd, x, heads=2), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("change,named", [
    (lambda sd: sd.pop("blocks.1.norm2.weight"), "blocks.1.norm2.weight"),
    (lambda sd: sd.pop("rope_embed.periods"), "rope_embed.periods"),
    (lambda sd: sd.__setitem__("blocks.0.attn.extra", torch.zeros(3)), "blocks.0.attn.extra"),
    (lambda sd: sd.__setitem__("rope_embed.freqs_extra", torch.zeros(3)), "rope_embed.freqs_extra"),  # timm drops it
    (lambda sd: sd.__setitem__("blocks.0.mlp.bias_mask", torch.zeros(3)), "blocks.0.mlp.bias_mask"),
])
def test_a_missing_or_extra_key_is_refused_by_name(change, named):
    sd = _random_official()
    change(sd)
    with pytest.raises(OfficialLayoutError, match=named.replace(".", r"\.")):
        load_official_dinov3(_tiny_model(), sd)


def test_load_model_reads_an_official_file_from_the_weights_folder(tmp_path, monkeypatch):
    """The zoo's dinov3_s (timm's ViT-S/16 without q/v biases) from its official file name, at a non-native,
    non-square size and in bf16: same output as the official forward, the file's periods kept."""
    spec = ZOO["dinov3_s"]
    sd = _random_official(spec.timm_name, depth=12, embed_dim=384, num_heads=6)
    for b in range(12):
        sd[f"blocks.{b}.attn.qkv.bias"] *= sd[f"blocks.{b}.attn.qkv.bias_mask"] * 0  # distilled: all zero
    torch.save({k: v.to(torch.bfloat16) if k == "rope_embed.periods" else v for k, v in sd.items()},
               tmp_path / spec.official_files[0])
    monkeypatch.setenv("VITREG_WEIGHTS", str(tmp_path))
    loaded = load_model("dinov3_s", image_size=(64, 96))
    assert loaded.source == str(tmp_path / spec.official_files[0]) and loaded.pretrained
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.forward(x), _official_forward(sd, x, heads=6), atol=1e-4, rtol=1e-4)
    half = load_model("dinov3_s", image_size=(64, 96), dtype=torch.bfloat16)
    assert torch.equal(half.model.rope.periods, sd["rope_embed.periods"].float())


def test_a_refused_official_file_exits_the_scan_with_its_reason(tmp_path, capsys):
    from vitreg.cli.main import main

    sd = _random_official("vit_small_patch16_dinov3", depth=12, embed_dim=384, num_heads=6)
    sd["blocks.3.attn.qkv.bias"][:384] = 0.1  # a q bias, but dinov3_s has none
    path = tmp_path / "dinov3_vits16_pretrain_lvd1689m-08c60483.pth"
    torch.save(sd, path)
    assert main(["scan", "dinov3_s", "--weights", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "_qkvb" in capsys.readouterr().err
    assert get_spec("vit_small_patch16_dinov3_qkvb.lvd1689m").family == "dinov3"
