"""Weights: checkpoints the tests write in the real formats load strictly and give the same outputs."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F

from vitreg.core.models import get_spec
from vitreg.core.resize import resize_pos_embed
from vitreg.core.weights import WeightsNotFound, load_model


def _source(key: str, seed: int = 1):
    """A random model of ``key`` at its native size: the 'pretrained' weights of these tests."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(get_spec(key).full_name, pretrained=False, num_classes=0).eval()
    with torch.no_grad():  # make every parameter matter (LayerScale starts at 1e-5)
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    return model


def _official_dinov2_layout(model) -> dict[str, torch.Tensor]:
    """Write a timm DINOv2 state dict in the official facebookresearch/dinov2 layout."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    if "reg_token" in sd:  # timm folds the class position embedding into cls_token
        cls_pos = torch.randn_like(sd["cls_token"])
        sd["register_tokens"] = sd.pop("reg_token")
        sd["cls_token"] = sd["cls_token"] - cls_pos
        sd["pos_embed"] = torch.cat([cls_pos, sd["pos_embed"]], dim=1)
    sd["mask_token"] = torch.zeros(1, sd["cls_token"].shape[-1])
    return sd


def _same_weights(a, b) -> None:
    """Same architecture, same tensors (strict loading + equal tensors = same function)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=1e-6, rtol=0, msg=k)


def _same_outputs(a, b, size: int) -> None:
    x = torch.randn(1, 3, size, size)
    with torch.inference_mode():
        torch.testing.assert_close(a.forward_features(x), b.forward_features(x), atol=1e-4, rtol=1e-4)


def test_timm_safetensors_in_the_weights_folder_loads_strictly(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    src = _source("dinov2_s")
    save_file(src.state_dict(), tmp_path / "vit_small_patch14_dinov2.lvd142m.safetensors")
    monkeypatch.setenv("VITREG_WEIGHTS", str(tmp_path))
    loaded = load_model("dinov2_s")
    assert loaded.pretrained and loaded.source.endswith(".safetensors")
    assert loaded.image_size == (518, 518)
    _same_outputs(loaded.model, src, 518)


@pytest.mark.parametrize("key,fname", [("dinov2_s_reg", "dinov2_vits14_reg4_pretrain.pth"),
                                       ("dinov2_s", "dinov2_vits14_pretrain.pth")])
def test_official_dinov2_pth_loads_through_timms_filter(tmp_path, monkeypatch, key, fname):
    src = _source(key)
    torch.save(_official_dinov2_layout(src), tmp_path / fname)
    monkeypatch.setenv("VITREG_WEIGHTS", str(tmp_path))
    loaded = load_model(key)
    assert loaded.source == str(tmp_path / fname)
    _same_weights(loaded.model, src)
    explicit = load_model(key, weights=tmp_path / fname)  # an explicit file works the same
    _same_weights(explicit.model, src)


@pytest.mark.robustness("clear error")
def test_checkpoint_with_a_missing_key_fails_loudly(tmp_path):
    sd = _official_dinov2_layout(_source("dinov2_s_reg"))
    del sd["blocks.3.attn.qkv.weight"]
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(RuntimeError, match=r"blocks\.3\.attn\.qkv\.weight"):
        load_model("dinov2_s_reg", weights=path)


@pytest.mark.robustness("clear error")
def test_offline_without_weights_fails_at_once_naming_places(tmp_path, monkeypatch):
    monkeypatch.setenv("VITREG_WEIGHTS", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    start = time.perf_counter()
    with pytest.raises(WeightsNotFound) as err:
        load_model("dinov2_l_reg")
    msg = str(err.value)
    assert time.perf_counter() - start < 30  # no minute of hub retries (generous: shared machines)
    assert "dinov2_l_reg" in msg and "vit_large_patch14_reg4_dinov2.lvd142m" in msg
    assert str(tmp_path / "empty") in msg and "dinov2_vitl14_reg4_pretrain.pth" in msg
    assert "make weights" in msg and "pretrained=False" in msg


@pytest.mark.robustness("clear error")
def test_missing_explicit_file_and_unknown_name():
    with pytest.raises(WeightsNotFound, match="does not exist"):
        load_model("dinov2_s", weights="/nonexistent/file.pth")
    with pytest.raises(KeyError, match="dinov2_l"):
        load_model("dinov2_xl")


@pytest.mark.robustness("clear error")
def test_wrong_input_size_to_a_fixed_size_model_says_what_to_do():
    loaded = load_model("dinov2_s", pretrained=False, image_size=112)
    with pytest.raises(ValueError, match="preprocess"):
        loaded.forward(torch.zeros(1, 3, 224, 224))
    with pytest.raises(ValueError, match="multiple"):
        load_model("dinov2_s", pretrained=False, image_size=100)


def _official_interpolate(pos_embed: torch.Tensor, h0: int, w0: int, antialias: bool, offset: float) -> torch.Tensor:
    """facebookresearch/dinov2 `interpolate_pos_encoding`, transcribed step by step (class token first)."""
    class_pos, patch_pos = pos_embed[:, 0], pos_embed[:, 1:]
    n, dim = patch_pos.shape[1], pos_embed.shape[-1]
    m = int(math.sqrt(n))
    kwargs = {"scale_factor": ((h0 + offset) / m, (w0 + offset) / m)} if offset else {"size": (h0, w0)}
    patch_pos = F.interpolate(patch_pos.reshape(1, m, m, dim).permute(0, 3, 1, 2), mode="bicubic",
                              antialias=antialias, **kwargs)
    return torch.cat((class_pos.unsqueeze(0), patch_pos.permute(0, 2, 3, 1).view(1, -1, dim)), dim=1)


def test_position_embeddings_resize_as_the_official_code():
    """Without registers: no antialiasing, offset 0.1 (timm's default differs); with: timm's = official."""
    from timm.layers import resample_abs_pos_embed

    pos = torch.randn(1, 1 + 37 * 37, 8)
    ours = resize_pos_embed(pos, (37, 37), (16, 16), num_prefix=1, mode="dinov2_noreg")
    torch.testing.assert_close(ours, _official_interpolate(pos, 16, 16, antialias=False, offset=0.1))
    timm_default = resample_abs_pos_embed(pos, new_size=[16, 16], num_prefix_tokens=1)
    assert (ours - timm_default).abs().max() > 1e-2  # the difference this module exists for
    reg = resize_pos_embed(pos[:, 1:], (37, 37), (16, 24), num_prefix=0, mode="dinov2_reg")
    torch.testing.assert_close(reg, resample_abs_pos_embed(pos[:, 1:], new_size=[16, 24], num_prefix_tokens=0))
    torch.testing.assert_close(reg[:, :16 * 16 * 0 + 24 * 16], _official_interpolate(
        torch.cat([pos[:, :1], pos[:, 1:]], 1), 16, 24, antialias=True, offset=0.0)[:, 1:])


def test_pretrained_model_at_224_uses_the_official_resize(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    src = _source("dinov2_s")
    save_file(src.state_dict(), tmp_path / "vit_small_patch14_dinov2.lvd142m.safetensors")
    monkeypatch.setenv("VITREG_WEIGHTS", str(tmp_path))
    loaded = load_model("dinov2_s", image_size=224)
    expected = _official_interpolate(src.pos_embed.detach(), 16, 16, antialias=False, offset=0.1)
    torch.testing.assert_close(loaded.model.pos_embed.detach(), expected)
    assert loaded.layout.num_patches == 256
    assert loaded.describe()["image_size"] == [224, 224]


def test_half_precision_model_takes_float_batches():
    loaded = load_model("dinov2_s", pretrained=False, image_size=56, dtype=torch.bfloat16)
    with torch.inference_mode():
        out = loaded.forward(torch.zeros(2, 3, 56, 56))  # preprocess gives float32
    assert out.dtype == torch.bfloat16 and out.shape[1] == loaded.layout.num_tokens
    assert loaded.describe()["dtype"] == "bfloat16"  # results record the number format


def test_resizing_keeps_the_one_model(tmp_path, monkeypatch):
    """Another resolution resizes the position embeddings in place: no second (randomly initialised) model."""
    import timm
    from safetensors.torch import save_file

    src = _source("dinov2_s_reg")
    save_file(src.state_dict(), tmp_path / "vit_small_patch14_reg4_dinov2.lvd142m.safetensors")
    monkeypatch.setenv("VITREG_WEIGHTS", str(tmp_path))
    calls = []
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: calls.append(a) or real(*a, **k))
    loaded = load_model("dinov2_s_reg", image_size=(224, 336))
    assert len(calls) == 1
    assert loaded.model.patch_embed.img_size == (224, 336) and loaded.layout.num_patches == 16 * 24
    expected = resize_pos_embed(src.pos_embed.detach(), (37, 37), (16, 24), num_prefix=0, mode="dinov2_reg")
    torch.testing.assert_close(loaded.model.pos_embed.detach(), expected)
    assert not loaded.model.pos_embed.requires_grad
    _same_outputs_at(loaded.model, src, (224, 336))


def _same_outputs_at(resized, src, size) -> None:
    """The resized model computes what the source computes with the same resized position embeddings."""
    import copy

    ref = copy.deepcopy(src)
    ref.set_input_size(img_size=size)
    ref.pos_embed.data.copy_(resized.pos_embed.detach())
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        torch.testing.assert_close(resized.forward_features(x), ref.forward_features(x), atol=1e-5, rtol=1e-5)


def test_the_missing_weights_message_is_one_text(monkeypatch, tmp_path):
    """load_model's error and the runner's preflight are built by one function."""
    from vitreg.core.weights import missing_weights_message

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VITREG_WEIGHTS", str(tmp_path))
    specs = [get_spec("dinov2_l"), get_spec("mae_b16")]
    one = missing_weights_message(specs[:1], looked=["/x/a.pth"])
    both = missing_weights_message(specs, needed_by={"dinov2_l": ["00_tour"], "mae_b16": ["01_x", "02_y"]},
                                   before_run=True)
    assert "  - /x/a.pth" in one and "pretrained=False" in one and "dinov2_vitl14_pretrain.pth" in one
    assert both.startswith("Stopping before any notebook runs") and "mae_b16 = vit_base_patch16_224.mae: 01_x, 02_y" in both
    for msg in (one, both):
        assert "HF_HUB_OFFLINE=1" in msg and "Two ways out" in msg and str(tmp_path) in msg and "make weights" in msg


# --- unusable weights files: named with the model and the fix ---------------------------------
def _tiny_safetensors(path) -> None:
    from safetensors.torch import save_file

    save_file({"a": torch.ones(64, 64), "b": torch.zeros(8)}, path)


def _broken_files(tmp_path) -> dict[str, object]:
    """Unreadable weights files as a user meets them: a text file, an empty file, interrupted downloads."""
    st_name, pth_name = "vit_small_patch14_dinov2.lvd142m.safetensors", "dinov2_vits14_pretrain.pth"
    good = tmp_path / "good"
    good.mkdir()
    _tiny_safetensors(good / st_name)
    torch.save({"a": torch.ones(64, 64)}, good / pth_name)
    cases = {
        "text.safetensors": (st_name, b"<html>Repository not found</html>\n"),
        "empty.safetensors": (st_name, b""),
        "truncated.safetensors": (st_name, (good / st_name).read_bytes()[:-1000]),
        "truncated_header.safetensors": (st_name, (good / st_name).read_bytes()[:40]),
        "truncated.pth": (pth_name, (good / pth_name).read_bytes()[:-3000]),
        "text.pth": (pth_name, b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n"),
    }
    out = {}
    for case, (name, data) in cases.items():
        folder = tmp_path / case
        folder.mkdir()
        (folder / name).write_bytes(data)
        out[case] = folder / name
    return out


@pytest.mark.robustness("clear error")
@pytest.mark.parametrize("case", ["text.safetensors", "empty.safetensors", "truncated.safetensors",
                                  "truncated_header.safetensors", "truncated.pth", "text.pth"])
def test_an_unreadable_weights_file_is_named_with_the_model_and_the_fix(tmp_path, monkeypatch, case):
    """A bare SafetensorError, or "do not match the model" for a truncated .pth, used to be all one got."""
    from vitreg.core.weight_files import check_weights_file
    from vitreg.core.weights import BrokenWeights

    path = _broken_files(tmp_path)[case]
    assert check_weights_file(path)  # the cheap header check sees it
    monkeypatch.setenv("VITREG_WEIGHTS", str(path.parent))
    for call in (lambda: load_model("dinov2_s"), lambda: load_model("dinov2_s", weights=path)):
        with pytest.raises(BrokenWeights) as err:
            call()
        msg = str(err.value)
        assert str(path) in msg and "dinov2_s" in msg and "do not match" not in msg
        assert "vitreg weights download dinov2_s" in msg and "make weights" in msg and "Delete it" in msg


@pytest.mark.robustness("handled")
def test_the_header_check_passes_good_files_without_reading_tensors(tmp_path):
    from vitreg.core.weight_files import check_weights_file

    _tiny_safetensors(tmp_path / "a.safetensors")
    torch.save({"a": torch.ones(3)}, tmp_path / "a.pth")
    torch.save({"a": torch.ones(3)}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    for name in ("a.safetensors", "a.pth", "old.pth"):
        assert check_weights_file(tmp_path / name) is None, name


@pytest.mark.robustness("clear error")
def test_preflight_reports_a_truncated_file_as_broken_not_found(tmp_path, monkeypatch):
    from vitreg.core.weights import broken_weights, broken_weights_message

    path = _broken_files(tmp_path)["truncated.safetensors"]
    monkeypatch.setenv("VITREG_WEIGHTS", str(path.parent))
    broken = broken_weights(["dinov2_s", "dinov2_s_reg"])
    assert list(broken) == ["dinov2_s"] and broken["dinov2_s"][0] == path and "truncated" in broken["dinov2_s"][1]
    msg = broken_weights_message(broken, needed_by={"dinov2_s": ["02_high_norm_tokens"]})
    assert msg.startswith("Stopping before any notebook runs") and str(path) in msg and "02_high_norm_tokens" in msg
    assert "vitreg weights download dinov2_s" in msg


@pytest.mark.robustness("clear error")
def test_weights_with_nan_are_refused_naming_the_file_and_tensor(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from vitreg.core.weights import BrokenWeights

    sd = _source("dinov2_s").state_dict()
    sd["blocks.2.mlp.fc1.weight"][0, :3] = float("nan")
    sd["blocks.5.attn.proj.bias"][0] = float("inf")
    path = tmp_path / "vit_small_patch14_dinov2.lvd142m.safetensors"
    save_file(sd, path)
    monkeypatch.setenv("VITREG_WEIGHTS", str(tmp_path))
    with pytest.raises(BrokenWeights) as err:
        load_model("dinov2_s")
    msg = str(err.value)
    assert str(path) in msg and "blocks.2.mlp.fc1.weight" in msg and "NaN/Inf" in msg and "blocks.5" not in msg
