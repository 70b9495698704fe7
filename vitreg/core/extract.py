"""Run a model over many images and return ONE recording of all of them.

Paper: every measurement over "a few hundred images" (Fig. 3, 4, 5, Table 1). A thin concatenation over
:func:`vitreg.core.stream.stream` (batches, progress bar, run-time estimate from the first real batch,
recordings moved to the CPU batch by batch so that datasets larger than GPU memory work).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from vitreg.core.capture import Recording
from vitreg.core.images import ImageLike
from vitreg.core.stream import stream
from vitreg.core.weights import LoadedModel


def extract(
    loaded: LoadedModel,
    images: Sequence[ImageLike] | Iterable[Any],
    *,
    batch_size: int | None = None,
    progress: bool = True,
    desc: str | None = None,
    **capture_kwargs: Any,
) -> Recording:
    """Forward ``images`` through ``loaded`` and return what ``capture_kwargs`` asked to record.

    Args:
        loaded: a model from :func:`vitreg.core.weights.load_model`.
        images: paths, PIL images or arrays, or a dataset yielding them or ``(image, label)``.
        batch_size: images per forward pass (lower it if memory runs out); None: 8 off CUDA, else from free memory.
        progress: show a progress bar and the run-time estimate measured on the first batch.
        desc: label of the progress bar.
        capture_kwargs: what to record, as for :func:`vitreg.core.capture.capture` (``norms="all"``, ...).
            Recordings are stored on the CPU unless ``to=`` says otherwise.

    Returns:
        one :class:`~vitreg.core.capture.Recording` of all images, in order.
    """
    parts = stream(loaded, images, batch_size=batch_size, progress=progress, desc=desc, **capture_kwargs)
    return Recording.concat([b.rec for b in parts])

