"""95% intervals for the numbers a verdict reads: a bootstrap over the images or samples they were measured on.

Paper: every finding whose claim is a mean over images or validation samples (Fig. 3 shares, Fig. 5 probe
scores, Table 1 accuracies, Tables 2-3 register gains). :func:`bootstrap_ci` returns the results-file form
of a measured value (``{"value", "ci", "n"}``, read by :mod:`vitreg.claims.measured`); a notebook adds its
``resolution``, ``budget`` and ``proxy``.

A difference (or ratio) of two quantities measured on the SAME images is bootstrapped paired: each resample
draws one set of images and takes both operands from it, so what the images share cancels out. The
resampling is :func:`scipy.stats.bootstrap` (percentile method, seeded, in bounded batches). Where training
noise dominates (heads trained per seed), :func:`seed_ci` gives the Student-t interval over the seeds instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

#: Resamples of a bootstrap: enough for the 2.5% and 97.5% quantiles to move by well under a tenth of the width.
N_RESAMPLES = 2000


def _as_array(values: Sequence[float] | np.ndarray | Any, name: str) -> np.ndarray:
    arr = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=float).reshape(-1)
    if arr.size < 2:
        raise ValueError(f"{name}: a bootstrap needs at least 2 per-image (or per-sample) values, got {arr.size}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: {int((~np.isfinite(arr)).sum())} values are not finite; drop or fix them first")
    return arr


def bootstrap_ci(values: Sequence[float] | np.ndarray, paired_with: Sequence[float] | np.ndarray | None = None, *,
                 op: Literal["delta", "ratio"] = "delta", statistic: Callable[[np.ndarray], Any] | None = None,
                 level: float = 0.95, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """The mean of per-image values (or a paired difference or ratio of two means) with its bootstrap interval.

    Paper: the interval behind every verdict of :mod:`vitreg.claims.paper` (Figs. 3-5, Tables 1-3).

    Args:
        values: one value per image or validation sample (e.g. its outlier share, 0/1 correct).
        paired_with: the second operand's values on the SAME images, in the same order: the result is then
            ``mean(values) − mean(paired_with)`` (``op="delta"``) or ``mean(values) / mean(paired_with)``
            (``op="ratio"``), each resample drawing the same images for both.
        op: how two operands combine.
        statistic: reduces one sample (last axis) to a number; default the mean.
        level: the interval's coverage.
        n_resamples: bootstrap resamples.
        seed: the resampling seed.

    Returns:
        ``{"value": v, "ci": [lo, hi], "n": n}`` (plain floats, the results-file form).

    Raises:
        ValueError: fewer than 2 values, non-finite values, or operands of different lengths.
    """
    from scipy import stats

    stat = statistic or (lambda x, axis=-1: np.mean(x, axis=axis))
    a = _as_array(values, "values")
    if paired_with is None:
        data: tuple[np.ndarray, ...] = (a,)

        def combined(x: np.ndarray, axis: int = -1) -> Any:
            return stat(x, axis=axis)
    else:
        b = _as_array(paired_with, "paired_with")
        if b.shape != a.shape:
            raise ValueError(f"paired operands need one value per image each: got {a.size} and {b.size}")
        data = (a, b)

        def combined(x: np.ndarray, y: np.ndarray, axis: int = -1) -> Any:
            sx, sy = stat(x, axis=axis), stat(y, axis=axis)
            return sx - sy if op == "delta" else sx / sy
    value = float(combined(*data))
    if np.ptp(a) == 0 and (paired_with is None or np.ptp(data[1]) == 0):
        return {"value": value, "ci": [value, value], "n": int(a.size)}  # no spread: nothing to resample
    batch = max(1, int(2e7 // (a.size * len(data))))  # bounded memory: about 160 MB of resamples at a time
    res = stats.bootstrap(data, combined, paired=paired_with is not None, vectorized=True, n_resamples=n_resamples,
                          confidence_level=level, method="percentile", batch=batch, rng=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"value": value, "ci": [min(lo, value), max(hi, value)], "n": int(a.size)}


def seed_ci(values: Sequence[float] | np.ndarray, *, level: float = 0.95) -> dict[str, Any]:
    """The mean over training seeds with its Student-t interval, where training noise dominates the sampling.

    Paper: Table 2 (linear heads trained per seed; a register gain is a per-seed difference of the pair's
    scores, passed here one value per seed). With 3 seeds the interval is wide (t = 4.30): it says so honestly.

    Args:
        values: one value per seed (e.g. the register gain of each seed).
        level: the interval's coverage.

    Returns:
        ``{"value": mean, "ci": [lo, hi], "n": seeds}``.

    Raises:
        ValueError: fewer than 2 seeds or non-finite values.
    """
    from scipy import stats

    x = _as_array(values, "values")
    mean = float(x.mean())
    half = float(stats.t.ppf((1 + level) / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return {"value": mean, "ci": [mean - half, mean + half], "n": int(x.size)}
