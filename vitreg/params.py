"""Notebook parameters: the profiles, and a check that turns papermill's warnings into errors.

papermill only *warns* about a parameter the notebook does not have, so a typo silently runs the
defaults (the real, hours-long experiment). Here every parameter passed to a notebook is checked
against the names and types of its ``parameters`` cell before anything heavy runs.

The run order (``notebooks/order.yaml``) is read here too, by :func:`load_order`.

Profiles: ``real`` is the notebooks' own defaults (the real experiment); ``smoke`` is
``params/smoke.yaml`` (``common`` plus the notebook's own section). A profile is checked as a whole:
malformed YAML names the file and line, and a section that is not a notebook of the run order
(``00_tuor:``) is an error, never silently ignored.

Ranges: :data:`RULES` declares, by parameter name, what values make sense (counts >= 1, fractions in
(0, 1), positive image sizes, ``str | None`` folders, ...); one table serves every notebook, so
``n_images: -1`` or ``train_fraction: 1.5`` stop the run before anything heavy starts.
"""

from __future__ import annotations

import ast
import difflib
import json
from dataclasses import dataclass
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


def _read_yaml(path: Path) -> Any:
    """``yaml.safe_load`` of ``path``; malformed YAML is a :class:`ParameterError` naming the file and line."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        what = getattr(err, "problem", None) or str(err)
        raise ParameterError(f"{where}: not valid YAML ({what}); fix the file, then run again") from err


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


def load_profile(profile: str, notebook_name: str, path: Path | None = None,
                 known: list[str] | None = None) -> dict[str, Any]:
    """Parameters a profile passes to one notebook (``{}`` for ``real``: the defaults are the experiment).

    Args:
        known: the notebooks of the run order (default: read from ``<path>/../../notebooks/order.yaml``
            when that file exists); a section naming anything else is an error.

    Raises:
        ParameterError: malformed YAML (file and line), ``notebooks:`` not a mapping, or a section that is
            not a notebook of the run order (with close names).
    """
    if profile not in PROFILES:
        raise ParameterError(f"unknown profile {profile!r}; use one of {PROFILES}")
    if profile == "real":
        return {"profile": "real"}
    path = Path(path) if path else repo_root() / "params" / f"{profile}.yaml"
    data = check_profile(path, known)
    params = dict(data.get("common") or {})
    params.update(data["notebooks"].get(notebook_name) or {})
    return params


def check_profile(path: Path, known: list[str] | None = None) -> dict[str, Any]:
    """Read a profile file and check its shape: ``common`` and ``notebooks`` mappings, sections named
    after notebooks of the run order. Returns ``{"common": {...}, "notebooks": {...}}``."""
    data = _read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: expected a mapping with 'common' and 'notebooks', got {type(data).__name__}")
    unknown = set(data) - {"common", "notebooks"}
    if unknown:
        raise ParameterError(f"{path}: unknown top-level keys {sorted(unknown)}; use 'common' and 'notebooks'")
    common, sections = data.get("common") or {}, data.get("notebooks") or {}
    if not isinstance(common, dict):
        raise ParameterError(f"{path}: 'common' must be a mapping of parameter: value, got {type(common).__name__}")
    if not isinstance(sections, dict):
        raise ParameterError(f"{path}: 'notebooks' must be a mapping of notebook name -> parameters "
                             f"(like '02_high_norm_tokens:' with its parameters indented below), "
                             f"got a {type(sections).__name__}")
    if known is None:
        order = path.resolve().parent.parent / "notebooks" / "order.yaml"
        known = [e["notebook"] for e in _read_yaml(order)] if order.exists() else None
    problems = []
    for name, section in sections.items():
        if known is not None and name not in known:
            close = difflib.get_close_matches(str(name), known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(f"section {name!r} is not a notebook of notebooks/order.yaml{hint}")
        elif section is not None and not isinstance(section, dict):
            problems.append(f"section {name!r} must be a mapping of parameter: value, got {type(section).__name__}")
    if problems:
        raise ParameterError(f"{path}: " + "; ".join(problems) +
                             (f". Notebooks: {', '.join(known)}" if known else ""))
    return {"common": common, "notebooks": sections}


def validate(notebook: str | Path, given: dict[str, Any]) -> dict[str, Any]:
    """Check ``given`` against the notebook's parameters; return the merged parameters.

    Every merged value (defaults included) is also checked against :data:`RULES`.

    Raises:
        ParameterError: unknown names (with close names), values whose type differs from the default's,
            or values out of their range (naming the notebook, parameter, value and allowed range).
    """
    defaults = notebook_defaults(notebook)
    problems, named = [], set()
    for name, value in given.items():
        if name not in defaults:
            close = difflib.get_close_matches(name, list(defaults), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(f"unknown parameter {name!r}{hint}")
        elif not _same_type(defaults[name], value):
            allowed = f" (allowed: {RULES[name].text})" if name in RULES else ""
            problems.append(f"parameter {name!r} should be {type(defaults[name]).__name__} like its default "
                            f"{defaults[name]!r}, got {type(value).__name__} {value!r}{allowed}")
            named.add(name)
    merged = {**defaults, **given}
    for name, value in merged.items():
        rule = RULES.get(name)
        if rule is None or name in named or name not in defaults:
            continue
        if not rule.allows(value, none_ok=defaults[name] is None):
            allowed = rule.text + (" or null" if defaults[name] is None else "")
            problems.append(f"parameter {name!r} = {value!r} is out of range: allowed {allowed}")
    if problems:
        raise ParameterError(f"{Path(notebook).name}: " + "; ".join(problems) +
                             f". Known parameters: {', '.join(defaults)}")
    return merged


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


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # NaN is not a number here


_KINDS: dict[str, tuple[str, Any]] = {
    "count": ("an integer >= 1", lambda v: _int(v) and v >= 1),
    "count0": ("an integer >= 0", lambda v: _int(v) and v >= 0),
    "int": ("an integer", _int),
    "fraction": ("a number strictly between 0 and 1", lambda v: _num(v) and 0 < v < 1),
    "fraction0": ("a number in [0, 1)", lambda v: _num(v) and 0 <= v < 1),
    "positive": ("a number > 0", lambda v: _num(v) and 0 < v < float("inf")),
    "number": ("a finite number", lambda v: _num(v) and abs(v) < float("inf")),
    "positives": ("a non-empty list of numbers > 0",
                  lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(_num(x) and x > 0 for x in v)),
    "numbers": ("a non-empty list of numbers", lambda v: isinstance(v, (list, tuple)) and len(v) > 0
                and all(_num(x) for x in v)),
    "size": ("a positive integer (pixels) or [height, width] of positive integers",
             lambda v: (_int(v) and v >= 1) or (isinstance(v, (list, tuple)) and len(v) == 2
                                                and all(_int(x) and x >= 1 for x in v))),
    "str": ("a string", lambda v: isinstance(v, str)),
    "text": ("a non-empty string", lambda v: isinstance(v, str) and v != ""),
}


@dataclass(frozen=True)
class Rule:
    """What a parameter's value may be: a kind of :data:`_KINDS`. ``None`` is allowed exactly where the
    notebook's own default is ``None`` (``image_size = None``: the model's size) — it then also stands
    for the declared type of that parameter (``image_dir: str | None``)."""

    kind: str

    @property
    def text(self) -> str:
        return _KINDS[self.kind][0]

    def allows(self, value: Any, *, none_ok: bool) -> bool:
        return (value is None and none_ok) or (value is not None and bool(_KINDS[self.kind][1](value)))


def _rules(kind: str, *names: str) -> dict[str, Rule]:
    return {name: Rule(kind) for name in names}


#: The declared range of every notebook parameter with one, keyed by name (one table for all notebooks).
#: Names not listed are type-checked against their default only.
RULES: dict[str, Rule] = {
    **_rules("count", "n_images", "batch_size", "n_bootstrap", "limit", "n_draws", "n_show", "n_detail",
             "head_epochs", "head_batch_size", "synthetic_n", "synthetic_n_train", "synthetic_n_val",
             "imagenet_n_train", "imagenet_n_val", "imagenet_probe_batch_size", "ade20k_n_train", "ade20k_n_val",
             "nyud_n_train", "nyud_n_test", "max_train", "max_test", "max_train_tokens", "k_patches", "levels",
             "span"),
    **_rules("count0", "num_workers", "border_width", "seed"),
    **_rules("int", "block"),
    **_rules("fraction", "train_fraction", "val_fraction", "top_frac", "min_fraction"),
    **_rules("fraction0", "plant_fraction"),
    **_rules("positive", "threshold", "k_std", "plant_norm", "head_lr"),
    **_rules("number", "bias"),
    **_rules("positives", "l2_grid", "ridge_grid", "imagenet_l2_grid"),
    **_rules("numbers", "bias_sweep"),
    **_rules("size", "image_size", "reference_image_size", "display_size", "synthetic_image_size",
             "imagenet_image_size", "ade20k_image_size", "ade20k_label_size", "nyud_image_size", "nyud_label_size"),
    **_rules("count", "seeds"), **_rules("size", "ade20k_eval_size"),  # 09 (Table 2): head seeds, whole-image canvas
    **_rules("str", "image_dir", "data_root", "cache_dir", "imagenet_root", "ade20k_root", "nyud_root", "which",
             "output_dir"),
    **_rules("text", "model", "reference_model", "head_model", "dataset", "split", "layer", "upsample_mode",
             "profile", "device"),
}
