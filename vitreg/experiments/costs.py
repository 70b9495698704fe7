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

import math
from collections.abc import Callable, Iterable
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
#: Host time per objective evaluation of a full-batch L-BFGS fit at tiny size (closure, autograd, strong-Wolfe line
#: search, two-loop recursion over a full history of 20), seconds. Measured: n=64, d=8, c=4, correlated features and
#: noise labels so that every fit runs to max_iter (max_iter=10 vs 200, the difference over the difference in
#: evaluations), one thread, best of 3, on a 2-core AMD EPYC at load average 0.5 (``benchmarks/bench_costs.py``).
LBFGS_EVAL_FIXED_S = 5.2e-4
#: Host time per minibatch Adam step at tiny size (shuffle gather, autograd, Adam update, cosine schedule), seconds.
#: Measured: n=64, d=8, c=4, batch 16, 1 vs 41 epochs, one thread, best of 5, same CPU and load.
ADAM_STEP_FIXED_S = 4.9e-4
#: Host time per fit besides its steps (label mapping, standardiser, optimiser set-up), seconds. Measured: the
#: max_iter=10 fit above less its evaluations, same CPU and load.
FIT_FIXED_S = 2e-4
#: Ratio of a step's host time on a GPU (one CUDA launch per small op, the line search's host syncs) to the
#: CPU's at tiny size: ASSUMED (a launch costs a few microseconds more than a tiny CPU op).
GPU_LAUNCH_FACTOR = 2.0
#: Host-to-GPU copy bandwidth from pageable memory, bytes/s: ASSUMED (PCIe 5 x16 moves about 50 GB/s pinned).
PCIE_BYTES_S = 10e9
#: Elementwise float32 passes over the (n, c) logits per evaluation: bias add, log-softmax, NLL, their
#: backward and the bias gradient (counted from the kernels autograd runs).
LOGIT_PASSES = 10
#: Float32 passes over the (d, c) weights per L-BFGS iteration: two dot products and one axpy per stored pair in each
#: of the two loops of the recursion (history 20), plus the direction, step and history updates.
LBFGS_PARAM_PASSES = 10 * 20 + 10
#: Float32 passes over the (d, c) weights per Adam step: zero_grad, gradient, two moments, parameter update.
ADAM_PARAM_PASSES = 12
#: Float32 passes over the (n, d) features to standardise them: mean, std, subtract and divide.
STANDARDIZE_PASSES = 5


def lbfgs_evals_bound(max_iter: int) -> int:
    """Most objective evaluations one full-batch L-BFGS fit makes (:func:`vitreg.measure.estimators.fit_logistic`).

    Paper: Fig. 5b, Table 1, Table 2 (every logistic probe). torch's L-BFGS stops after the iteration in which the
    count reaches ``max_eval = int(1.25 * max_iter)``; that iteration's line search may evaluate once past it.
    """
    return int(max_iter * 1.25) + 1


def logistic_eval_flop(n: int, d: int, c: int) -> float:
    """FLOPs of one objective evaluation with its gradient: the logits ``x @ W`` and the weight gradient ``x.T @ g``."""
    return 4.0 * n * d * c


def logistic_eval_bytes(n: int, d: int, c: int) -> float:
    """Bytes one evaluation streams besides the products' arithmetic: the features read by both products and
    :data:`LOGIT_PASSES` passes over the logits."""
    return 4.0 * (2 * n * d + LOGIT_PASSES * n * c)


def logistic_fit_s(n: int, d: int, c: int, *, max_iter: int = 200, batch_size: int | None = None, epochs: int = 50,
                   matmul_s: Callable[[float], float] = gpu_matmul_s, bytes_s: Callable[[float], float] = gpu_bytes_s,
                   host_factor: float = GPU_LAUNCH_FACTOR) -> float:
    """Seconds of ONE logistic-regression fit (:func:`vitreg.measure.estimators.fit_logistic`), an upper bound.

    Paper: Fig. 5b (position probe), Table 1 (single-token classification), Table 2 (ImageNet linear probe).
    Full batch (``batch_size=None``): :func:`lbfgs_evals_bound` evaluations, each its FLOPs
    (:func:`logistic_eval_flop`) + its bytes (:func:`logistic_eval_bytes`) + :data:`LBFGS_PARAM_PASSES` weight
    passes of the two-loop recursion + :data:`LBFGS_EVAL_FIXED_S` of host time. Minibatch Adam: ``epochs`` x
    the same FLOPs over all ``n`` rows, the shuffle's gather, :data:`ADAM_PARAM_PASSES` weight passes and
    :data:`ADAM_STEP_FIXED_S` per step. Plus standardising the features and :data:`FIT_FIXED_S`.

    Args:
        n, d, c: training rows, feature dimension, classes.
        max_iter, batch_size, epochs: as :func:`~vitreg.measure.estimators.fit_logistic` takes them.
        matmul_s: seconds for a number of product FLOPs (default the GPU's, :func:`gpu_matmul_s`).
        bytes_s: seconds to stream a number of bytes (default the GPU's, :func:`gpu_bytes_s`).
        host_factor: host time per step relative to the CPU's at tiny size (1 on the CPU itself).
    """
    weights = 4.0 * d * c
    setup = bytes_s(STANDARDIZE_PASSES * 4.0 * n * d) + FIT_FIXED_S * host_factor
    if batch_size is None:
        evals = lbfgs_evals_bound(max_iter)
        per_eval = (matmul_s(logistic_eval_flop(n, d, c)) + bytes_s(logistic_eval_bytes(n, d, c))
                    + bytes_s(LBFGS_PARAM_PASSES * weights) + LBFGS_EVAL_FIXED_S * host_factor)
        return setup + evals * per_eval
    steps = epochs * math.ceil(n / batch_size)
    per_epoch = (matmul_s(logistic_eval_flop(n, d, c)) + bytes_s(logistic_eval_bytes(n, d, c))
                 + bytes_s(2 * 4.0 * n * d))
    per_step = bytes_s(ADAM_PARAM_PASSES * weights) + ADAM_STEP_FIXED_S * host_factor
    return setup + epochs * per_epoch + steps * per_step


def logistic_probe_s(*, n: int, d: int, c: int, fits: int = 1, max_iter: int = 200, batch_size: int | None = None,
                     epochs: int = 50) -> float:
    """Seconds on one H100-class GPU for ``fits`` logistic-regression fits on ``n`` rows of ``d`` features into
    ``c`` classes, each copied from host memory first; an upper bound (every L-BFGS fit runs to ``max_eval``).

    Paper: Fig. 5b, Table 1, Table 2 (the logistic probes of 05, 06, 09, 10 and 11).
    Scaling: FLOP-proportional (``4 n d c`` per evaluation, :data:`FP32_FLOPS` x :data:`FP32_SHARE`) plus
    byte-proportional elementwise passes (:data:`HBM_BYTES_S` x :data:`HBM_SHARE`) plus a host time per step
    measured on the CPU at tiny size times :data:`GPU_LAUNCH_FACTOR`; see :func:`logistic_fit_s`.

    Args:
        n: training rows per fit.
        d: feature dimension.
        c: classes.
        fits: how many fits of this size.
        max_iter: L-BFGS iterations per fit (``max_eval = 1.25 max_iter`` evaluations at most).
        batch_size: None for full-batch L-BFGS; an int for minibatch Adam.
        epochs: Adam epochs (minibatch only).
    """
    copy = 4.0 * n * d / PCIE_BYTES_S
    return fits * (copy + logistic_fit_s(n, d, c, max_iter=max_iter, batch_size=batch_size, epochs=epochs))


# ---------------------------------------------------------------------------------------------------
# Dense heads (09: ADE20k segmentation, NYUd depth)
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# LOST sweeps and bootstraps (02, 08, 10)
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# Loading models
# ---------------------------------------------------------------------------------------------------
