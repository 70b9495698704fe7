"""The experiment context of a model: what a run puts into it besides the images (planted truth in smoke runs).

Paper: Fig. 5b, Table 1 (notebooks 05 and 06 check their probes on planted outliers when the weights are random).
A planting context (:mod:`vitreg.planting`, supplied from outside the measurements) enters itself here for a model
while it is active; a measurement asks :func:`current` and passes what it gets on explicitly: the context's
:meth:`Context.fingerprint` to the feature cache key (planted and clean features never share an entry), the
index of the next image forwarded (:meth:`Context.at_image`), and the planted positions of a chunk
(:meth:`Context.mask`). Nothing is stored on the model: the contexts live in a registry keyed by the model, and
a context leaves it on exit, also on exceptions. Neither this module nor any measurement imports the planting.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Context(Protocol):
    """What a measurement needs to know of what was planted (see :class:`vitreg.planting.PlantedOutliers`)."""

    def fingerprint(self) -> dict:
        """The settings that change the features (for cache keys)."""

    def at_image(self, index: int) -> None:
        """The next image forwarded is image ``index`` of the current extraction."""

    def mask(self, start: int, n_images: int, grid: tuple[int, int]) -> torch.Tensor:
        """``(n_images, h*w)`` bool: the patches planted in images ``start .. start + n_images - 1``."""


#: model -> the contexts entered for it, innermost last; weak, so nothing outlives the model.
_ACTIVE: weakref.WeakKeyDictionary[nn.Module, list[Context]] = weakref.WeakKeyDictionary()


@contextmanager
def entered(model: nn.Module, context: Context) -> Iterator[Context]:
    """Make ``context`` the current one of ``model`` inside the ``with`` block (the previous one comes back on
    exit). Called by the planting contexts, not by measurements."""
    stack = _ACTIVE.setdefault(model, [])
    stack.append(context)
    try:
        yield context
    finally:
        stack.remove(context)
        if not stack:
            _ACTIVE.pop(model, None)


def current(model: nn.Module) -> Context | None:
    """The innermost context entered for ``model``, or None (a clean model: the real experiment)."""
    stack = _ACTIVE.get(model)
    return stack[-1] if stack else None


def fingerprint(context: Context | None) -> dict | None:
    """``context.fingerprint()``, or None for no context: what :func:`vitreg.utils.cache.model_fields` takes."""
    return None if context is None else context.fingerprint()
