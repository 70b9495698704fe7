"""Model zoo: the paper's models with their metadata; any timm ViT by name; helpful unknown names."""

from __future__ import annotations

import pytest
import torch

from vitreg.core.models import REGISTER_TWINS, ZOO, UnknownModel, get_spec, register_pairs, register_twin
from vitreg.core.weights import load_model


def test_zoo_covers_the_papers_families():
    fams = {s.family for s in ZOO.values()}
    assert fams == {"dino", "dinov2", "dinov3", "deit3", "clip", "mae"}
    for size in "sblg":
        plain, reg = ZOO[f"dinov2_{size}"], ZOO[f"dinov2_{size}_reg"]
        assert (plain.registers, reg.registers) == (0, 4)
        assert plain.threshold == reg.threshold == 150.0
        assert (plain.pos_interp, reg.pos_interp) == ("dinov2_noreg", "dinov2_reg")
        assert plain.native_resolution == 518 and plain.patch_size == 14
    assert ZOO["dinov2_l"].lost_features == "k"
    assert ZOO["deit3_b16"].lost_features == ZOO["clip_b16_laion"].lost_features == "v"
    assert "quickgelu" in ZOO["clip_b16_openai"].timm_name


def test_every_register_twin_is_the_same_model_with_four_registers():
    for plain, reg in REGISTER_TWINS.items():
        a, b = ZOO[plain], ZOO[reg]
        assert (a.registers, b.registers) == (0, 4)
        assert (a.family, a.patch_size, a.native_resolution, a.tag) == (b.family, b.patch_size, b.native_resolution, b.tag)
    assert register_twin("dinov2_l") == "dinov2_l_reg"
    assert register_twin("dinov2_l_reg") is None and register_twin("deit3_b16") is None  # never released


def test_register_pairs_keep_the_listed_order_and_need_both_models():
    names = ["dino_s16", "dinov2_l_reg", "dinov2_g", "dinov2_l", "dinov2_g_reg", "dinov2_b"]
    assert register_pairs(names) == [("dinov2_g", "dinov2_g_reg"), ("dinov2_l", "dinov2_l_reg")]
    assert register_pairs(["dinov2_s"]) == []


def test_timm_names_resolve_to_the_zoo_entry():
    assert get_spec("vit_large_patch14_reg4_dinov2.lvd142m") is ZOO["dinov2_l_reg"]


@pytest.mark.parametrize("name,regs,cls_tokens,patch", [
    ("vit_base_patch16_224.augreg_in21k", 0, 1, 16),
    ("vit_medium_patch16_reg4_gap_256.sbb_in12k", 4, 0, 16),  # registers and no class token
])
def test_any_timm_vit_works_with_metadata_from_the_model(name, regs, cls_tokens, patch):
    spec = get_spec(name)
    assert (spec.registers, spec.patch_size, spec.family) == (regs, patch, "other")
    assert spec.threshold is None  # relative rule
    loaded = load_model(name, pretrained=False, image_size=4 * patch)
    assert loaded.layout.num_cls == cls_tokens and loaded.layout.num_reg == regs
    with torch.inference_mode():
        assert loaded.forward(torch.zeros(1, 3, 4 * patch, 4 * patch)).shape[1] == loaded.layout.num_tokens


@pytest.mark.robustness("clear error")
def test_unknown_name_suggests_close_names():
    with pytest.raises(UnknownModel) as err:
        get_spec("dinov2_l_regs")
    assert "dinov2_l_reg" in str(err.value) and not str(err.value).startswith("'")
    with pytest.raises(KeyError):  # still a KeyError for callers that catch that
        get_spec("not_a_model_at_all")


def test_spec_of_a_timm_vit_builds_no_weights(monkeypatch):
    """The patch size of an unknown timm ViT is read from the architecture on the meta device (ViT-g: 0.7 s and
    no memory, instead of 35 s and 4 GiB of random weights)."""
    import timm

    built = []
    real = timm.create_model

    def spy(*args, **kwargs):
        model = real(*args, **kwargs)
        built.append({p.device.type for p in model.parameters()})
        return model

    monkeypatch.setattr(timm, "create_model", spy)
    assert get_spec("vit_small_patch14_reg4_dinov2.lvd142m") is ZOO["dinov2_s_reg"] and built == []  # zoo: nothing built
    spec = get_spec("vit_base_patch16_224.augreg_in21k")
    assert spec.patch_size == 16 and built == [{"meta"}]


@pytest.mark.robustness("clear error")
@pytest.mark.parametrize("name", ["resnet18", "convnext_atto", "swin_tiny_patch4_window7_224",
                                  "deit_small_distilled_patch16_224", "vit_small_r26_s32_224"])
def test_a_timm_model_that_is_not_a_plain_vit_is_refused_up_front(name):
    """A CNN used to raise a TypeError; Swin loaded with a wrong token layout and failed mid-extraction."""
    from vitreg.core.models import NotAPlainViT

    for call in (lambda: get_spec(name), lambda: load_model(name, pretrained=False)):
        with pytest.raises(NotAPlainViT) as err:
            call()
        msg = str(err.value)
        assert "not a plain ViT" in msg and name in msg
        assert "dinov2_l_reg" in msg and "module='vision_transformer'" in msg  # what is supported
    assert get_spec("deit3_small_patch16_224.fb_in1k").patch_size == 16  # deit3 lives in timm.models.deit: still a ViT


@pytest.mark.parametrize("key", ["dinov3_s", "dinov3_b", "dinov3_l"])
def test_dinov3_zoo_entries_agree_with_the_model_and_name_the_official_file(key, tmp_path, monkeypatch, capsys):
    """Registers and native resolution as the architecture (built on the meta device) and timm's config say;
    `vitreg weights where` finds the official checkpoint under its official name."""
    from vitreg.cli.main import main
    from vitreg.core.models import _spec_from_timm

    spec, derived = ZOO[key], _spec_from_timm(ZOO[key].full_name)
    assert (spec.registers, spec.native_resolution, spec.patch_size, spec.pos_interp) == (
        derived.registers, derived.native_resolution, derived.patch_size, derived.pos_interp) == (4, 256, 16, "rope")
    assert spec.official_files[0].startswith(f"dinov3_vit{key[-1]}16_pretrain_lvd1689m-")
    monkeypatch.setenv("VITREG_WEIGHTS", str(tmp_path))
    assert main(["weights", "where", key]) == 1
    (tmp_path / spec.official_files[0]).write_bytes(b"x")  # not a checkpoint: found, and called broken
    assert main(["weights", "where", key]) == 1
    torch.save({"cls_token": torch.zeros(1, 1, 4)}, tmp_path / spec.official_files[0])
    assert main(["weights", "where", key]) == 0
    assert spec.official_files[0] in capsys.readouterr().out
