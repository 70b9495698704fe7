"""The batching stream (vitreg.core.stream) and extract on it: same recordings as one big batch, in order,
planting hooks followed across batches, one run-time estimate from the first real batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitreg.core.capture import capture
from vitreg.core.extract import extract
from vitreg.core.images import preprocess
from vitreg.planting import planted
from vitreg.core.stream import stream


@pytest.fixture(scope="module")
def loaded():
    from vitreg.core.weights import load_model

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
    """Features in chunks of any batch size are the same, planted masks included (one batching stream)."""
    from vitreg import planting
    from vitreg.measure.features import forward_tokens

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


# --- GPU throughput switches: pure functions on fake numbers, the loader branch on the CPU ----------
def test_autocast_is_bf16_on_cuda_by_default_and_never_on_the_cpu(monkeypatch):
    from vitreg.core.device import AUTOCAST_ENV, autocast_dtype

    monkeypatch.delenv(AUTOCAST_ENV, raising=False)
    assert autocast_dtype("cpu") is None and autocast_dtype(torch.device("cpu"), "bf16") is None
    assert autocast_dtype(torch.device("cuda")) is torch.bfloat16  # a device object needs no GPU
    assert autocast_dtype("cuda:1", "fp16") is torch.float16
    monkeypatch.setenv(AUTOCAST_ENV, "off")
    assert autocast_dtype("cuda") is None and autocast_dtype("cuda", "bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="VITREG_AUTOCAST"):
        autocast_dtype("cuda", "int8")


def test_batch_size_from_free_memory_on_fake_numbers():
    from vitreg.core.device import activation_bytes, batch_size_for

    gib = 2**30
    assert batch_size_for(80 * gib, 1 * gib) == 32        # half of 80 GiB holds 40 images: the power of two below
    assert batch_size_for(80 * gib, 1 * gib, share=0.9) == 64
    assert batch_size_for(0.5 * gib, 1 * gib) == 1        # nothing fits: still one image
    assert batch_size_for(1e15, 1.0) == 256               # the cap
    with pytest.raises(ValueError):
        batch_size_for(gib, 0)
    # ViT-g/14 at 518 px in bf16: 1370 tokens, width 1536, 24 heads -> about 0.13 GiB per image
    per = activation_bytes(1370, 1536, 24, element_bytes=2)
    assert 2 * 1370 * (12 * 1536 + 24 * 1370) == per
    assert batch_size_for(130 * gib, per) == 256 and batch_size_for(10 * gib, per) == 32  # 38 fit in 5 GiB


def test_loader_workers_only_on_cuda():
    from vitreg.core.device import loader_workers

    assert loader_workers("cpu", 16, 100) == 0            # smoke runs: one process, as before
    assert loader_workers("cuda", 16, 100) == 8
    assert loader_workers("cuda", 4, 100) == 3            # one core kept for the main process
    assert loader_workers("cuda", 16, 1) == 0 and loader_workers("cuda", None, 100) == 0


def test_the_loader_branch_gives_the_same_batches_and_recordings(loaded, monkeypatch):
    """Planted truth: the images are the same, so workers + a DataLoader must change nothing."""
    import vitreg.core.stream as stream_mod

    images = [(im, k) for k, im in enumerate(_images(5))]  # (image, label) pairs: the label is dropped
    plain = list(stream(loaded, images, batch_size=2, progress=False, norms="all"))
    monkeypatch.setattr(stream_mod, "loader_workers", lambda *a, **k: 2)
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else _nothing():
        loaded_ = list(stream(loaded, images, batch_size=2, progress=False, norms="all"))
    assert [b.index for b in plain] == [b.index for b in loaded_] == [slice(0, 2), slice(2, 4), slice(4, 5)]
    for a, b in zip(plain, loaded_):
        assert torch.equal(a.x, b.x) and torch.equal(a.rec.norms[11], b.rec.norms[11])
        assert a.items == b.items and not isinstance(b.items[0], tuple)


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def test_default_batch_size_off_cuda_is_eight(loaded):
    from vitreg.core.stream import default_batch_size

    assert default_batch_size(loaded) == 8


def test_results_and_the_cache_key_record_the_autocast_dtype(loaded, monkeypatch):
    """On the CPU nothing is added (smoke results unchanged); where autocast runs, both say bfloat16."""
    import vitreg.core.device
    from vitreg.utils.cache import model_fields

    assert "autocast" not in loaded.describe() and "autocast" not in model_fields(loaded)
    monkeypatch.setattr(vitreg.core.device, "autocast_dtype", lambda device, setting=None: torch.bfloat16)
    assert loaded.describe()["autocast"] == "bfloat16" and model_fields(loaded)["autocast"] == "bfloat16"


def test_kernels_the_runner_starts_get_text_progress_bars(monkeypatch, tmp_path) -> None:
    """An executed notebook keeps a text bar's final state; a widget would be saved frozen at 0%."""
    import os

    import tqdm.std

    from vitreg.utils.progress import TEXT_ENV, progress_bar
    from vitreg.cli.runner import _kernel_imports_from

    monkeypatch.delenv(TEXT_ENV, raising=False)
    with _kernel_imports_from(tmp_path):
        assert os.environ[TEXT_ENV] == "1"
        bar = progress_bar(total=3, disable=True)
        assert type(bar) is tqdm.std.tqdm
    assert TEXT_ENV not in os.environ  # restored for the runner's own process
