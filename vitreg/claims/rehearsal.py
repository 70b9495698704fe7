"""A dress rehearsal of the real report: SYNTHETIC results files in the real profile's shape.

Paper: every finding (F1-F9) and its primary claims (``primary`` in ``data/paper_numbers.yaml``). The real run
needs an accelerator and every dataset; the rehearsal asks what its report would say if the world were one of
four scenarios, by writing one results file per notebook with every key the data file names, as measured
values (value, 95% interval, n, resolution, budget) at the real profile's resolutions, image counts and
budgets (the notebooks' defaults), drawn around

* ``paper``: the paper's effects (each primary claim's own value, or a value well inside its bound);
* ``null``: no effect (each claim's ``no_effect``; a claim without one, such as the emergence block, is
  skipped with the reason, as a notebook finding nothing to measure would);
* ``reversed``: the effects mirrored across no effect (a claim without one lands far outside its rule);
* ``reduced``: the paper's effects, except that notebooks 06 and 09 train on reduced budgets (proxies,
  their values reversed: the worst a proxy can show) and notebook 02 runs at 224 px instead of 518 px.

Every file says it is synthetic: ``profile`` is ``rehearsal``, ``params.synthetic`` names the scenario, and
every measured value's ``budget`` says ``synthetic``; the report's first line says so too. The interval of a
number is as wide as the real measurement is expected to be (a fraction of the distance from the paper's
value to its rule's nearest edge), the same in every scenario, so the verdicts show what the real run's
precision can and cannot decide.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from vitreg.claims.measured import Measured
from vitreg.claims.paper import PaperNumber, findings, paper_numbers, region

Scenario = Literal["paper", "null", "reversed", "reduced"]
SCENARIOS: tuple[Scenario, ...] = ("paper", "null", "reversed", "reduced")
#: The notebooks whose training budget the ``reduced`` scenario cuts (their rows become proxies), and the
#: notebook it runs at another resolution (its resolution-bound rows become not comparable).
REDUCED_BUDGET = ("06_global_information", "09_downstream")
OTHER_RESOLUTION = {"02_high_norm_tokens": 224}
#: Half-width of an interval, as a share of the distance from the paper's value to its rule's nearest edge.
WIDTH = 0.3
#: Per-image or per-sample counts when a notebook's defaults name none (LOST: VOC07 test has 4,952 images).
DEFAULT_N = {"08_lost": 4952, "09_downstream": 50000}
_QUOTED = re.compile(r"\((?:paper|\[TTR\]|reproduction): ([+\-−]?\d+(?:\.\d+)?)\)")


def _defaults(notebook: str) -> dict[str, Any]:
    """The notebook's parameters cell (the real profile), or {} when the notebook is not there."""
    from vitreg.experiments.params import notebook_defaults
    from vitreg.utils.paths import repo_root

    path = repo_root() / "notebooks" / f"{notebook}.ipynb"
    return notebook_defaults(path) if path.is_file() else {}


def _resolution(notebook: str, key: str, defaults: dict[str, Any], scenario: Scenario) -> Any:
    """The px a key of ``notebook`` is measured at in the real profile (09: per task)."""
    if scenario == "reduced" and notebook in OTHER_RESOLUTION:
        return OTHER_RESOLUTION[notebook]
    for task in ("imagenet", "ade20k", "nyud"):
        if notebook == "09_downstream" and task in key and defaults.get(f"{task}_image_size") is not None:
            return defaults[f"{task}_image_size"]
    return defaults.get("image_size") or 224


def _count(notebook: str, defaults: dict[str, Any]) -> int:
    """Images or samples a number of ``notebook`` rests on in the real profile."""
    for name in ("max_test", "probe_n_val", "n_images"):
        if isinstance(defaults.get(name), int) and defaults[name] > 1:
            return int(defaults[name])
    return DEFAULT_N.get(notebook, 256)


def paper_target(n: PaperNumber) -> float:
    """The value the paper's world gives ``n``: its own value, or for a bound the effect quoted in ``what``
    (``(paper: +0.209)``) when it lies inside, else a value well inside the bound."""
    v = float(n.value)  # type: ignore[arg-type]
    if n.compare == "approx":
        return v
    quoted = [float(q.replace("−", "-")) for q in _QUOTED.findall(n.what)]
    r = region(n)
    for q in quoted:
        if r.holds(q) and q != n.no_effect:
            return q
    if n.compare == "at_least":
        return (1.0 + v) / 2 if 0 < v < 1 else v + max(abs(v), 1.0) * 0.5  # e.g. an AUC bound of 0.6 -> 0.8
    return v / 2 if v > 0 else v - max(abs(v), 1.0) * 0.5  # e.g. a ratio bound of 0.5 -> 0.25


def margin(n: PaperNumber, target: float) -> float:
    """Distance from ``target`` to the nearest finite edge of ``n``'s rule (and to its no effect)."""
    r = region(n)
    edges = [e for e in (r.lo, r.hi, n.no_effect) if e is not None and math.isfinite(e)]
    return min(abs(target - e) for e in edges) if edges else max(abs(target), 1.0)


def scenario_target(n: PaperNumber, scenario: Scenario) -> float | None:
    """The value ``n`` takes in a scenario (None: nothing to measure, the row is skipped)."""
    t = paper_target(n)
    if scenario in ("paper", "reduced"):
        return t
    z = n.no_effect
    if z is None:
        if n.compare == "approx" and n.value != 0 and scenario == "null":
            return None  # e.g. no high-norm mode: there is no emergence block to report
        width = (n.tolerance or abs(t) or 1.0) * 5
        return t + width if n.compare != "at_most" else t - width
    if scenario == "null":
        return z
    if n.compare != "approx" and z != n.value:
        return 2 * float(n.value) - t  # a bound away from no effect: mirrored across the bound (e.g. over 2% FLOPs)
    if z == 1 and t > 0 and (n.derive == "ratio" or n.unit == "x"):
        return 1 / t  # a ratio mirrored across 1
    return 2 * z - t


def verdict_fixtures(n: PaperNumber) -> dict[str, Measured]:
    """One measured value per verdict for the claim ``n``, at the rehearsal's width for it.

    Paper: the claim's rule. ``reproduced``: around the paper's value; ``differs``: around its mirror
    (:func:`scenario_target` of ``reversed``); ``inconclusive``: an interval from no effect (or, without one,
    from beyond the rule's edge) to the paper's value.
    """
    t = paper_target(n)
    half = WIDTH * margin(n, t)
    r = region(n)
    far = n.no_effect
    if far is None:  # across the nearest finite edge of the rule, as far out as the paper's value is in
        edge = min((e for e in (r.lo, r.hi) if math.isfinite(e)), key=lambda e: abs(t - e))
        far = edge + (edge - t)
    mirror = scenario_target(n, "reversed")
    lo, hi = sorted((far, t))
    return {"reproduced": Measured(t, (t - half, t + half), n=256),
            "inconclusive": Measured((lo + hi) / 2, (lo - half, hi + half), n=256),
            "differs": Measured(mirror, (mirror - half, mirror + half), n=256)}  # type: ignore[arg-type]


class _Plan:
    """Centres and half-widths of every key of every notebook, row by row."""

    def __init__(self, numbers: Sequence[PaperNumber], scenario: Scenario):
        self.scenario = scenario
        self.centre: dict[tuple[str, str], float | None] = {}
        self.half: dict[tuple[str, str], float] = {}
        self.levels = {(n.notebook, n.key): float(n.value) for n in numbers
                       if n.key and n.notebook and n.value is not None}

    def narrow(self, where: tuple[str, str], half: float) -> None:
        self.half[where] = min(self.half.get(where, math.inf), abs(half))

    def single(self, n: PaperNumber) -> None:
        where = (n.notebook, n.key)
        t = scenario_target(n, self.scenario)
        if where not in self.centre or (self.centre[where] is None and t is not None):
            self.centre[where] = t
        self.narrow(where, WIDTH * margin(n, paper_target(n)))

    def derived(self, n: PaperNumber) -> None:
        a, b = ((n.notebook, k) for k in n.operands)  # type: ignore[union-attr]
        t = scenario_target(n, self.scenario)
        base = [self.levels.get(a), self.levels.get(b)]
        known = [x for x in base if x is not None]
        if t is None:
            self.centre.setdefault(a, None)
            self.centre.setdefault(b, None)
        elif n.derive == "delta":
            mid = sum(known) / len(known) if known else 50.0
            if a in self.centre and self.centre[a] is not None and b not in self.centre:
                self.centre[b] = self.centre[a] - t
            elif b in self.centre and self.centre[b] is not None and a not in self.centre:
                self.centre[a] = self.centre[b] + t
            elif a not in self.centre and b not in self.centre:
                self.centre[a], self.centre[b] = mid + t / 2, mid - t / 2
        else:
            mid = math.sqrt(abs(known[0] * known[-1])) if known and all(known) else 10.0
            if a in self.centre and self.centre[a] is not None and b not in self.centre:
                self.centre[b] = self.centre[a] / t if t else None
            elif b in self.centre and self.centre[b] is not None and a not in self.centre:
                self.centre[a] = self.centre[b] * t
            elif a not in self.centre and b not in self.centre:
                root = math.sqrt(abs(t)) if t else 0.0
                self.centre[a], self.centre[b] = (mid * root, mid / root) if root else (0.0, mid)
        m = WIDTH * margin(n, paper_target(n)) / math.sqrt(2)
        if n.derive == "ratio":  # relative half-width on each operand
            m = m / max(abs(paper_target(n)), 1e-9)
            for where in (a, b):
                centre = self.centre.get(where)
                self.narrow(where, m * abs(centre) if centre else m)
        else:
            self.narrow(a, m)
            self.narrow(b, m)


def plan(scenario: Scenario, numbers: Sequence[PaperNumber] | None = None
         ) -> dict[tuple[str, str], tuple[float | None, float]]:
    """``{(notebook, key): (centre or None for a skip, half-width)}`` for every key the data file names.

    Primary claims are planned first, so a key shared with a context row takes the primary claim's value.
    """
    numbers = list(numbers if numbers is not None else paper_numbers())
    primary = {i for f in findings().values() for i in f.primary}
    rows = [n for n in numbers if n.notebook and n.value is not None and n.reproducible is not False]
    rows.sort(key=lambda n: (n.id not in primary, n.derive is None))
    p = _Plan(numbers, scenario)
    for n in rows:
        (p.derived if n.derive else p.single)(n)
    for n in numbers:  # keys of rows that are not compared (references, plots) get the paper's level
        for key in (n.keys if n.notebook else ()):
            if (n.notebook, key) not in p.centre:
                p.centre[(n.notebook, key)] = n.value if n.value is not None else 1.0
                p.narrow((n.notebook, key), abs(n.value or 1.0) * 0.01)
    return {k: (c, p.half.get(k, 0.0)) for k, c in p.centre.items()}


def _put(numbers: dict, key: str, value: Any) -> None:
    node = numbers
    *path, last = key.split(".")
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value


def rehearsal_numbers(scenario: Scenario, seed: int = 0) -> dict[str, dict[str, Any]]:
    """``{notebook: numbers}`` of one scenario: every key a measured value (or a skip with the reason).

    Paper: every primary claim (its value, its no effect, its mirror). Values are drawn around each key's
    centre (a quarter of its half-width, seeded), so the rehearsal is not one hand-picked point.
    """
    import numpy as np

    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; use one of {SCENARIOS}")
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Any]] = {}
    defaults: dict[str, dict[str, Any]] = {}
    planned = plan(scenario)
    if scenario == "reduced":  # the proxies show the reversed effects: the worst a proxy can show
        reversed_ = plan("reversed")
        planned.update({k: v for k, v in reversed_.items() if k[0] in REDUCED_BUDGET})
    for (nb, key), (centre, half) in sorted(planned.items()):
        d = defaults.setdefault(nb, _defaults(nb))
        numbers = out.setdefault(nb, {})
        if centre is None:
            _put(numbers, key, {"skipped": f"synthetic rehearsal ({scenario}): no effect, nothing to measure"})
            continue
        reduced = scenario == "reduced" and nb in REDUCED_BUDGET
        half = half if math.isfinite(half) else abs(centre) * 0.01
        value = float(centre + rng.normal(0.0, half / 4))
        budget: dict[str, Any] = {"synthetic": f"rehearsal, scenario {scenario}"}
        if reduced:
            budget["why"] = "synthetic: trained on a reduced budget (a proxy of the protocol)"
        _put(numbers, key, {"value": value, "ci": [value - half, value + half], "n": _count(nb, d),
                            "resolution": _resolution(nb, key, d, scenario), "budget": budget, "proxy": reduced})
    if "09_downstream" in out:
        proxy = scenario == "reduced"
        out["09_downstream"]["budget"] = {
            task: {"proxy": proxy or task == "nyud", "synthetic": True,
                   "why": ("synthetic: reduced budget, a proxy" if proxy else
                           "synthetic: the default 8,000 of 24,231 NYUd frames, a proxy" if task == "nyud" else
                           "synthetic: full protocol")} for task in ("imagenet", "ade20k", "nyud")}
    return out


def write_rehearsal(scenario: Scenario, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write the scenario's synthetic results files to ``<out_dir>/results`` and return that folder.

    Paper: every finding. Each file is labelled synthetic (profile ``rehearsal``, ``params.synthetic``).
    """
    from vitreg.utils.results import save_results

    for nb, numbers in rehearsal_numbers(scenario, seed).items():
        d = _defaults(nb)
        models = [m for m in (d.get("models") or d.get("depth_models") or []) if isinstance(m, str)]
        params = {"profile": "rehearsal",
                  "synthetic": f"synthetic rehearsal, scenario {scenario}: no number was measured",
                  **{k: v for k, v in d.items() if k in ("image_size", "n_images", "max_train", "max_test")}}
        save_results(nb, numbers, models=[{"name": m, "pretrained": True} for m in models], params=params,
                     output_dir=out_dir)
    return Path(out_dir) / "results"
