"""THE batching loop: run a model over many images in batches under a capture.

Paper: every measurement over "a few hundred images" (Fig. 3, 4, 5, Table 1, Table 3). Batched, under
``torch.inference_mode``, with a progress bar and a run-time estimate measured on the FIRST REAL batch
(printed once; no extra warm-up forward). Each batch gets its own :func:`vitreg.capture.capture`
context, so its recording can be consumed (or moved to the CPU) before the next batch runs and a
dataset larger than the GPU fits. :func:`vitreg.extract.extract` concatenates the batches; LOST, the
feature caches and the tour iterate over them directly.

Hooks installed around the loop (e.g. :func:`vitreg.planting.planted`) see every batch in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from vitreg.capture import Recording, capture
from vitreg.images import preprocess
from vitreg.weights import LoadedModel


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
    batch_size: int = 8,
    progress: bool = True,
    desc: str | None = None,
    batched: bool = False,
    total: int | None = None,
    before_batch: Callable[[int], None] | None = None,
    estimate: bool | None = None,
    **capture_kwargs: Any,
) -> Iterator[StreamBatch]:
    """Forward ``images`` through ``loaded`` batch by batch; yield each batch with its recording.

    Longer than 60 lines because it is the ONE batching loop (issue 10): progress, the first-batch
    estimate, the planting callback and the capture all live here so no caller writes its own.

    Args:
        loaded: a model from :func:`vitreg.weights.load_model`.
        images: paths, PIL images or arrays, or a dataset yielding them or ``(image, label)``; with
            ``batched``, an iterable of ready batches (a ``DataLoader``): tensors ``x`` or tuples whose
            first element is ``x``.
        batch_size: images per forward pass (ignored when ``batched``).
        progress: show a progress bar and print the run-time estimate after the first batch.
        desc: label of the progress bar (default: the model's key).
        total: number of images, when ``len(images)`` does not give it (the estimate is for ``total``).
        before_batch: called with the index of a batch's first image (in this stream) before it is
            forwarded: a caller passes e.g. ``lambda i: planting.at_image(loaded, first + i)`` so a
            planting context knows which image comes next (this core module imports no planting).
        estimate: print the run-time estimate after the first batch (default: when ``progress``); a
            caller that shows its own progress bar (the feature caches) keeps the estimate without a bar.
        capture_kwargs: what to record, as for :func:`vitreg.capture.capture` (``norms="all"``, ...).
            Recordings are moved to the CPU unless ``to=`` says otherwise (``to=None``: the model's device).
    """
    from tqdm.auto import tqdm

    capture_kwargs.setdefault("to", "cpu")
    if total is None and hasattr(images, "__len__"):
        total = len(images.dataset) if batched and hasattr(images, "dataset") else len(images)  # type: ignore[arg-type]
    chunks: Iterable[Any] = images if batched else batches(images, batch_size)
    prepare: Callable[[Any], torch.Tensor] = (lambda c: c[0] if isinstance(c, (tuple, list)) else c) if batched \
        else (lambda c: preprocess(c, loaded))
    estimate = progress if estimate is None else estimate
    bar = tqdm(total=total, desc=desc or loaded.spec.key, unit="img", disable=not progress)
    start = 0
    try:
        for i, chunk in enumerate(chunks):
            if before_batch is not None:
                before_batch(start)
            x = prepare(chunk)
            began = time.perf_counter()
            with torch.inference_mode(), capture(loaded.model, **capture_kwargs) as rec:
                loaded.forward(x)
            if i == 0 and estimate and total:
                if loaded.device.type == "cuda":
                    torch.cuda.synchronize()
                tqdm.write(describe_estimate(loaded, time.perf_counter() - began, len(x), total))
            n = len(x)
            yield StreamBatch(index=slice(start, start + n), x=x, rec=rec, items=chunk)
            start += n
            bar.update(n)
    finally:
        bar.close()
