"""What one notebook does, with what and at what size: the one definition of an experiment.

Paper: every finding. Each notebook ``NN_name`` has one module ``vitreg.experiments.<name>`` that defines an
:class:`Experiment`:

* ``params``: a frozen dataclass of the notebook's parameters. Its defaults are the real experiment (the
  notebook's ``parameters`` cell holds the same literals, and a test keeps the two equal); each field says what
  values it allows (:func:`param` with a :data:`KINDS` name), which is what the runner checks before anything runs.
* ``profiles``: the smoke and lecture overrides of those defaults (``{"smoke": {...}, "lecture": {...}}``).
* ``models(p)``: every model a run with parameters ``p`` loads, twins included: the pre-run weights check reads it.
* ``work(p)``: the forwards a run does (:class:`Work` rows: model, resolution, images): the run-time table and the
  drift tests read it.
* ``costs(p)``: what a run does besides forwards (probe fits, heads, sweeps), each estimated by a cost model of
  :mod:`vitreg.experiments.costs`: the rest of the run-time table.
* ``record``: the dataclass of the numbers the notebook saves; the dotted paths of its fields are what
  ``data/paper_numbers.yaml`` refers to (:func:`record_paths`).

Adding a parameter to a notebook therefore touches its experiment module and the notebook's text only.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vitreg.experiments.costs import Cost


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # NaN is not a number here


#: The kinds of value a parameter may take: name -> (what the error message says, the test).
KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "count": ("an integer >= 1", lambda v: _int(v) and v >= 1),
    "count0": ("an integer >= 0", lambda v: _int(v) and v >= 0),
    "int": ("an integer", _int),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
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
    "list": ("a list", lambda v: isinstance(v, (list, tuple))),
    "mapping": ("a mapping of name: value", lambda v: isinstance(v, dict)),
    "image_source": ("one of 'auto', 'imagenet', 'imagenette', 'pets', 'photos'",
                     lambda v: v in ("auto", "imagenet", "imagenette", "pets", "photos")),
}


def param(default: Any, kind: str, doc: str = "") -> Any:
    """A parameter field: its real default, the :data:`KINDS` name of the values it allows, and one line of
    meaning. ``None`` is allowed exactly where the default is ``None`` (``image_dir: str | None``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown parameter kind {kind!r}; use one of {sorted(KINDS)}")
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"kind": kind, "doc": doc})
    return field(default=default, metadata={"kind": kind, "doc": doc})


@dataclass(frozen=True)
class Common:
    """The parameters every notebook has (the runner sets ``profile`` and ``output_dir``)."""

    profile: str = param("real", "text", "real, smoke or lecture: set by the runner")
    pretrained: bool = param(True, "bool", "False: random weights (no download; every output says so)")
    device: str = param("auto", "text", "auto: a CUDA GPU when torch sees one, else the CPU")
    seed: int = param(0, "count0", "seeds torch and every subset")
    output_dir: str = param("..", "str", "folder of figures/ and results/: set by the runner")


@dataclass(frozen=True)
class Work:
    """``images`` forwards of ``model`` at ``px`` pixels (the run-time table's FLOP key), with what they are for.

    ``needs`` names the dataset the row reads when a run skips it where that dataset is absent (``VOC07``,
    ``imagenet1k``); empty for rows that always run (natural images, bundled photos, synthetic data)."""

    model: str
    px: int
    images: int
    what: str = ""
    needs: str = ""


#: How many photos ship inside the installed packages (:func:`vitreg.core.images.sample_photos`; a test keeps it
#: equal): ``images: photos`` gives at most this many.
BUNDLED_PHOTOS = 14


def image_count(p: Any) -> int:
    """How many images ``NotebookRun.images()`` gives a run with parameters ``p``: ``n_images``, at most
    :data:`BUNDLED_PHOTOS` of the bundled photos (a folder, ``image_dir``, is counted as full)."""
    if getattr(p, "image_dir", None) is None and getattr(p, "images", "photos") == "photos":
        return min(p.n_images, BUNDLED_PHOTOS)
    return p.n_images


def sides(size: Any, model: str | None = None) -> tuple[int, int]:
    """``(height, width)`` in pixels of ``size`` (an int, or ``[H, W]``), or ``model``'s native resolution for None.

    Paper: every table (the input size sets the patch grid and the label size)."""
    if size is None:
        from vitreg.core.models import get_spec

        if model is None:
            raise ValueError("size None means the model's native resolution: name the model")
        size = get_spec(model).native_resolution
    if isinstance(size, (list, tuple)):
        return int(size[0]), int(size[1])
    return int(size), int(size)


def patch_grid(size: Any, model: str) -> tuple[int, int]:
    """``(rows, columns)`` of patch tokens ``model`` makes of an input of ``size`` (:func:`sides`), as the model
    would be loaded (each side rounded to a multiple of the patch size)."""
    from vitreg.core.models import get_spec

    patch = get_spec(model).patch_size
    h, w = sides(size, model)
    return max(1, round(h / patch)), max(1, round(w / patch))


def px(size: Any, model: str) -> int:
    """The side in pixels a model runs at: ``size`` (an int, or ``[H, W]``: the side of the square with as many
    pixels), or the model's native resolution for None.

    Paper: every table (the resolution is the run-time table's FLOP key)."""
    if size is None:
        from vitreg.core.models import get_spec

        return get_spec(model).native_resolution
    if isinstance(size, (list, tuple)):
        h, w = int(size[0]), int(size[1])
        return h if h == w else round((h * w) ** 0.5)
    return int(size)


@dataclass(frozen=True)
class Experiment:
    """One notebook's experiment (see the module docstring).

    Attributes:
        name: the notebook (``04_redundant_patches``).
        params: the parameters dataclass (a subclass of :class:`Common`).
        models: the models a run with given parameters loads, twins included, each once, in the order of their
            first load (the pre-run weights check; a smoke run's trace must load exactly these).
        work: the forwards a run with given parameters does.
        profiles: overrides of the defaults per profile (``smoke``, ``lecture``).
        record: the results record dataclass (None while the notebook still saves a plain mapping).
        costs: the work a run with given parameters does besides forwards (:class:`~vitreg.experiments.costs.Cost`
            rows: probe fits, heads, sweeps), for the run-time table.
        loads: every load a run with given parameters does, in order, a model loaded again (at another resolution,
            by a later step) listed again: what the run-time table charges (None: each model of ``models`` once).
    """

    name: str
    params: type
    models: Callable[[Any], list[str]]
    work: Callable[[Any], list[Work]]
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    record: type | None = None
    costs: Callable[[Any], Sequence[Cost]] = lambda p: ()
    loads: Callable[[Any], list[str]] | None = None

    def model_loads(self, p: Any) -> list[str]:
        """Every load a run with parameters ``p`` does, in order (``loads``, else each model of ``models`` once).

        Paper: every figure (the run-time table charges each load: :func:`vitreg.experiments.costs.load_s`)."""
        return list(self.loads(p)) if self.loads is not None else list(self.models(p))

    def defaults(self) -> dict[str, Any]:
        """The real experiment's parameters, by name."""
        return {f.name: _default(f) for f in dataclasses.fields(self.params)}

    def kinds(self) -> dict[str, str]:
        """Each parameter's :data:`KINDS` name."""
        return {f.name: f.metadata["kind"] for f in dataclasses.fields(self.params)}

    def build(self, values: Mapping[str, Any] | None = None) -> Any:
        """The parameters dataclass from the defaults updated by ``values`` (unchecked: see
        :func:`vitreg.experiments.params.validate`)."""
        return self.params(**{**self.defaults(), **dict(values or {})})


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def record_paths(record: type, prefix: str = "") -> set[str]:
    """Every dotted path of a results record: nested dataclasses are followed; a ``dict[str, X]`` field lists its
    keys in ``field(metadata={"keys": (...)})`` and each ``key.<path of X>`` counts.

    Paper: every number of ``data/paper_numbers.yaml`` (its ``key`` must be one of these paths)."""
    hints = typing.get_type_hints(record)
    out: set[str] = set()
    for f in dataclasses.fields(record):
        path = f"{prefix}{f.name}"
        out.add(path)
        tp = hints[f.name]
        union = typing.get_origin(tp) in (typing.Union, types.UnionType)  # X | None: follow X; dict[str, X]: itself
        inner = [a for a in typing.get_args(tp) if a is not type(None)] if union else [tp]
        for t in inner:
            origin = typing.get_origin(t)
            if dataclasses.is_dataclass(t):
                out |= record_paths(t, path + ".")
            elif origin in (dict, Mapping) and "keys" in f.metadata:
                value_t = typing.get_args(t)[1]
                for key in f.metadata["keys"]:
                    out.add(f"{path}.{key}")
                    if dataclasses.is_dataclass(value_t):
                        out |= record_paths(value_t, f"{path}.{key}.")
    return out


def as_numbers(record: Any) -> dict[str, Any]:
    """A results record as the plain mapping ``results/<notebook>.json`` holds under ``numbers``."""
    return dataclasses.asdict(record)
