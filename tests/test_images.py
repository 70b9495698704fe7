"""Images: every odd input becomes RGB the right way up; bad files are named; batches fit the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitreg.core.images import ImageError, image_folder, load_image, preprocess, sample_photos, to_display


def _left_red_right_blue(w: int = 8, h: int = 4) -> Image.Image:
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2, 0] = 255
    arr[:, w // 2:, 2] = 255
    return Image.fromarray(arr)


def test_modes_become_rgb(tmp_path):
    gray = Image.fromarray(np.full((4, 6), 128, np.uint8))
    assert load_image(gray).mode == "RGB" and load_image(gray).getpixel((0, 0)) == (128, 128, 128)
    img16 = Image.fromarray(np.full((4, 6), 65535, np.uint16))
    img16.save(tmp_path / "deep.png")
    assert load_image(tmp_path / "deep.png").getpixel((0, 0)) == (255, 255, 255)
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent: composited on white
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)
    pal = _left_red_right_blue().convert("P")
    assert load_image(pal).getpixel((0, 0)) == (255, 0, 0)
    assert load_image(np.ones((3, 5, 7), np.float32)).size == (7, 5)  # CHW float array


def test_exif_rotation_is_applied(tmp_path):
    img = _left_red_right_blue(8, 4)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=100)
    out = load_image(tmp_path / "rot.jpg")
    assert out.size == (4, 8)  # width and height swapped
    top = np.asarray(out)[0, 2]
    assert top[0] > 200 and top[2] < 60  # red (the left half) is now on top
    assert load_image(tmp_path / "rot.jpg", exif=False).size == (8, 4)  # the stored grid, for annotated datasets


@pytest.mark.robustness("clear error")
def test_bad_files_are_named(tmp_path):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ImageError, match="corrupt.jpg"):
        load_image(bad)
    with pytest.raises(ImageError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no images"):
        image_folder(tmp_path / "empty")
    with pytest.raises(ImageError, match="does not exist"):
        image_folder(tmp_path / "nowhere")


def test_sample_photos_are_real_rgb_photos():
    photos = sample_photos()
    assert len(photos) >= 12
    names = [n for n, _ in photos]
    assert len(set(names)) == len(names)
    for _, img in photos:
        assert img.mode == "RGB" and min(img.size) >= 128
        assert np.asarray(img).std() > 10  # not blank


def test_preprocess_shapes_and_normalisation():
    imgs = [img for _, img in sample_photos(["astronaut", "camera"])]
    x = preprocess(imgs, size=(112, 168), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert x.shape == (2, 3, 112, 168) and x.dtype == torch.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    back = to_display(x, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert back.shape == (2, 112, 168, 3) and 0.0 <= back.min() and back.max() <= 1.0


def test_preprocess_keeps_orientation():
    x = preprocess(_left_red_right_blue(64, 32), size=32, mean=(0, 0, 0), std=(1, 1, 1))
    assert x[0, 0, :, :8].mean() > 0.9 and x[0, 2, :, -8:].mean() > 0.9  # centre crop keeps left red, right blue


def test_pick_images_from_a_folder_or_the_bundled_photos(tmp_path, recwarn):
    from vitreg.core.images import SAMPLE_SOURCE, pick_images

    for i in range(3):
        _left_red_right_blue().save(tmp_path / f"{i}.png")
    files, source = pick_images(tmp_path, 2, profile="real")
    assert files == [tmp_path / "0.png", tmp_path / "1.png"] and source == str(tmp_path)
    photos, source = pick_images(None, 3, profile="smoke")
    assert len(photos) == 3 and source == SAMPLE_SOURCE and not recwarn.list
    with pytest.warns(UserWarning, match="bundled photos stand in for 500 images"):
        photos, _ = pick_images(None, 500, profile="real")
    assert 12 <= len(photos) < 500


def test_default_normalisation_is_timms_imagenet():
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    img = _left_red_right_blue(32, 32)
    x = preprocess(img, size=32)
    y = preprocess(img, size=32, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
    torch.testing.assert_close(x, y)


# --- bad input is named, all at once ---------------------------------------------------------------
def _png_header_only(path, width: int, height: int) -> None:
    """A PNG that claims ``width`` x ``height`` pixels in a few bytes (as a decompression bomb does)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def _truncated_jpeg(path) -> None:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


@pytest.mark.robustness("clear error")
@pytest.mark.parametrize("side", [20000, 12000])  # PIL's DecompressionBombError; a silent 2.4 GB decode
def test_a_huge_image_is_refused_before_decoding_naming_the_file(tmp_path, side):
    path = tmp_path / "huge.png"
    _png_header_only(path, side, side)
    with pytest.raises(ImageError) as err:
        load_image(path)
    msg = str(err.value)
    assert str(path) in msg and "VITREG_MAX_PIXELS" in msg and "megapixels" in msg


@pytest.mark.robustness("clear error")
def test_the_pixel_limit_is_one_setting(tmp_path, monkeypatch):
    _left_red_right_blue(40, 40).save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png").size == (40, 40)
    for limit in ("1000", "100"):  # under the limit; under half of it (PIL's own error, turned into ours)
        monkeypatch.setenv("VITREG_MAX_PIXELS", limit)
        with pytest.raises(ImageError, match=r"a\.png.*limit"):
            load_image(tmp_path / "a.png")
    monkeypatch.setenv("VITREG_MAX_PIXELS", "2000")
    assert load_image(tmp_path / "a.png").size == (40, 40)
    assert Image.MAX_IMAGE_PIXELS not in (100, 1000, 2000)  # PIL's setting is restored


@pytest.mark.robustness("clear error")
def test_a_folder_names_every_bad_file_at_once(tmp_path):
    """A truncated JPEG used to stop the run at the first bad file (or with no path at all)."""
    _left_red_right_blue().save(tmp_path / "a_good.png")
    _left_red_right_blue().convert("RGB").save(tmp_path / "b_good.jpg")
    _truncated_jpeg(tmp_path / "c_truncated.jpg")
    (tmp_path / "d_text.jpg").write_text("not an image")
    _png_header_only(tmp_path / "e_huge.png", 20000, 20000)
    (tmp_path / "f_empty.png").write_bytes(b"")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "g.png")
    (tmp_path / "g_cut.png").write_bytes((tmp_path / "g.png").read_bytes()[:-500])
    (tmp_path / "g.png").unlink()
    with pytest.raises(ImageError) as err:
        image_folder(tmp_path)
    msg = str(err.value)
    assert "5 of the 7 images" in msg
    for name in ("c_truncated.jpg", "d_text.jpg", "e_huge.png", "f_empty.png", "g_cut.png"):
        assert str(tmp_path / name) in msg, name
    assert "a_good" not in msg and "b_good" not in msg
    assert image_folder(tmp_path, limit=2) == [tmp_path / "a_good.png", tmp_path / "b_good.jpg"]
    with pytest.raises(ImageError) as err:  # a list given straight to preprocess: every bad one named too
        preprocess([tmp_path / "c_truncated.jpg", tmp_path / "a_good.png", tmp_path / "d_text.jpg"], size=16)
    assert "c_truncated.jpg" in str(err.value) and "d_text.jpg" in str(err.value)


@pytest.mark.parametrize("bad,match", [
    (np.full((8, 8, 3), np.nan, np.float32), "NaN/Inf"),  # used to become a black image
    (np.where(np.eye(8)[..., None] > 0, np.inf, 0.5).repeat(3, -1), "NaN/Inf"),
    (np.zeros((0, 0, 3), np.uint8), "empty"),  # used to raise ZeroDivisionError
    (torch.full((3, 8, 8), float("nan")), "NaN/Inf"),
    (torch.zeros(2, 3, 8, 8), "batch"),
    (torch.zeros(8, 8, 5), "channels"),
], ids=["nan_array", "inf_array", "empty_array", "nan_tensor", "batch_tensor", "five_channels"])
@pytest.mark.robustness("clear error")
def test_arrays_and_tensors_that_are_not_images_are_refused(bad, match):
    with pytest.raises(ImageError, match=match):
        load_image(bad)


@pytest.mark.robustness("handled")
def test_a_torch_tensor_is_taken_as_chw_or_hwc():
    """uint8 0-255 or floats 0-1, channels first or last: the same picture (it used to be an unclear TypeError)."""
    ref = np.asarray(_left_red_right_blue(8, 4))
    hwc_u8 = torch.from_numpy(ref.copy())
    for t in (hwc_u8, hwc_u8.permute(2, 0, 1), hwc_u8.float() / 255, hwc_u8.permute(2, 0, 1).float() / 255,
              hwc_u8.permute(2, 0, 1).to(torch.bfloat16) / 255):
        np.testing.assert_array_equal(np.asarray(load_image(t)), ref)
    one = preprocess(hwc_u8.permute(2, 0, 1), size=4, mean=(0, 0, 0), std=(1, 1, 1))  # one CHW image, not 3
    two = preprocess(torch.stack([hwc_u8.permute(2, 0, 1)] * 2), size=4, mean=(0, 0, 0), std=(1, 1, 1))
    assert one.shape == (1, 3, 4, 4) and two.shape == (2, 3, 4, 4)
    torch.testing.assert_close(two[0], one[0])
