"""Results files: the numbers a notebook reproduces, with everything needed to trust them.

Every notebook ends by writing ``<output_dir>/results/<notebook>.json`` through :func:`save_results`:
its numbers plus the models (name, tag, resolution, weights source, random or pretrained), the
parameters it ran with (those that are plain JSON), the library versions and the profile.
``vitreg.present.report`` reads these files. One JSON schema, :data:`RESULTS_SCHEMA`, describes the envelope;
:func:`save_results`, :func:`load_results` and the report all check it through :func:`envelope_problems`.

A results file is strict JSON: no NaN or infinity. A number that could not be measured is written as
``{"skipped": "<why>"}`` (:func:`finite_or_skipped` for one value, :func:`clean_numbers` for a tree).

Layer: utility (imports only :mod:`vitreg.utils.io`).
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

from vitreg.utils.io import atomic_write_json

SCHEMA_VERSION = 1
#: Keys every results file has.
REQUIRED_KEYS = ("schema", "notebook", "profile", "random_weights", "models", "params", "versions", "created", "numbers")
_DESCRIBE = "vitreg.core.weights.LoadedModel.describe()"
#: The envelope of a results file (what :func:`save_results` writes around the notebook's ``numbers``).
RESULTS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "vitreg results file",
    "type": "object",
    "required": list(REQUIRED_KEYS),
    "properties": {
        "schema": {"const": SCHEMA_VERSION,
                   "description": f"this vitreg reads schema {SCHEMA_VERSION} (rerun the notebook, or update vitreg)"},
        "notebook": {"type": "string"},
        "profile": {"type": "string"},
        "random_weights": {"type": "boolean"},
        "models": {"type": "array", "items": {
            "type": "object", "required": ["pretrained"], "properties": {"pretrained": {"type": "boolean"}},
            "description": f"needs a bool 'pretrained' ({_DESCRIBE})"}},
        "params": {"type": "object"},
        "versions": {"type": "object"},
        "created": {"type": "string"},
        "numbers": {"type": "object"},
    },
}
_JSON_TYPES = {"string": "str", "boolean": "bool", "object": "dict", "array": "list"}


class ResultsSchemaError(ValueError):
    """A results file does not match :data:`RESULTS_SCHEMA`."""


def envelope_problems(record: Any, stem: str | None = None) -> list[str]:
    """Every way ``record`` breaks :data:`RESULTS_SCHEMA`, in words (empty when none).

    Args:
        record: a parsed results file.
        stem: the file name without ``.json``; when given, ``record["notebook"]`` must equal it.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(RESULTS_SCHEMA)
    problems = [_in_words(err) for err in sorted(validator.iter_errors(record), key=lambda e: list(e.path))]
    if stem is not None and isinstance(record, dict) and isinstance(record.get("notebook"), str) \
            and record["notebook"] != stem:
        problems.append(f"notebook is {record['notebook']!r} but the file is named {stem}.json")
    return problems


def _in_words(err: Any) -> str:
    """One jsonschema error as a short sentence (``'random_weights' is str, expected bool``)."""
    path = list(err.path)
    where = repr(path[0]) if len(path) == 1 else "".join(
        f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(path))
    if err.validator == "required":
        missing = [k for k in err.validator_value if k not in err.instance]
        if "description" in err.schema:
            return f"{where or 'top level'} {err.schema['description']}"
        return "; ".join(f"missing key {k!r}" for k in missing)
    if err.validator == "type":
        got = type(err.instance).__name__
        if not err.path:
            return f"top level is {got}, expected an object"
        return f"{where} is {got}, expected {_JSON_TYPES.get(err.validator_value, err.validator_value)}"
    if err.validator == "const":
        return f"{where} is {err.instance!r}: {err.schema.get('description', err.message)}"
    return f"{where}: {err.message}"


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


def results_record(
    name: str,
    numbers: Mapping[str, Any],
    *,
    models: Iterable[Any] = (),
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The results file of notebook ``name`` as a JSON-ready dict (what :func:`save_results` writes).

    Raises:
        ResultsSchemaError: the envelope would not match :data:`RESULTS_SCHEMA`.
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
        "numbers": numbers if isinstance(numbers, dict) else dict(numbers),
    }
    problems = envelope_problems(record, name)
    if problems:
        raise ResultsSchemaError(f"results of {name} do not match the schema: " + "; ".join(problems))
    return record


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
        models: the :class:`~vitreg.core.weights.LoadedModel` objects used (or dicts from ``describe()``).
        params: the parameters the notebook ran with (its ``parameters`` cell, after injection).
        output_dir: folder holding ``results/`` (the notebooks' ``output_dir`` parameter).

    Raises:
        ResultsSchemaError: the envelope would not match :data:`RESULTS_SCHEMA`.
        ValueError: ``numbers`` holds NaN or infinity (clean it with :func:`clean_numbers`); nothing is written.
    """
    return write_results(results_record(name, numbers, models=models, params=params), output_dir)


def write_results(record: Mapping[str, Any], output_dir: str | os.PathLike = ".") -> Path:
    """Write a :func:`results_record` to ``<output_dir>/results/<notebook>.json`` atomically."""
    return atomic_write_json(Path(output_dir) / "results" / f"{record['notebook']}.json", record)


def finite_or_skipped(value: float, why: str) -> float | dict[str, str]:
    """``value`` if it is a finite number, else ``{"skipped": why}``: results hold numbers or reasons, never NaN.

    The report shows such an entry as "not run here" with the reason.
    """
    return value if math.isfinite(value) else {"skipped": why}


def clean_numbers(obj: Any, why: str) -> Any:
    """A strict-JSON copy of ``obj``: every NaN or infinite float becomes ``{"skipped": why}``.

    Tensors and numpy arrays or scalars become lists and numbers (through ``tolist()``), tuples become
    lists, and float dict keys become their ``repr`` (JSON keys are strings).
    """
    if isinstance(obj, Mapping):
        return {(repr(k) if isinstance(k, float) else k): clean_numbers(v, why) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_numbers(v, why) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return clean_numbers(obj.tolist(), why)
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"skipped": why}
    return obj


def non_finite_paths(obj: Any, prefix: str = "numbers") -> list[str]:
    """The dotted paths of every NaN or infinite float in ``obj`` (what :func:`clean_numbers` replaces)."""
    if isinstance(obj, Mapping):
        return [p for k, v in obj.items() for p in non_finite_paths(v, f"{prefix}.{k}")]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in non_finite_paths(v, f"{prefix}[{i}]")]
    return [prefix] if isinstance(obj, float) and not math.isfinite(obj) else []


def load_results(path: str | os.PathLike) -> dict:
    """Read a results file and check it against :data:`RESULTS_SCHEMA`.

    Raises:
        ResultsSchemaError: not valid JSON, or not a vitreg results file (names the file and every problem).
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ResultsSchemaError(f"{path} is not valid JSON: {err}") from err
    problems = envelope_problems(record, path.stem)
    if problems:
        raise ResultsSchemaError(f"{path} is not a vitreg results file: " + "; ".join(problems))
    return record


def _is_plain(v: Any) -> bool:
    try:
        json.dumps(v, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False
