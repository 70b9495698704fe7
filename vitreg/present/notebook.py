"""The notebook helper: everything a notebook does besides its science, in one place.

Paper: every notebook. A notebook's first code cell after its ``parameters`` cell is::

    run = notebook.start("02_high_norm_tokens", globals())

:func:`start` reads the parameters the run was given (papermill injects them as globals; the names come
from the notebook's own ``parameters`` cell, so no notebook retypes them), checks them like the runner
does, seeds torch and prints one line on what runs. The returned :class:`NotebookRun` then

* picks images (:meth:`NotebookRun.images`: ``image_dir``, a natural-image set, or the bundled photos),
* saves figures (:meth:`NotebookRun.save_figure`, each stamped with what ran: ``[random weights · planted
  ground truth]``, from :attr:`NotebookRun.random_weights` and :attr:`NotebookRun.planted`, never from the
  profile) and results (:meth:`NotebookRun.save`: every parameter of the run is recorded, with the skips
  and the verdicts),
* records skipped parts with their reason (:meth:`NotebookRun.skip`),
* prints the verdict of each claim through :mod:`vitreg.claims.paper` (:meth:`NotebookRun.check`), the same
  rule the report applies, so a notebook and the report cannot disagree; a verdict never stops a run,
* and fails loudly when a PLANTED ground truth is missed (:meth:`NotebookRun.expect_planted`) or an
  invariant of the code breaks (:meth:`NotebookRun.require`): those are bugs, not scientific disagreements.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class PlantedTruthMissed(AssertionError):
    """The analysis did not recover a ground truth that the run planted: the code is broken."""


class CodeCheckFailed(AssertionError):
    """An invariant of the code (not a claim of the paper) does not hold, e.g. recomputed attention differs."""


@dataclass
class NotebookRun:
    """One run of one notebook: its parameters and what it has recorded so far.

    Attributes:
        name: the notebook's name (``02_high_norm_tokens``).
        params: every parameter of the run (defaults of the ``parameters`` cell, updated by the runner).
        skipped: ``"<what>: <why>"`` lines, written into the results as ``numbers["skipped"]``.
        verdicts: the paper verdicts printed so far (written into the results as ``numbers["verdicts"]``).
        planted_checks: planted-truth checks so far (``what -> passed``).
        planted_parts: what the run planted, as recorded by :meth:`plant`.
    """

    name: str
    params: dict[str, Any]
    skipped: list[str] = field(default_factory=list)
    verdicts: list[Any] = field(default_factory=list)
    planted_checks: dict[str, bool] = field(default_factory=dict)
    planted_parts: list[str] = field(default_factory=list)

    @property
    def output_dir(self) -> Path:
        """Folder holding ``figures/`` and ``results/`` (the ``output_dir`` parameter)."""
        return Path(self.params.get("output_dir", ".."))

    @property
    def profile(self) -> str:
        return str(self.params.get("profile", "real"))

    @property
    def random_weights(self) -> bool:
        """True when the run's models are randomly initialised (``pretrained=False``), whatever the profile."""
        return not self.params.get("pretrained", True)

    @property
    def planted(self) -> bool:
        """True when the run puts a known answer into what it measures: the parameters that switch planting
        on (``plant``, ``plant_fraction`` > 0, a ``synthetic`` dataset with its planted classes, objects or
        depths) or anything recorded with :meth:`plant`. Whatever the profile. (A planted check alone, such
        as 08's check of LOST on planted feature maps before any model, does not make the run's figures planted.)"""
        return bool(self.planted_parts or _planting_params(self.params))

    def plant(self, what: str) -> bool:
        """Record that the run planted ``what`` (its figures are then labelled "planted"); returns True."""
        if what not in self.planted_parts:
            self.planted_parts.append(what)
        return True

    @property
    def labels(self) -> str:
        """The label line of this run's figures: ``[random weights · planted ground truth]``, a part, or ""."""
        from vitreg.present.plots import label_line

        return label_line(random_weights=self.random_weights, planted=self.planted)

    def images(self, image_dir: str | os.PathLike | None = None, n: int | None = None) -> list[Any]:
        """The run's images: ``image_dir`` if given, else the set named by the ``images`` parameter.

        Paper: the natural images of Fig. 1-7. ``image_dir`` (default: the parameter of that name) wins;
        otherwise ``images`` = ``auto`` (ImageNet val if ``$VITREG_DATA`` has it, else Imagenette val,
        downloaded once), ``imagenet``, ``imagenette``, ``pets`` (a seeded class-balanced subset, see
        :func:`vitreg.data.datasets.natural_images`) or ``photos`` (the bundled photos; also what a notebook without
        an ``images`` parameter gets). At most ``n`` (default: the ``n_images`` parameter). What was used
        (source, and for a dataset its split, count and seed) goes into the results as ``numbers["images"]``.
        """
        from vitreg.data.datasets import natural_images
        from vitreg.core.images import pick_images

        image_dir = self.params.get("image_dir") if image_dir is None else image_dir
        n = self.params.get("n_images") if n is None else n
        which = self.params.get("images", "photos")
        if image_dir is not None or which == "photos":
            images, source = pick_images(image_dir, n, profile=self.profile)
            self._images_record = {"source": source, "n": len(images)}
        else:
            images, self._images_record = natural_images(which, n, seed=int(self.params.get("seed", 0)))
        self._image_source, self._n_images = self._images_record["source"], len(images)
        print(f"{len(images)} images from {self._image_source}")
        return images

    def save_figure(self, fig: Any, name: str) -> list[Path]:
        """Save ``fig`` as ``figures/<name>.png`` and ``.pdf`` under the run's output folder, its title
        stamped with what ran (:attr:`labels`: random weights, planted ground truth); a schematic
        (:func:`is_schematic`) shows no run and keeps its own "schematic" label only."""
        from vitreg.present.plots import save_figure, stamp

        if not name.startswith(self.name[:2]):
            raise ValueError(f"figure name {name!r} must start with the notebook number {self.name[:2]}")
        if not is_schematic(fig):
            stamp(fig, random_weights=self.random_weights, planted=self.planted)
        return save_figure(fig, name, self.output_dir)

    def skip(self, what: str, why: str) -> dict[str, str]:
        """Record that ``what`` was not run, and why; returns ``{"skipped": why}`` for the results."""
        line = f"{what}: {why}"
        if line not in self.skipped:
            self.skipped.append(line)
        print(f"SKIPPED {line}")
        return {"skipped": why}

    def check(self, key: str, value: Any, *, model: str | None = None) -> list[Any]:
        """Print the verdict of every paper number checked on ``key`` (a results key), now.

        Paper: the claim's entry in ``data/paper_numbers.yaml``; the rule is the one the report uses. A
        verdict that differs is printed; it never stops the run. The verdicts recorded in the results are
        computed again by :meth:`save` from the saved record, exactly as the report computes its rows.
        """
        from vitreg.claims.paper import check

        verdicts = check(self.name, key, value, model=model, random_weights=self.random_weights,
                         profile=self.profile, resolution=self.params.get("image_size"),
                         n_images=getattr(self, "_n_images", None))
        for v in verdicts:
            print(v)
        self.verdicts.extend(verdicts)
        return verdicts

    def expect_planted(self, what: str, ok: bool) -> bool:
        """A check of a planted ground truth: raise :class:`PlantedTruthMissed` when it was missed."""
        self.planted_checks[what] = bool(ok)
        print(("recovered  " if ok else "MISSED     ") + f"planted: {what}")
        if not ok:
            raise PlantedTruthMissed(f"{self.name}: the planted ground truth was not recovered ({what}): "
                                     "the analysis code is broken")
        return True

    def require(self, what: str, ok: bool) -> bool:
        """An invariant of the code in every profile (e.g. recomputed == explicit attention): raise
        :class:`CodeCheckFailed` when it does not hold. Never use it for a claim of the paper (see :meth:`check`)."""
        print(("holds      " if ok else "BROKEN     ") + what)
        if not ok:
            raise CodeCheckFailed(f"{self.name}: {what} does not hold: the code is broken")
        return True

    @staticmethod
    def _finite(numbers: dict[str, Any]) -> dict[str, Any]:
        """``numbers`` (plain JSON types) with every NaN/inf named on the output and recorded as
        ``{"skipped": ...}``, so one non-finite number never costs a run its results file (strict JSON)."""
        from vitreg.utils.results import clean_numbers, non_finite_paths

        bad = non_finite_paths(numbers)
        if not bad:
            return numbers
        print(f"warning: {len(bad)} number(s) are not finite (NaN or inf) and are recorded as skipped: "
              + ", ".join(bad[:10]) + (" ..." if len(bad) > 10 else ""))
        return clean_numbers(numbers, "not a finite number (NaN or inf) in this run")

    def save(self, numbers: Mapping[str, Any], models: Iterable[Any] = ()) -> Path:
        """Write ``results/<notebook>.json`` with ``numbers``, the models, every parameter, skips and verdicts.

        The verdicts stored (``numbers["verdicts"]``) are the report's own rows for this notebook, computed
        from the record being written (:func:`vitreg.present.report.evaluate`): the notebook and the report agree
        by construction. A verdict whose status differs from the one :meth:`check` printed earlier (e.g.
        another resolution than the reference's) is printed again.
        """
        import json

        from vitreg.utils.io import jsonable
        from vitreg.claims.paper import paper_numbers
        from vitreg.present.report import evaluate
        from vitreg.utils.results import results_record, write_results

        extra: dict[str, Any] = {}
        if getattr(self, "_image_source", None) is not None and "images" not in numbers:
            extra["images"] = dict(self._images_record)
        if self.skipped:
            extra["skipped"] = list(dict.fromkeys([*numbers.get("skipped", []), *self.skipped]))
        if self.planted_checks:
            extra["planted_checks"] = dict(self.planted_checks)
        record = results_record(self.name, {**numbers, **extra}, models=models, params=self.params)
        record["random_weights"] = bool(record["random_weights"] or self.random_weights)  # what ran decides
        record = json.loads(json.dumps(record, default=jsonable))  # as the report will read it
        record["numbers"] = self._finite(record["numbers"])
        mine = [n for n in paper_numbers() if n.notebook == self.name]
        final = evaluate(mine, {self.name: record})
        printed = {v.id: v.status for v in self.verdicts}
        for v in final:
            if v.id in printed and printed[v.id] != v.status:
                print(f"as the report judges it: {v}")
        record["numbers"]["verdicts"] = [{"id": v.id, "status": v.status, "ours": v.ours, "paper": v.paper,
                                          "rule": v.rule} for v in final if v.status != "not reproducible"]
        path = write_results(record, self.output_dir)
        print(f"results: {path}")
        return path


def is_schematic(fig: Any) -> bool:
    """Whether ``fig`` is a diagram (a title says "schematic", as :mod:`vitreg.present.plots.diagrams`'s do): it
    shows no measurement, so it carries no run label (random weights, planted ground truth).

    Args:
        fig: a matplotlib figure.

    Returns:
        True when its suptitle or an axes title contains "schematic".
    """
    titles = [fig.get_suptitle() or "", *(ax.get_title() for ax in fig.axes)]
    return any("schematic" in title.lower() for title in titles)


def readable(table: Any, decimals: int = 1) -> Any:
    """``table`` (a DataFrame, a Series or one number) with numbers formatted for people: ``decimals``
    decimals (integers as they are), a missing value (None, NaN) as "—"; for display, not for computing."""
    import math

    def one(x: Any) -> Any:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "—"
        if isinstance(x, bool) or not isinstance(x, (int, float)) and not hasattr(x, "item"):
            return x
        x = x.item() if hasattr(x, "item") else x
        return f"{x:,}" if isinstance(x, int) else f"{x:,.{decimals}f}"

    def column(col: Any) -> Any:  # a column of counts (floats only because of a missing value) stays integer
        numbers = [x for x in col if isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)]
        if numbers and len(numbers) == sum(1 for x in col if x is not None and not (isinstance(x, float) and math.isnan(x))) \
                and all(float(x).is_integer() for x in numbers) and any(isinstance(x, float) for x in numbers):
            return col.map(lambda x: one(int(x)) if isinstance(x, (int, float)) and not math.isnan(x) else one(x))
        return col.map(one)

    if hasattr(table, "columns"):
        return table.apply(column)
    if hasattr(table, "map"):
        return column(table)
    return one(table)


def _planting_params(params: Mapping[str, Any]) -> list[str]:
    """What the parameters of a run make it plant (the notebooks plant exactly when these are set)."""
    found = []
    if params.get("plant"):
        found.append("plant")
    if isinstance(params.get("plant_fraction"), (int, float)) and params["plant_fraction"] > 0:
        found.append("plant_fraction")
    for key, value in params.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if (key == "synthetic" and value is True) or (key != "synthetic" and "synthetic" in values):
            found.append(key)
    return found


#: ``VITREG_LAB_PROFILE=lecture``: a notebook opened by hand (``VITREG_PROFILE=lecture make lab``) takes that profile.
LAB_PROFILE_ENV = "VITREG_LAB_PROFILE"


def lab_parameters(name: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a notebook opened by hand takes from the profile named in ``$VITREG_LAB_PROFILE``.

    Paper: none; the classroom mode (every notebook; a lecture runs on a laptop CPU). ``VITREG_PROFILE=lecture
    make lab`` sets it, so "Run all" in class runs the lecture parameters (small pretrained models, 224 px,
    bundled photos) instead of the real defaults (ViT-g at 518 px). A value the reader changed in the
    parameters cell (no longer the cell's default) is kept. A run by the runner (text progress bars in its
    kernel) never takes it: its parameters come from its own profile.

    Args:
        name: the notebook's name (``02_high_norm_tokens``).
        namespace: the notebook's globals, holding the parameters cell's values.

    Returns:
        ``{parameter: profile value}`` to apply; empty without the variable, for the real profile, or in a run.

    Raises:
        vitreg.experiments.params.ParameterError: an unknown profile name.
    """
    from vitreg.experiments.params import experiment_of, load_profile
    from vitreg.utils.progress import TEXT_ENV

    profile = os.environ.get(LAB_PROFILE_ENV, "").strip()
    if not profile or profile == "real" or os.environ.get(TEXT_ENV) == "1":
        return {}
    defaults = experiment_of(name).defaults()
    given = load_profile(profile, name)
    return {k: v for k, v in given.items() if k in defaults and namespace.get(k, defaults[k]) == defaults[k]}


def start(name: str, namespace: Mapping[str, Any]) -> NotebookRun:
    """Begin a run of notebook ``name`` with the parameters found in ``namespace`` (the notebook's globals).

    The parameter names are those of the notebook's experiment (:mod:`vitreg.experiments`; the notebook's
    ``parameters`` cell holds the same names and defaults); values come from ``namespace`` (papermill's injected
    cell overrides the defaults there). They are checked with :func:`vitreg.experiments.params.validate`, the
    check the runner does before anything runs, so a value edited by hand in an interactive session is checked
    too. torch is seeded with the ``seed`` parameter. Opened by hand with ``$VITREG_LAB_PROFILE`` set
    (``VITREG_PROFILE=lecture make lab``), the notebook takes that profile's parameters (:func:`lab_parameters`),
    written back into ``namespace`` for the cells that follow.

    Raises:
        vitreg.experiments.params.ParameterError: a parameter not of its kind, or a notebook without an experiment.
    """
    import torch

    from vitreg.experiments.params import experiment_of, validate

    names = list(experiment_of(name).defaults())
    missing = [n for n in names if n not in namespace]
    if missing:
        raise NameError(f"{name}: run the parameters cell first (missing {', '.join(missing)})")
    lab = lab_parameters(name, namespace)
    params = validate(name, {n: namespace[n] for n in names} | lab)
    if lab and isinstance(namespace, dict):  # the notebook's globals: later cells read the parameters there
        namespace.update({k: params[k] for k in lab})
    torch.manual_seed(int(params.get("seed", 0)))
    run = NotebookRun(name=name, params=params)
    weights = "pretrained weights" if params.get("pretrained", True) else "RANDOM weights (no result about the paper)"
    planted = ", PLANTED ground truth (figures say so)" if run.planted else ""
    if lab:
        print(f"{LAB_PROFILE_ENV}: {', '.join(f'{k}={v!r}' for k, v in lab.items())} (params/{run.profile}.yaml)")
    print(f"{name}: profile {run.profile}, {weights}{planted}, device {params.get('device', 'auto')}, "
          f"seed {params.get('seed', 0)}")
    return run
