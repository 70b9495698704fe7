"""Notebook parameters: the profiles, and a check that turns papermill's warnings into errors.

papermill only *warns* about a parameter the notebook does not have, so a typo silently runs the
defaults (the real, hours-long experiment). Here every parameter passed to a notebook is checked
against the names and types of its ``parameters`` cell before anything heavy runs.

The run order (``notebooks/order.yaml``) is read here too, by :func:`load_order`.

Profiles: ``real`` is the notebooks' own defaults (the real experiment); ``smoke`` is
``params/smoke.yaml`` (``common`` plus the notebook's own section).
"""

from __future__ import annotations

import ast
import difflib
import json
from pathlib import Path
from typing import Any

import yaml

from vitreg.paths import repo_root

#: Every notebook's parameters cell defines these (a test checks it).
COMMON_PARAMETERS = ("profile", "pretrained", "device", "seed", "output_dir")
PROFILES = ("real", "smoke")


class ParameterError(ValueError):
    """An unknown or ill-typed notebook parameter."""


def load_order(root: Path | None = None) -> list[dict[str, str]]:
    """The run order, ``notebooks/order.yaml``: entries with ``notebook``, ``finding``, ``paper`` and
    ``needs``. The one reader of that file (runner, report and tests use it)."""
    path = (root or repo_root()) / "notebooks" / "order.yaml"
    return yaml.safe_load(path.read_text())


def parameters_cell(notebook: str | Path) -> str:
    """Source of the one cell tagged ``parameters``.

    Raises:
        ParameterError: none or several cells are tagged.
    """
    nb = json.loads(Path(notebook).read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ParameterError(f"{notebook}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    src = cells[0]["source"]
    return "".join(src) if isinstance(src, list) else src


def notebook_defaults(notebook: str | Path) -> dict[str, Any]:
    """The defaults of a notebook's ``parameters`` cell: ``name = literal`` assignments only.

    Raises:
        ParameterError: a default that is not a Python literal (the cell must stay declarative).
    """
    tree = ast.parse(parameters_cell(notebook))
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if not isinstance(t, ast.Name):
                    raise ParameterError(f"{notebook}: parameters cell assigns to {ast.unparse(t)}; use plain names")
                try:
                    out[t.id] = ast.literal_eval(node.value)  # type: ignore[arg-type]
                except ValueError as err:
                    raise ParameterError(f"{notebook}: default of {t.id!r} is not a literal: {ast.unparse(node.value)}") from err
        elif not isinstance(node, ast.Expr):  # docstrings/comments are fine, code is not
            raise ParameterError(f"{notebook}: the parameters cell may only assign literals, found {ast.unparse(node)}")
    return out


def load_profile(profile: str, notebook_name: str, path: Path | None = None) -> dict[str, Any]:
    """Parameters a profile passes to one notebook (``{}`` for ``real``: the defaults are the experiment)."""
    if profile not in PROFILES:
        raise ParameterError(f"unknown profile {profile!r}; use one of {PROFILES}")
    if profile == "real":
        return {"profile": "real"}
    path = path or repo_root() / "params" / f"{profile}.yaml"
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - {"common", "notebooks"}
    if unknown:
        raise ParameterError(f"{path}: unknown top-level keys {sorted(unknown)}; use 'common' and 'notebooks'")
    sections = data.get("notebooks") or {}
    params = dict(data.get("common") or {})
    params.update(sections.get(notebook_name) or {})
    return params


def validate(notebook: str | Path, given: dict[str, Any]) -> dict[str, Any]:
    """Check ``given`` against the notebook's parameters; return the merged parameters.

    Raises:
        ParameterError: unknown names (with close names) or values whose type differs from the default's.
    """
    defaults = notebook_defaults(notebook)
    problems = []
    for name, value in given.items():
        if name not in defaults:
            close = difflib.get_close_matches(name, list(defaults), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(f"unknown parameter {name!r}{hint}")
        elif not _same_type(defaults[name], value):
            problems.append(f"parameter {name!r} should be {type(defaults[name]).__name__} like its default "
                            f"{defaults[name]!r}, got {type(value).__name__} {value!r}")
    if problems:
        raise ParameterError(f"{Path(notebook).name}: " + "; ".join(problems) +
                             f". Known parameters: {', '.join(defaults)}")
    return {**defaults, **given}


def _same_type(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))
