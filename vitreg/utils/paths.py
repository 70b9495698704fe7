"""Where vitreg keeps things on disk, and whether it may download.

:func:`repo_root` is the one way to find the repository root (notebooks, params, data files).
Three folders, each moved by one environment variable:

| folder | variable | default in a checkout | default for an installed package |
|---|---|---|---|
| weights | ``VITREG_WEIGHTS`` | ``<repo>/data/weights`` | ``~/.cache/vitreg/weights`` |
| datasets | ``VITREG_DATA`` | ``<repo>/data/datasets`` | ``~/.cache/vitreg/datasets`` |
| feature cache | ``VITREG_CACHE`` | ``<repo>/data/cache`` | ``~/.cache/vitreg/features`` |
"""

from __future__ import annotations

import os
from pathlib import Path

WEIGHTS_ENV, DATA_ENV, CACHE_ENV = "VITREG_WEIGHTS", "VITREG_DATA", "VITREG_CACHE"


def repo_root() -> Path:
    """The folder that holds the ``vitreg`` package: in a checkout, the repository root (``notebooks/``,
    ``data/``, ``pyproject.toml``). The one place that works this out."""
    return Path(__file__).resolve().parents[2]


def in_checkout() -> bool:
    """True when vitreg runs from a source checkout (``pyproject.toml`` beside the package), False for
    an installed package."""
    return (repo_root() / "pyproject.toml").exists()


def project_folder(env: str, checkout_sub: str, installed_sub: str, explicit: str | os.PathLike | None = None) -> Path:
    """``explicit`` if given, else ``$env``, else ``<repo>/data/<checkout_sub>`` in a checkout, else
    ``~/.cache/vitreg/<installed_sub>``."""
    if explicit is not None:
        return Path(explicit).expanduser()
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    if in_checkout():
        return repo_root() / "data" / checkout_sub
    return Path.home() / ".cache" / "vitreg" / installed_sub


def weights_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The project weights folder (``$VITREG_WEIGHTS``)."""
    return project_folder(WEIGHTS_ENV, "weights", "weights", explicit)


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The datasets folder (``$VITREG_DATA``)."""
    return project_folder(DATA_ENV, "datasets", "datasets", explicit)


def cache_root(explicit: str | os.PathLike | None = None) -> Path:
    """The feature-cache folder (``$VITREG_CACHE``)."""
    return project_folder(CACHE_ENV, "cache", "features", explicit)


def is_offline() -> bool:
    """True when nothing may be downloaded: ``HF_HUB_OFFLINE=1`` or ``VITREG_OFFLINE=1``."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "VITREG_OFFLINE"))
