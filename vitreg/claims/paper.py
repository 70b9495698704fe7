"""The paper's numbers and every verdict on them: the one reader of ``data/paper_numbers.yaml``.

Paper: every finding (findings F1-F9, README); Tables 1-3, Figs. 3-5, App. A, D.
Layer: presentation. Measurements never import this module; notebooks and :mod:`vitreg.present.report` do.

One rule decides every status, :func:`judge`. A notebook prints its verdicts with :func:`check`; the
report computes its rows with the same :func:`judge`, so a notebook and the report cannot disagree.
Nothing else in the project defines a tolerance: it is written beside its rule in the data file.

Statuses:

* ``reproduced``: ours (its whole 95% interval, when the results give one) lies on the paper's side of no
  effect and is consistent with the paper's size under the stated rule (within the tolerance, or on the
  stated side of a bound);
* ``differs``: the interval excludes every value the rule accepts (another size, or the wrong side);
* ``inconclusive``: the interval holds both no effect (or, for a bound, values on both sides of it) and
  values the rule accepts; the verdict says roughly how many images or samples would decide it;
* ``not comparable``: ours was measured under another protocol than the number (another resolution,
  or fewer images than the protocol needs; the data file gives the number's protocol);
* ``not applicable``: ours comes from random weights: a claim about trained models says nothing about them
  (the verdict's ``cause`` is "random weights"; ours is kept for context, never compared);
* ``not run here``: not measured, skipped (with the reason), or another model (the verdict's ``cause``
  says which);
* ``not reproducible``: public assets do not allow it (the data file says why).

Ours is a plain number or a measured value (:class:`vitreg.claims.measured.Measured`: a value with its 95%
interval, n, resolution, budget and proxy flag). A plain number is an interval of width 0: it is judged as a
point, but a point at no effect is never reproduced. Each number may name its ``no_effect`` value (default 0
for a delta, and for a bound of 0: a sign claim): the rule never accepts it, nor the side beyond it.

A row measured on a reduced budget (``proxy`` in the measured value, or the run's ``budget.<task>.proxy``) is
judged as any other, and marked a proxy: it never decides a finding (:func:`finding_verdict`). A finding's
verdict comes from its pre-registered primary claims (``primary`` in the data file's findings) alone; every
other row is context with its own status.

A number is a single results key (``key``), or DERIVED from two keys of the same results file:
``delta: [a, b]`` (ours = a − b: a claim that one thing exceeds another, e.g. outlier − normal in Table 1)
or ``ratio: [a, b]`` (ours = a / b). A derived number is judged by the same :func:`judge`, so its sign
and its size are both checked; a notebook checks it with :func:`check_delta`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from vitreg.claims.measured import Measured, derive_measured, is_measured, needed_n, parse_measured
from vitreg.claims.paper_schema import annotate, entry_problems, primary_problems

#: The data file with the paper's numbers. The one place this module finds the repository.
PAPER_NUMBERS = Path(__file__).resolve().parents[2] / "data" / "paper_numbers.yaml"
FINDINGS = tuple(f"F{i}" for i in range(1, 10))
Status = Literal["reproduced", "differs", "inconclusive", "not comparable", "not applicable", "not run here",
                 "not reproducible"]
STATUSES: tuple[Status, ...] = ("reproduced", "differs", "inconclusive", "not comparable", "not applicable",
                                "not run here", "not reproducible")
#: The statuses of a number that was compared with the paper's.
COMPARED: tuple[Status, ...] = ("reproduced", "differs", "inconclusive")
Compare = Literal["approx", "at_least", "at_most"]
Derive = Literal["delta", "ratio"]
#: Why a number was not run here (the ``cause`` of a "not run here" verdict), in the report's order; "random
#: weights" is the cause of every "not applicable" verdict.
Cause = Literal["no results file", "skipped by the notebook", "not written yet", "random weights", "other model",
                "no notebook", "not measured"]
CAUSES: tuple[Cause, ...] = ("no results file", "skipped by the notebook", "not written yet", "random weights",
                             "other model", "no notebook", "not measured")

_TABLE3_DATASETS = ("voc07", "voc12", "coco20k")


class PaperNumbersError(ValueError):
    """``data/paper_numbers.yaml`` does not match its schema."""


@dataclass(frozen=True)
class PaperNumber:
    """One number of the paper (or of a reference it quotes), as ``data/paper_numbers.yaml`` holds it.

    ``awaiting_key`` marks an entry whose ``key`` its notebook does not write yet: until it does, the
    report shows the row as "not run here" instead of rejecting the results file.

    A derived number has ``key`` None and ``derive`` ("delta" or "ratio") over ``operands`` (two keys of
    the same results file); ``operand_models`` are the zoo keys the two operands are about (default: both
    ``model``). ``resolution`` (px) and ``images`` are the protocol the number was measured under, where
    the source says; ``min_images`` is the fewest images a run needs for the comparison to mean anything;
    ``why`` justifies the rule (tolerance or bound). ``no_effect`` is the value ours takes when there is no
    effect (default 0 for a delta and for a bound of 0); the rule never accepts it.
    """

    id: str
    finding: str
    source: str
    origin: str
    what: str
    value: float | None
    unit: str
    model: str
    notebook: str | None
    key: str | None
    reproducible: bool | Literal["proxy"]
    compare: Compare = "approx"
    tolerance: float | None = None
    reason: str | None = None
    awaiting_key: bool = False
    derive: Derive | None = None
    operands: tuple[str, str] | None = None
    operand_models: tuple[str, str] | None = None
    resolution: int | None = None
    images: int | None = None
    min_images: int | None = None
    why: str | None = None
    no_effect: float | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        """The results keys ours is read from: ``(key,)``, or the two operands of a derived number."""
        return self.operands if self.operands is not None else ((self.key,) if self.key is not None else ())

    @property
    def source_text(self) -> str:
        """Where ours comes from, in words: ``key`` or ``a − b`` or ``a / b``."""
        if self.operands is None:
            return str(self.key)
        return f" {'−' if self.derive == 'delta' else '/'} ".join(self.operands)


@dataclass(frozen=True)
class Finding:
    """A finding of the paper (F1-F9) and the notebooks that serve it."""

    id: str
    title: str
    paper: str
    notebooks: tuple[str, ...] = ()
    note: str | None = None
    primary: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """A paper number beside ours, with its status and the rule that decided it."""

    number: PaperNumber
    status: Status
    why: str
    ours: float | None = None
    ours_model: str | None = None
    cause: Cause | None = None
    ci: tuple[float, float] | None = None
    n: int | None = None
    proxy: str | None = None
    needed: int | None = None

    @property
    def id(self) -> str:
        return self.number.id

    @property
    def what(self) -> str:
        return self.number.what

    @property
    def paper(self) -> float | None:
        return self.number.value

    @property
    def rule(self) -> str:
        """The comparison rule in words, tolerance included (``within ±1.0 % of 2.37 %``)."""
        return rule_text(self.number)

    @property
    def diff(self) -> float | None:
        """ours − paper, for a number that was compared (None otherwise: random weights, another model,
        not reproducible, or either value missing)."""
        if self.status not in (*COMPARED, "not comparable"):
            return None
        return None if self.ours is None or self.number.value is None else self.ours - self.number.value

    def __str__(self) -> str:
        n = self.number
        ours = "—" if self.ours is None else fmt(self.ours, n)
        if self.ci is not None:
            ours += f" [{fmt(self.ci[0], n)}, {fmt(self.ci[1], n)}]"
        bound = {"at_least": "≥ ", "at_most": "≤ "}.get(n.compare, "")  # a bound is not the paper's number
        paper = "plot only" if n.value is None else bound + fmt(n.value, n)
        label = "needs" if bound and n.value is not None else "paper"
        return f"{self.status.upper():<16} {n.id}: {n.what}: ours {ours}, {label} {paper} {n.unit}".rstrip() + \
            f" ({self.why})"


# ---------------------------------------------------------------------------------------------------
# Reading the data file
# ---------------------------------------------------------------------------------------------------
def _to_number(e: dict) -> PaperNumber:
    derive = "delta" if e.get("delta") is not None else "ratio" if e.get("ratio") is not None else None
    models = e.get("operand_models")
    return PaperNumber(
        id=str(e["id"]), finding=str(e["finding"]), source=str(e["source"]), origin=str(e["origin"]),
        what=str(e["what"]), value=None if e["value"] is None else float(e["value"]), unit=str(e["unit"] or ""),
        model=str(e["model"]), notebook=e["notebook"], key=e["key"], reproducible=e["reproducible"],
        compare=e.get("compare", "approx"), tolerance=None if e.get("tolerance") is None else float(e["tolerance"]),
        reason=e.get("reason"), awaiting_key=bool(e.get("awaiting_key", False)), derive=derive,
        operands=tuple(e[derive]) if derive else None, operand_models=tuple(models) if models else None,
        resolution=e.get("resolution"), images=e.get("images"), min_images=e.get("min_images"), why=e.get("why"),
        no_effect=_no_effect(e, derive))


def _no_effect(e: dict, derive: str | None) -> float | None:
    """The entry's ``no_effect``, or its default: 0 for a delta and for a sign claim (a bound of 0)."""
    if e.get("no_effect") is not None:
        return float(e["no_effect"])
    compare = e.get("compare", "approx")
    if e.get("value") is None or (e["value"] == 0 and compare == "approx"):
        return None
    if derive == "delta" or (compare in ("at_least", "at_most") and e["value"] == 0):
        return 0.0
    return None


@lru_cache(maxsize=8)
def _load(path: str) -> tuple[dict[str, Finding], tuple[PaperNumber, ...]]:
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("numbers"), list) or not isinstance(data.get("findings"), dict):
        raise PaperNumbersError(f"{path}: expected a mapping with `findings` (dict) and `numbers` (list)")
    problems: list[str] = annotate(data["numbers"], data.get("annotations"))
    primary = data.get("primary") or {}
    problems += primary_problems(primary, data["numbers"], FINDINGS)
    found = {}
    for fid, f in data["findings"].items():
        if fid not in FINDINGS or not isinstance(f, dict) or "title" not in f:
            problems.append(f"finding {fid!r}: expected one of {FINDINGS} with a title")
            continue
        found[fid] = Finding(fid, str(f["title"]), str(f.get("paper", "")), tuple(f.get("notebooks") or ()),
                             f.get("note"), tuple(primary.get(fid) or ()) if isinstance(primary, dict) else ())
    numbers, seen = [], set()
    for i, e in enumerate(data["numbers"]):
        where = f"entry {i} ({e.get('id', '?') if isinstance(e, dict) else e!r})"
        these = entry_problems(e, set(found)) if isinstance(e, dict) else ["not a mapping"]
        if isinstance(e, dict) and e.get("id") in seen:
            these.append("duplicate id")
        problems += [f"{where}: {p}" for p in these]
        if isinstance(e, dict) and not any(p.startswith("missing") for p in these):
            seen.add(e["id"])
            numbers.append(_to_number(e))
    if problems:
        raise PaperNumbersError(f"{path} does not match its schema:\n  - " + "\n  - ".join(problems))
    return found, tuple(numbers)


def _path(path: str | os.PathLike | None) -> str:
    return str(Path(path).resolve()) if path is not None else str(PAPER_NUMBERS)


def paper_numbers(path: str | os.PathLike | None = None) -> list[PaperNumber]:
    """Every number of the data file, in file order (checked; read once per file).

    Raises:
        PaperNumbersError: a malformed entry (every problem is listed).
    """
    return list(_load(_path(path))[1])


def findings(path: str | os.PathLike | None = None) -> dict[str, Finding]:
    """The findings F1-F9 of the data file, by id."""
    return dict(_load(_path(path))[0])


def load_paper_numbers(path: str | os.PathLike | None = None) -> tuple[dict[str, Finding], list[PaperNumber]]:
    """``(findings(path), paper_numbers(path))`` in one call."""
    return findings(path), paper_numbers(path)


# ---------------------------------------------------------------------------------------------------
# The rule, and the one function that decides a status
# ---------------------------------------------------------------------------------------------------
_EPS = 1e-9  # slack on a closed end: a value printed at the tolerance's edge is within it


@dataclass(frozen=True)
class Region:
    """The values a rule accepts: from ``lo`` to ``hi``, each end open (excluded) or closed."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, x: float) -> bool:
        """Whether ``x`` is accepted."""
        above = x > self.lo if self.lo_open else x >= self.lo - _EPS
        below = x < self.hi if self.hi_open else x <= self.hi + _EPS
        return above and below

    def meets_interval(self, lo: float, hi: float) -> bool:
        """Whether ``[lo, hi]`` holds an accepted value."""
        a, b = max(lo, self.lo), min(hi, self.hi)
        return a < b or (b >= a - _EPS and (self.holds(a) or self.holds(b)))

    def contains_interval(self, lo: float, hi: float) -> bool:
        """Whether every value of ``[lo, hi]`` is accepted."""
        return self.holds(lo) and self.holds(hi)


def region(number: PaperNumber) -> Region:
    """The values ``number``'s rule accepts: within the tolerance, or on the stated side of a bound, and
    never ``no_effect`` or beyond it (a delta of 0 is no effect, whatever the tolerance).

    Raises:
        ValueError: the number has no value to compare with.
    """
    v = number.value
    if v is None:
        raise ValueError(f"{number.id} has no value to compare with")
    t = number.tolerance or 0.0
    r = {"at_least": Region(v, math.inf), "at_most": Region(-math.inf, v)}.get(number.compare, Region(v - t, v + t))
    z = number.no_effect
    if z is None:
        return r
    side = (v > z) - (v < z) or {"at_least": 1, "at_most": -1}.get(number.compare, 0)
    if side > 0 and r.lo <= z:
        return Region(z, r.hi, True, r.hi_open)
    if side < 0 and r.hi >= z:
        return Region(r.lo, z, r.lo_open, True)
    return r


def meets(number: PaperNumber, ours: float) -> bool:
    """Whether the point ``ours`` reproduces ``number`` (accepted by its :func:`region`)."""
    return region(number).holds(float(ours))


def decide(number: PaperNumber, ours: Measured) -> tuple[Status, str, int | None]:
    """The status of a compared number from ours and its interval: THE three-way rule.

    Paper: every claim of the data file (its rule and ``no_effect``).

    Returns:
        ``(status, why, needed)``: reproduced, differs or inconclusive; the rule in words with what decided
        it; for an inconclusive interval, roughly how many images or samples would decide it (else None).
    """
    r, lo, hi, z = region(number), ours.lo, ours.hi, number.no_effect
    rule = rule_text(number)
    if not r.meets_interval(lo, hi):
        where = "its interval" if ours.ci is not None else "its value"
        return "differs", f"{rule}; ours ({where}) outside it", None
    if z is not None and lo <= z <= hi:
        distance = abs(number.value - z) if number.value != z else abs(ours.value - z)
        needed = needed_n(ours, distance)
        about = f"; about {needed:,} would decide it" if needed else \
            "; the interval is already narrower than the paper's effect: ours is smaller" if ours.ci else ""
        return "inconclusive", (f"{rule}; the interval holds both no effect ({fmt(z, number)}) and the paper's "
                                f"effect (n = {ours.n}{about})" if ours.n else
                                f"{rule}; the interval holds both no effect and the paper's effect"), needed
    if not r.contains_interval(lo, hi) and (z is None or number.compare != "approx"):
        edge = r.lo if lo < r.lo <= hi or (lo == r.lo and r.lo_open) else r.hi
        needed = needed_n(ours, ours.value - edge)
        about = f" (n = {ours.n}; about {needed:,} would decide it)" if ours.n and needed else ""
        what = "the bound" if number.compare != "approx" else "the tolerance's edge"
        return "inconclusive", f"{rule}; the interval holds values on both sides of {what}{about}", needed
    return "reproduced", rule, None


def rule_text(n: PaperNumber) -> str:
    """The rule of ``n`` in words: ``tolerance ±1.0``, ``paper: at least 20``, ``paper: at most 2``."""
    if n.value is None:
        return "plot only"
    z = n.no_effect
    if z is not None and z == n.value and n.compare in ("at_least", "at_most"):
        return f"paper: {'above' if n.compare == 'at_least' else 'below'} {fmt(z, n)} ({fmt(z, n)} is no effect)"
    r = region(n)
    beyond = f", excluding {fmt(z, n)} (no effect)" if z is not None and (r.lo == z or r.hi == z) else ""
    if n.compare == "at_least":
        return f"paper: at least {fmt(n.value, n)}" + beyond
    if n.compare == "at_most":
        return f"paper: at most {fmt(n.value, n)}" + beyond
    return f"tolerance ±{fmt(n.tolerance, n)}" + beyond


def _is_zoo_key(model: str) -> bool:
    return re.fullmatch(r"[a-z0-9_]+", model) is not None


def combine(number: PaperNumber, a: float | Measured, b: float | Measured) -> Measured | float | None:
    """Ours for a derived number: ``a − b`` (delta) or ``a / b`` (ratio; None when ``b`` is 0).

    Two plain numbers give a plain number; a measured operand gives a :class:`Measured` whose interval
    treats the operands as independent (:func:`vitreg.claims.measured.derive_measured`).
    """
    if isinstance(a, Measured) or isinstance(b, Measured):
        return derive_measured(number.derive or "delta", parse_measured(a), parse_measured(b))
    if number.derive == "ratio":
        return None if b == 0 else a / b
    return a - b


def protocol_problem(number: PaperNumber, resolution: Any = None, n_images: int | None = None) -> str | None:
    """Why ours cannot be compared with ``number`` (another resolution, too few images), or None.

    Args:
        number: the paper number, with the protocol it was measured under (``resolution``, ``min_images``).
        resolution: ours: an int (px, square), ``[h, w]``, or None when the run did not record it.
        n_images: how many images ours was measured on (None: not recorded).
    """
    if number.resolution is not None and resolution is not None:
        sides = [int(x) for x in resolution] if isinstance(resolution, (list, tuple)) else [int(resolution)]
        if any(x != number.resolution for x in sides):
            shown = "×".join(map(str, sides))
            return f"ours at {shown} px, the reference at {number.resolution} px"
    if number.min_images is not None and n_images is not None and n_images < number.min_images:
        return f"ours on {n_images} images, the protocol needs at least {number.min_images}"
    return None


def _at(resolution: Any) -> str:
    """``"; ours at 112 px"`` (or ``224×322 px``) when the resolution ours was measured at is known."""
    if resolution is None:
        return ""
    sides = [int(x) for x in resolution] if isinstance(resolution, (list, tuple)) else [int(resolution)]
    return f"; ours at {'×'.join(map(str, dict.fromkeys(sides)))} px"


def judge(number: PaperNumber, ours: float | Measured | None, *, absent: str | None = None,
          cause: Cause | None = None, model: str | None = None, random_weights: bool = False,
          profile: str | None = None, resolution: Any = None, n_images: int | None = None,
          proxy: str | None = None) -> Verdict:
    """The verdict on one paper number: THE rule, used by :func:`check` and by the report alike.

    Args:
        number: the paper number (a single key's, or a derived one's: pass ``combine(...)`` as ours).
        ours: our finite value (a plain number, or a :class:`Measured` with its interval), or None when it
            was not measured.
        absent: why ours is None (a skip reason, "no results file", ...).
        cause: the kind of absence (:data:`CAUSES`; default "not measured").
        model: the zoo key ours comes from, when known; another model than the number's is not compared.
        random_weights: ours comes from random weights: "not applicable", never compared.
        profile: the run's profile (kept for callers; what ran decides, not the profile).
        resolution: the resolution ours was measured at (px, or ``[h, w]``), when recorded (a measured
            value's own ``resolution`` wins).
        n_images: the number of images ours was measured on, when recorded (default: a measured value's n).
        proxy: why the run measured it on a reduced budget (a measured value's ``proxy`` says so too): the
            verdict is then a proxy, never decisive for its finding.
    """
    n, rep_false = number, number.reproducible is False
    if n.notebook is None:
        return Verdict(n, "not reproducible" if rep_false else "not run here", n.reason or "no notebook computes it",
                       cause=None if rep_false else "no notebook")
    m = ours if isinstance(ours, Measured) else None if ours is None else Measured(float(ours))
    if m is None or not all(math.isfinite(x) for x in (m.value, m.lo, m.hi)):
        why = absent or f"{ours!r} is not a finite number"
        status: Status = "not reproducible" if rep_false else "not run here"
        return Verdict(n, status, (f"{n.reason}; " if rep_false else "") + why, ours_model=model,
                       cause=None if rep_false else (cause or "not measured"))
    value, ci, count = m.value, m.ci, m.n
    resolution = m.resolution if m.resolution is not None else resolution
    n_images = n_images if n_images is not None else m.n
    if rep_false:
        return Verdict(n, "not reproducible", f"{n.reason} (ours shown for context)", value, model, ci=ci, n=count)
    if random_weights:
        return Verdict(n, "not applicable", "random weights" + _at(resolution), value, model, "random weights",
                       ci=ci, n=count)
    if model is not None and _is_zoo_key(n.model) and model != n.model:
        return Verdict(n, "not run here", f"ours is from {model}; this number is about {n.model}", value, model,
                       "other model", ci=ci, n=count)
    problem = protocol_problem(n, resolution, n_images)
    if problem:
        return Verdict(n, "not comparable", problem, value, model, ci=ci, n=count)
    if m.proxy and proxy is None:
        proxy = "measured on a reduced budget" + (f" ({_budget_text(m.budget)})" if m.budget is not None else "")
    if proxy is None and n.reproducible == "proxy":
        proxy = n.reason
    status, why, needed = decide(n, m)
    why += f"; proxy: {proxy}" if proxy else ""
    return Verdict(n, status, why, value, model, ci=ci, n=count, proxy=proxy, needed=needed)


def _budget_text(budget: Any) -> str:
    """A measured value's budget in a few words (its ``why`` when it has one)."""
    if isinstance(budget, Mapping) and isinstance(budget.get("why"), str):
        return budget["why"]
    return str(budget)


def check(notebook: str, key: str, value: Any, *, model: str | None = None, random_weights: bool = False,
          profile: str | None = None, resolution: Any = None, n_images: int | None = None,
          path: str | os.PathLike | None = None) -> list[Verdict]:
    """Every paper number that ``notebook`` writes under ``key``, judged against ``value``.

    Paper: whichever figure or table the entries cite. A notebook prints ``str(v)`` for each verdict;
    a verdict never raises (a disagreement is a result, not an error).

    Args:
        notebook: the notebook's name (``02_high_norm_tokens``).
        key: the dotted key of its results ``numbers`` (``outliers.outlier_pct``).
        value: ours: a number, or ``{"skipped": why}``, or None/NaN (not measured).
        model: the zoo key of the model ``value`` is about.
        random_weights: ours comes from random weights: every verdict is then "not applicable".
        profile: the run's profile (named in the reasons).
        resolution: the resolution ``value`` was measured at (px or ``[h, w]``): checked against the
            number's protocol where the data file gives one.
        n_images: the number of images ``value`` was measured on (checked against ``min_images``).
        path: another data file (tests).

    Returns:
        one :class:`Verdict` per entry with that notebook and key (empty when the data file has none).
        Derived entries (``delta``/``ratio``) are judged by :func:`check_delta`.
    """
    ours, absent = _as_ours(value)
    cause: Cause = "skipped by the notebook" if isinstance(value, dict) and "skipped" in value else "not measured"
    return [judge(n, ours, absent=absent, cause=cause, model=model, random_weights=random_weights, profile=profile,
                  resolution=resolution, n_images=n_images)
            for n in paper_numbers(path) if n.notebook == notebook and n.key == key]


def check_delta(notebook: str, values: Mapping[str, Any], *, model: str | None = None,
                models: Mapping[str, str] | None = None, random_weights: bool = False, profile: str | None = None,
                resolution: Any = None, n_images: int | None = None,
                path: str | os.PathLike | None = None) -> list[Verdict]:
    """Every derived paper number (``delta``/``ratio``) of ``notebook`` whose two keys are in ``values``.

    Paper: the comparisons the paper claims (Table 1: outlier − normal; Tables 2-3: registers − none;
    Fig. 3 text: the final LayerNorm hides the spread). Same rule as :func:`check` and the report.

    Args:
        notebook: the notebook's name.
        values: ``{results key: ours}`` for (at least) both operands, each a number or ``{"skipped": why}``.
        model: the zoo key both values are about (when they are about one model).
        models: ``{results key: zoo key}`` when the operands are about different models (a register pair).
        random_weights, profile, resolution, n_images, path: as for :func:`check`.

    Returns:
        one :class:`Verdict` per derived entry whose operands are both in ``values``.
    """
    verdicts = []
    for n in paper_numbers(path):
        if n.notebook != notebook or n.operands is None or not all(k in values for k in n.operands):
            continue
        ours = [_as_ours(values[k]) for k in n.operands]
        found = [(models or {}).get(k, model) for k in n.operands]
        absent = next((why for _, why in ours if why is not None), None)
        cause: Cause = "skipped by the notebook" if any(isinstance(values[k], dict) and "skipped" in values[k]
                                                        for k in n.operands) else "not measured"
        value = None if absent else combine(n, ours[0][0], ours[1][0])
        verdicts.append(judge(n, value, absent=absent or "the ratio's denominator is 0", cause=cause,
                              model=pair_model(n, found), random_weights=random_weights, profile=profile,
                              resolution=resolution, n_images=n_images))
    return verdicts


def _as_ours(value: Any) -> tuple[float | Measured | None, str | None]:
    """``(finite number or measured value, None)`` or ``(None, why not)``."""
    if isinstance(value, dict) and isinstance(value.get("skipped"), str):
        return None, f"skipped: {value['skipped']}"
    if isinstance(value, Measured) or is_measured(value):
        try:
            return parse_measured(value), None
        except ValueError as err:
            return None, str(err)
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"ours is {value!r}, not a number"
    if not math.isfinite(value):
        return None, f"ours is {value!r}, not a finite number"
    return float(value), None


def pair_model(number: PaperNumber, found: Sequence[str | None]) -> str | None:
    """The model to judge a derived number by: ``number.model`` when each operand is about the model
    it should be (``operand_models``, default ``model`` for both), the first one that is not, or None
    when no operand says."""
    expected = number.operand_models or (number.model, number.model)
    for got, want in zip(found, expected):
        if got is not None and got != want:
            return got
    return number.model if any(m is not None for m in found) else None


# ---------------------------------------------------------------------------------------------------
# Formatting (shared by verdicts and the report)
# ---------------------------------------------------------------------------------------------------
def _decimals(x: float) -> int:
    text = repr(float(x))
    return 0 if text.endswith(".0") else len(text.split(".")[1]) if "." in text and "e" not in text else 3


def fmt(x: float | None, n: PaperNumber, *, signed: bool = False) -> str:
    """Format like the paper's value (its number of decimals, at least one for non-integers)."""
    if x is None:
        return "—"
    d = max(_decimals(n.value) if n.value is not None else 2, _decimals(n.tolerance) if n.tolerance else 0)
    if d == 0 and float(x) != round(float(x)):
        d = 1
    return f"{x:+.{d}f}" if signed else f"{x:.{d}f}"


# ---------------------------------------------------------------------------------------------------
# Readers for the notebooks (were lost.paper_table3 and registers.paper_unreleased_register_models)
# ---------------------------------------------------------------------------------------------------
def table3() -> dict[str, dict[str, float]]:
    """Table 3 (LOST CorLoc) rows of the data file; notebook 08 draws them beside ours.

    Returns:
        row label -> ``{"voc07": .., "voc12": .., "coco20k": ..}``: the paper's own models
        (``paper: DINOv2-L``, ``paper: DINOv2-L +reg``, DeiT-III, OpenCLIP, DINO ViT-S/16) and [TTR]'s
        measurements of the public DINOv2-L pair (``[TTR]: DINOv2 ViT-L/14`` and ``... +reg``: paper names).
    """
    from vitreg.core.models import get_spec

    names = {"dinov2": "DINOv2-L", "deit3": "DeiT-III B", "openclip": "OpenCLIP B/16"}
    rows: dict[str, dict[str, float]] = {}
    for e in paper_numbers():
        parts = e.id.split(".")
        if parts[:2] == ["F8", "table3"] and len(parts) == 5 and parts[4] in _TABLE3_DATASETS:
            label, dataset = f"paper: {names.get(parts[2], parts[2])}{' +reg' if parts[3] == 'reg' else ''}", parts[4]
        elif parts[:2] == ["F8", "table3"] and len(parts) == 4:  # DINO v1 reference row
            label, dataset = "paper: DINO ViT-S/16", parts[3]
        elif parts[:3] == ["F8", "ttr", "lost"] and len(parts) == 5:
            label, dataset = f"[TTR]: {get_spec(parts[4]).paper_name}", parts[3]
        else:
            continue
        rows.setdefault(label, {})[dataset] = float(e.value)
    return rows


def values_under(notebook: str, prefix: str) -> dict[str, float]:
    """The paper's numbers that ``notebook`` is judged on under ``<prefix>.<name>``, by name: its results keys
    looked up, never the entries' ids. Paper: whichever figure or table the entries cite.

    ``values_under("08_lost", "plain.dino")`` -> ``{"voc07": 61.9, "voc12": 64.0, "coco20k": 50.7}`` (Table 3).
    """
    return {n.key[len(prefix) + 1:]: float(n.value) for n in paper_numbers()
            if n.notebook == notebook and n.key and n.value is not None and n.key.rpartition(".")[0] == prefix}


def unreleased_register_models() -> list[dict[str, Any]]:
    """The paper's numbers for the register models that were never released (DeiT-III, OpenCLIP).

    Paper: Table 2 and Table 3 (rows whose ``reproducible`` is false); notebook 07 quotes them.
    """
    return [{"id": e.id, "source": e.source, "what": e.what, "value": e.value, "model": e.model}
            for e in paper_numbers()
            if e.reproducible is False and any(f in e.id for f in (".deit3.", ".openclip."))]
