"""Notebook parameters: the profiles, and a check that turns papermill's warnings into errors.

papermill only *warns* about a parameter the notebook does not have, so a typo silently runs the
defaults (the real, hours-long experiment). Here every parameter passed to a notebook is checked
against its experiment's parameters dataclass (:mod:`vitreg.experiments.base`: names, and each field's
kind of value) before anything heavy runs.

The run order (``notebooks/order.yaml``) is read here too, by :func:`load_order`.

Profiles: ``real`` is the experiments' own defaults (the real experiment); ``smoke`` (random weights,
planted truth, offline) and ``lecture`` (pretrained small models at 224 px on the bundled photos and
small subsets, nothing planted, each notebook in a lecture slot on a CPU) are each experiment's
``profiles`` on top of :data:`vitreg.experiments.catalog.COMMON_PROFILES`
(:func:`vitreg.experiments.catalog.profile_parameters`).

Overrides: a user changes any parameter of any profile with a YAML file (``common`` and ``notebooks``
mappings: ``vitreg run --params my.yaml``, ``make reproduce PARAMS=my.yaml``) and ``--set
NOTEBOOK.KEY=VALUE`` (``--set 02_high_norm_tokens.n_images=512 --set common.device=cuda``; values are YAML
scalars or lists). :func:`read_overrides` reads both, :func:`given_parameters` layers profile < file <
``--set``. A file is checked as a whole: malformed YAML names the file and line, and a section that is not
a notebook of the run order (``00_tuor:``) is an error, never silently ignored. A ``common`` key applies to
every notebook that has that parameter; a key no notebook of the run order has is an error.

Ranges: each parameter's kind (:data:`vitreg.experiments.base.KINDS`: counts >= 1, fractions in (0, 1),
positive image sizes, ``str | None`` folders, ...) is what :func:`validate` checks, so ``n_images: -1`` or
``train_fraction: 1.5`` stop the run before anything heavy starts.

Notebooks without an experiment (a test's own small project) are given one made from their ``parameters``
cell (:func:`cell_experiment`, each value's kind from its default's type) and passed in explicitly
(``experiments=``); every notebook of the run order has its module in :mod:`vitreg.experiments.catalog`.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from vitreg.experiments import catalog
from vitreg.experiments.base import KINDS, Experiment, param
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


def notebook_kind(default: Any) -> str:
    """The :data:`~vitreg.experiments.base.KINDS` name of a value like ``default`` (a notebook without an
    experiment: only the type of its defaults is known)."""
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "number"
    if isinstance(default, (list, tuple)):
        return "list"
    if isinstance(default, dict):
        return "mapping"
    return "str"


def cell_experiment(notebook: str | Path, profiles: Mapping[str, Mapping[str, Any]] | None = None,
                    kinds: Mapping[str, str] | None = None) -> Experiment:
    """An experiment made from a notebook's ``parameters`` cell, for a notebook that has no module in
    :mod:`vitreg.experiments.catalog` (a test's own small project): its defaults, each value's kind from ``kinds``
    or else from its default's type, no models and no work. Pass it to the runner with ``experiments={name: ...}``."""
    path, kinds = Path(notebook), dict(kinds or {})
    fields = [(name, type(value), param(value, kinds.get(name) or notebook_kind(value)))
              for name, value in notebook_defaults(path).items()]
    params = dataclasses.make_dataclass(f"Params_{path.stem}", fields, frozen=True)
    return Experiment(path.stem, params, lambda p: [], lambda p: [], dict(profiles or {}))


def experiment_of(name: str, experiments: Mapping[str, Experiment] | None = None) -> Experiment:
    """The experiment of notebook ``name``: from ``experiments`` when given there, else the catalog's.

    Raises:
        ParameterError: ``name`` has no experiment.
    """
    if experiments and name in experiments:
        return experiments[name]
    try:
        return catalog.experiment(name)
    except catalog.UnknownExperiment as err:
        raise ParameterError(f"{name}: no experiment module for this notebook (vitreg.experiments.catalog.MODULES); "
                             "add one, or pass experiments= for a notebook outside the project") from err


def load_profile(profile: str, name: str, experiments: Mapping[str, Experiment] | None = None) -> dict[str, Any]:
    """Parameters a profile passes to notebook ``name`` (``{"profile": "real"}`` for ``real``: the defaults are
    the experiment); see :func:`vitreg.experiments.catalog.profile_parameters`."""
    if profile not in PROFILES:
        raise ParameterError(f"unknown profile {profile!r}; use one of {PROFILES}")
    return catalog.profile_of(experiment_of(name, experiments), profile)


def check_profile(path: Path, known: list[str] | None = None) -> dict[str, Any]:
    """Read an overrides file and check its shape: ``common`` and ``notebooks`` mappings, sections named
    after notebooks of ``known`` (default: the run order). Returns ``{"common": {...}, "notebooks": {...}}``."""
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
        known = [e["notebook"] for e in load_order()]
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
                     overrides: dict[str, Any] | None = None,
                     experiments: Mapping[str, Experiment] | None = None) -> dict[str, dict[str, Any]]:
    """What each notebook of ``names`` is given: its profile (:func:`load_profile`), then the overrides
    (``common`` then its section). Each ``common`` key goes to the notebooks that have it.

    Raises:
        ParameterError: a ``common`` key that no notebook of the run order has, or an override of a
            ``common`` key that none of ``names`` has and whose value is wrong for the notebooks that do.
    """
    order = [e["notebook"] for e in load_order(root)]
    specs = {n: experiment_of(n, experiments) for n in dict.fromkeys([*order, *names])}
    defaults = {n: e.defaults() for n, e in specs.items()}
    layers = [(f"the {profile} profile", {"common": {}, "notebooks": {n: load_profile(profile, n, experiments)
                                                                       for n in names}}),
              ("the overrides", overrides or {"common": {}, "notebooks": {}})]
    problems = []
    for key, value in layers[1][1]["common"].items():
        having = [n for n, d in defaults.items() if key in d]
        if not having:
            every = sorted({k for d in defaults.values() for k in d})
            close = difflib.get_close_matches(key, every, n=3)
            problems.append(f"the overrides: common parameter {key!r} is not a parameter of any notebook"
                            + (f" (did you mean {', '.join(close)}?)" if close else ""))
        elif not any(n in names for n in having):
            try:
                validate(having[0], {key: value}, specs[having[0]])
            except ParameterError as err:
                problems.append(f"the overrides: common.{key}: {err}")
    if problems:
        raise ParameterError("\n".join(problems))
    given: dict[str, dict[str, Any]] = {}
    for name in names:
        mine = defaults[name]
        given[name] = {}
        for _, layer in layers:
            given[name].update({k: v for k, v in layer["common"].items() if k in mine})
            given[name].update(layer["notebooks"].get(name) or {})
    return given


def validate(notebook: str | Path, given: Mapping[str, Any], experiment: Experiment | None = None) -> dict[str, Any]:
    """Check ``given`` against the notebook's experiment (its parameters dataclass); return the merged parameters.

    Every merged value (defaults included) is checked against its field's kind
    (:data:`vitreg.experiments.base.KINDS`); None is allowed exactly where the default is None.

    Args:
        notebook: the notebook's name or path (its stem is the name).
        given: the parameters passed to it.
        experiment: its experiment (default: the catalog's, :func:`experiment_of`).

    Raises:
        ParameterError: unknown names (with close names), or values not of their kind (naming the notebook,
            parameter, value and what is allowed); every problem at once.
    """
    name = Path(notebook).stem
    exp = experiment or experiment_of(name)
    defaults, kinds = exp.defaults(), exp.kinds()
    problems = []
    for key in given:
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(f"unknown parameter {key!r}{hint}")
    merged = {**defaults, **{k: v for k, v in given.items() if k in defaults}}
    for key, value in merged.items():
        text, allows = KINDS[kinds[key]]
        if value is None and defaults[key] is None:
            continue
        if value is None or not allows(value):
            allowed = text + (" or null" if defaults[key] is None else "")
            like = f" (like its default {defaults[key]!r})" if defaults[key] is not None else ""
            problems.append(f"parameter {key!r} = {value!r} is out of range: allowed {allowed}{like}")
    if problems:
        raise ParameterError(f"{name}.ipynb: " + "; ".join(problems) + f". Known parameters: {', '.join(defaults)}")
    return merged
