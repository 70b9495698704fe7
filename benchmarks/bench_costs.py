"""Cost models of the work besides forwards, checked on the CPU at small size (vitreg.experiments.costs).

Paper: every finding (the run-time table of the README estimates the whole real run on one H100-class GPU).
Each topic's rows measure a small problem on this CPU and print, beside the measured seconds, what the cost
model predicts for that same small problem at this CPU's measured rates (a memcpy-like rate, a matmul rate, a
fixed cost per step), so the model's counts are checked; the GPU figure then divides the same counts by the named
GPU assumptions of :mod:`vitreg.experiments.costs`. Numbers are printed, never asserted (machines are shared).

    python benchmarks/bench_costs.py [--full]
"""

# one function per topic: def probes_rows(full: bool) -> list[str], def heads_rows(...), def sweeps_rows(...),
# def loading_rows(...); main() prints a header (device, torch version, load average, threads) then each.

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """The shortest of ``repeats`` timed calls of ``fn`` (seconds), after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _row(what: str, measured: float, model: float) -> str:
    return f"  {what:<58} measured {measured * 1e3:9.1f} ms   model {model * 1e3:9.1f} ms   ratio {measured / model:5.2f}"


# --- dense heads (09) ----------------------------------------------------------------------------------
def heads_rates(repeats: int) -> dict[str, float]:
    """This CPU's rates the heads' models use: gather bytes/s (float16 rows by index, read + written), float32
    matmul FLOP/s (the segmentation head's 1x1 conv at ViT-L width), the fixed seconds of one head optimizer step
    at a tiny size, and the seconds per label pixel of decoding a label PNG and counting it twice."""
    from vitreg.measure.heads import IoUCounts, TrainConfig, train_segmentation_head

    rows = torch.randn(256, 37 * 37 * 64).half()
    idx = torch.randperm(256)[:64]
    gather = best_of(lambda: rows[idx], repeats)
    a, b = torch.randn(1369, 1024), torch.randn(1024, 150)
    mm = best_of(lambda: a @ b, repeats)
    tiny = torch.randn(512, 1, 1, 4).half(), torch.randint(0, 2, (512, 1, 1), dtype=torch.uint8)
    cfg = TrainConfig(epochs=1, batch_size=2, device="cpu")
    step = best_of(lambda: train_segmentation_head(*tiny, 2, cfg=cfg), repeats) / 256
    from vitreg.data.dense import read_ade20k_label

    with tempfile.TemporaryDirectory() as tmp:
        path = _label_png(Path(tmp), (512, 683))
        decode = best_of(lambda: read_ade20k_label(path), repeats) / (512 * 683)
        lab = torch.as_tensor(read_ade20k_label(path))
        count = best_of(lambda: IoUCounts(150).add(lab, lab), repeats) / (512 * 683)
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
    whole-image scoring and the ImageNet probe's L-BFGS and minibatch fits, each measured on this CPU beside
    :mod:`vitreg.experiments.costs`' counts at this CPU's measured rates."""
    from vitreg.experiments import costs
    from vitreg.measure.estimators import fit_logistic
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
    t = best_of(lambda: train_segmentation_head(patch, labels, 150, cfg=cfg), repeats)
    model = image_steps * cpu(costs.seg_step_bytes(150, (crop, crop), grid, dim),
                              costs.seg_step_flop(150, grid, dim)) + steps * r["step_s"]
    out.append(_row(f"segmentation head: {n} crops {crop} px, 150 classes, D {dim}, {epochs} epoch(s)", t, model))
    out.append(_census("segmentation", lambda: _seg_step(patch[:bs], labels[:bs]),
                       bs * costs.seg_step_bytes(150, (crop, crop), grid, dim)))
    depth = torch.rand(n, crop, crop, generator=g) * 9 + 0.5
    cls = torch.randn(n, dim, generator=g).half()
    t = best_of(lambda: train_depth_head(patch, cls, depth, cfg=cfg), repeats)
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
        t = best_of(lambda: score_heads(heads, val, lambda i: read_ade20k_label(path), crop, 150, majority=0,
                                        device="cpu"), repeats)
    pixels = label_hw[0] * label_hw[1]
    model = n_val * (3 * cpu(4 * 150 * (crop * crop + 3 * pixels), 2 * grid[0] * grid[1] * dim * 150)
                     + pixels * (r["decode_pixel_s"] + 4 * r["count_pixel_s"]))
    out.append(_row(f"whole-image scoring, 3 heads: {n_val} images, canvas {crop}, labels {label_hw[0]}x{label_hw[1]}",
                    t, model))
    out += _probe_rows(r, cpu, full, repeats, fit_logistic)
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


def _probe_rows(r: dict, cpu: Callable[[float, float], float], full: bool, repeats: int, fit: Callable) -> list[str]:
    """The ImageNet probe's fits at small size: L-BFGS (its objective evaluations counted) and minibatch Adam."""
    n, d, c = (8000, 128, 100) if full else (4000, 64, 100)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g)
    evals = []

    def lbfgs() -> None:
        from vitreg.measure import estimators

        calls = [0]
        inner = estimators.F.cross_entropy

        def counted(*a, **k):
            calls[0] += 1
            return inner(*a, **k)

        estimators.F.cross_entropy = counted
        try:
            fit(x, y, l2=1e-4, max_iter=20, device="cpu")
        finally:
            estimators.F.cross_entropy = inner
        evals.append(calls[0])

    t = best_of(lbfgs, repeats)
    per_sample = cpu(32 * c, 4 * d * c)
    out = [_row(f"L-BFGS probe: n {n}, d {d}, {c} classes, max_iter 20 ({evals[-1]} evaluations)", t,
                evals[-1] * n * per_sample),
           f"  {'':<58} (upper bound max_eval {int(20 * 1.25)}: {int(20 * 1.25) * n * per_sample * 1e3:.1f} ms)"]
    bs, epochs = 256, 2
    t = best_of(lambda: fit(x, y, l2=1e-4, batch_size=bs, epochs=epochs, device="cpu"), repeats)
    model = epochs * n * (per_sample + cpu(8 * d, 0)) + epochs * -(-n // bs) * r["step_s"]
    out.append(_row(f"minibatch probe: n {n}, d {d}, {c} classes, batch {bs}, {epochs} epochs", t, model))
    return out


def header() -> str:
    """Device, torch version, load average and threads of this run."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, load average {load:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="larger problems, more repeats")
    args = parser.parse_args()
    print(header())
    for rows in (heads_rows,):
        print("\n".join(rows(args.full)))


if __name__ == "__main__":
    main()
