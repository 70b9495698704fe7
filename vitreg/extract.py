"""Run a model over many images in batches, recording with :func:`vitreg.capture.capture`.

Paper: every measurement over "a few hundred images" (Fig. 3, 4, 5, Table 1). Batched, with a
progress bar, under ``torch.inference_mode``, moving recordings to the CPU batch by batch so that
datasets larger than GPU memory work.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from vitreg.capture import Recording, capture
from vitreg.images import ImageLike, preprocess
from vitreg.weights import LoadedModel


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


def extract(
    loaded: LoadedModel,
    images: Sequence[ImageLike] | Iterable[Any],
    *,
    batch_size: int = 8,
    progress: bool = True,
    desc: str | None = None,
    **capture_kwargs: Any,
) -> Recording:
    """Forward ``images`` through ``loaded`` and return what ``capture_kwargs`` asked to record.

    Args:
        loaded: a model from :func:`vitreg.weights.load_model`.
        images: paths, PIL images or arrays, or a dataset yielding them or ``(image, label)``.
        batch_size: images per forward pass (lower it if memory runs out).
        capture_kwargs: what to record, as for :func:`vitreg.capture.capture` (``norms="all"``, ...).
            Recordings are stored on the CPU unless ``to=`` says otherwise.
    """
    from tqdm.auto import tqdm

    capture_kwargs.setdefault("to", "cpu")
    total = len(images) if hasattr(images, "__len__") else None  # type: ignore[arg-type]
    bar = tqdm(total=total, desc=desc or loaded.spec.key, unit="img", disable=not progress)
    with torch.inference_mode(), capture(loaded.model, **capture_kwargs) as rec:
        for chunk in batches(images, batch_size):
            loaded.forward(preprocess(chunk, loaded))
            bar.update(len(chunk))
    bar.close()
    return rec


def estimate_runtime(loaded: LoadedModel, n_images: int, *, batch_size: int = 8) -> float:
    """Seconds that ``n_images`` will take, from one timed forward of a single batch.

    Notebooks print this before heavy work ("images x model cost") so a user on a CPU can choose.
    """
    n = max(1, min(batch_size, n_images))
    x = torch.zeros(n, 3, *loaded.image_size)
    with torch.inference_mode():
        loaded.forward(x)  # warm-up (allocations, kernels)
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loaded.forward(x)
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - start) / n * n_images


def describe_runtime(loaded: LoadedModel, n_images: int, *, batch_size: int = 8) -> str:
    """A one-line estimate for notebooks: model, images, device and expected minutes."""
    seconds = estimate_runtime(loaded, n_images, batch_size=batch_size)
    when = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    return (f"{loaded.label} at {loaded.image_size[0]}x{loaded.image_size[1]} on {loaded.device.type}: "
            f"{n_images} images will take about {when}")
