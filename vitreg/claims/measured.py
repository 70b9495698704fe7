"""A measured number with its uncertainty: the form a results file may hold instead of a plain number.

Paper: every finding (F1-F9): each verdict of :mod:`vitreg.claims.paper` reads ours either as a plain number
or as a measured value, written in a results file as

``{"value": v, "ci": [lo, hi], "n": n, "resolution": px, "budget": ..., "proxy": bool}``

``value`` is the point estimate; ``ci`` its 95% interval (a bootstrap over the images or validation samples
it was measured on, paired for a difference: :func:`vitreg.measure.estimators.bootstrap_ci` builds value, ci
and n); ``n`` how many images or samples it rests on; ``resolution`` the px it was measured at; ``budget``
what the run spent (free form: a training subset, head epochs); ``proxy`` true when the run measured it on a
reduced budget, so its verdict is a proxy that never decides a finding. Every field but ``value`` is optional.
Layer: claims (imports nothing from vitreg).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

#: The fields of a measured value in a results file; ``value`` is the only one required.
MEASURED_FIELDS = ("value", "ci", "n", "resolution", "budget", "proxy")


class MeasuredError(ValueError):
    """A results entry looks like a measured value but does not match its form."""


@dataclass(frozen=True)
class Measured:
    """Ours: a point estimate, its 95% interval, and what it was measured on.

    Attributes:
        value: the point estimate.
        ci: ``(lo, hi)`` 95% interval, or None for a plain number (an interval of width 0).
        n: images or samples the interval rests on (None: not recorded).
        resolution: px (int) or ``[h, w]`` it was measured at (None: not recorded).
        budget: what the run spent on it, as the results file says (free form).
        proxy: measured on a reduced budget: a proxy, never decisive.
    """

    value: float
    ci: tuple[float, float] | None = None
    n: int | None = None
    resolution: Any = None
    budget: Any = None
    proxy: bool = False

    @property
    def lo(self) -> float:
        """Lower end of the interval (the value itself for a plain number)."""
        return self.ci[0] if self.ci is not None else self.value

    @property
    def hi(self) -> float:
        """Upper end of the interval (the value itself for a plain number)."""
        return self.ci[1] if self.ci is not None else self.value

    @property
    def half_width(self) -> float:
        """Half the interval's width (0 for a plain number)."""
        return (self.hi - self.lo) / 2

    def to_json(self) -> dict[str, Any]:
        """The results-file form (fields that are None or false left out)."""
        out: dict[str, Any] = {"value": self.value}
        if self.ci is not None:
            out["ci"] = [self.ci[0], self.ci[1]]
        for name in ("n", "resolution", "budget"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.proxy:
            out["proxy"] = True
        return out


def is_measured(x: Any) -> bool:
    """Whether a results entry is a measured value (a mapping with a ``value``, not a skip)."""
    return isinstance(x, Mapping) and "value" in x and "skipped" not in x


def _number(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)


def measured_problems(x: Mapping[str, Any]) -> list[str]:
    """What is wrong with a measured value of a results file (empty when nothing)."""
    problems = []
    unknown = sorted(set(x) - set(MEASURED_FIELDS) - {"model", "image_size", "n_images"})
    if unknown:
        problems.append(f"unknown fields {unknown} (a measured value has {list(MEASURED_FIELDS)})")
    if not _number(x.get("value")):
        problems.append(f"value must be a finite number, got {x.get('value')!r}")
    ci = x.get("ci")
    if ci is not None:
        if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_number(c) for c in ci)):
            problems.append(f"ci must be [lo, hi] of two finite numbers, got {ci!r}")
        elif not ci[0] <= ci[1] or (_number(x.get("value")) and not ci[0] <= x["value"] <= ci[1]):
            problems.append(f"ci {list(ci)} must hold lo <= value <= hi (value {x.get('value')!r})")
    n = x.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
        problems.append(f"n must be a positive integer, got {n!r}")
    if "proxy" in x and not isinstance(x["proxy"], bool):
        problems.append(f"proxy must be true or false, got {x['proxy']!r}")
    return problems


def parse_measured(x: Any) -> Measured:
    """A :class:`Measured` from a plain number or a results file's measured value.

    Raises:
        MeasuredError: the entry is neither (every problem named).
    """
    if isinstance(x, Measured):
        return x
    if _number(x):
        return Measured(float(x))
    if not is_measured(x):
        raise MeasuredError(f"expected a number or {{'value': v, 'ci': [lo, hi], 'n': n, ...}}, got {x!r}")
    problems = measured_problems(x)
    if problems:
        raise MeasuredError("measured value " + repr(dict(x)) + ": " + "; ".join(problems))
    ci = x.get("ci")
    return Measured(float(x["value"]), None if ci is None else (float(ci[0]), float(ci[1])), x.get("n"),
                    x.get("resolution"), x.get("budget"), bool(x.get("proxy", False)))


def derive_measured(kind: Literal["delta", "ratio"], a: Measured, b: Measured) -> Measured | None:
    """``a − b`` or ``a / b`` of two measured values (None for a ratio over 0).

    The interval treats the two operands as independent (half-widths added in quadrature; a ratio on the
    log scale), which is wider than a paired interval when they were measured on the same images: a paired
    difference is better written by the notebook itself (:func:`vitreg.measure.estimators.bootstrap_ci`).
    """
    if kind == "ratio" and b.value == 0:
        return None
    value = a.value - b.value if kind == "delta" else a.value / b.value
    ci = None
    if a.ci is not None or b.ci is not None:
        if kind == "delta":
            half = math.hypot(a.half_width, b.half_width)
            ci = (value - half, value + half)
        elif a.value > 0 and b.value > 0 and a.lo > 0 and b.lo > 0:
            rel = math.hypot(math.log(a.hi / a.lo) / 2, math.log(b.hi / b.lo) / 2)
            ci = (value * math.exp(-rel), value * math.exp(rel))
    counts = [c for c in (a.n, b.n) if c is not None]
    return Measured(value, ci, min(counts) if counts else None, a.resolution if a.resolution is not None else
                    b.resolution, a.budget if a.budget is not None else b.budget, a.proxy or b.proxy)


def needed_n(m: Measured, distance: float) -> int | None:
    """Roughly how many images or samples would shrink the interval's half-width to ``distance``.

    The half-width of a mean's interval falls as 1/√n, so ``n · (half-width / distance)²``. None when the
    interval, its n or the distance is unknown or zero, or when the interval is already that narrow (more
    images would not move it).
    """
    if m.ci is None or m.n is None or m.half_width <= 0 or not distance or not math.isfinite(distance):
        return None
    needed = math.ceil(m.n * (m.half_width / abs(distance)) ** 2 - 1e-6)
    return needed if needed > m.n else None
