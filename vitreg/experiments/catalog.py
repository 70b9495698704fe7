"""Every notebook's experiment, by notebook name: the one place that maps a notebook to its definition.

Paper: every finding (see :mod:`vitreg.experiments.base`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from vitreg.experiments.base import Experiment

#: Notebook -> its module in vitreg.experiments (the run order is notebooks/order.yaml; a test keeps both equal).
MODULES: dict[str, str] = {
    "00_tour": "tour",
    "01_attention_artifacts": "attention_artifacts",
    "02_high_norm_tokens": "high_norm_tokens",
    "03_emergence": "emergence",
    "04_redundant_patches": "redundant_patches",
    "05_local_information": "local_information",
    "06_global_information": "global_information",
    "07_registers": "registers",
    "08_lost": "lost",
    "09_downstream": "downstream",
    "10_test_time_registers": "test_time_registers",
    "11_beyond_the_paper": "beyond_the_paper",
}

#: What a profile sets for every notebook (a notebook's own overrides come on top).
COMMON_PROFILES: Mapping[str, Mapping[str, Any]] = {
    "smoke": {"profile": "smoke", "pretrained": False, "device": "cpu"},
    "lecture": {"profile": "lecture", "pretrained": True, "device": "auto"},
}


class UnknownExperiment(KeyError):
    """A name that is not a notebook of the run order."""


def experiment(name: str) -> Experiment:
    """The experiment of notebook ``name`` (``04_redundant_patches``).

    Raises:
        UnknownExperiment: ``name`` is not a notebook of :data:`MODULES`.
    """
    if name not in MODULES:
        raise UnknownExperiment(f"{name!r} is not a notebook; notebooks: {', '.join(MODULES)}")
    return importlib.import_module(f"vitreg.experiments.{MODULES[name]}").EXPERIMENT


def profile_of(exp: Experiment, profile: str) -> dict[str, Any]:
    """What ``profile`` passes to experiment ``exp``: the common part, then the experiment's own overrides
    (``{"profile": "real"}`` for the real profile: the defaults are the experiment)."""
    if profile == "real":
        return {"profile": "real"}
    return {**COMMON_PROFILES[profile], **exp.profiles.get(profile, {})}


def profile_parameters(profile: str, name: str) -> dict[str, Any]:
    """What ``profile`` passes to notebook ``name`` (:func:`profile_of` its experiment)."""
    return profile_of(experiment(name), profile)
