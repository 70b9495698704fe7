"""THE batching loop: run a model over many images in batches under a capture.

Paper: every measurement over "a few hundred images" (Fig. 3, 4, 5, Table 1, Table 3). Batched, under
``torch.inference_mode``, with a progress bar and a run-time estimate measured on the FIRST REAL batch
(printed once; no extra warm-up forward). Each batch gets its own :func:`vitreg.core.capture.capture`
context, so its recording can be consumed (or moved to the CPU) before the next batch runs and a
dataset larger than the GPU fits. :func:`vitreg.core.extract.extract` concatenates the batches; LOST, the
feature caches and the tour iterate over them directly.

Hooks installed around the loop (e.g. :func:`vitreg.planting.planted`) see every batch in order.

On a CUDA device (the CPU path, and so every smoke result, is unchanged): forwards run under bf16
autocast (:func:`vitreg.core.device.autocast_dtype`, ``VITREG_AUTOCAST=off`` turns it off; recordings are stored
as float32 unless ``dtype=`` says otherwise), timm's fused SDPA attention stays on (the capture recomputes
only the blocks whose attention it records), images are decoded and resized by a ``DataLoader``'s worker
processes into pinned memory and copied to the GPU without blocking, and ``batch_size=None`` picks the batch
from the free GPU memory (:func:`vitreg.core.device.batch_size_for`). Recordings come back to the host with a
blocking copy (:func:`vitreg.core.capture.capture`): a batch is never concatenated before it has landed.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from vitreg.core.capture import Recording, capture
from vitreg.core.decode import decodes_on_device, prepare_files
from vitreg.core.device import activation_bytes, autocast_dtype, batch_size_for, loader_workers
from vitreg.core.images import preprocess
from vitreg.core.weights import LoadedModel


@dataclass
class StreamBatch:
    """One batch of a :func:`stream`.

    Attributes:
        index: the slice of the image sequence this batch covers (``images[index]``).
        x: the preprocessed input ``(B, 3, H, W)`` that was forwarded.
        rec: what the capture recorded for this batch only.
        items: the batch as it came (a list of images, or the loader's batch when ``batched``).
    """

    index: slice
    x: torch.Tensor
    rec: Recording
    items: Any


def batches(images: Iterable[Any], batch_size: int) -> Iterator[list[Any]]:
    """Group an iterable of images (or ``(image, label)`` pairs: the image is kept) into lists."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunk: list[Any] = []
    for item in images:
        chunk.append(item[0] if isinstance(item, tuple) else item)
        if len(chunk) == batch_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def default_batch_size(loaded: LoadedModel) -> int:
    """8 off CUDA (as before); on CUDA as many images as fit half the free memory (:func:`batch_size_for`)."""
    if loaded.device.type != "cuda":
        return 8
    lay = loaded.layout
    tokens = lay.num_cls + lay.num_reg + lay.grid[0] * lay.grid[1] + lay.num_extra
    width = int(getattr(loaded.model, "embed_dim", 1024))
    heads = int(getattr(getattr(loaded.model.blocks[0], "attn", None), "num_heads", 16))
    per_image = activation_bytes(tokens, width, heads, element_bytes=2 if autocast_dtype(loaded.device) else 4,
                                 recorded_per_token=2 * width + loaded.num_blocks)
    return batch_size_for(torch.cuda.mem_get_info(loaded.device)[0], per_image)


class _BatchSet(torch.utils.data.Dataset):
    """Batch ``i`` of a sized, indexable image sequence, preprocessed (what a loader worker computes)."""

    def __init__(self, images: Any, batch_size: int, loaded: LoadedModel) -> None:
        self.images, self.batch_size = images, batch_size
        self.settings = dict(size=loaded.image_size, mean=loaded.mean, std=loaded.std)

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def items(self, i: int) -> list[Any]:
        got = [self.images[j] for j in range(i * self.batch_size, min(len(self.images), (i + 1) * self.batch_size))]
        return [item[0] if isinstance(item, tuple) else item for item in got]

    def __getitem__(self, i: int) -> torch.Tensor:
        return preprocess(self.items(i), **self.settings)


def prepared_batches(loaded: LoadedModel, images: Iterable[Any], batch_size: int) -> Iterator[tuple[list[Any], torch.Tensor]]:
    """``(items, x)`` per batch: image files on CUDA decoded and resized on the GPU (:mod:`vitreg.core.decode`);
    otherwise preprocessed in this process (CPU, or an unsized iterable), or on CUDA by a ``DataLoader``'s workers (:func:`vitreg.core.device.loader_workers`; under torchrun each rank gets its share of
    the node's cores) into pinned memory."""
    if _all_files(loaded, images):
        for chunk in batches(images, batch_size):
            yield chunk, prepare_files(chunk, loaded.image_size, loaded.mean, loaded.std, device=loaded.device)
        return
    sized = hasattr(images, "__len__") and hasattr(images, "__getitem__")
    n_batches = math.ceil(len(images) / batch_size) if sized else 0  # type: ignore[arg-type]
    cpus = (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))  # torchrun: share the node
    workers = loader_workers(loaded.device, cpus, n_batches)
    if not workers:
        for chunk in batches(images, batch_size):
            yield chunk, preprocess(chunk, loaded)
        return
    ds = _BatchSet(images, batch_size, loaded)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers, pin_memory=True)
    for i, x in enumerate(loader):
        yield ds.items(i), x


def _all_files(loaded: LoadedModel, images: Iterable[Any]) -> bool:
    """A sized sequence of image files on a CUDA model: decoded on the GPU (:mod:`vitreg.core.decode`)."""
    return isinstance(images, (list, tuple)) and decodes_on_device(loaded.device, images)


def describe_estimate(loaded: LoadedModel, seconds: float, n_first: int, total: int) -> str:
    """One line: model, size, device, the first batch's time and what ``total`` images will take."""
    eta = seconds / max(1, n_first) * total
    when = f"{eta:.0f} s" if eta < 120 else f"{eta / 60:.1f} min"
    return (f"{loaded.label} at {loaded.image_size[0]}x{loaded.image_size[1]} on {loaded.device.type}: "
            f"first batch of {n_first} took {seconds:.1f} s, so {total} images will take about {when}")


def stream(
    loaded: LoadedModel,
    images: Iterable[Any],
    *,
    batch_size: int | None = None,
    progress: bool = True,
    desc: str | None = None,
    batched: bool = False,
    total: int | None = None,
    before_batch: Callable[[int], None] | None = None,
    estimate: bool | None = None,
    **capture_kwargs: Any,
) -> Iterator[StreamBatch]:
    """Forward ``images`` through ``loaded`` batch by batch; yield each batch with its recording.

    Longer than 60 lines because it is the ONE batching loop: progress, the first-batch
    estimate, the planting callback and the capture all live here so no caller writes its own.

    Args:
        loaded: a model from :func:`vitreg.core.weights.load_model`.
        images: paths, PIL images or arrays, or a dataset yielding them or ``(image, label)``; with
            ``batched``, an iterable of ready batches (a ``DataLoader``): tensors ``x`` or tuples whose
            first element is ``x``.
        batch_size: images per forward pass (ignored when ``batched``); None: 8 off CUDA, else from the free
            GPU memory (:func:`default_batch_size`).
        progress: show a progress bar and print the run-time estimate after the first batch.
        desc: label of the progress bar (default: the model's key).
        total: number of images, when ``len(images)`` does not give it (the estimate is for ``total``).
        before_batch: called with the index of a batch's first image (in this stream) before it is
            forwarded: a caller passes e.g. ``lambda i: planting.at_image(loaded, first + i)`` so a
            planting context knows which image comes next (this core module imports no planting).
        estimate: print the run-time estimate after the first batch (default: when ``progress``); a
            caller that shows its own progress bar (the feature caches) keeps the estimate without a bar.
        capture_kwargs: what to record, as for :func:`vitreg.core.capture.capture` (``norms="all"``, ...).
            Recordings are moved to the CPU unless ``to=`` says otherwise (``to=None``: the model's device);
            under autocast (CUDA) they are stored as float32 unless ``dtype=`` says otherwise.
    """
    from vitreg.utils.progress import progress_bar

    capture_kwargs.setdefault("to", "cpu")
    amp = autocast_dtype(loaded.device)
    if amp is not None:
        capture_kwargs.setdefault("dtype", torch.float32)
    if total is None and hasattr(images, "__len__"):
        total = len(images.dataset) if batched and hasattr(images, "dataset") else len(images)  # type: ignore[arg-type]
    if batched:
        pairs: Iterable[tuple[Any, torch.Tensor]] = ((c, c[0] if isinstance(c, (tuple, list)) else c) for c in images)
    else:
        pairs = prepared_batches(loaded, images, default_batch_size(loaded) if batch_size is None else batch_size)
    autocast = (lambda: torch.autocast("cuda", dtype=amp)) if amp is not None else contextlib.nullcontext
    estimate = progress if estimate is None else estimate
    bar = progress_bar(total=total, desc=desc or loaded.spec.key, unit="img", disable=not progress)
    start = 0
    try:
        for i, (chunk, x) in enumerate(pairs):
            if before_batch is not None:
                before_batch(start)
            began = time.perf_counter()
            x_in = x.to(loaded.device, non_blocking=True) if loaded.device.type == "cuda" else x  # pinned: safe
            with torch.inference_mode(), autocast(), capture(loaded.model, **capture_kwargs) as rec:
                loaded.forward(x_in)
            if i == 0 and estimate and total:
                if loaded.device.type == "cuda":
                    torch.cuda.synchronize()
                bar.write(describe_estimate(loaded, time.perf_counter() - began, len(x), total))
            n = len(x)
            yield StreamBatch(index=slice(start, start + n), x=x, rec=rec, items=chunk)
            start += n
            bar.update(n)
    finally:
        bar.close()
