"""What a notebook does besides forwards, in seconds on one H100-class GPU: cost models for the run-time table.

Paper: all findings (goal: the whole real run under one hour on one H100-class GPU; :mod:`vitreg.experiments.timing`).

Forwards are counted by :mod:`vitreg.experiments.timing` from each experiment's ``work(p)``. Everything else a
notebook does (probe fits, dense heads, LOST sweeps, bootstraps, loading models) is a :class:`Cost` row of its
experiment's ``costs(p)``, estimated here by a model with a stated rule:

* each model counts what the work does at the real size (FLOPs, bytes moved, objective evaluations, calls)
  from the same settings the notebook reads, so a changed parameter changes the estimate;
* its constants (a rate, a fixed cost per call) are measured on the CPU at small size by
  ``benchmarks/bench_costs.py``, which prints the measured time beside the model's for the same small problem;
* the rule from that measurement to the real size on the GPU is each row's ``scaling`` text, and the GPU rates
  it divides by are the named assumptions below (``make benchmark-gpu`` measures them where a GPU is at hand).

A row whose ``seconds`` is None is not estimated, and the table says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: fp32 peak of an H100 SXM without tensor cores, FLOP/s (vendor data sheet): probes and heads run in float32,
#: and torch multiplies float32 matrices in full fp32 unless told otherwise.
FP32_FLOPS = 67e12
#: Share of :data:`FP32_FLOPS` a large float32 matrix product reaches: ASSUMED.
FP32_SHARE = 0.5
#: HBM3 bandwidth of an H100 SXM, bytes/s (vendor data sheet), and the share an elementwise kernel reaches: ASSUMED.
HBM_BYTES_S, HBM_SHARE = 3.35e12, 0.5


@dataclass(frozen=True)
class Cost:
    """One piece of work besides forwards.

    Attributes:
        what: what it is, as the table prints it (``"ImageNet-1k [CLS] probe: 7 L-BFGS fits"``).
        seconds: expected seconds on one H100-class GPU (None: not estimated).
        scaling: how the CPU measurement at small size becomes this figure (the rule and its assumptions).
    """

    what: str
    seconds: float | None
    scaling: str = ""


def total_s(costs: Iterable[Cost]) -> float | None:
    """Sum of the estimated rows; None when there is a row that is not estimated and no estimated one."""
    rows = list(costs)
    known = [c.seconds for c in rows if c.seconds is not None]
    return float(sum(known)) if known or not rows else None


def unestimated(costs: Iterable[Cost]) -> list[Cost]:
    """The rows that are not estimated."""
    return [c for c in costs if c.seconds is None]


def gpu_matmul_s(flop: float) -> float:
    """Seconds for ``flop`` float32 FLOPs of large matrix products on the GPU (:data:`FP32_FLOPS` x :data:`FP32_SHARE`)."""
    return flop / (FP32_FLOPS * FP32_SHARE)


def gpu_bytes_s(nbytes: float) -> float:
    """Seconds to stream ``nbytes`` through GPU memory in elementwise kernels (:data:`HBM_BYTES_S` x :data:`HBM_SHARE`)."""
    return nbytes / (HBM_BYTES_S * HBM_SHARE)


# ---------------------------------------------------------------------------------------------------
# Linear probes (L-BFGS logistic regression, ridge): 05, 06, 09's ImageNet, 10, 11
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# Dense heads (09: ADE20k segmentation, NYUd depth)
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# LOST sweeps and bootstraps (02, 08, 10)
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# Loading models
# ---------------------------------------------------------------------------------------------------
