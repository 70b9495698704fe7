"""Images: every odd input becomes RGB the right way up; bad files are named; batches fit the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitreg.images import ImageError, image_folder, load_image, preprocess, sample_photos, to_display


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
    from vitreg.images import SAMPLE_SOURCE, pick_images

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
