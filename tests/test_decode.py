"""The device image path (torchvision's JPEG decoder, nvJPEG on a GPU) gives the PIL path's batch, file by file.

The same function runs on the CPU here and on a GPU in a real run; only the decoder's device differs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitreg.core.decode import TOLERANCE, fast_path_ok, prepare_files
from vitreg.core.images import ImageError, MAX_PIXELS_ENV, preprocess, resize_crop, sample_photos, to_uint8

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> list:
    """Real photos (the bundled ones) written as JPEGs of different sizes, one of them grey."""
    root = tmp_path_factory.mktemp("jpegs")
    out = []
    for i, (name, img) in enumerate(sample_photos()[:6]):
        img = img.resize((img.width * 3 // 4, img.height)) if i % 2 else img
        path = root / f"{name}.jpg"
        (img.convert("L") if i == 3 else img).save(path, quality=90)
        out.append(path)
    return out


def _gap(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(mean, 99.9th percentile) of the absolute difference, in [0, 1] pixel units (normalisation undone)."""
    d = ((a - b) * torch.tensor(STD).view(1, 3, 1, 1)).abs().flatten()
    return float(d.mean()), float(d.quantile(0.999))


@pytest.mark.parametrize("size", [224, (70, 98)])
def test_the_device_path_equals_the_pil_path_on_real_jpegs(jpegs, size):
    assert all(fast_path_ok(p) for p in jpegs)
    mean_gap, tail_gap = _gap(prepare_files(jpegs, size, MEAN, STD), preprocess(jpegs, size=size, mean=MEAN, std=STD))
    assert mean_gap <= TOLERANCE[0] and tail_gap <= TOLERANCE[1], (mean_gap * 255, tail_gap * 255)


def test_files_the_decoder_cannot_read_take_the_pil_path_one_by_one(jpegs, tmp_path):
    png, cmyk = tmp_path / "photo.png", tmp_path / "cmyk.jpg"
    Image.open(jpegs[0]).save(png)
    Image.open(jpegs[1]).convert("CMYK").save(cmyk)
    assert not fast_path_ok(png) and not fast_path_ok(cmyk)
    files = [jpegs[2], png, cmyk, jpegs[3]]
    mean_gap, tail_gap = _gap(prepare_files(files, 112, MEAN, STD), preprocess(files, size=112, mean=MEAN, std=STD))
    assert mean_gap <= TOLERANCE[0] and tail_gap <= TOLERANCE[1]


def test_a_channel_swap_would_be_caught(jpegs):
    """The tolerance is tight enough to see a decoder that returns BGR instead of RGB."""
    good = preprocess(jpegs[:2], size=96, mean=MEAN, std=STD)
    swapped = prepare_files(jpegs[:2], 96, MEAN, STD)[:, [2, 1, 0]]
    assert _gap(swapped, good)[0] > TOLERANCE[0]


def test_bad_and_oversized_files_are_named(jpegs, tmp_path, monkeypatch):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(jpegs[0].read_bytes()[:200])
    with pytest.raises(ImageError, match="broken.jpg"):
        prepare_files([jpegs[1], broken], 64, MEAN, STD)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    assert not fast_path_ok(jpegs[0])
    with pytest.raises(ImageError, match="limit"):
        prepare_files([jpegs[0]], 64, MEAN, STD)


@pytest.mark.parametrize("size", [(224, 224), (37, 61), (600, 520)])
def test_resize_crop_matches_pils_bicubic_filter(size):
    """The 8-bit antialiased kernel that replaced PIL's resize agrees with it within 2 grey levels."""
    img = sample_photos(["chelsea"])[0][1]
    h, w = size
    scale = max(h / img.height, w / img.width)
    nh, nw = max(h, round(img.height * scale)), max(w, round(img.width * scale))
    top, left = (nh - h) // 2, (nw - w) // 2
    ref = np.asarray(img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=None)
                     .crop((left, top, left + w, top + h)), dtype=np.float32) / 255
    ours = resize_crop(to_uint8(img), h, w).permute(1, 2, 0).numpy()
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 2 / 255 + 1e-6 and np.abs(ours - ref).mean() < 0.1 / 255


def test_only_batches_of_files_on_a_gpu_take_the_device_path(jpegs, monkeypatch):
    from vitreg.core.decode import DECODE_ENV, decodes_on_device

    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    assert decodes_on_device(gpu, jpegs) and decodes_on_device(gpu, [str(p) for p in jpegs])
    assert not decodes_on_device(cpu, jpegs)
    assert not decodes_on_device(gpu, [jpegs[0], Image.open(jpegs[1])])  # an image in memory: the PIL path
    assert not decodes_on_device(gpu, [])
    monkeypatch.setenv(DECODE_ENV, "cpu")
    assert not decodes_on_device(gpu, jpegs)
