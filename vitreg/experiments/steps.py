"""What the experiments' steps share: loading a model the same way wherever it is loaded, a skipped entry, and
a results record as the mapping a notebook saves.

Paper: every finding whose numbers are measured on cached features (Fig. 5b, Table 1, Table 2). A notebook and
``vitreg extract`` call the same steps; for that they must load the same model. With random weights (smoke
runs) the weights come from torch's random numbers, so :func:`load` seeds each model from the run's seed and
the model's name alone: a model's weights (and so its feature cache key) do not depend on what was loaded or
drawn before it.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from typing import Any

from vitreg.experiments.base import as_numbers


@dataclass(frozen=True)
class Skipped:
    """A number that was not measured, and why (saved as ``{"skipped": why}``)."""

    skipped: str


def model_seed(seed: int, name: str) -> int:
    """The torch seed of model ``name``'s random weights in a run seeded ``seed`` (independent of load order)."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % 2**31


def load(p: Any, name: str, image_size: Any = None) -> Any:
    """Load model ``name`` for a run with parameters ``p`` (``pretrained``, ``image_size``, ``device``, ``seed``).

    Random weights are drawn from :func:`model_seed` inside a forked random state, so the run's own random
    numbers are untouched and every caller (the notebook, ``vitreg extract`` on any rank) gets the same model.

    Args:
        p: the experiment's parameters.
        name: zoo key.
        image_size: resolution (default ``p.image_size``).

    Returns:
        a :class:`vitreg.core.weights.LoadedModel`.
    """
    import torch

    from vitreg.core.weights import load_model

    size = p.image_size if image_size is None else image_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_seed(p.seed, name))
        return load_model(name, pretrained=p.pretrained, image_size=size, device=p.device)


def parameters(experiment: Any, values: Any) -> Any:
    """The experiment's parameters dataclass from a mapping (a run's validated parameters; unknown keys such as
    papermill's are ignored)."""
    names = {f.name for f in dataclasses.fields(experiment.params)}
    return experiment.build({k: v for k, v in dict(values).items() if k in names})


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_none(v) for v in obj]
    return obj


def numbers(record: Any, why: str) -> dict[str, Any]:
    """``record`` as the ``numbers`` mapping saved: optional fields left at None are left out, and every NaN or
    infinite number becomes ``{"skipped": why}`` (strict JSON).

    Args:
        record: a results record (dataclass).
        why: what a non-finite number means here (e.g. "not measured (no tokens of this kind)").
    """
    from vitreg.utils.results import clean_numbers

    return clean_numbers(_drop_none(as_numbers(record)), why)
