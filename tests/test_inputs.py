"""Inputs at every door: images inside ImageFolder sets, ``image_size``, weights files (NaN RoPE periods, a
truncated file ``weights where`` would call found, DINOv3 training checkpoints) and an empty profile."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vitreg.cli.main import main
from vitreg.core.images import ImageError
from vitreg.core.models import get_spec


# --- images inside an ImageFolder dataset --------------------------------------------------------
def _png(path, side: int = 16, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((side, side, 3), value, np.uint8)).save(path)


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def folder_set(tmp_path):
    """An ImageFolder set ``tmp_path/mine`` (train split, two classes) with a truncated JPEG, a zero-byte JPEG
    and a PNG over a 10 000-pixel limit among good images."""
    train = tmp_path / "mine" / "train"
    for c in ("a", "b"):
        for i in range(3):
            _png(train / c / f"ok{i}.png")
    (train / "a" / "truncated.jpg").write_bytes(_jpeg_bytes()[:400])
    (train / "b" / "empty.jpg").write_bytes(b"")
    _png(train / "b" / "huge.png", side=200)  # 40 000 pixels
    return tmp_path / "mine"


@pytest.mark.robustness("clear error")
def test_every_bad_file_of_an_imagefolder_set_is_named_at_once(folder_set, monkeypatch):
    from vitreg.data.datasets import load_dataset

    monkeypatch.setenv("VITREG_MAX_PIXELS", "10000")
    ds = load_dataset(str(folder_set), "train")
    bad = [i for i, (path, _) in enumerate(ds.parts[0].samples) if "ok" not in path]
    with pytest.raises(ImageError, match="3 of the 9 images of mine/train cannot be used") as err:
        ds[bad[0]]
    for name in ("truncated.jpg", "empty.jpg", "huge.png"):
        assert name in str(err.value)
    assert "limit" in str(err.value)
    good = next(i for i, (path, _) in enumerate(ds.parts[0].samples) if "ok" in path)
    assert ds[good][0].size == (16, 16)


@pytest.mark.robustness("clear error")
def test_a_huge_image_in_an_imagefolder_set_meets_vitregs_pixel_limit(tmp_path, monkeypatch):
    from vitreg.data.datasets import load_dataset

    _png(tmp_path / "set" / "train" / "a" / "huge.png", side=200)
    monkeypatch.setenv("VITREG_MAX_PIXELS", "10000")  # PIL's own guard (89 M pixels) would let it through
    with pytest.raises(ImageError, match=r"huge\.png.*limit"):
        load_dataset(str(tmp_path / "set"), "train")[0]


class _PetsLike:
    """A torchvision-style set (Pets keeps ``_images``) that opens files with PIL itself, as torchvision does."""

    def __init__(self, files):
        self._images = [str(f) for f in files]

    def __len__(self):
        return len(self._images)

    def __getitem__(self, j):
        return Image.open(self._images[j]).convert("RGB"), 0


@pytest.mark.robustness("clear error")
def test_bad_files_of_a_torchvision_set_are_named_too(tmp_path):
    from vitreg.data.datasets import LabelledImages

    files = [tmp_path / "ok.png", tmp_path / "cut.jpg", tmp_path / "zero.jpg"]
    _png(files[0])
    files[1].write_bytes(_jpeg_bytes()[:400])
    files[2].write_bytes(b"")
    ds = LabelledImages("pets", "test", [_PetsLike(files)], torch.zeros(3))
    assert ds[0][0].size == (16, 16)
    with pytest.raises(ImageError, match="2 of the 3 images of pets/test cannot be used") as err:
        ds[2]
    assert "cut.jpg" in str(err.value) and "zero.jpg" in str(err.value)


# --- image_size ------------------------------------------------------------------------------------
@pytest.mark.robustness("handled")
@pytest.mark.parametrize("given, size", [(64, (64, 64)), ("64", (64, 64)), (" 224 ", (224, 224)), ((64, 128), (64, 128)),
                                         ([64, 128], (64, 128)), (np.int64(64), (64, 64)), (None, (224, 224))])
def test_image_size_takes_an_int_a_pair_or_a_numeric_string(given, size):
    from vitreg.core.weights import _resolve_size

    assert _resolve_size(get_spec("dino_s16"), given) == size


@pytest.mark.robustness("clear error")
@pytest.mark.parametrize("given", [64.0, [64], "224px", True, (64, "a"), {"h": 64}], ids=repr)
def test_any_other_image_size_is_refused_naming_the_parameter(given):
    from vitreg.core.weights import load_model

    with pytest.raises(ValueError, match="image_size="):
        load_model("dino_s16", pretrained=False, image_size=given)


# --- weights files ---------------------------------------------------------------------------------
@pytest.mark.robustness("clear error")
@pytest.mark.parametrize("value", [float("nan"), 0.0, float("inf")], ids=["nan", "zero", "inf"])
def test_official_dinov3_rope_periods_that_are_not_finite_and_positive_are_refused(value):
    from test_dinov3_files import _random_official, _tiny_model

    from vitreg.core.weight_files import OfficialLayoutError, load_official_dinov3

    sd = _random_official()
    sd["rope_embed.periods"] = torch.full_like(sd["rope_embed.periods"], value)
    with pytest.raises(OfficialLayoutError, match=r"rope_embed\.periods holds 8 NaN, Inf or non-positive"):
        load_official_dinov3(_tiny_model(), sd)


@pytest.mark.robustness("clear error")
def test_a_non_finite_non_persistent_buffer_is_seen():
    import timm

    from vitreg.core.weight_files import first_non_finite

    model = timm.create_model("vit_small_patch16_dinov3", pretrained=False, depth=1, embed_dim=64, num_heads=2,
                              num_classes=0)
    assert first_non_finite(model) is None
    model.rope.periods = torch.full_like(model.rope.periods, float("nan"))  # not in the state dict
    bad = first_non_finite(model)
    assert bad is not None and bad[0].endswith("periods") and bad[1] == model.rope.periods.numel()


@pytest.mark.robustness("handled")
def test_a_dinov3_training_checkpoint_is_unwrapped_from_its_teacher(tmp_path, capsys):
    from test_dinov3_files import _random_official

    from vitreg.core.weight_files import read_state_dict

    sd = _random_official()
    teacher = {f"backbone.{k}": v for k, v in sd.items()} | {"dino_head.mlp.0.weight": torch.zeros(4, 4)}
    student = {f"backbone.{k}": v + 1 for k, v in sd.items()}
    path = tmp_path / "model_0124999.rank_0.pth"
    torch.save({"teacher": teacher, "student": student, "optimizer": {"state": {}}, "iteration": 124999}, path)
    got = read_state_dict(path)
    assert set(got) == set(sd)
    for key, value in sd.items():
        assert torch.equal(got[key], value), key
    assert "teacher" in capsys.readouterr().err


@pytest.mark.robustness("clear error")
def test_a_checkpoint_without_model_weights_is_refused_naming_its_keys(tmp_path):
    from vitreg.core.weight_files import OfficialLayoutError, read_state_dict

    path = tmp_path / "opt.pth"
    torch.save({"optimizer": {"state": {}}, "iteration": 3, "scheduler": {"lr": 0.1}}, path)
    with pytest.raises(OfficialLayoutError, match="'optimizer', 'iteration', 'scheduler' and no model weights"):
        read_state_dict(path)


@pytest.mark.robustness("clear error")
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_where_calls_a_truncated_file_broken_not_found(suffix, tmp_path, monkeypatch, capsys):
    import timm
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VITREG_WEIGHTS", str(tmp_path))
    spec = get_spec("dino_s16")
    state = {k: v.contiguous() for k, v in timm.create_model(spec.timm_name, pretrained=False, depth=1,
                                                               num_classes=0).state_dict().items()}
    path = tmp_path / f"{spec.full_name}{suffix}"
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert main(["weights", "where", "dino_s16"]) == 1
    out = capsys.readouterr().out
    assert str(path) in out and "broken" in out, out


# --- an empty profile ------------------------------------------------------------------------------
@pytest.mark.robustness("clear error")
@pytest.mark.parametrize("command", [["run", "--profile", "smoke"], ["extract", "06", "--profile", "smoke"]])
def test_an_empty_profile_file_is_named(command, tmp_path, monkeypatch, capsys):
    import vitreg.cli.runner as runner
    import vitreg.utils.paths as paths

    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "smoke.yaml").write_text("# emptied by mistake\n\n")
    monkeypatch.setattr(paths, "repo_root", lambda: tmp_path)
    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("the run started"))
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "smoke.yaml is empty" in err and "git checkout" in err, err
