"""Notebook parameters: the profiles, and a check that turns papermill's warnings into errors.

papermill only *warns* about a parameter the notebook does not have, so a typo silently runs the
defaults (the real, hours-long experiment). Here every parameter passed to a notebook is checked
against the names and types of its ``parameters`` cell before anything heavy runs.

The run order (``notebooks/order.yaml``) is read here too, by :func:`load_order`.

Profiles: ``real`` is the notebooks' own defaults (the real experiment); ``smoke`` is
``params/smoke.yaml`` (``common`` plus the notebook's own section): random weights, planted truth, offline;
``lecture`` is ``params/lecture.yaml``: pretrained small models at 224 px on the bundled photos and small
subsets, nothing planted, each notebook in a lecture slot on a CPU. A profile is checked as a whole:
malformed YAML names the file and line, and a section that is not a notebook of the run order
(``00_tuor:``) is an error, never silently ignored.

Overrides: a user changes any parameter of any profile with a YAML file in the profile format
(``vitreg run --params my.yaml``, ``make reproduce PARAMS=my.yaml``) and ``--set NOTEBOOK.KEY=VALUE``
(``--set 02_high_norm_tokens.n_images=512 --set common.device=cuda``; values are YAML scalars or lists).
:func:`read_overrides` reads both, :func:`given_parameters` layers profile < file < ``--set``; the result
is validated like a profile. A ``common`` key (profile or override) applies to every notebook that has
that parameter; a key no notebook of the run order has is an error.

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

from vitreg.utils.paths import repo_root

#: Every notebook's parameters cell defines these (a test checks it).
COMMON_PARAMETERS = ("profile", "pretrained", "device", "seed", "output_dir")
PROFILES = ("real", "smoke", "lecture")


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


#: Parameters the runner sets itself: an override of them is an error naming the option to use instead.
RUNNER_SET = {"output_dir": "--out DIR", "profile": "--profile"}


def parse_set(item: str, known: list[str]) -> tuple[str, str, Any]:
    """``NOTEBOOK.KEY=VALUE`` -> ``(section, key, value)``: the section is ``common`` or a notebook of
    ``known`` (its full name or number, ``02``); the value is parsed as YAML (``512``, ``cuda``, ``null``,
    ``[dinov2_s, dinov2_b]``).

    Raises:
        ParameterError: not of that form, an unknown notebook (with close names), or a mapping as value.
    """
    target, eq, raw = item.partition("=")
    section, dot, key = target.strip().partition(".")
    if not eq or not dot or not section or not key.strip():
        raise ParameterError(f"--set {item!r}: write NOTEBOOK.PARAMETER=VALUE, e.g. "
                             "--set 02_high_norm_tokens.n_images=512 or --set common.device=cuda")
    if section != "common":
        match = [n for n in known if n == section or n.split("_")[0] == section.zfill(2)]
        if len(match) != 1:
            close = difflib.get_close_matches(section, known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ParameterError(f"--set {item!r}: {section!r} is not 'common' nor a notebook of "
                                 f"notebooks/order.yaml{hint}. Notebooks: {', '.join(known)}")
        section = match[0]
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ParameterError(f"--set {item!r}: the value is not valid YAML ({err})") from err
    if isinstance(value, dict):
        raise ParameterError(f"--set {item!r}: the value must be a scalar or a list, not a mapping")
    return section, key.strip(), value


def read_overrides(params_file: str | Path | None = None, sets: list[str] | tuple[str, ...] = (),
                   known: list[str] | None = None) -> dict[str, Any]:
    """The user's overrides: ``params_file`` (profile format, checked by :func:`check_profile`) with the
    ``--set`` items on top. Returns ``{"common": {...}, "notebooks": {name: {...}}}``.

    Raises:
        ParameterError: a missing or malformed file, a bad ``--set``, or an override of a parameter the
            runner sets (:data:`RUNNER_SET`).
    """
    known = known if known is not None else [e["notebook"] for e in load_order()]
    data: dict[str, Any] = {"common": {}, "notebooks": {}}
    if params_file is not None:
        path = Path(params_file).expanduser()
        if not path.is_file():
            raise ParameterError(f"{path}: no such parameters file (PARAMS= / --params)")
        read = check_profile(path, known)
        data = {"common": dict(read["common"]), "notebooks": {k: dict(v or {}) for k, v in read["notebooks"].items()}}
    for item in sets:
        section, key, value = parse_set(item, known)
        (data["common"] if section == "common" else data["notebooks"].setdefault(section, {}))[key] = value
    reserved = [f"{key!r} (use {RUNNER_SET[key]})" for sec in [data["common"], *data["notebooks"].values()]
                for key in sec if key in RUNNER_SET]
    if reserved:
        raise ParameterError("the runner sets these parameters itself: " + ", ".join(dict.fromkeys(reserved)))
    return data


def given_parameters(profile: str, names: list[str], root: Path | None = None,
                     overrides: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """What each notebook of ``names`` is given: its profile (``common`` then its section), then the
    overrides (``common`` then its section). Each ``common`` key goes to the notebooks that have it.

    Raises:
        ParameterError: a ``common`` key that no notebook of the run order has, or an override of a
            ``common`` key that none of ``names`` has and whose value is wrong for the notebooks that do.
    """
    root = root or repo_root()
    paths = {e["notebook"]: root / "notebooks" / f"{e['notebook']}.ipynb" for e in load_order(root)}
    defaults = {n: notebook_defaults(p) for n, p in paths.items() if p.exists()}
    if profile == "real":
        layers = [("the real profile", {"common": {"profile": "real"}, "notebooks": {}})]
    else:
        layers = [(f"params/{profile}.yaml", check_profile(root / "params" / f"{profile}.yaml", list(paths)))]
    layers.append(("the overrides", overrides or {"common": {}, "notebooks": {}}))
    problems = []
    for where, layer in layers:
        for key, value in layer["common"].items():
            having = [n for n, d in defaults.items() if key in d]
            if not having:
                every = sorted({k for d in defaults.values() for k in d})
                close = difflib.get_close_matches(key, every, n=3)
                problems.append(f"{where}: common parameter {key!r} is not a parameter of any notebook"
                                + (f" (did you mean {', '.join(close)}?)" if close else ""))
            elif not any(n in names for n in having):
                try:
                    validate(paths[having[0]], {key: value})
                except ParameterError as err:
                    problems.append(f"{where}: common.{key}: {err}")
    if problems:
        raise ParameterError("\n".join(problems))
    given: dict[str, dict[str, Any]] = {}
    for name in names:
        mine = defaults.get(name, {})
        given[name] = {}
        for _, layer in layers:
            given[name].update({k: v for k, v in layer["common"].items() if k in mine})
            given[name].update(layer["notebooks"].get(name) or {})
    return given


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
    "names": ("a non-empty list of non-empty strings (model names)", lambda v: isinstance(v, (list, tuple))
              and len(v) > 0 and all(isinstance(x, str) and x != "" for x in v)),
    # the same names as vitreg.data.datasets.IMAGE_SOURCES (a test keeps them equal; params may not import data)
    "image_source": ("one of 'auto', 'imagenet', 'imagenette', 'pets', 'photos'",
                     lambda v: v in ("auto", "imagenet", "imagenette", "pets", "photos")),
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
             "span", "n_detect", "plant_units"),
    **_rules("count0", "num_workers", "border_width", "seed"),
    **_rules("int", "block"),
    **_rules("count0", "plant_block"),  # 10: the block of the planted register neurons
    **_rules("count", "lost_limit", "lost_batch_size"), **_rules("text", "lost_model"),  # 10: LOST with a test-time register
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
    **_rules("image_source", "images"),
    **_rules("count", "top_k", "mean_n_images", "probe_n_train", "probe_n_val"), **_rules("text", "probe_dataset"),  # 11
    **_rules("names", "scan_models"), **_rules("count", "scan_n_images"), **_rules("size", "scan_image_size"),  # 02 zoo
    **_rules("text", "model", "reference_model", "head_model", "dataset", "split", "layer", "upsample_mode",
             "profile", "device"),
}
