"""Results files: the numbers a notebook reproduces, with everything needed to trust them.

Every notebook ends by writing ``<output_dir>/results/<notebook>.json`` through :func:`save_results`:
its numbers plus the models (name, tag, resolution, weights source, random or pretrained), the
parameters it ran with, the library versions and the profile. ``vitreg.report`` reads these files.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from vitreg.io import atomic_write_json

SCHEMA_VERSION = 1
#: Keys every results file has (``vitreg.report`` checks them).
REQUIRED_KEYS = ("schema", "notebook", "profile", "random_weights", "models", "params", "versions", "created", "numbers")


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that change the numbers."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("vitreg", "torch", "torchvision", "timm", "numpy", "pillow", "scikit-image"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    try:
        import torch

        out["cuda"] = torch.version.cuda or "none"
    except ImportError:
        pass
    return out


def save_results(
    name: str,
    numbers: Mapping[str, Any],
    *,
    models: Iterable[Any] = (),
    params: Mapping[str, Any] | None = None,
    output_dir: str | os.PathLike = ".",
) -> Path:
    """Write ``<output_dir>/results/<name>.json`` atomically and return its path.

    Args:
        name: the notebook's name (``02_high_norm_tokens``).
        numbers: the notebook's numbers (JSON-able; tensors and numpy values are converted).
        models: the :class:`~vitreg.weights.LoadedModel` objects used (or dicts from ``describe()``).
        params: the parameters the notebook ran with (its ``parameters`` cell, after injection).
        output_dir: folder holding ``results/`` (the notebooks' ``output_dir`` parameter).
    """
    described = [m.describe() if hasattr(m, "describe") else dict(m) for m in models]
    params = dict(params or {})
    record = {
        "schema": SCHEMA_VERSION,
        "notebook": name,
        "profile": params.get("profile", "real"),
        "random_weights": any(not m.get("pretrained", True) for m in described),
        "models": described,
        "params": {k: v for k, v in params.items() if _is_plain(v)},
        "versions": library_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "numbers": numbers,
    }
    return atomic_write_json(Path(output_dir) / "results" / f"{name}.json", record)


def finite_or_skipped(value: float, why: str) -> float | dict[str, str]:
    """``value`` if it is a finite number, else ``{"skipped": why}``: results hold numbers or reasons, never NaN.

    The report shows such an entry as "not run here" with the reason.
    """
    return value if math.isfinite(value) else {"skipped": why}


def load_results(path: str | os.PathLike) -> dict:
    """Read a results file and check that it has the common keys.

    Raises:
        ValueError: not a vitreg results file (names the file and the missing keys).
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    missing = [k for k in REQUIRED_KEYS if k not in record] if isinstance(record, dict) else list(REQUIRED_KEYS)
    if missing:
        raise ValueError(f"{path} is not a vitreg results file: missing {missing}")
    return record


def _is_plain(v: Any) -> bool:
    try:
        json.dumps(v, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False
