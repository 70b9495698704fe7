"""Cost models of the work besides forwards, checked on the CPU at small size (vitreg.experiments.costs).

For each cost model: the constants it takes from this machine (measured here, best of N), the measured CPU time of a
small problem beside what the model predicts for that same problem on this CPU, and where it helps, the figure the
model then gives at the real size on the GPU.

    python benchmarks/bench_costs.py          # quick (well under a minute on 2 cores)
    python benchmarks/bench_costs.py --full   # larger problems, more repeats
"""

# one function per topic: def probes_rows(full: bool) -> list[str], def heads_rows(...), def sweeps_rows(...),
# def loading_rows(...); main() prints a header (device, torch version, load average, threads) then each.

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def best_s(fn: Callable[[], Any], repeat: int) -> float:
    """Best wall time of ``repeat`` calls of ``fn``, seconds (one warm-up call first)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


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


def header() -> str:
    """Device, torch version, load average and threads of this run."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, load average {load:.2f}")


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


def _lost_op_counts() -> tuple[int, int, int]:
    """Ops per setting (seed and score), per flood-fill step, and per flood fill + box extraction, counted."""
    from vitreg.measure.lost import mask_to_box, pixel_boxes, seed_component, seed_scores

    a = torch.randn(4, 12 * 14, 12 * 14)
    per_setting = count_ops(lambda: seed_scores(a - 0.1, k_patches=30))

    def line(n: int) -> int:
        mask = torch.zeros(1, 4, 40, dtype=torch.bool)
        mask[0, 0, :n] = True
        return count_ops(lambda: seed_component(mask, torch.tensor([0])))

    step = (line(20) - line(10)) // 10
    mask = torch.ones(4, 12, 14, dtype=torch.bool)
    fill = count_ops(lambda: pixel_boxes(mask_to_box(seed_component(mask, torch.zeros(4, dtype=torch.long))), 14.0,
                                         torch.full((4, 2), 500)))
    return per_setting, step, fill - (12 + 14 - 1) * step  # a whole-grid fill from a corner: h + w - 1 steps


def _cpu_rates(full: bool) -> tuple[float, float, float]:
    """This CPU's float32 batched-matmul FLOP/s, bytes/s of an elementwise pass, and seconds per tiny op."""
    r = 7 if full else 3
    x = torch.randn(8, 384, 256)
    flops = 2 * 8 * 384 * 384 * 256 / best_s(lambda: x @ x.transpose(1, 2), r)
    a = torch.randn(8, 768, 768)
    nbytes = (4 + 4 + 4 + 1 + 1) * a.numel() / best_s(lambda: ((a - 0.3) > 0).sum(-1), r)
    tiny = torch.ones(4)
    op_s = best_s(lambda: [tiny + 1 for _ in range(1000)], r) / 1000
    return flops, nbytes, op_s


def sweeps_rows(full: bool) -> list[str]:
    """LOST sweep scoring (08, 10), CorLoc, and the bootstrap intervals (02): measured vs modelled on this CPU."""
    from vitreg.core.tokens import TokenLayout
    from vitreg.data.boxes import corloc_hits
    from vitreg.experiments import costs
    from vitreg.measure import norms
    from vitreg.measure.lost import Setting, _score_batch, ttr_settings

    rows = ["## LOST sweeps and bootstraps (02, 08, 10)"]
    per_setting, step, fill = _lost_op_counts()
    rows.append(f"ops counted: {per_setting} per setting, {step} per flood-fill step, {fill} per flood fill + boxes "
                f"(costs.py: {costs.LOST_OPS_PER_SETTING}, {costs.LOST_OPS_PER_FILL_STEP}, {costs.LOST_OPS_PER_FILL})")
    flops, nbytes, op_s = _cpu_rates(full)
    rows.append(f"this CPU: {flops / 1e9:.1f} GFLOP/s fp32 bmm, {nbytes / 1e9:.2f} GB/s elementwise, "
                f"{op_s * 1e6:.1f} µs per tiny op")

    b, grid, d = (8, (27, 36), 256) if full else (4, (18, 24), 128)
    layout = TokenLayout(num_cls=1, num_reg=0, grid=grid)
    rec = _sweep_rec(b, grid, d, blocks=4)
    settings = [Setting("k"), *ttr_settings([round(-0.1 * i, 1) for i in range(11)])]
    scale, hw = torch.full((b, 2), 14.0, dtype=torch.float64), torch.full((b, 2), 500)
    kw = {"k_patches": 100, "scale": scale, "hw": hw}
    new = best_s(lambda: _score_batch(rec, layout, settings, **kw), 3 if full else 1)
    old = best_s(lambda: _old_score_batch(rec, layout, settings, **kw), 3 if full else 1)
    run = costs.LostRun(images=b, batches=1, grid=grid, width=d, groups=13, settings=len(settings))

    def cpu_model(r: costs.LostRun, stacked: bool) -> float:
        return (costs.lost_flop(r) / flops + costs.lost_bytes(r) / nbytes + costs.lost_ops(r, stacked=stacked) * op_s)

    rows.append(f"LOST sweep, {len(settings)} settings, {b} images of {grid[0]}x{grid[1]} patches, D={d}: measured "
                f"{new:.3f} s, model {cpu_model(run, True):.3f} s (one stacked flood fill); before: one fill per "
                f"setting {old:.3f} s, model {cpu_model(run, False):.3f} s")

    n_img = 20_000 if full else 5_000
    gen = np.random.default_rng(0)
    gts = [np.sort(gen.uniform(0, 500, (1 + i % 3, 2, 2)), axis=1).reshape(-1, 4)
           for i in range(n_img)]
    pred = np.sort(gen.uniform(0, 500, (n_img, 2, 2)), axis=1).reshape(-1, 4)
    t = best_s(lambda: corloc_hits(pred, gts), 5 if full else 3)
    rows.append(f"CorLoc of one setting on {n_img:,} images: measured {t:.4f} s, model "
                f"{costs.CORLOC_S_PER_IMAGE * n_img:.4f} s ({t / n_img * 1e6:.2f} µs per image)")

    for r_, b_, n_ in ((10, 8, 8), (4000, 512, 16), (10, 256, 16_384), (1000, 256, 1369)):
        mask = torch.rand(b_, n_, generator=torch.Generator().manual_seed(0)) < 0.02
        t = best_s(lambda: norms.outlier_fraction(mask, n_boot=r_, seed=0), 5)
        rows.append(f"bootstrap interval, {r_} resamples of {b_} images x {n_} tokens: measured {t * 1e3:.2f} ms, "
                    f"model {costs.bootstrap_s([(r_, b_, n_)]) * 1e3:.2f} ms")
    return rows


def main() -> None:
    """Print the header, then every topic's rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="larger problems, more repeats")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core: the machine is shared, and the CPU rows of the table run on one core
    print(header())
    for topic in (sweeps_rows,):
        for line in topic(args.full):
            print(line)


if __name__ == "__main__":
    main()
