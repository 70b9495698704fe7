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

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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
        needs: the dataset it needs ("" for none), so the table can leave out what needs a registration.
    """

    what: str
    seconds: float | None
    scaling: str = ""
    needs: str = ""


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
#: evaluations), one thread, best of 5, on a 2-core AMD EPYC at load average 0.5 (``benchmarks/bench_costs.py``;
#: at load average 3 it reads 0.9-1.2 ms).
LBFGS_EVAL_FIXED_S = 5.2e-4
#: Host time per minibatch Adam step at tiny size (shuffle gather, autograd, Adam update, cosine schedule), seconds.
#: Measured: n=64, d=8, c=4, batch 16, 1 vs 41 epochs, one thread, best of 5, same CPU and load.
ADAM_STEP_FIXED_S = 4.9e-4
#: Host time per fit besides its steps (label mapping, standardiser, optimiser set-up), seconds. Measured as a
#: whole max_iter=1 fit at the same tiny size (its 2 evaluations included: an upper bound), same CPU and load
#: (0.8-1.2 ms).
FIT_FIXED_S = 1e-3
#: Ratio of a step's host time on a GPU (one CUDA launch per small op, the line search's host syncs) to the
#: CPU's at tiny size: ASSUMED (a launch costs a few microseconds more than a tiny CPU op).
GPU_LAUNCH_FACTOR = 2.0
#: Host-to-GPU copy bandwidth from pageable memory, bytes/s: ASSUMED (PCIe 5 x16 moves about 50 GB/s pinned; a
#: pageable copy is staged through a pinned buffer and reaches a fraction of it).
PCIE_BYTES_S = 10e9
#: Elementwise float32 passes over the (n, c) logits per evaluation: bias add, log-softmax, NLL, their
#: backward and the bias gradient (counted from the kernels autograd runs).
LOGIT_PASSES = 10
#: Float32 passes over the (d, c) weights per L-BFGS iteration: two dot products and one axpy per stored pair in each
#: of the two loops of the recursion (history 20), plus the direction, step and history updates (counted per
#: evaluation: there are at least as many evaluations as iterations).
LBFGS_PARAM_PASSES = 10 * 20 + 10
#: Float32 passes over the (d, c) weights per Adam step: zero_grad, gradient, two moments, parameter update.
ADAM_PARAM_PASSES = 12
#: Bytes moved per float32 feature value to standardise it: the fit reads it for the mean (4) and the std (8),
#: the subtraction and the division each read and write it (8 + 8).
STANDARDIZE_BYTES = 28


#: The scaling text of every L-BFGS probe row (05, 06, 10, 11).
LOGISTIC_SCALING = ("upper bound: every L-BFGS fit runs to max_eval + 1 = 251 evaluations (max_iter 200), each 4 n d c "
                    "FLOPs (n training rows, d width, c classes) at the GPU's fp32 rate, logit and weight passes at "
                    "its memory rate, and the host time per evaluation measured on the CPU at tiny size x "
                    "GPU_LAUNCH_FACTOR; plus one copy of each probe's features to the GPU (b bytes a value as copied, "
                    "2 for the float16 cache, at PCIE_BYTES_S) and, per fit, its rows gathered, checked and cast to "
                    "float32 there (fit_prep_bytes: 4b + 6 a value, 2b + 6 when already float32) and the validation rows scored, at the GPU's "
                    "memory rate (checked: "
                    "benchmarks/bench_costs.py)")
#: The scaling text of the ridge probe row (05).
RIDGE_SCALING = ("float64: Gram matrix 2 n d^2 and the targets' products at the GPU's fp64 rate (FP64_FLOPS x "
                 "FP64_SHARE), one 9 d^3 eigendecomposition per fit at FP64_FLOPS x EIGH_SHARE (assumed 2%); "
                 "checked on the CPU at small size (benchmarks/bench_costs.py)")


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


def lbfgs_eval_s(n: int, d: int, c: int, *, matmul_s: Callable[[float], float] = gpu_matmul_s,
                 bytes_s: Callable[[float], float] = gpu_bytes_s, host_factor: float = GPU_LAUNCH_FACTOR) -> float:
    """Seconds of one objective evaluation of a full-batch L-BFGS fit with its share of the iteration: the
    FLOPs (:func:`logistic_eval_flop`), the bytes (:func:`logistic_eval_bytes`), :data:`LBFGS_PARAM_PASSES`
    over the weights and :data:`LBFGS_EVAL_FIXED_S` of host time (x ``host_factor``).

    Paper: Fig. 5b, Tables 1-2 (every L-BFGS probe)."""
    return (matmul_s(logistic_eval_flop(n, d, c)) + bytes_s(logistic_eval_bytes(n, d, c))
            + bytes_s(LBFGS_PARAM_PASSES * 4.0 * d * c) + LBFGS_EVAL_FIXED_S * host_factor)


def logistic_fit_s(n: int, d: int, c: int, *, max_iter: int = 200, batch_size: int | None = None, epochs: int = 50,
                   matmul_s: Callable[[float], float] = gpu_matmul_s, bytes_s: Callable[[float], float] = gpu_bytes_s,
                   host_factor: float = GPU_LAUNCH_FACTOR) -> float:
    """Seconds of ONE logistic-regression fit (:func:`vitreg.measure.estimators.fit_logistic`), an upper bound.

    Paper: Fig. 5b (position probe), Table 1 (single-token classification), Table 2 (ImageNet linear probe).
    Full batch (``batch_size=None``): :func:`lbfgs_evals_bound` evaluations of :func:`lbfgs_eval_s`. Minibatch
    Adam: ``epochs`` x the same FLOPs over all ``n`` rows, the shuffle's gather, :data:`ADAM_PARAM_PASSES` weight
    passes and :data:`ADAM_STEP_FIXED_S` per step. Plus standardising the features and :data:`FIT_FIXED_S`.

    Args:
        n, d, c: training rows, feature dimension, classes.
        max_iter, batch_size, epochs: as :func:`~vitreg.measure.estimators.fit_logistic` takes them.
        matmul_s: seconds for a number of product FLOPs (default the GPU's, :func:`gpu_matmul_s`).
        bytes_s: seconds to stream a number of bytes (default the GPU's, :func:`gpu_bytes_s`).
        host_factor: host time per step relative to the CPU's at tiny size (1 on the CPU itself).
    """
    weights = 4.0 * d * c
    setup = bytes_s(STANDARDIZE_BYTES * n * d) + FIT_FIXED_S * host_factor
    if batch_size is None:
        return setup + lbfgs_evals_bound(max_iter) * lbfgs_eval_s(n, d, c, matmul_s=matmul_s, bytes_s=bytes_s,
                                                                   host_factor=host_factor)
    steps = epochs * math.ceil(n / batch_size)
    per_epoch = (matmul_s(logistic_eval_flop(n, d, c)) + bytes_s(logistic_eval_bytes(n, d, c))
                 + bytes_s(2 * 4.0 * n * d))
    per_step = bytes_s(ADAM_PARAM_PASSES * weights) + ADAM_STEP_FIXED_S * host_factor
    return setup + epochs * per_epoch + steps * per_step


def logistic_probe_s(*, n: int, d: int, c: int, fits: float = 1, max_iter: int = 200, batch_size: int | None = None,
                     epochs: int = 50, value_bytes: int = 4) -> float:
    """Seconds on one H100-class GPU for ``fits`` logistic-regression fits on ``n`` rows of ``d`` features into
    ``c`` classes, each fit's rows gathered, checked and cast on the GPU from features already there
    (:func:`fit_prep_s`; the probe's one copy is :func:`feature_copy_s`); an upper bound (every L-BFGS fit runs to
    ``max_eval``).

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
        value_bytes: bytes per feature value as copied (float16 cache: 2).
    """
    return fits * (fit_prep_s(n, d, value_bytes) + logistic_fit_s(n, d, c, max_iter=max_iter, batch_size=batch_size,
                                                                   epochs=epochs))


#: Host time each further head adds to one minibatch step of a joint fit
#: (:func:`vitreg.measure.estimators.fit_logistic_joint`: its column slice, product, loss and penalty with their
#: backward, its two tensors' Adam update), as a share of one head's step (:data:`ADAM_STEP_FIXED_S`). Measured: the
#: slope of the step time over 1, 2, 3 and 6 heads at n=64, d=8, c=4, batch 16 (1 vs 41 epochs), one thread, best of
#: 5, on the 2-core AMD EPYC: 0.11-0.12 ms a further head beside
#: 0.34-0.35 ms for one head's step, a share of 0.33-0.36 in four runs at load average 2-3.1 (within the whole
#: ``benchmarks/bench_costs.py`` at load average 3, where other work takes the second core, 0.24-0.52).
JOINT_HEAD_STEP_SHARE = 0.35
#: The scaling text of a joint minibatch probe row (09's ImageNet probe).
JOINT_ADAM_SCALING = ("Adam: per head, epochs x 4 n d c FLOPs at the GPU's fp32 rate, the batch gathers, logit and "
                      "weight passes at its memory rate; the host time per step once for all heads (ADAM_STEP_FIXED_S "
                      "x (1 + JOINT_HEAD_STEP_SHARE per further head), measured on the CPU at tiny size) x "
                      "GPU_LAUNCH_FACTOR; plus, per fit and head, its rows gathered, checked and cast to float32 on "
                      "the GPU (fit_prep_bytes a value at the GPU's memory rate) and each head scored on the "
                      "validation rows of each L2 and on the test set there (checked: benchmarks/bench_costs.py)")


def joint_step_host_s(heads: int) -> float:
    """Host seconds of one minibatch step of a joint fit of ``heads`` heads on the CPU at tiny size:
    :data:`ADAM_STEP_FIXED_S` x (1 + :data:`JOINT_HEAD_STEP_SHARE` per further head).

    Paper: Table 2 (the ImageNet probe's three variants share each step)."""
    return ADAM_STEP_FIXED_S * (1.0 + JOINT_HEAD_STEP_SHARE * (heads - 1))


def joint_logistic_fit_s(n: int, dims: Sequence[int], c: int, *, batch_size: int, epochs: int,
                         matmul_s: Callable[[float], float] = gpu_matmul_s,
                         bytes_s: Callable[[float], float] = gpu_bytes_s,
                         host_factor: float = GPU_LAUNCH_FACTOR) -> float:
    """Seconds of ONE joint minibatch fit (:func:`vitreg.measure.estimators.fit_logistic_joint`) of heads of widths
    ``dims`` on ``n`` rows into ``c`` classes.

    Paper: Table 2 (ImageNet linear probe: [CLS], mean patch token and both, trained together). Each head's FLOPs,
    bytes and set-up as :func:`logistic_fit_s` in minibatch mode; the host time of the ``epochs x ceil(n /
    batch_size)`` steps once for all heads (:func:`joint_step_host_s`, x ``host_factor``). One head: the same as
    :func:`logistic_fit_s`.

    Args:
        n, c: training rows, classes.
        dims: feature dimension of each head.
        batch_size, epochs: as :func:`~vitreg.measure.estimators.fit_logistic_joint` takes them.
        matmul_s, bytes_s, host_factor: as :func:`logistic_fit_s`.
    """
    steps = epochs * math.ceil(n / batch_size)
    device = sum(logistic_fit_s(n, d, c, batch_size=batch_size, epochs=epochs, matmul_s=matmul_s, bytes_s=bytes_s,
                                host_factor=0.0) for d in dims)
    return device + host_factor * (len(dims) * FIT_FIXED_S + steps * joint_step_host_s(len(dims)))


def joint_logistic_probe_s(*, n: int, dims: Sequence[int], c: int, fits: float = 1, batch_size: int,
                           epochs: int, value_bytes: int = 4) -> float:
    """Seconds on one H100-class GPU for ``fits`` joint minibatch fits of heads of widths ``dims`` (each fit's rows
    gathered, checked and cast on the GPU, :func:`fit_prep_s`): :func:`logistic_probe_s` with the host time per
    step shared.

    Paper: Table 2 (09's ImageNet probe, :func:`vitreg.measure.estimators.fit_logistic_cv_joint`). Scaling:
    :data:`JOINT_ADAM_SCALING`.
    """
    return fits * (fit_prep_s(n, sum(dims), value_bytes) + joint_logistic_fit_s(n, dims, c, batch_size=batch_size,
                                                                                  epochs=epochs))


def joint_logistic_cv_probe_s(*, n: int, dims: Sequence[int], c: int, grid: int, batch_size: int, epochs: int,
                              val_fraction: float = 0.2, value_bytes: int = 4) -> float:
    """Seconds on one H100-class GPU of one :func:`vitreg.measure.estimators.fit_logistic_cv_joint` of heads of
    widths ``dims``: :func:`logistic_cv_probe_s` with the heads' fits joint.

    Paper: Table 2 (09's ImageNet probe). The heads' features are already on the GPU (moved once per model,
    :func:`vitreg.measure.downstream.classification_features_on`) and checked there once per call
    (:func:`feature_check_s`); ``grid`` joint fits on the ``1 - val_fraction`` training share, each head of each
    scored on the held-out rows (:func:`predict_s`), then one joint refit on all ``n`` rows; a grid of one value is
    fitted once on all rows. Scaling: :data:`JOINT_ADAM_SCALING`.

    Args:
        n, c: training rows, classes.
        dims: feature dimension of each head.
        grid: how many L2 strengths are tried.
        batch_size, epochs, val_fraction: as ``fit_logistic_cv_joint`` takes them.
        value_bytes: bytes per feature value as the features lie on the GPU (float16 cache: 2).
    """
    fit = {"dims": dims, "c": c, "batch_size": batch_size, "epochs": epochs, "value_bytes": value_bytes}
    check = feature_check_s(n, sum(dims), value_bytes)
    if grid <= 1:
        return check + joint_logistic_probe_s(n=n, **fit)
    n_val = validation_rows(n, val_fraction)
    scores = grid * sum(predict_s(n_val, d, c, value_bytes=value_bytes, on_gpu=True) for d in dims)
    return check + joint_logistic_probe_s(n=n - n_val, fits=grid, **fit) + scores + joint_logistic_probe_s(n=n, **fit)



#: fp64 peak of an H100 SXM without tensor cores, FLOP/s (vendor data sheet): the ridge probe solves in float64.
FP64_FLOPS = 34e12
#: Share of :data:`FP64_FLOPS` a large float64 matrix product reaches: ASSUMED (as :data:`FP32_SHARE`).
FP64_SHARE = 0.5
#: Share of :data:`FP64_FLOPS` a symmetric eigendecomposition with vectors reaches on the GPU, counted as
#: :data:`EIGH_FLOP_PER_D3` d^3 FLOPs: ASSUMED (cuSOLVER's syevd is bound by its tridiagonal reduction's memory
#: traffic and host round trips, far below the product peak at d of a few thousand).
EIGH_SHARE = 0.02
#: FLOPs of a symmetric eigendecomposition with eigenvectors, per d^3 (tridiagonal reduction 4/3 d^3, back
#: transformation and divide and conquer; the usual count, Golub & Van Loan).
EIGH_FLOP_PER_D3 = 9.0
#: Host bandwidth of a pass that writes a new tensor, bytes read + written per second. Measured: ``x + 1`` on
#: 64 MiB of float32, one thread, best of 5, on the 2-core AMD EPYC at load average 2-3 (``benchmarks/bench_costs.py``:
#: 2.3-3.4 GB/s). The logistic probes prepare their features on the GPU (:func:`vitreg.measure.estimators.fit_features`);
#: the ridge probe still on the host (:func:`host_feature_copy_s`).
HOST_BYTES_S = 3e9
#: Bytes per feature value of the cached tokens the probes of 05, 06 and 09 read (float16:
#: :mod:`vitreg.measure.features` stores tokens in float16); 10 and 11 probe float32 features (4).
CACHE_VALUE_BYTES = 2


def check_bytes(value_bytes: int) -> float:
    """GPU bytes per feature value of the finite check: ``isfinite`` reads the value and writes a bool, ``all()``
    reads the bools."""
    return value_bytes + 2.0


def cast_bytes(value_bytes: int) -> float:
    """GPU bytes per feature value of the float32 conversion: read and write, none for float32 (``.float()`` returns
    the tensor itself)."""
    return 0.0 if value_bytes == 4 else value_bytes + 4.0


def fit_prep_bytes(value_bytes: int) -> float:
    """GPU bytes per feature value one fit spends preparing its rows from features on the GPU: the split's row gather
    (read + write), the finite check (:func:`check_bytes`) and the cast (:func:`cast_bytes`). The refit on all rows
    gathers nothing: counted anyway, an upper bound."""
    return 2.0 * value_bytes + check_bytes(value_bytes) + cast_bytes(value_bytes)


def fit_prep_s(n: int, d: int, value_bytes: int = 4) -> float:
    """Seconds on the GPU to prepare one fit's ``n`` x ``d`` rows (:func:`fit_prep_bytes` a value, at
    :func:`gpu_bytes_s`'s rate).

    Paper: Fig. 5b, Tables 1-2 (:func:`vitreg.measure.estimators.fit_logistic_cv` gathers each fit's rows on the GPU)."""
    return gpu_bytes_s(n * d * fit_prep_bytes(value_bytes))


def feature_check_s(n: int, d: int, value_bytes: int = 4) -> float:
    """Seconds on the GPU of one finite check of ``n`` x ``d`` features (:func:`check_bytes` a value)."""
    return gpu_bytes_s(n * d * check_bytes(value_bytes))


def feature_copy_s(n: int, d: int, value_bytes: int = 4) -> float:
    """Seconds to copy ``n`` x ``d`` features to the GPU ONCE per probe (``value_bytes`` a value as copied: 2 for the
    float16 cache, at :data:`PCIE_BYTES_S`) and check them there (:func:`feature_check_s`).

    Paper: Fig. 5b, Tables 1-2 (:func:`vitreg.measure.estimators.fit_features`: every probe moves its features to the
    GPU once)."""
    return n * d * value_bytes / PCIE_BYTES_S + feature_check_s(n, d, value_bytes)


#: Host bytes read + written per float32 feature value the ridge probe still prepares on the host per fit: the finite
#: check (4 + 1), the row gather of the split (4 + 4), the staging of the copy from pageable memory (4 + 4).
HOST_BYTES = 21


def host_feature_copy_s(n: int, d: int) -> float:
    """Seconds to prepare ``n`` x ``d`` float32 features in host memory and copy them to the GPU (:data:`HOST_BYTES` a
    value at :data:`HOST_BYTES_S`, then 4 a value at :data:`PCIE_BYTES_S`): the ridge probe's path
    (:func:`vitreg.measure.local_probes.reconstruction_probe`). Paper: Fig. 5b."""
    return n * d * (HOST_BYTES / HOST_BYTES_S + 4.0 / PCIE_BYTES_S)


def variant_features_s(n: int, width: int, value_bytes: int = CACHE_VALUE_BYTES) -> float:
    """Seconds on the GPU to build the concatenated variant of ``width`` from the cached tokens already there (``torch.cat``
    reads and writes each value in its cached dtype; the single-token variants are the cached tensors themselves).

    Paper: Table 2 (the ImageNet probe's "both" variant, built again for every seed,
    :func:`vitreg.measure.downstream.classification_probe`)."""
    return gpu_bytes_s(n * width * 2.0 * value_bytes)


def predict_s(n: int, d: int, c: int, *, value_bytes: int = 4, on_gpu: bool = False) -> float:
    """Seconds to score ``n`` rows with a fitted ``d`` x ``c`` linear classifier: the rows gathered from features on
    the GPU (``on_gpu``, a validation split; a whole set gathers nothing: an upper bound) or copied there
    (:func:`feature_copy_s`, a test set), cast to float32, the product and the argmax at the GPU's rates.

    Paper: Fig. 5b, Tables 1-2 (the validation and test scores of every probe)."""
    move = gpu_bytes_s(2.0 * value_bytes * n * d) if on_gpu else feature_copy_s(n, d, value_bytes)
    return (move + gpu_bytes_s(cast_bytes(value_bytes) * n * d) + gpu_matmul_s(2.0 * n * d * c)
            + gpu_bytes_s(4.0 * n * (d + 2 * c)))


def validation_rows(n: int, val_fraction: float) -> int:
    """Rows :func:`vitreg.measure.estimators.split_indices` holds out of ``n`` (at least one each side)."""
    return min(max(1, round(n * val_fraction)), n - 1)


def logistic_cv_probe_s(*, n: int, d: int, c: int, grid: int, val_fraction: float = 0.2, max_iter: int = 200,
                        batch_size: int | None = None, epochs: int = 50, value_bytes: int = 4) -> float:
    """Seconds on one H100-class GPU of one :func:`vitreg.measure.estimators.fit_logistic_cv`, an upper bound.

    Paper: Fig. 5b (position probe), Table 1 / App. G Table 6 (L2 chosen on validation), Table 2.
    The features copied to the GPU once (:func:`feature_copy_s`), then ``grid`` fits on the ``1 - val_fraction``
    training share, each scored on the held-out rows there, then one refit on all ``n`` rows; a grid of one value
    is fitted once on all rows. Each fit as :func:`logistic_probe_s` (every L-BFGS fit runs to ``max_eval``: the
    warm starts of the grid make the real ones shorter).

    Args:
        n, d, c: training rows, feature dimension, classes.
        grid: how many L2 strengths are tried.
        val_fraction, max_iter, batch_size, epochs: as ``fit_logistic_cv`` and ``fit_logistic`` take them.
        value_bytes: bytes per feature value as copied (float16 cache: 2).
    """
    fit = {"d": d, "c": c, "max_iter": max_iter, "batch_size": batch_size, "epochs": epochs, "value_bytes": value_bytes}
    copy = feature_copy_s(n, d, value_bytes)
    if grid <= 1:
        return copy + logistic_probe_s(n=n, **fit)
    n_val = validation_rows(n, val_fraction)
    return (copy + logistic_probe_s(n=n - n_val, fits=grid, **fit)
            + grid * predict_s(n_val, d, c, value_bytes=value_bytes, on_gpu=True) + logistic_probe_s(n=n, **fit))


def ridge_fit_flop(n: int, d: int, p: int, ridges: int) -> tuple[float, float]:
    """``(product FLOPs, eigendecomposition FLOPs)`` in float64 of one :func:`vitreg.measure.estimators.ridge_solutions`
    call on ``n`` rows of ``d`` features and ``p`` targets for ``ridges`` strengths: the Gram matrix ``2 n d^2``,
    ``X.T Y`` ``2 n d p``, the projection and one back-projection per strength ``2 d^2 p`` each, and
    :data:`EIGH_FLOP_PER_D3` d^3."""
    return 2.0 * n * d * d + 2.0 * n * d * p + 2.0 * d * d * p * (1 + ridges), EIGH_FLOP_PER_D3 * d ** 3


def ridge_fit_bytes(n: int, d: int, p: int) -> float:
    """Bytes of one ridge fit's elementwise passes: standardising the features (:data:`STANDARDIZE_BYTES` a value),
    their float64 copy (4 read, 8 written) and centring (8 read, 8 written); the targets' mean, centring and
    float64 copy (4 + 8 + 12)."""
    return (STANDARDIZE_BYTES + 12.0 + 16.0) * n * d + 24.0 * n * p


def ridge_fit_s(n: int, d: int, p: int, ridges: int, *, matmul64_s: Callable[[float], float],
                eigh_s: Callable[[float], float], bytes_s: Callable[[float], float]) -> float:
    """Seconds of one ridge fit for ``ridges`` strengths from one eigendecomposition, given the rates.

    Paper: Fig. 5b (pixel probe). ``matmul64_s``/``eigh_s``: seconds for float64 product / eigendecomposition
    FLOPs (:func:`ridge_fit_flop`); ``bytes_s``: seconds to stream bytes (:func:`ridge_fit_bytes`)."""
    products, eigh = ridge_fit_flop(n, d, p, ridges)
    return matmul64_s(products) + eigh_s(eigh) + bytes_s(ridge_fit_bytes(n, d, p))


def gpu_matmul64_s(flop: float) -> float:
    """Seconds for ``flop`` float64 FLOPs of large products on the GPU (:data:`FP64_FLOPS` x :data:`FP64_SHARE`)."""
    return flop / (FP64_FLOPS * FP64_SHARE)


def gpu_eigh_s(flop: float) -> float:
    """Seconds for ``flop`` float64 FLOPs of eigendecomposition on the GPU (:data:`FP64_FLOPS` x :data:`EIGH_SHARE`)."""
    return flop / (FP64_FLOPS * EIGH_SHARE)


def ridge_probe_s(*, n: int, d: int, p: int, grid: int, val_fraction: float = 0.2) -> float:
    """Seconds on one H100-class GPU of the pixel probe's ridge fits
    (:func:`vitreg.measure.local_probes.reconstruction_probe`).

    Paper: Fig. 5b (pixel reconstruction). With more than one strength: one eigendecomposition on the training
    share for every strength, scored on the held-out rows, then one on all ``n`` rows for the chosen strength.
    Scaling: float64 products at :data:`FP64_FLOPS` x :data:`FP64_SHARE`, the ``d^3`` eigendecomposition at
    :data:`FP64_FLOPS` x :data:`EIGH_SHARE`, elementwise passes at :data:`HBM_BYTES_S` x :data:`HBM_SHARE`.

    Args:
        n: training rows (patch tokens); d: feature dimension; p: targets (``3 * patch**2`` pixels).
        grid: how many ridge strengths are tried.
        val_fraction: validation share.
    """
    rates = {"matmul64_s": gpu_matmul64_s, "eigh_s": gpu_eigh_s, "bytes_s": gpu_bytes_s}
    full = host_feature_copy_s(n, d + p) + ridge_fit_s(n, d, p, 1, **rates)
    if grid <= 1:
        return full
    n_val = validation_rows(n, val_fraction)
    score = host_feature_copy_s(n_val, d) + grid * gpu_matmul_s(2.0 * n_val * d * p)
    return host_feature_copy_s(n - n_val, d + p) + ridge_fit_s(n - n_val, d, p, grid, **rates) + score + full


@functools.lru_cache(maxsize=None)
def meta_model(model: str) -> Any:
    """``model``'s timm architecture at its native size, built on the meta device (shapes only, nothing allocated):
    what the cost models read widths, token counts, parameters and blocks from."""
    import timm
    import torch

    from vitreg.core.models import get_spec

    spec = get_spec(model)
    with torch.device("meta"):
        return timm.create_model(spec.full_name, pretrained=False, num_classes=0, img_size=spec.native_resolution)


@functools.lru_cache(maxsize=None)
def token_widths(model: str) -> tuple[int, int, int]:
    """``(feature dimension, class tokens, register tokens)`` of ``model`` (:func:`meta_model`): what the probes of
    05, 06, 10 and 11 are fitted on.

    Paper: Table 1 (one probe per token kind: [CLS], each register), Fig. 5b (the feature dimension)."""
    from vitreg.core.tokens import token_counts

    net = meta_model(model)
    n_cls, n_reg = token_counts(net)
    return int(net.embed_dim), n_cls, n_reg


# ---------------------------------------------------------------------------------------------------
# Dense heads (09: ADE20k segmentation, NYUd depth)
# ---------------------------------------------------------------------------------------------------
#: float32 passes over the upsampled logits (C x H x W) in one training image-step of the segmentation head
#: (:class:`vitreg.measure.heads.LinearSegmentationHead` + cross-entropy), counted from the aten ops of one
#: step (views not counted): bilinear upsampling writes 1; log_softmax reads 1, writes 1; nll_loss forward
#: gathers one logit per pixel (not counted); nll_loss backward writes 1; log_softmax backward reads 2, writes 1;
#: the upsampling's backward reads 1.
SEG_LOGIT_PASSES = 8
#: The same for the depth head (:class:`vitreg.measure.heads.LinearDepthHead` + SigLoss) over its x4-upsampled
#: bin logits (K x 4h x 4w): forward 9 (upsampling w1; relu r1 w1; +0.1 r1 w1; sum r1; divide r1 w1; bin
#: average r1), backward 20 (bin average w1; the division's backward: four elementwise ops r1 w1 and one r2 w1,
#: a sum r1; the +0.1 and relu backward r2 w1 each; the upsampling's backward r1).
DEPTH_LOGIT_PASSES = 29
#: Bytes per token element (h x w x D) in one image-step on the feature side: float16 -> float32 (r2 w4),
#: BatchNorm statistics, normalisation and backward (about six float32 passes), the matmuls' reads (two).
SEG_TOKEN_BYTES = 38
#: The depth head's (per element of the 2D-wide [patch, CLS] input): float16 -> float32 and the concatenation
#: (r2 w4 r4 w4), the forward and weight-gradient matmuls' reads (two float32).
DEPTH_TOKEN_BYTES = 22
#: Bytes per label pixel per image-step: the segmentation labels (uint8 -> int64 r1 w8, nll_loss forward and
#: backward r8 each); the depth target and its SigLoss (about 20 float32 passes over H x W).
SEG_LABEL_BYTES, DEPTH_LABEL_BYTES = 25, 80
#: Measured on this CPU by ``benchmarks/bench_costs.py`` (``heads_rates``; 2-core AMD EPYC shared with other
#: work, load average 0.6-4.8, torch's own threads, best of 5 in each of four runs, the median run; the matmul rate
#: ranged 26-140 GFLOP/s with the load, the others within 10% (the gather at this small size 3-12 GB/s)): gathering float16
#: rows by a random index (``patch[idx]``, bytes read + written), bytes/s; a float32 matrix product
#: (1369 x 1024 @ 1024 x 150), FLOP/s; the fixed host time of one head optimizer step at a tiny size (AdamW, its
#: schedule, zero_grad, the loss read back; 256 steps), seconds. The gather rate stands for the GPU node's host
#: (a faster CPU: an upper bound); the step time for the host side of a GPU step (its launches).
CPU_GATHER_BYTES_S, CPU_FLOPS, HEAD_STEP_S = 2.8e9, 6.5e10, 5.1e-4
#: Decoding an ADE20k label PNG (:func:`vitreg.data.dense.read_ade20k_label`) on the CPU, seconds per label pixel,
#: and counting one prediction against it (:class:`vitreg.measure.heads.IoUCounts` on the CPU). Measured as above
#: on a 512 x 683 label map (best of 5).
LABEL_DECODE_PIXEL_S, IOU_COUNT_PIXEL_S = 3.6e-9, 3.8e-8
#: Bytes per label pixel of one :class:`vitreg.measure.heads.IoUCounts` count on the GPU, from its ops: the
#: prediction and labels as int64 (r8 w8 twice), the kept mask and its compaction (r17 w16), the comparison,
#: three bincounts (r8 each).
IOU_PIXEL_BYTES = 90
#: Memory of one H100 SXM (80 GiB) the cached training features and a step's working memory must fit in to stay on
#: the GPU (:func:`vitreg.measure.heads.fits_on_device`; at run time the free memory is read instead): vendor data sheet.
GPU_MEMORY_BYTES = 80 * 2**30
#: The typical ADE20k validation label map (shorter side 512, 4:3): ASSUMED for the whole-image scoring.
ADE20K_LABEL_HW = (512, 683)


def seg_step_bytes(n_classes: int, label_hw: tuple[int, int], grid_hw: tuple[int, int], dim: int) -> float:
    """GPU bytes of one training image-step of the linear segmentation head (forward + backward).

    Paper: Table 2 (ADE20k linear: 150-class logits bilinearly upsampled to the crop, cross-entropy). The
    upsampled logits dominate: :data:`SEG_LOGIT_PASSES` float32 passes over ``C x H x W``."""
    pixels, tokens = label_hw[0] * label_hw[1], grid_hw[0] * grid_hw[1] * dim
    return SEG_LOGIT_PASSES * 4 * n_classes * pixels + SEG_TOKEN_BYTES * tokens + SEG_LABEL_BYTES * pixels


def seg_step_flop(n_classes: int, grid_hw: tuple[int, int], dim: int) -> float:
    """Matmul FLOPs of one training image-step of the segmentation head: the 1x1 conv forward, its weight
    gradient and its input gradient (BatchNorm's weights need it), 2 per multiply-add each (Paper: Table 2)."""
    return 3 * 2 * grid_hw[0] * grid_hw[1] * dim * n_classes


def depth_step_bytes(n_bins: int, label_hw: tuple[int, int], grid_hw: tuple[int, int], dim: int,
                     upsample: int = 4) -> float:
    """GPU bytes of one training image-step of the linear depth head (forward + backward).

    Paper: Table 2 (NYUd linear: [CLS] concatenated, x4 upsampling, 256 bins, SigLoss). The x4-upsampled bin
    logits dominate: :data:`DEPTH_LOGIT_PASSES` float32 passes over ``K x 4h x 4w``."""
    logits = n_bins * grid_hw[0] * upsample * grid_hw[1] * upsample
    return (DEPTH_LOGIT_PASSES * 4 * logits + DEPTH_TOKEN_BYTES * grid_hw[0] * grid_hw[1] * 2 * dim
            + DEPTH_LABEL_BYTES * label_hw[0] * label_hw[1])


def depth_step_flop(n_bins: int, grid_hw: tuple[int, int], dim: int) -> float:
    """Matmul FLOPs of one training image-step of the depth head: forward and weight gradient of the 1x1 conv on
    ``2 * dim`` inputs (the frozen features need no gradient), 2 per multiply-add (Paper: Table 2)."""
    return 2 * 2 * grid_hw[0] * grid_hw[1] * 2 * dim * n_bins


def host_feed_bytes(grid_hw: tuple[int, int], dim: int, label_bytes: float) -> float:
    """Host bytes of one image-step when the cached features stay on the host: the float16 tokens and the
    targets gathered by index (read + write) before their copy to the GPU."""
    return 2 * (2 * grid_hw[0] * grid_hw[1] * dim + label_bytes)


def head_training_s(image_steps: float, optimizer_steps: float, step_bytes: float, step_flop: float,
                    feed_bytes: float = 0.0) -> float:
    """Seconds on one GPU of training dense heads: per image-step its bytes (:func:`gpu_bytes_s`) and matmul
    FLOPs (:func:`gpu_matmul_s`), plus, when the features are fed from the host (``feed_bytes`` > 0), their
    gather at :data:`CPU_GATHER_BYTES_S` and copy at :data:`PCIE_BYTES_S` (a loop that reads its loss back every
    step serialises the two); per optimizer step :data:`HEAD_STEP_S`.

    Paper: Table 2 (ADE20k and NYUd linear heads, ``seeds x epochs`` passes over the cached features)."""
    per_image = gpu_bytes_s(step_bytes) + gpu_matmul_s(step_flop)
    if feed_bytes:
        per_image += feed_bytes / CPU_GATHER_BYTES_S + feed_bytes / 2 / PCIE_BYTES_S
    return image_steps * per_image + optimizer_steps * HEAD_STEP_S


def seg_scoring_s(n_images: float, n_classes: int, canvas: int, seeds: int,
                  label_hw: tuple[int, int] = ADE20K_LABEL_HW) -> float:
    """Seconds of scoring whole validation images with the ``seeds`` heads of one model in one pass
    (:func:`vitreg.measure.heads.score_heads`).

    Paper: Table 2 (ADE20k mIoU at each label map's original size). Per image and head, on the GPU: the logits on
    the ``canvas`` written (1 float32 pass of ``C x canvas^2``), cropped and upsampled to the label map (read and
    written), the argmax's read (3 passes of ``C x H x W``) and the IoU count (:data:`IOU_PIXEL_BYTES`); once per
    image: the label decoded on the CPU (:data:`LABEL_DECODE_PIXEL_S`) and the chance floor counted."""
    pixels = label_hw[0] * label_hw[1]
    per_head = gpu_bytes_s(4 * n_classes * (canvas * canvas + 3 * pixels) + IOU_PIXEL_BYTES * pixels)
    return n_images * (seeds * per_head + LABEL_DECODE_PIXEL_S * pixels + gpu_bytes_s(IOU_PIXEL_BYTES * pixels))


def majority_count_s(n_images: float, label_hw: tuple[int, int], *, as_int64: bool = False) -> float:
    """Seconds of counting the training labels' classes once (the majority class of the chance floor) on the
    host at :data:`CPU_GATHER_BYTES_S`: the uint8 maps read once by the count, or (``as_int64``) first converted
    to int64 (read 1 byte, write 8, the count reads 8) (Paper: Table 2, ADE20k chance mIoU)."""
    per_pixel = 1 + 8 + 8 if as_int64 else 1
    return n_images * label_hw[0] * label_hw[1] * per_pixel / CPU_GATHER_BYTES_S


# ---------------------------------------------------------------------------------------------------
# LOST sweeps and bootstraps (02, 08, 10)
# ---------------------------------------------------------------------------------------------------
#: Seconds of one eager PyTorch op on the GPU node (Python dispatch + a CUDA kernel launch; the kernels of the
#: LOST steps other than the similarity and the per-setting passes over it are tiny, so a step costs its launch):
#: ASSUMED, a typical eager figure on an H100 node (``make benchmark-gpu`` does not measure it yet).
GPU_OP_S = 10e-6

#: Bytes moved per similarity entry by the passes the biases of one (features, block, normalize) group share
#: (:func:`vitreg.measure.lost.bias_sweep_scores`): the comparison ``a > -bias`` reads each entry once for every bias
#: of the group (4; its S comparisons of one row run back to back, the row in cache); counted.
LOST_BYTES_PER_GROUP_ENTRY = 4
#: Bytes moved per similarity entry and setting: the comparison writes one bool (1), the degree's count copies the
#: bools to int16 before it sums them (torch's sum casts its input to the result's type: read 1, write 2) and sums
#: them (2); counted. (Before the biases shared their pass: read ``a``, write ``a + bias`` (4 + 4), read it and write
#: ``> 0`` (4 + 1), the count's int64 copy (1 + 8) and sum (8): 30, of which 14 were counted.)
LOST_BYTES_PER_ENTRY = 6
#: Bytes moved per entry of the ``k x N`` rows of the potentials, per setting: gather (read 4, write 4), the bias
#: added in place (4 + 4), the product with the kept mask (4 + 4) and the score's sum (4); counted.
LOST_BYTES_PER_POTENTIAL_ENTRY = 28
#: Ops (kernel launches) of the sweep's scoring of one batch, counted with a ``TorchDispatchMode`` on the CPU by
#: ``benchmarks/bench_costs.py`` (12 x 14 patch grid, 4 images; independent of the sizes): per (features, block,
#: normalize) group (similarity, the shared comparison and degree, sort, seeds, gathers and scores of all its biases,
#: masks), per setting (none: the biases of a group are stacked; 20 when each setting ran its own seed and score),
#: per flood-fill step (grow 4 ways, clip, compare), and per flood fill + box extraction (run once per batch since
#: the settings' masks are stacked; once per setting before).
LOST_OPS_PER_GROUP, LOST_OPS_PER_SETTING, LOST_OPS_PER_FILL_STEP, LOST_OPS_PER_FILL = 51, 0, 23, 42
#: Seconds of CorLoc (:func:`vitreg.data.boxes.corloc_hits`) per image and setting on one CPU core: measured by
#: ``benchmarks/bench_costs.py`` (5,000 images with 1-3 boxes, best of 3, one thread of a 2-core AMD EPYC at load
#: average 1.7-2.4: 0.77-0.87 µs).
CORLOC_S_PER_IMAGE = 0.8e-6
#: The percentile bootstrap of :func:`vitreg.measure.norms.outlier_fraction` on one CPU core, as
#: ``a + b * resamples * images + c * images * tokens`` seconds: measured by ``benchmarks/bench_costs.py`` (best of
#: 5, one thread of a 2-core AMD EPYC at load average 1.7-2.4; ``b`` from 4,000 x 512 draws: 14-19 ms, ``c`` from
#: 256 x 16,384 tokens: 3.5-3.9 ms, ``a`` from a 10 x 8 problem: 0.1 ms).
BOOT_CALL_S, BOOT_S_PER_DRAW, BOOT_S_PER_TOKEN = 1.0e-4, 8.0e-9, 0.9e-9
#: Distinct padded input sizes in each LOST box dataset (the padded protocol batches images of one size together, so
#: each size adds at most one partial batch): ASSUMED (the datasets are not on the benchmark machine; VOC images
#: are at most 500 px a side with many heights, COCO's at most 640).
PADDED_SIZES = {"VOC07": 60, "VOC12": 80, "COCO20k": 100}
#: The typical image of each box dataset, (height, width) px: VOC's 500 x 375 landscape, COCO's 640 x 480.
BOX_IMAGE_HW = {"VOC07": (375, 500), "VOC12": (375, 500), "COCO20k": (480, 640)}


@dataclass(frozen=True)
class LostRun:
    """One LOST pass over a box dataset (:func:`vitreg.measure.lost.discover`): what its cost depends on.

    Paper: Table 3 (notebook 08), [TTR]'s VOC07 row (notebook 10).

    Attributes:
        images: images scored.
        batches: batches (padded protocol: each input size but one adds at most one partial batch to ``images / batch``).
        grid: ``(h, w)`` patch grid of a typical image.
        width: feature width D (heads concatenated).
        groups: distinct (features, block, normalize) similarities per image.
        settings: LOST settings scored per image.
        k: potentials of the seed expansion (LOST's ``k_patches``, at most the patches).
    """

    images: int
    batches: int
    grid: tuple[int, int]
    width: int
    groups: int
    settings: int
    k: int = 100


def lost_run(dataset: str, images: int, *, model: str, patch: int, batch_size: int, groups: int, settings: int,
             stretched_px: int | None = None, synthetic_hw: tuple[int, int] = (375, 500), k_patches: int = 100) -> LostRun:
    """The :class:`LostRun` of ``images`` of ``dataset`` (padded protocol, or ``stretched_px`` squares)."""
    import math

    if stretched_px is not None:
        side = stretched_px // patch
        grid, sizes = (side, side), 1
    else:
        h, w = BOX_IMAGE_HW.get(dataset, synthetic_hw)
        grid, sizes = (math.ceil(h / patch), math.ceil(w / patch)), PADDED_SIZES.get(dataset, 1)
    batches = min(images, math.ceil(images / batch_size) + sizes - 1)  # one partial batch per size more
    return LostRun(images, batches, grid, token_widths(model)[0], groups, settings, min(k_patches, grid[0] * grid[1]))


def padded_px(dataset: str, patch: int, synthetic_hw: tuple[int, int] = (375, 500)) -> int:
    """The side of the square with as many pixels as a typical image of box dataset ``dataset`` padded to a multiple
    of ``patch`` (:data:`BOX_IMAGE_HW`; ``synthetic_hw`` for the others): the resolution a forward of LOST's padded
    protocol counts at (:func:`vitreg.measure.lost.discover` feeds each image at its own size, not the model's).

    Paper: Table 3 (LOST on VOC07, VOC12, COCO20k), [TTR]'s VOC07 row."""
    h, w = BOX_IMAGE_HW.get(dataset, synthetic_hw)
    return round((math.ceil(h / patch) * patch * math.ceil(w / patch) * patch) ** 0.5)


def lost_ops(run: LostRun, *, stacked: bool = True) -> float:
    """Ops (kernel launches) of the sweep's scoring, flood fill bounded by ``h + w`` steps (a component without
    detours; its true bound ``h * w`` is never approached). ``stacked``: one flood fill per batch (else one per
    setting, as before the settings' masks were stacked)."""
    h, w = run.grid
    fill = LOST_OPS_PER_FILL + (h + w) * LOST_OPS_PER_FILL_STEP
    return (run.batches * (run.groups * LOST_OPS_PER_GROUP + run.settings * LOST_OPS_PER_SETTING)
            + run.batches * fill * (1 if stacked else run.settings))


def lost_flop(run: LostRun) -> float:
    """FLOPs of the patch similarities ``F Fᵀ``: ``2 N² D`` per image and (features, block, normalize) group."""
    n = run.grid[0] * run.grid[1]
    return 2.0 * n * n * run.width * run.groups * run.images


def lost_bytes(run: LostRun) -> float:
    """Bytes the passes over the similarities move: :data:`LOST_BYTES_PER_GROUP_ENTRY` per entry and group,
    :data:`LOST_BYTES_PER_ENTRY` per entry and setting, and :data:`LOST_BYTES_PER_POTENTIAL_ENTRY` per entry of the
    ``k x N`` potentials' rows and setting (:func:`vitreg.measure.lost.bias_sweep_scores`)."""
    n = run.grid[0] * run.grid[1]
    per_image = (LOST_BYTES_PER_GROUP_ENTRY * n * n * run.groups
                 + (LOST_BYTES_PER_ENTRY * n * n + LOST_BYTES_PER_POTENTIAL_ENTRY * run.k * n) * run.settings)
    return float(per_image) * run.images


def lost_sweep_s(runs: Iterable[LostRun], *, op_s: float = GPU_OP_S, stacked: bool = True) -> float:
    """Seconds of LOST's scoring of every setting on the GPU (where :func:`vitreg.measure.lost.discover` runs it:
    the q/k/v stay on the model's device): similarity FLOPs at :func:`gpu_matmul_s`, the per-setting passes at
    :func:`gpu_bytes_s`, and the ops at ``op_s`` each. Paper: Table 3; [TTR]'s sweep (08, 10)."""
    runs = list(runs)
    return sum(gpu_matmul_s(lost_flop(r)) + gpu_bytes_s(lost_bytes(r)) + op_s * lost_ops(r, stacked=stacked)
               for r in runs)


def corloc_s(runs: Iterable[LostRun]) -> float:
    """Seconds of CorLoc of every setting on the CPU (:data:`CORLOC_S_PER_IMAGE` per image and setting).
    Paper: Table 3 (CorLoc: IoU >= 0.5 with some ground-truth box)."""
    return sum(CORLOC_S_PER_IMAGE * r.images * r.settings for r in runs)


def lost_sweep_rows(runs: list[LostRun], *, what: str) -> list[Cost]:
    """The two cost rows of LOST passes ``runs``: the scoring on the GPU, CorLoc on the CPU (08, 10)."""
    if not runs:
        return []
    s = max(r.settings for r in runs)
    n = sum(r.images for r in runs)
    return [Cost(f"{what}: LOST scoring of {s} settings per image on the GPU ({n:,} image passes)", lost_sweep_s(runs),
                 "per image and (q/k/v, block) group 2 N² D similarity FLOPs at FP32_FLOPS x FP32_SHARE and "
                 f"{LOST_BYTES_PER_GROUP_ENTRY} bytes per similarity entry (the biases' shared comparison), per setting "
                 f"{LOST_BYTES_PER_ENTRY} bytes per entry and {LOST_BYTES_PER_POTENTIAL_ENTRY} per entry of the k x N "
                 "potentials' rows, at HBM_BYTES_S x HBM_SHARE; per batch "
                 f"{LOST_OPS_PER_GROUP} ops per group, {LOST_OPS_PER_SETTING} per setting and one stacked flood fill "
                 "of at most h + w steps "
                 f"(ops counted on the CPU) at GPU_OP_S = {GPU_OP_S * 1e6:.0f} µs each (assumed); the three summed (an "
                 "upper bound: dispatch overlaps the kernels); N and batches from BOX_IMAGE_HW and PADDED_SIZES "
                 "(assumed)"),
            Cost(f"{what}: CorLoc of {s} settings per image (CPU)", corloc_s(runs),
                 f"{CORLOC_S_PER_IMAGE * 1e6:.1f} µs per image and setting, measured on one core here, as is")]


def bootstrap_s(intervals: Iterable[tuple[int, int, int]]) -> float:
    """Seconds of percentile-bootstrap intervals ``(resamples, images, tokens per image)`` on one CPU core
    (:func:`vitreg.measure.norms.outlier_fraction`: resampling images). Paper: Fig. 3 (the outlier share's interval)."""
    return sum(BOOT_CALL_S + BOOT_S_PER_DRAW * r * b + BOOT_S_PER_TOKEN * b * n for r, b, n in intervals)



# ---------------------------------------------------------------------------------------------------
# Loading models
# ---------------------------------------------------------------------------------------------------

#: Python part of building a timm ViT, seconds per block: ``timm.create_model`` on the meta device (module construction
#: and the init calls, nothing allocated), measured with ``benchmarks/bench_costs.py --full`` (best of 5, one 2-core
#: AMD EPYC at load average 1.8): ViT-S/14 (12 blocks) 0.061 s, ViT-L/14 (24) 0.118 s, ViT-g/14 (40) 0.212 s; the
#: least-squares line through them crosses zero (-7 ms), so the build is taken as proportional to the blocks.
BUILD_S_PER_BLOCK = 5.2e-3
#: Bytes per parameter of a checkpoint file: float32, as timm's hub safetensors of the zoo (what ``make weights``
#: copies into the weights folder).
CHECKPOINT_BYTES = 4
#: Sequential read of one checkpoint file from a local NVMe SSD, bytes/s: ASSUMED (data-centre NVMe SSDs read
#: 3-7 GB/s; one file read by one thread gets less). Every load is counted as a cold read, an upper bound: a model
#: loaded again by a later notebook is usually still in the page cache. ``bench_costs.py`` measures this machine's
#: disk for comparison, ``bench_gpu.py`` the GPU node's.
DISK_BYTES_S = 2e9
#: First write to newly allocated host memory (page faults), bytes/s, on one thread: the checkpoint is read into fresh
#: host memory by one thread. Measured with ``benchmarks/bench_costs.py --full`` (a new 200 MB tensor filled once,
#: less the same fill again; best of 5 on one thread of a 2-core AMD EPYC virtual machine at load average 2.2: 3.1 GB/s,
#: 6.5 on two threads), taken for the GPU node (an upper bound: a virtual machine's page faults are slower than
#: bare metal's); ``bench_gpu.py`` measures it there.
HOST_TOUCH_BYTES_S = 3.1e9
#: Bytes moved per parameter byte on the GPU by timm's random init before the checkpoint overwrites it (trunc_normal_:
#: uniform, erfinv, mul, add, clamp, each reading and writing the tensor) and by the non-finite check (isfinite reads
#: each value and writes a bool, all() reads the bools): ASSUMED from the kernels' reads and writes.
INIT_PASSES, CHECK_PASSES = 10.0, 1.5
#: Jupyter kernel start, ``import vitreg, torch, timm`` and shutdown, seconds per notebook: measured with
#: ``benchmarks/bench_costs.py --full`` (the ``vitreg`` kernel started through jupyter_client as papermill starts it:
#: about 0.6 s to ready, 3 s of imports, 1.5 s to shut down; best of 3 in three runs on a 2-core AMD EPYC at load
#: average 1.7-2.5: 4.71, 4.85, 4.94 s; single starts under heavier load took up to 7 s), taken as is for the GPU
#: node (one process, mostly on one core).
KERNEL_S = 4.8
#: Parameters (millions, persistent buffers included) and blocks of every model of the real run, counted on the
#: meta device by :func:`count_arch` (a test keeps every model of the real run here).
ARCH: dict[str, tuple[float, int]] = {
    "dino_s16": (21.67, 12), "dino_b16": (85.80, 12), "dinov2_s": (22.06, 12), "dinov2_s_reg": (22.06, 12),
    "dinov2_b": (86.58, 12), "dinov2_b_reg": (86.58, 12), "dinov2_l": (304.37, 24), "dinov2_l_reg": (304.37, 24),
    "dinov2_g": (1136.48, 40), "dinov2_g_reg": (1136.48, 40), "dinov3_l": (303.08, 24), "deit3_b16": (85.82, 12),
    "clip_b16_laion": (85.80, 12), "mae_b16": (85.80, 12), "mae_l16": (303.30, 24),
    "vit_base_patch16_siglip_224.webli": (92.88, 12),
}


@dataclass(frozen=True)
class LoadRates:
    """Checkpoint bytes per second of each part of a pretrained load besides the Python build.

    Paper: every figure (the models each notebook loads; :mod:`vitreg.experiments.timing`'s fixed time).

    Attributes:
        init: timm's random init of the parameters on the device the model is built on.
        read: reading the checkpoint file from the disk (a raw read into memory already touched).
        touch: the first write to the fresh host memory it is read into (page faults).
        copy: the strict load copying it into the model (host to device on a GPU).
        check: the non-finite check of every tensor.
    """

    init: float
    read: float
    touch: float
    copy: float
    check: float


def gpu_load_rates() -> LoadRates:
    """The rates of a pretrained load on one H100-class GPU, built there (:func:`vitreg.core.weights.build_device`):
    init and check stream through HBM (:func:`gpu_bytes_s`'s rate over :data:`INIT_PASSES`, :data:`CHECK_PASSES`),
    the file comes from NVMe (:data:`DISK_BYTES_S`) into fresh host memory (:data:`HOST_TOUCH_BYTES_S`), the copy
    goes over PCIe (:data:`PCIE_BYTES_S`)."""
    hbm = HBM_BYTES_S * HBM_SHARE
    return LoadRates(init=hbm / INIT_PASSES, read=DISK_BYTES_S, touch=HOST_TOUCH_BYTES_S, copy=PCIE_BYTES_S,
                     check=hbm / CHECK_PASSES)


@functools.lru_cache(maxsize=None)
def count_arch(model: str) -> tuple[float, int]:
    """Parameters (millions, persistent buffers included: what a checkpoint holds) and blocks of ``model``, counted
    on :func:`meta_model` (its native size)."""
    from vitreg.core.hooks import depth

    net = meta_model(model)
    return round(sum(t.numel() for t in net.state_dict().values()) / 1e6, 2), depth(net)


def arch(model: str) -> tuple[float, int]:
    """Parameters (millions) and blocks of ``model``: :data:`ARCH`'s entry, else counted (:func:`count_arch`)."""
    return ARCH.get(model) or count_arch(model)


def checkpoint_bytes(model: str) -> float:
    """Bytes of ``model``'s checkpoint file: parameters x :data:`CHECKPOINT_BYTES`."""
    return arch(model)[0] * 1e6 * CHECKPOINT_BYTES


def build_python_s(model: str) -> float:
    """Seconds of Python building ``model`` (:data:`BUILD_S_PER_BLOCK` per block)."""
    return BUILD_S_PER_BLOCK * arch(model)[1]


def load_parts(model: str, rates: LoadRates | None = None) -> dict[str, float]:
    """Seconds of each part of a pretrained load of ``model`` (:func:`vitreg.core.weights.load_model`).

    Paper: every figure (the models each notebook loads).

    Args:
        model: zoo key or timm name.
        rates: the rates of the device it is built on; None: one H100-class GPU (:func:`gpu_load_rates`).

    Returns:
        ``{"build": Python part, "init": random init, "read": the file, "touch": fresh host memory, "copy": into the
        model, "check": non-finite}``.
    """
    rates = rates or gpu_load_rates()
    nbytes = checkpoint_bytes(model)
    return {"build": build_python_s(model), "init": nbytes / rates.init, "read": nbytes / rates.read,
            "touch": nbytes / rates.touch, "copy": nbytes / rates.copy, "check": nbytes / rates.check}


def load_s(model: str, rates: LoadRates | None = None) -> float:
    """Seconds of a pretrained load of ``model`` (:func:`load_parts`, summed: the parts run one after the other)."""
    return float(sum(load_parts(model, rates).values()))


def loading_s(models: Iterable[str]) -> float:
    """Seconds of loading ``models`` (a notebook's ``model_loads(p)``: a model loaded twice is listed twice) on one
    H100-class GPU."""
    return float(sum(load_s(m) for m in models))


def loading_rule() -> str:
    """How :func:`load_s` estimates a load, for the time table's footnote."""
    return (f"a model load = its Python build ({BUILD_S_PER_BLOCK * 1e3:.1f} ms per block, measured on the meta "
            f"device) + its float32 checkpoint read at {DISK_BYTES_S / 1e9:.0f} GB/s (NVMe, assumed) into fresh host "
            f"memory ({HOST_TOUCH_BYTES_S / 1e9:.1f} GB/s, measured) and copied to the GPU at "
            f"{PCIE_BYTES_S / 1e9:.0f} GB/s (assumed) + init and check in GPU memory (a whole load, modelled: ViT-L/14 "
            f"{load_s('dinov2_l'):.1f} s, ViT-g/14 {load_s('dinov2_g'):.1f} s); kernel start {KERNEL_S:.1f} s per "
            "notebook (measured)")


def named_rates() -> list[str]:
    """The rates every cost model divides by, each with its value and where it comes from, for the time table: the
    GPU's (vendor figures times ASSUMED shares, or ASSUMED outright; ``make benchmark-gpu`` measures those it names)
    and the host's (measured on one core of the 2-core machine by ``benchmarks/bench_costs.py``, used for the GPU node).

    Paper: all findings (the real run's cost)."""
    return [
        f"`FP32_FLOPS` {FP32_FLOPS / 1e12:.0f} TFLOP/s x `FP32_SHARE` {FP32_SHARE:.0%} (H100 SXM fp32 without tensor "
        "cores; the share assumed, measured by `make benchmark-gpu`)",
        f"`HBM_BYTES_S` {HBM_BYTES_S / 1e12:.2f} TB/s x `HBM_SHARE` {HBM_SHARE:.0%} (H100 SXM memory; the share "
        "assumed, measured by `make benchmark-gpu`)",
        f"`PCIE_BYTES_S` {PCIE_BYTES_S / 1e9:.0f} GB/s host to GPU, `DISK_BYTES_S` {DISK_BYTES_S / 1e9:.0f} GB/s "
        "(assumed, measured by `make benchmark-gpu`)",
        f"`FP64_FLOPS` {FP64_FLOPS / 1e12:.0f} TFLOP/s x `FP64_SHARE` {FP64_SHARE:.0%}, eigendecomposition at "
        f"`EIGH_SHARE` {EIGH_SHARE:.0%} of it (assumed, not measured on a GPU yet)",
        f"`GPU_OP_S` {GPU_OP_S * 1e6:.0f} µs per eager GPU op, `GPU_LAUNCH_FACTOR` {GPU_LAUNCH_FACTOR:g} x a CPU "
        "step's host time (assumed, not measured on a GPU yet)",
        f"host time per step, measured on one CPU core at tiny size and taken for the GPU node's host: L-BFGS "
        f"evaluation `LBFGS_EVAL_FIXED_S` {LBFGS_EVAL_FIXED_S * 1e3:.2f} ms, Adam step `ADAM_STEP_FIXED_S` "
        f"{ADAM_STEP_FIXED_S * 1e3:.2f} ms, head step `HEAD_STEP_S` {HEAD_STEP_S * 1e3:.2f} ms; host passes "
        f"`HOST_BYTES_S` {HOST_BYTES_S / 1e9:.0f} GB/s, `CPU_GATHER_BYTES_S` {CPU_GATHER_BYTES_S / 1e9:.1f} GB/s "
        "(one thread: pessimistic for a many-core node)",
    ]
