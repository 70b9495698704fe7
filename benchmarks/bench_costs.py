"""Cost models of the work besides forwards, checked on the CPU at small size (vitreg.experiments.costs).

Each row measures a small problem on this CPU and prints it beside what the cost model of
:mod:`vitreg.experiments.costs` predicts for the same problem with this CPU's rates (measured here by a product or
a pass of the same shape), so the model's counts are checked and not only its constants; the run-time table
divides the same counts by the named GPU assumptions instead. It also re-measures the constants the models take
from this CPU (host time per step, host bandwidth) beside the values in ``costs.py``. Best of several repeats:
on a shared machine the fastest run is the work itself. Never asserted in unit tests.

One function per topic, ``<topic>_rows(full) -> list[str]`` (linear probes, the joint probe, dense heads, LOST
sweeps and bootstraps, loading models); :func:`main` prints a header (device, torch version, load average,
threads) then every topic's rows, in the order they are defined. Quick by default (about a minute on 2 cores);
``--full`` adds larger sizes.

    python benchmarks/bench_costs.py [--full]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
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


def best_warm_s(fn: Callable[[], Any], repeat: int) -> float:
    """Best wall time of ``repeat`` calls of ``fn``, seconds (one warm-up call first)."""
    fn()
    return best_s(fn, repeat)


def count_ops(fn: Callable[[], Any]) -> int:
    """ATen calls (ops dispatched, views included) of one call of ``fn``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            Counter.n += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        fn()
    return Counter.n


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


def joint_step_times(heads: tuple[int, ...] = (1, 2, 3, 6)) -> list[float]:
    """Seconds of one minibatch step of :func:`~vitreg.measure.estimators.fit_logistic_joint` with each number of
    ``heads`` at tiny size (n=64, d=8, c=4, batch 16: 41 vs 1 epochs), one thread, best of 5."""
    from vitreg.measure.estimators import fit_logistic_joint

    x, y = stiff_problem(64, 8, 4)
    out = []
    with threads(1):
        for h in heads:
            fit = lambda e, h=h: fit_logistic_joint([x] * h, y, l2s=[1e-5] * h, batch_size=16, epochs=e, device="cpu")  # noqa: E731
            out.append((best_warm_s(lambda: fit(41), 5) - best_warm_s(lambda: fit(1), 5)) / (40 * 4))
    return out


def joint_probe_rows(full: bool) -> list[str]:
    """09's ImageNet probe in minibatch mode (Table 2): its three variants ([CLS], mean patch, both: widths d, d, 2d)
    trained together by :func:`~vitreg.measure.estimators.fit_logistic_joint`, measured beside
    :func:`~vitreg.experiments.costs.joint_logistic_fit_s` at this CPU's rates, and beside the three separate fits."""
    from vitreg.measure.estimators import fit_logistic_joint

    heads = (1, 2, 3, 6)
    steps = joint_step_times(heads)
    slope, one = np.polyfit(np.array(heads) - 1, steps, 1)  # least squares: seconds per further head, one head's step
    rows = ["joint probe (09: vitreg.experiments.costs.joint_logistic_fit_s)",
            "  host time per joint step of " + ", ".join(f"{h} heads {t * 1e3:.3f} ms" for h, t in zip(heads, steps))
            + f": each further head x {slope / one:.2f} of one head's step (costs.JOINT_HEAD_STEP_SHARE = "
            f"{costs.JOINT_HEAD_STEP_SHARE:.2f})"]
    for n, d, c, batch, epochs in [(2000, 32, 10, 64, 3)] + ([(20000, 128, 100, 1024, 3)] if full else []):
        x, y = stiff_problem(n, 2 * d, c)
        xs, dims = [x[:, :d], x[:, d:], x], [d, d, 2 * d]
        b = min(batch, n)
        with threads(1):
            rates = {"matmul_s": lambda f, r=cpu_matmul_rate(b, d, c): f / r,
                     "bytes_s": lambda nb, r=cpu_logit_rate(b, c): nb / r, "host_factor": 1.0}
            kw = {"batch_size": batch, "epochs": epochs, "device": "cpu"}
            joint = best_s(lambda: fit_logistic_joint(xs, y, l2s=[1e-5] * 3, **kw), 3)
            alone = sum(best_s(lambda h=h: fit_logistic(h, y, l2=1e-5, **kw), 3) for h in xs)
        model = costs.joint_logistic_fit_s(n, dims, c, batch_size=batch, epochs=epochs, **rates)
        model_alone = sum(costs.logistic_fit_s(n, dh, c, batch_size=batch, epochs=epochs, **rates) for dh in dims)
        rows += [_row(f"joint Adam n={n} d={d},{d},{2 * d} c={c} batch={batch} epochs={epochs}", joint, model),
                 _row("  the same three heads fitted one by one", alone, model_alone)]
    return rows


def _row(what: str, measured: float, model: float) -> str:
    return f"  {what:<58} measured {measured * 1e3:9.1f} ms   model {model * 1e3:9.1f} ms   ratio {measured / model:5.2f}"


# ---------------------------------------------------------------------------------------------------
# Dense heads (09)
# ---------------------------------------------------------------------------------------------------
def heads_rates(repeats: int) -> dict[str, float]:
    """This CPU's rates the heads' models use: gather bytes/s (float16 rows by index, read + written), float32
    matmul FLOP/s (the segmentation head's 1x1 conv at ViT-L width), the fixed seconds of one head optimizer step
    at a tiny size, and the seconds per label pixel of decoding a label PNG and counting it twice."""
    from vitreg.measure.heads import IoUCounts, TrainConfig, train_segmentation_head

    rows = torch.randn(256, 37 * 37 * 64).half()
    idx = torch.randperm(256)[:64]
    gather = best_warm_s(lambda: rows[idx], repeats)
    a, b = torch.randn(1369, 1024), torch.randn(1024, 150)
    mm = best_warm_s(lambda: a @ b, repeats)
    tiny = torch.randn(512, 1, 1, 4).half(), torch.randint(0, 2, (512, 1, 1), dtype=torch.uint8)
    cfg = TrainConfig(epochs=1, batch_size=2, device="cpu")
    step = best_warm_s(lambda: train_segmentation_head(*tiny, 2, cfg=cfg), repeats) / 256
    from vitreg.data.dense import read_ade20k_label

    with tempfile.TemporaryDirectory() as tmp:
        path = _label_png(Path(tmp), (512, 683))
        decode = best_warm_s(lambda: read_ade20k_label(path), repeats) / (512 * 683)
        lab = torch.as_tensor(read_ade20k_label(path))
        count = best_warm_s(lambda: IoUCounts(150).add(lab, lab), repeats) / (512 * 683)
    return {"gather_bytes_s": 2 * rows[idx].numel() * 2 / gather, "flops": 2 * 1369 * 1024 * 150 / mm,
            "step_s": step, "decode_pixel_s": decode, "count_pixel_s": count}


def _label_png(folder: Path, hw: tuple[int, int]) -> Path:
    """An ADE20k-like label PNG (uint8 classes in blobs) of size ``hw``."""
    from PIL import Image

    g = np.random.default_rng(0)
    small = g.integers(0, 151, size=(hw[0] // 16 + 1, hw[1] // 16 + 1), dtype=np.uint8)
    lab = np.kron(small, np.ones((16, 16), dtype=np.uint8))[:hw[0], :hw[1]]
    path = folder / "label.png"
    Image.fromarray(lab).save(path)
    return path


def heads_rows(full: bool) -> list[str]:
    """Dense heads of notebook 09 (Table 2): a segmentation and a depth head trained on a few small crops, the
    whole-image scoring, each measured on this CPU beside
    :mod:`vitreg.experiments.costs`' counts at this CPU's measured rates."""
    from vitreg.experiments import costs
    from vitreg.measure.heads import TrainConfig, score_heads, train_depth_head, train_segmentation_head

    repeats = 5 if full else 2
    r = heads_rates(repeats)
    out = ["dense heads (09): rates here: gather {:.1f} GB/s, fp32 matmul {:.0f} GFLOP/s, head step {:.2f} ms, "
           "label decode {:.0f} ns and IoU count {:.0f} ns per pixel (costs.py: {:.1f} GB/s, {:.0f} GFLOP/s, {:.2f} ms, "
           "{:.0f} ns, {:.0f} ns)".format(
               r["gather_bytes_s"] / 1e9, r["flops"] / 1e9, r["step_s"] * 1e3, r["decode_pixel_s"] * 1e9,
               r["count_pixel_s"] * 1e9, costs.CPU_GATHER_BYTES_S / 1e9, costs.CPU_FLOPS / 1e9, costs.HEAD_STEP_S * 1e3,
               costs.LABEL_DECODE_PIXEL_S * 1e9, costs.IOU_COUNT_PIXEL_S * 1e9)]
    cpu = lambda nbytes, flop: nbytes / r["gather_bytes_s"] + flop / r["flops"]  # noqa: E731
    n, bs, epochs, dim, crop = (32, 8, 2, 384, 224) if full else (16, 8, 1, 384, 112)
    grid = (crop // 14, crop // 14)
    g = torch.Generator().manual_seed(0)
    patch = torch.randn(n, *grid, dim, generator=g).half()
    labels = torch.randint(0, 150, (n, crop, crop), generator=g).to(torch.uint8)
    cfg = TrainConfig(epochs=epochs, batch_size=bs, device="cpu")
    steps, image_steps = epochs * -(-n // bs), epochs * n
    t = best_warm_s(lambda: train_segmentation_head(patch, labels, 150, cfg=cfg), repeats)
    model = image_steps * cpu(costs.seg_step_bytes(150, (crop, crop), grid, dim),
                              costs.seg_step_flop(150, grid, dim)) + steps * r["step_s"]
    out.append(_row(f"segmentation head: {n} crops {crop} px, 150 classes, D {dim}, {epochs} epoch(s)", t, model))
    out.append(_census("segmentation", lambda: _seg_step(patch[:bs], labels[:bs]),
                       bs * costs.seg_step_bytes(150, (crop, crop), grid, dim)))
    depth = torch.rand(n, crop, crop, generator=g) * 9 + 0.5
    cls = torch.randn(n, dim, generator=g).half()
    t = best_warm_s(lambda: train_depth_head(patch, cls, depth, cfg=cfg), repeats)
    model = image_steps * cpu(costs.depth_step_bytes(256, (crop, crop), grid, dim),
                              costs.depth_step_flop(256, grid, dim)) + steps * r["step_s"]
    out.append(_row(f"depth head: {n} crops {crop} px, 256 bins, D {dim}, {epochs} epoch(s)", t, model))
    out.append(_census("depth", lambda: _depth_step(patch[:bs], cls[:bs], depth[:bs]),
                       bs * costs.depth_step_bytes(256, (crop, crop), grid, dim)))
    head = train_segmentation_head(patch, labels, 150, cfg=TrainConfig(epochs=1, batch_size=bs, device="cpu"))
    n_val, label_hw = (8, (168, 224)) if full else (4, (84, 112))
    val = torch.randn(n_val, *grid, dim, generator=g).half()
    with tempfile.TemporaryDirectory() as tmp:
        path = _label_png(Path(tmp), label_hw)
        from vitreg.data.dense import read_ade20k_label

        heads = [head] * 3
        t = best_warm_s(lambda: score_heads(heads, val, lambda i: read_ade20k_label(path), crop, 150, majority=0,
                                        device="cpu"), repeats)
    pixels = label_hw[0] * label_hw[1]
    model = n_val * (3 * cpu(4 * 150 * (crop * crop + 3 * pixels), 2 * grid[0] * grid[1] * dim * 150)
                     + pixels * (r["decode_pixel_s"] + 4 * r["count_pixel_s"]))
    out.append(_row(f"whole-image scoring, 3 heads: {n_val} images, canvas {crop}, labels {label_hw[0]}x{label_hw[1]}",
                    t, model))
    return out


#: aten ops that move no bytes (views) or only alias their input.
VIEWS = {"view", "_unsafe_view", "permute", "t", "expand", "detach", "alias", "as_strided", "unsqueeze", "slice",
         "select", "transpose", "reshape", "squeeze"}


def _census(what: str, step: Callable[[], None], model_bytes: float) -> str:
    """Bytes read and written by the aten ops of one training step (views left out; a gather op such as
    nll_loss counts its whole input, so the census is a little above the true traffic) beside the model's."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    total = [0]

    class Census(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            out = func(*args, **(kwargs or {}))
            if func.__name__.split(".")[0] not in VIEWS:
                tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
                total[0] += sum(t.numel() * t.element_size() for t in tensors)
            return out

    with Census():
        step()
    return f"  {what + ' step, bytes of its aten ops':<58} counted {total[0] / 1e6:9.1f} MB   model {model_bytes / 1e6:9.1f} MB   ratio {total[0] / model_bytes:5.2f}"


def _seg_step(patch: torch.Tensor, labels: torch.Tensor) -> None:
    import torch.nn.functional as F

    from vitreg.measure.heads import LinearSegmentationHead

    head = LinearSegmentationHead(patch.shape[-1], 150)
    F.cross_entropy(head(patch, size=tuple(labels.shape[-2:])), labels.long(), ignore_index=255).backward()


def _depth_step(patch: torch.Tensor, cls: torch.Tensor, depth: torch.Tensor) -> None:
    from vitreg.measure.heads import LinearDepthHead, sig_loss

    head = LinearDepthHead(patch.shape[-1])
    sig_loss(head(patch, cls, size=tuple(depth.shape[-2:])), depth, depth > 1e-3).backward()


# ---------------------------------------------------------------------------------------------------
# LOST sweeps and bootstraps (02, 08, 10)
# ---------------------------------------------------------------------------------------------------
def _sweep_rec(b: int, grid: tuple[int, int], d: int, blocks: int, seed: int = 0) -> Any:
    """A fake recording of q/k/v at ``blocks`` blocks: planted objects plus noise, one prefix token."""
    from types import SimpleNamespace

    from vitreg.measure.lost import offset_features
    from vitreg.planting import planted_feature_maps

    gen = torch.Generator().manual_seed(seed)
    boxes = [[2 + i % 3, 1 + i % 2, grid[1] // 2 + i % 4, grid[0] // 2 + i % 3] for i in range(b)]
    base = offset_features(planted_feature_maps(boxes, grid, num_prefix=1, noise=0.6, seed=seed), 1.5)
    if base.shape[-1] != d:  # widen to d features (the planted maps have their own width)
        base = torch.cat([base, 0.3 * torch.randn(*base.shape[:2], d - base.shape[-1], generator=gen)], -1)
    return SimpleNamespace(**{w: [base + 0.3 * torch.randn(base.shape, generator=gen) for _ in range(blocks)]
                              for w in "qkv"})


def _old_score_batch(rec: Any, layout: Any, settings: list, *, k_patches: int, scale: torch.Tensor,
                     hw: torch.Tensor) -> dict[str, torch.Tensor]:
    """The scoring as it was: one similarity per (features, block, normalize), then :func:`lost_on_similarity`
    (its own flood fill, box extraction and copy to the CPU) per setting."""
    from vitreg.measure.lost import lost_on_similarity, patch_features, similarity

    out: dict[str, torch.Tensor] = {}
    groups: dict[tuple, list] = {}
    for s in settings:
        groups.setdefault((s.which, s.block, s.normalize), []).append(s)
    for (which, block, normalize), group in groups.items():
        a = similarity(patch_features(getattr(rec, which)[block], layout), normalize=normalize)
        for s in group:
            out[s.name] = lost_on_similarity(a + s.bias, layout.grid, k_patches=k_patches, scale=scale,
                                             image_hw=hw).boxes
    return out


def _per_setting_score_batch(rec: Any, layout: Any, settings: list, *, k_patches: int, scale: torch.Tensor,
                             hw: torch.Tensor) -> dict[str, torch.Tensor]:
    """The scoring before the biases of a group shared their passes: :func:`seed_scores` on ``a + bias`` per
    setting, then one stacked flood fill (the boxes are the same)."""
    from vitreg.measure.lost import mask_to_box, patch_features, pixel_boxes, seed_component, seed_scores, similarity

    groups: dict[tuple, list] = {}
    for s in settings:
        groups.setdefault((s.which, s.block, s.normalize), []).append(s)
    names, masks, seeds = [], [], []
    for (which, block, normalize), group in groups.items():
        a = similarity(patch_features(getattr(rec, which)[block], layout), normalize=normalize)
        for s in group:
            _, seed, _, m = seed_scores(a + s.bias, k_patches=k_patches)
            names.append(s.name)
            masks.append((m > 0).reshape(-1, *layout.grid))
            seeds.append(seed)
    boxes_patch = mask_to_box(seed_component(torch.cat(masks), torch.cat(seeds)))
    n = len(masks[0])
    boxes = pixel_boxes(boxes_patch, scale.reshape(n, 2).repeat(len(names), 1),
                        hw.double().reshape(n, 2).repeat(len(names), 1))
    return dict(zip(names, boxes.split(n)))


#: The per-setting passes' counts before the biases of a group shared them, for the "before" rows' model: bytes per
#: similarity entry and setting (add 8, compare 5, the count's int64 copy 9 and sum 8), bytes per entry of the
#: potentials' rows and setting (gather 8, product 8, sum 4), ops per setting.
PER_SETTING_BYTES, PER_SETTING_POTENTIAL_BYTES, PER_SETTING_OPS = 30, 20, 20


def _lost_op_counts() -> tuple[int, int, int, int]:
    """Ops per (features, block, normalize) group, per setting, per flood-fill step and per flood fill + box
    extraction, counted. The group and setting counts difference whole scorings whose masks are equal (the same
    features under two blocks, the same bias repeated), so their flood fills take the same steps."""
    from types import SimpleNamespace

    from vitreg.core.tokens import TokenLayout
    from vitreg.measure.lost import Setting, _score_batch, mask_to_box, pixel_boxes, seed_component

    x = _sweep_rec(4, (12, 14), 64, blocks=1).k[0]
    rec, layout = SimpleNamespace(k=[x, x]), TokenLayout(num_cls=1, num_reg=0, grid=(12, 14))
    kw = {"k_patches": 30, "scale": torch.full((4, 2), 14.0, dtype=torch.float64), "hw": torch.full((4, 2), 500)}

    def scoring(blocks: list[int], biases: list[float]) -> int:
        settings = [Setting("k", b, True, bias) for b in blocks for bias in biases]
        return count_ops(lambda: _score_batch(rec, layout, settings, **kw))

    one = scoring([-1], [-0.2])
    per_group, per_setting = scoring([-2, -1], [-0.2]) - one, (scoring([-1], [-0.2] * 5) - one) // 4

    def line(n: int) -> int:
        mask = torch.zeros(1, 4, 40, dtype=torch.bool)
        mask[0, 0, :n] = True
        return count_ops(lambda: seed_component(mask, torch.tensor([0])))

    step = (line(20) - line(10)) // 10
    mask = torch.ones(4, 12, 14, dtype=torch.bool)
    fill = count_ops(lambda: pixel_boxes(mask_to_box(seed_component(mask, torch.zeros(4, dtype=torch.long))), 14.0,
                                         torch.full((4, 2), 500)))
    return per_group, per_setting, step, fill - (12 + 14 - 1) * step  # a whole-grid fill from a corner: h + w - 1 steps


def _cpu_rates(full: bool) -> tuple[float, float, float]:
    """This CPU's float32 batched-matmul FLOP/s, bytes/s of an elementwise pass, and seconds per tiny op."""
    r = 7 if full else 3
    x = torch.randn(8, 384, 256)
    flops = 2 * 8 * 384 * 384 * 256 / best_warm_s(lambda: x @ x.transpose(1, 2), r)
    a = torch.randn(8, 768, 768)
    # subtract (4 + 4), compare (4 + 1), the sum's int64 copy of the bools (1 + 8) and the sum (8)
    nbytes = (4 + 4 + 4 + 1 + 1 + 8 + 8) * a.numel() / best_warm_s(lambda: ((a - 0.3) > 0).sum(-1), r)
    tiny = torch.ones(4)
    op_s = best_warm_s(lambda: [tiny + 1 for _ in range(1000)], r) / 1000
    return flops, nbytes, op_s


def sweeps_rows(full: bool) -> list[str]:
    """LOST sweep scoring (08, 10), CorLoc, and the bootstrap intervals (02): measured vs modelled on this CPU."""
    from vitreg.core.tokens import TokenLayout
    from vitreg.data.boxes import corloc_hits
    from vitreg.experiments import costs
    from vitreg.measure import norms
    from vitreg.measure.lost import Setting, _score_batch, ttr_settings

    rows = ["## LOST sweeps and bootstraps (02, 08, 10)"]
    per_group, per_setting, step, fill = _lost_op_counts()
    rows.append(f"ops counted: {per_group} per group, {per_setting} per setting, {step} per flood-fill step, {fill} per "
                f"flood fill + boxes (costs.py: {costs.LOST_OPS_PER_GROUP}, {costs.LOST_OPS_PER_SETTING}, "
                f"{costs.LOST_OPS_PER_FILL_STEP}, {costs.LOST_OPS_PER_FILL})")
    flops, nbytes, op_s = _cpu_rates(full)
    rows.append(f"this CPU: {flops / 1e9:.1f} GFLOP/s fp32 bmm, {nbytes / 1e9:.2f} GB/s elementwise, "
                f"{op_s * 1e6:.1f} µs per tiny op")

    b, grid, d = (8, (27, 36), 256) if full else (4, (18, 24), 128)
    layout = TokenLayout(num_cls=1, num_reg=0, grid=grid)
    rec = _sweep_rec(b, grid, d, blocks=4)
    settings = [Setting("k"), *ttr_settings([round(-0.1 * i, 1) for i in range(11)])]
    scale, hw = torch.full((b, 2), 14.0, dtype=torch.float64), torch.full((b, 2), 500)
    kw = {"k_patches": 100, "scale": scale, "hw": hw}
    repeat = 3 if full else 1
    new = best_warm_s(lambda: _score_batch(rec, layout, settings, **kw), repeat)
    per_setting_s = best_warm_s(lambda: _per_setting_score_batch(rec, layout, settings, **kw), repeat)
    old = best_warm_s(lambda: _old_score_batch(rec, layout, settings, **kw), repeat)
    run = costs.LostRun(images=b, batches=1, grid=grid, width=d, groups=13, settings=len(settings), k=100)
    n = grid[0] * grid[1]

    def cpu_model(r: costs.LostRun) -> float:
        return costs.lost_flop(r) / flops + costs.lost_bytes(r) / nbytes + costs.lost_ops(r) * op_s

    def per_setting_model(r: costs.LostRun, stacked: bool) -> float:  # the counts before the biases shared passes
        h, w = r.grid
        ops = r.settings * PER_SETTING_OPS + (costs.LOST_OPS_PER_FILL + (h + w) * costs.LOST_OPS_PER_FILL_STEP) * (
            1 if stacked else r.settings)
        nbytes_run = (PER_SETTING_BYTES * n * n + PER_SETTING_POTENTIAL_BYTES * r.k * n) * r.settings * r.images
        return costs.lost_flop(r) / flops + nbytes_run / nbytes + ops * op_s

    rows.append(f"LOST sweep, {len(settings)} settings in 13 groups, {b} images of {grid[0]}x{grid[1]} patches, D={d}: "
                f"measured {new:.3f} s, model {cpu_model(run):.3f} s (biases of a group share their passes, one "
                f"stacked flood fill); before: a pass per setting {per_setting_s:.3f} s, model "
                f"{per_setting_model(run, True):.3f} s; and one flood fill per setting {old:.3f} s, model "
                f"{per_setting_model(run, False):.3f} s")

    n_img = 20_000 if full else 5_000
    gen = np.random.default_rng(0)
    gts = [np.sort(gen.uniform(0, 500, (1 + i % 3, 2, 2)), axis=1).reshape(-1, 4)
           for i in range(n_img)]
    pred = np.sort(gen.uniform(0, 500, (n_img, 2, 2)), axis=1).reshape(-1, 4)
    t = best_warm_s(lambda: corloc_hits(pred, gts), 5 if full else 3)
    rows.append(f"CorLoc of one setting on {n_img:,} images: measured {t:.4f} s, model "
                f"{costs.CORLOC_S_PER_IMAGE * n_img:.4f} s ({t / n_img * 1e6:.2f} µs per image)")

    for r_, b_, n_ in ((10, 8, 8), (4000, 512, 16), (10, 256, 16_384), (1000, 256, 1369)):
        mask = torch.rand(b_, n_, generator=torch.Generator().manual_seed(0)) < 0.02
        t = best_warm_s(lambda: norms.outlier_fraction(mask, n_boot=r_, seed=0), 5)
        rows.append(f"bootstrap interval, {r_} resamples of {b_} images x {n_} tokens: measured {t * 1e3:.2f} ms, "
                    f"model {costs.bootstrap_s([(r_, b_, n_)]) * 1e3:.2f} ms")
    return rows


def line(what: str, measured: float, model: float, unit: str = "s", note: str = "") -> str:
    """One printed row: the measured figure beside the cost model's for the same problem, and their ratio."""
    return (f"  {what}: measured {measured:.3g} {unit}, model {model:.3g} {unit} (x{measured / model:.2f})"
            + (f"; {note}" if note else ""))


# ---------------------------------------------------------------------------------------------------
# Loading models (costs.load_s, costs.KERNEL_S)
# ---------------------------------------------------------------------------------------------------


def meta_build_s(model: str, repeats: int) -> float:
    """Best seconds of ``timm.create_model`` of ``model`` on the meta device at its native size
    (:func:`vitreg.experiments.costs.meta_model`, uncached): the Python part of a build
    (:data:`vitreg.experiments.costs.BUILD_S_PER_BLOCK`)."""

    def build() -> None:
        costs.meta_model.__wrapped__(model)

    build()  # the first build of a family imports and registers its code
    return best_s(build, repeats)


def drop_from_page_cache(path: Path) -> None:
    """Ask the kernel to forget ``path``'s cached pages (written and synced first), so the next read is the disk's."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_bytes_s(path: Path, repeats: int, cold: bool = True) -> float:
    """Best bytes/s of reading ``path`` whole into memory, dropped from the page cache before each read (``cold``)."""
    size = path.stat().st_size
    buf = memoryview(bytearray(size))

    def read() -> None:
        if cold:
            drop_from_page_cache(path)
        with open(path, "rb", buffering=0) as f:
            done = 0
            while done < size and (n := f.readinto(buf[done:])):
                done += n

    return size / best_s(read, repeats)


def first_touch_bytes_s(mb: int, repeats: int) -> float:
    """Best bytes/s of the first write to ``mb`` MB of newly allocated memory (page faults): a new float32 tensor
    filled once, less the same fill again (:data:`vitreg.experiments.costs.HOST_TOUCH_BYTES_S`)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        x = torch.empty(mb * 2**20 // 4).fill_(1.0)
        first = time.perf_counter() - start
        best = min(best, first - best_s(lambda: x.fill_(2.0), 1))
        del x
    return mb * 2**20 / best


def kernel_start_s(repeats: int) -> float:
    """Best seconds of starting the ``vitreg`` Jupyter kernel as papermill does, importing vitreg, torch and timm
    in it, and shutting it down (:data:`vitreg.experiments.costs.KERNEL_S`)."""
    from jupyter_client.manager import KernelManager

    from vitreg.cli.runner import KERNEL_NAME, KERNEL_QUIET

    def start() -> None:
        manager = KernelManager(kernel_name=KERNEL_NAME)
        manager.start_kernel(extra_arguments=KERNEL_QUIET)
        client = manager.client()
        try:
            client.start_channels()
            client.wait_for_ready(timeout=120)
            reply = client.execute_interactive("import vitreg, torch, timm", timeout=120, output_hook=lambda _: None)
            if reply["content"]["status"] != "ok":
                raise RuntimeError(f"the kernel could not import vitreg, torch, timm: {reply['content']}")
        finally:
            client.stop_channels()
            manager.shutdown_kernel()

    return best_s(start, repeats)


def write_checkpoint(model: str, folder: Path, device: torch.device = torch.device("cpu")) -> Path:
    """A safetensors file of ``model``'s random weights (drawn on ``device``) in ``folder``, named as the weights
    folder names it: the same bytes as its pretrained file."""
    import timm
    from safetensors.torch import save_file

    from vitreg.core.models import get_spec

    spec = get_spec(model)
    path = folder / f"{spec.full_name}.safetensors"
    with device:
        net = timm.create_model(spec.full_name, pretrained=False, num_classes=0, img_size=spec.native_resolution)
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, path)
    return path


def cpu_load_check(model: str, folder: Path, read: float, touch: float, repeats: int
                   ) -> tuple[float, costs.LoadRates]:
    """A pretrained load of ``model`` on this CPU, and the rates of its parts measured in the same rounds.

    Each round times :func:`vitreg.core.weights.load_model` from a safetensors file of random weights dropped from
    the page cache, then, through the code a load runs, timm's random init (a CPU build less the meta build), a
    strict ``load_state_dict`` of the weights (the copy) and :func:`vitreg.core.weight_files.first_non_finite` (the
    check); interleaved, so that other load on the machine hits both alike. ``read``: the disk's rate, ``touch``:
    the first write to fresh memory (:func:`first_touch_bytes_s`).

    Returns:
        (best seconds of the load, :class:`~vitreg.experiments.costs.LoadRates` from the best of each part).
    """
    import timm

    from vitreg.core.models import get_spec
    from vitreg.core.weight_files import first_non_finite
    from vitreg.core.weights import load_model

    spec, nbytes = get_spec(model), costs.checkpoint_bytes(model)
    path = write_checkpoint(model, folder)
    best = {"load": float("inf"), "build": float("inf"), "copy": float("inf"), "check": float("inf")}
    for _ in range(repeats):
        drop_from_page_cache(path)
        times = {"load": best_s(lambda: load_model(model, weights=path, device="cpu"), 1)}
        start = time.perf_counter()
        net = timm.create_model(spec.full_name, pretrained=False, num_classes=0, img_size=spec.native_resolution)
        times["build"] = time.perf_counter() - start
        state = {k: v.clone() for k, v in net.state_dict().items()}
        times["copy"] = best_s(lambda: net.load_state_dict(state, strict=True), 1)
        times["check"] = best_s(lambda: first_non_finite(net), 1)
        best = {k: min(v, times[k]) for k, v in best.items()}
        del net, state
    path.unlink()
    init = best["build"] - meta_build_s(model, repeats)
    return best["load"], costs.LoadRates(init=nbytes / init, read=read, touch=touch, copy=nbytes / best["copy"],
                                         check=nbytes / best["check"])


def loading_rows(full: bool) -> list[str]:
    """Loading models: the Python build on the meta device, the disk, a pretrained load on this CPU against
    :func:`vitreg.experiments.costs.load_s` with this CPU's rates, and the kernel start."""
    repeats = 5 if full else 3
    rows = ["loading models (vitreg.experiments.costs.load_s: Python build + checkpoint bytes over each part's rate):"]
    for model, name in [*([("dinov2_s", "ViT-S/14")] if full else []), ("dinov2_l", "ViT-L/14"),
                        ("dinov2_g", "ViT-g/14")]:
        rows.append(line(f"{name} build on the meta device ({costs.arch(model)[1]} blocks)",
                         meta_build_s(model, repeats), costs.build_python_s(model)))
    with tempfile.TemporaryDirectory(dir=os.environ.get("VITREG_BENCH_TMP")) as tmp:
        folder = Path(tmp)
        raw = folder / "raw.bin"
        raw.write_bytes(os.urandom(200 * 2**20))
        cold, warm = read_bytes_s(raw, repeats), read_bytes_s(raw, repeats, cold=False)
        raw.unlink()
        rows.append(f"  raw read of a 200 MB file: {cold / 1e9:.2f} GB/s from the disk (page cache dropped), "
                    f"{warm / 1e9:.2f} GB/s from the page cache; the model assumes {costs.DISK_BYTES_S / 1e9:.1f} GB/s "
                    "(NVMe on the GPU node)")
        with threads(1):
            touch = first_touch_bytes_s(200, repeats)
        rows.append(line("first write to 200 MB of fresh memory on one thread", touch / 1e9,
                         costs.HOST_TOUCH_BYTES_S / 1e9, unit="GB/s"))
        for model in ["dinov2_s", "dinov2_b", *(["dinov2_l"] if full else [])]:
            with threads(1):
                seconds, rates = cpu_load_check(model, folder, cold, touch, 3 if full else 2)
            parts = costs.load_parts(model, rates)
            rows.append(line(f"pretrained load of {model} on one CPU thread ({costs.checkpoint_bytes(model) / 1e6:.0f} "
                             "MB, cold file)", seconds, sum(parts.values()),
                             note="model " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
                             + f" at this CPU's GB/s: init {rates.init / 1e9:.2f}, copy {rates.copy / 1e9:.2f}, "
                             f"check {rates.check / 1e9:.2f}"))
    rows.append(line("kernel start + import vitreg, torch, timm + shutdown", kernel_start_s(3 if full else 1),
                     costs.KERNEL_S))
    for model in ("dinov2_l", "dinov2_g"):
        parts = costs.load_parts(model)
        rows.append(f"  on one H100-class GPU, {model}: {sum(parts.values()):.2f} s = "
                    + " + ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="larger sizes too")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core: the machine is shared, and the CPU rows of the table run on one core
    print(header())
    topics = [fn for name, fn in list(globals().items()) if name.endswith("_rows") and callable(fn)]
    for topic in topics:  # every <topic>_rows function, in the order they are defined
        for row in topic(args.full):
            print(row, flush=True)


if __name__ == "__main__":
    main()
