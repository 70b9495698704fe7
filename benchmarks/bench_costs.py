"""Cost models of the work besides forwards, checked on the CPU at small size (vitreg.experiments.costs).

Each row measures a small problem on this CPU and prints it beside what the cost model of
:mod:`vitreg.experiments.costs` predicts for the same problem with this CPU's rates (measured here by a product or
a pass of the same shape), so the model's counts are checked and not only its constants; the run-time table
divides the same counts by the named GPU assumptions instead. It also re-measures the constants the models take
from this CPU (host time per step, host bandwidth) beside the values in ``costs.py``. Best of several repeats:
on a shared machine the fastest run is the work itself. Never asserted in unit tests.

Quick by default (a few seconds a row); ``--full`` adds larger sizes.

    python benchmarks/bench_costs.py [--full]
"""
# one function per topic: def probes_rows(full: bool) -> list[str], def heads_rows(...), def sweeps_rows(...),
# def loading_rows(...); main() prints a header (device, torch version, load average, threads) then each.

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from vitreg.experiments import costs
from vitreg.measure.estimators import fit_logistic, ridge_solutions


def best_s(fn: Callable[[], object], repeats: int = 5) -> float:
    """Fastest of ``repeats`` runs of ``fn``, seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch threads (None: as is), restored on exit."""
    before = torch.get_num_threads()
    torch.set_num_threads(n or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class CountCalls(TorchFunctionMode):
    """Count the calls of one torch function while active (``F.cross_entropy``: one per objective evaluation)."""

    def __init__(self, target: Callable) -> None:
        super().__init__()
        self.target, self.calls = target, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is self.target:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def header() -> str:
    """Device, torch version, load average and threads of this run."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"device: cpu ({cpu}, {os.cpu_count()} cores) | torch {torch.__version__} | load average {load} | "
            f"torch threads {torch.get_num_threads()} (every row runs on one)")


# ---------------------------------------------------------------------------------------------------
# Linear probes: L-BFGS / Adam logistic regression, ridge (05, 06, 09, 10, 11)
# ---------------------------------------------------------------------------------------------------
def stiff_problem(n: int, d: int, c: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlated features (condition number 1e6 after standardising) and labels independent of them: every
    L-BFGS fit runs to its ``max_iter``, as the real probes' upper bound assumes."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    x = torch.randn(n, d, generator=g) @ (q * torch.logspace(0, -3, d)) @ q.T
    return x, torch.randint(0, c, (n,), generator=g)


def counted_fit(x: torch.Tensor, y: torch.Tensor, repeats: int = 5, **kwargs) -> tuple[int, float]:
    """``(objective evaluations, seconds)`` of the fastest of ``repeats`` :func:`fit_logistic` calls on the CPU."""
    best, evals = float("inf"), 0
    for _ in range(repeats):
        with CountCalls(F.cross_entropy) as counter:
            start = time.perf_counter()
            fit_logistic(x, y, l2=1e-5, device="cpu", **kwargs)
            elapsed = time.perf_counter() - start
        best, evals = min(best, elapsed), counter.calls
    return evals, best


def cpu_matmul_rate(n: int, d: int, c: int, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of this CPU on the two products of an evaluation (``x @ W`` and ``x.T @ g``) of this shape."""
    x, w, g = torch.randn(n, d, dtype=dtype), torch.randn(d, c, dtype=dtype), torch.randn(n, c, dtype=dtype)
    return 4.0 * n * d * c / best_s(lambda: (x @ w, x.T @ g), 7)


def cpu_logit_rate(n: int, c: int) -> float:
    """Bytes/s of this CPU on the elementwise passes over ``(n, c)`` logits (bias add, cross-entropy and its
    backward), counted as :data:`vitreg.experiments.costs.LOGIT_PASSES` passes; on at least 2M logits, so the
    host time per call (counted once, in the host time per evaluation) does not count here again."""
    n = max(n, (1 << 21) // c)
    z, b, t = torch.randn(n, c), torch.zeros(c, requires_grad=True), torch.randint(0, c, (n,))

    def passes() -> None:
        F.cross_entropy(z + b, t).backward()

    return costs.LOGIT_PASSES * 4.0 * n * c / best_s(passes, 7)


def cpu_pass_rate(nbytes: int = 64 << 20) -> float:
    """Bytes read + written per second of one host pass that writes a new tensor: ``x + 1`` on ``nbytes`` of float32."""
    x = torch.randn(nbytes // 4)
    return 2.0 * nbytes / best_s(lambda: x + 1, 5)


def lbfgs_constants() -> list[str]:
    """Re-measure :data:`~vitreg.experiments.costs.LBFGS_EVAL_FIXED_S`, :data:`~vitreg.experiments.costs.FIT_FIXED_S`
    and :data:`~vitreg.experiments.costs.ADAM_STEP_FIXED_S` at tiny size, one thread, beside the values in use."""
    x, y = stiff_problem(64, 8, 4)
    with threads(1):
        e0, t0 = counted_fit(x, y, max_iter=1)
        e1, t1 = counted_fit(x, y, max_iter=10)
        e2, t2 = counted_fit(x, y, max_iter=200)
        per_eval = (t2 - t1) / max(e2 - e1, 1)
        a1 = best_s(lambda: fit_logistic(x, y, l2=1e-5, device="cpu", batch_size=16, epochs=1), 5)
        a2 = best_s(lambda: fit_logistic(x, y, l2=1e-5, device="cpu", batch_size=16, epochs=41), 5)
    per_step = (a2 - a1) / (40 * 4)
    host = cpu_pass_rate()
    return [f"  host time per L-BFGS evaluation (n=64 d=8 c=4, {e1} vs {e2} evals): {per_eval * 1e3:.3f} ms "
            f"(costs.LBFGS_EVAL_FIXED_S = {costs.LBFGS_EVAL_FIXED_S * 1e3:.3f} ms)",
            f"  host time of a whole max_iter=1 fit (set-up and {e0} evals): {t0 * 1e3:.3f} ms (costs.FIT_FIXED_S = "
            f"{costs.FIT_FIXED_S * 1e3:.3f} ms)",
            f"  host time per Adam step (batch 16, 1 vs 41 epochs): {per_step * 1e3:.3f} ms "
            f"(costs.ADAM_STEP_FIXED_S = {costs.ADAM_STEP_FIXED_S * 1e3:.3f} ms)",
            f"  host pass rate (x + 1 on 64 MiB): {host / 1e9:.2f} GB/s (costs.HOST_BYTES_S = "
            f"{costs.HOST_BYTES_S / 1e9:.2f} GB/s)"]


def lbfgs_row(n: int, d: int, c: int, max_iter: int) -> str:
    """One L-BFGS fit measured beside :func:`~vitreg.experiments.costs.logistic_fit_s` at this CPU's rates."""
    x, y = stiff_problem(n, d, c)
    with threads(1):
        rates = {"matmul_s": lambda f, r=cpu_matmul_rate(n, d, c): f / r,
                 "bytes_s": lambda b, r=cpu_logit_rate(n, c): b / r, "host_factor": 1.0}
        evals, measured = counted_fit(x, y, repeats=3, max_iter=max_iter)
    bound = costs.lbfgs_evals_bound(max_iter)
    model = costs.logistic_fit_s(n, d, c, max_iter=max_iter, **rates)
    at_evals = model - (bound - evals) * costs.lbfgs_eval_s(n, d, c, **rates)
    return (f"  L-BFGS n={n} d={d} c={c} max_iter={max_iter}: {evals} evals (bound {bound}); measured "
            f"{measured:.3f} s, model {at_evals:.3f} s at {evals} evals ({measured / at_evals:.2f}x), "
            f"bound {model:.3f} s")


def adam_row(n: int, d: int, c: int, batch_size: int, epochs: int) -> str:
    """One minibatch Adam fit measured beside :func:`~vitreg.experiments.costs.logistic_fit_s` at this CPU's rates."""
    x, y = stiff_problem(n, d, c)
    b = min(batch_size, n)
    with threads(1):
        rates = {"matmul_s": lambda f, r=cpu_matmul_rate(b, d, c): f / r,
                 "bytes_s": lambda nb, r=cpu_logit_rate(b, c): nb / r, "host_factor": 1.0}
        measured = best_s(lambda: fit_logistic(x, y, l2=1e-5, device="cpu", batch_size=batch_size, epochs=epochs), 3)
    model = costs.logistic_fit_s(n, d, c, batch_size=batch_size, epochs=epochs, **rates)
    return (f"  Adam   n={n} d={d} c={c} batch={batch_size} epochs={epochs}: measured {measured:.3f} s, "
            f"model {model:.3f} s ({measured / model:.2f}x)")


def cpu_eigh_rate(d: int) -> float:
    """FLOP/s of this CPU's float64 eigendecomposition with vectors, counted as
    :data:`~vitreg.experiments.costs.EIGH_FLOP_PER_D3` d^3."""
    a = torch.randn(2 * d, d, dtype=torch.float64)
    a = a.T @ a
    return costs.EIGH_FLOP_PER_D3 * d ** 3 / best_s(lambda: torch.linalg.eigh(a), 5)


def ridge_row(n: int, d: int, p: int, ridges: int) -> str:
    """One :func:`vitreg.measure.estimators.ridge_solutions` call measured beside
    :func:`~vitreg.experiments.costs.ridge_fit_s` at this CPU's rates (float64 products of the Gram shape; the
    eigendecomposition's rate measured at half the size, so the d^3 rule is checked too)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, d, generator=g), torch.randn(n, p, generator=g)
    with threads(1):
        xd = x.double()
        gram = 2.0 * n * d * d / best_s(lambda: xd.T @ xd, 5)
        eigh_half = cpu_eigh_rate(d // 2)
        copy = cpu_pass_rate()
        measured = best_s(lambda: ridge_solutions(x, y, [10.0 ** -k for k in range(ridges)], True,
                                                  torch.device("cpu")), 5)
    model = costs.ridge_fit_s(n, d, p, ridges, matmul64_s=lambda f: f / gram, eigh_s=lambda f: f / eigh_half,
                              bytes_s=lambda b: b / copy)
    return (f"  ridge  n={n} d={d} p={p} strengths={ridges}: measured {measured:.3f} s, model {model:.3f} s "
            f"({measured / model:.2f}x; float64 Gram {gram / 1e9:.1f} GFLOP/s, eigh at d={d // 2} "
            f"{eigh_half / 1e9:.1f} GFLOP/s)")


def probes_rows(full: bool) -> list[str]:
    """The linear probes' cost models (05, 06, 09, 10, 11): constants re-measured, then L-BFGS, Adam and ridge
    fits measured beside the model at this CPU's rates."""
    rows = ["probes (vitreg.experiments.costs: logistic_fit_s, ridge_fit_s)", *lbfgs_constants(),
            lbfgs_row(2000, 64, 10, 50), adam_row(2000, 64, 10, 256, 5), ridge_row(8000, 256, 48, 4)]
    if full:
        rows += [lbfgs_row(2000, 64, 10, 200), lbfgs_row(20000, 256, 100, 50), adam_row(20000, 256, 100, 1024, 5),
                 ridge_row(20000, 768, 588, 4)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="larger sizes too")
    args = parser.parse_args()
    print(header())
    for row in probes_rows(args.full):
        print(row, flush=True)


if __name__ == "__main__":
    main()
