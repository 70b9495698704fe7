"""The batching stream (vitreg.stream) and extract on it: same recordings as one big batch, in order,
planting hooks followed across batches, one run-time estimate from the first real batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitreg.capture import capture
from vitreg.extract import extract
from vitreg.images import preprocess
from vitreg.planting import planted
from vitreg.stream import stream


@pytest.fixture(scope="module")
def loaded():
    from vitreg.weights import load_model

    return load_model("dinov2_s_reg", pretrained=False, image_size=56)


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (60, 70, 3), dtype=np.uint8)) for _ in range(n)]


def test_stream_batches_equal_one_big_batch(loaded):
    images = _images(5)
    kw = dict(norms="all", attn=[-1], attn_rows="prefix", qkv=[-1], embed=True, final_norm=True)
    with torch.inference_mode(), capture(loaded.model, to="cpu", **kw) as big:
        loaded.forward(preprocess(images, loaded))
    parts = list(stream(loaded, images, batch_size=2, progress=False, **kw))
    assert [p.index for p in parts] == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert [len(p.items) for p in parts] == [2, 2, 1] and parts[0].x.shape == (2, 3, 56, 56)
    whole = extract(loaded, images, batch_size=2, progress=False, **kw)
    for p in parts:
        torch.testing.assert_close(p.rec.norms[3], big.norms[3][p.index], atol=1e-4, rtol=1e-5)
    for b in big.norms:
        torch.testing.assert_close(whole.norms[b], big.norms[b], atol=1e-4, rtol=1e-5)
    assert list(whole.norms) == list(big.norms)  # block order kept (norm_stack relies on it)
    torch.testing.assert_close(whole.attn[-1], big.attn[-1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(whole.k[-1], big.k[-1], atol=1e-4, rtol=1e-5)
    for name in ("embed", "embed_pos", "final_norm"):
        torch.testing.assert_close(getattr(whole, name), getattr(big, name), atol=1e-4, rtol=1e-5)


def test_planting_around_a_stream_follows_images_across_batches(loaded):
    lay = loaded.layout
    mask = torch.zeros(5, lay.num_patches, dtype=torch.bool)
    mask[torch.arange(5), torch.tensor([0, 3, 5, 7, 9])] = True
    with planted(loaded, mask, norm=2000.0):
        rec = extract(loaded, _images(5), batch_size=2, progress=False, norms=[-1])
    assert lay.patches(rec.norms[-1]).argmax(dim=1).tolist() == [0, 3, 5, 7, 9]


def test_the_estimate_is_printed_once_after_the_first_batch(loaded, capsys):
    extract(loaded, _images(5), batch_size=2, norms=[-1])
    text = capsys.readouterr()
    assert (text.out + text.err).count("first batch of 2 took") == 1


def test_batched_input_is_forwarded_as_given(loaded):
    x = preprocess(_images(3), loaded)
    loader = [(x[:2], "a"), (x[2:], "b")]
    parts = list(stream(loaded, loader, batched=True, total=3, progress=False, norms=[-1]))
    assert [p.items[1] for p in parts] == ["a", "b"] and [p.index for p in parts] == [slice(0, 2), slice(2, 3)]
    ref = extract(loaded, _images(3), progress=False, norms=[-1])
    torch.testing.assert_close(torch.cat([p.rec.norms[-1] for p in parts]), ref.norms[-1], atol=1e-4, rtol=1e-5)


def test_before_batch_is_told_each_batchs_first_image_before_its_forward(loaded):
    seen = []
    handle = loaded.model.blocks[0].register_forward_hook(lambda *_: seen.append("forward"))
    try:
        parts = list(stream(loaded, _images(5), batch_size=2, progress=False, norms=[-1],
                            before_batch=lambda i: seen.append(i)))
    finally:
        handle.remove()
    assert seen == [0, "forward", 2, "forward", 4, "forward"] and len(parts) == 3


def test_the_estimate_can_be_printed_without_a_bar(loaded, capsys):
    list(stream(loaded, _images(3), batch_size=2, progress=False, norms=[-1]))
    list(stream(loaded, _images(3), batch_size=2, progress=False, estimate=True, total=30, norms=[-1]))
    text = capsys.readouterr()
    assert (text.out + text.err).count("first batch of 2 took") == 1 and "so 30 images will take" in text.out + text.err


def test_forward_tokens_runs_on_the_stream_with_planting_per_image(loaded, capsys):
    """Features in chunks of any batch size are the same, planted masks included (issue 10: one batching stream)."""
    from vitreg import planting
    from vitreg.features import forward_tokens

    images = _images(5)
    with planting.planted_outlier_share(loaded, fraction=0.2, norm=1000.0, seed=0):
        whole = forward_tokens(loaded, images, batch_size=5, with_pixels=True, total=5)
        parts = [forward_tokens(loaded, images[s:s + 3], batch_size=2, with_pixels=True, first_index=s, total=5)
                 for s in (0, 3)]
        mask = planting.planted_mask(loaded, 0, 5)
    for name in ("tokens", "norms", "pixels"):
        torch.testing.assert_close(torch.cat([p[name] for p in parts]), whole[name], atol=1e-4, rtol=1e-5)
    assert torch.equal(loaded.layout.patches(whole["norms"]) > 500, mask)
    printed = capsys.readouterr()
    assert (printed.out + printed.err).count("so 5 images will take") == 2  # once per extraction starting at image 0
