"""How long the real run takes on one H100-class GPU, per notebook: the one source of the README's table
"Run time (estimate)" and of the table ``vitreg run --profile real`` prints before it starts.

Paper: all findings (goal: the whole run under one hour on one H100-class GPU).

An ESTIMATE from per-image costs, not a measurement: each notebook's work is its experiment's
``work(p)`` at the real defaults (:mod:`vitreg.experiments`: :class:`~vitreg.experiments.base.Work` rows of
model, resolution and images forwarded), and

* GPU time = forward FLOPs (:data:`GFLOP`, counted per image with ``torch.utils.flop_counter`` on the meta
  device by :func:`count_gflop`, for any pair missing from the table too) / (:data:`PEAK_FLOPS` x :data:`SHARE`),
  the dense bf16 peak of an H100 SXM times the share a ViT forward reaches under bf16 autocast (assumed; the
  benchmark ``benchmarks/bench_scale.py`` measures it on a GPU, target >= 50% for ViT-L/g at 518 px);
* host time = images decoded and resized x :func:`decode_s` (per image on one core, measured on 500x375 JPEGs
  to 224 and 518 px: a fixed decoding cost plus a cost per output pixel) / :data:`WORKERS` (the data loader's
  processes); the two overlap, so a notebook costs the larger;
* fixed time = kernel start (:data:`vitreg.experiments.costs.KERNEL_S`, measured) + each load of the experiment's ``model_loads(p)`` (a model
  loaded again, at another resolution or by a later step, is charged again)
  (:func:`vitreg.experiments.costs.load_s`: its Python build, its checkpoint's bytes read from disk and copied to
  the GPU) + what the notebook does besides forwards: the experiment's ``costs(p)``
  (:class:`~vitreg.experiments.costs.Cost` rows, each estimated by a cost model of :mod:`vitreg.experiments.costs`
  whose scaling it states; a row that is not estimated is named in the table).
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from vitreg.experiments import catalog, costs
from vitreg.experiments.base import Experiment, Work

#: The goal of the whole real run, seconds.
GOAL_S = 3600.0
#: Dense bf16 tensor-core peak of an H100 SXM, FLOP/s (vendor data sheet).
PEAK_FLOPS = 989e12
#: Share of that peak a ViT forward reaches under bf16 autocast: ASSUMED (benchmarks/bench_scale.py measures it).
SHARE = 0.4
#: Decode + resize + normalise of one 500x375 JPEG on one CPU core, seconds, as ``a + b * px**2``: measured with
#: ``benchmarks/bench_images.py --full`` (:func:`vitreg.core.images.preprocess`: PIL decode, torch's 8-bit resize,
#: float conversion; 64 JPEGs, best of 7, one thread of a 2-core AMD EPYC at load average 1.2): 3.15 ms to 224 px
#: and 7.71 ms to 518 px; the two points give the fixed decoding cost ``a`` and the cost per output pixel ``b``.
DECODE_A_S, DECODE_B_S = 2.10e-3, 2.09e-8
#: Data-loader worker processes decoding in parallel (vitreg.core.device.loader_workers on a 16-core GPU node).
WORKERS = 8

#: Forward GFLOP per image, counted with torch's FlopCounter (2 per multiply-add) on the meta device (:func:`count_gflop`;
#: a test keeps every pair of the real work here).
GFLOP: dict[tuple[str, int], float] = {
    ("dinov2_s", 224): 12.2, ("dinov2_s", 518): 93.4, ("dinov2_b", 518): 303.1, ("dinov2_l", 224): 162.0,
    ("dinov2_l", 448): 723.6, ("dinov2_l", 518): 1013.6, ("dinov2_l", 556): 1150.0, ("dinov2_l", 686): 2020.8,
    ("dinov2_g", 224): 598.8, ("dinov2_g", 518): 3566.7, ("dino_b16", 224): 35.1, ("dino_s16", 448): 45.2,
    ("deit3_b16", 224): 35.1, ("deit3_b16", 448): 157.0, ("clip_b16_laion", 224): 35.1,
    ("clip_b16_laion", 448): 157.0, ("mae_l16", 224): 123.1, ("dinov2_s_reg", 518): 93.8,
    ("dinov2_b_reg", 518): 304.2, ("dinov2_l_reg", 224): 164.6, ("dinov2_l_reg", 448): 726.8,
    ("dinov2_l_reg", 518): 1017.1, ("dinov2_l_reg", 686): 2025.1, ("dinov2_l", 548): 1148.8,
    ("dinov2_l_reg", 548): 1152.4, ("dinov2_g_reg", 518): 3578.4, ("dinov3_l", 256): 164.7, ("mae_b16", 224): 35.1,
    ("vit_base_patch16_siglip_224.webli", 224): 34.9, ("dinov2_l", 436): 673.2, ("dinov2_l", 562): 1220.9,
    ("dinov2_l_reg", 436): 676.3, ("dinov2_l_reg", 562): 1224.5, ("deit3_b16", 443): 157.0, ("deit3_b16", 554): 265.1,
    ("clip_b16_laion", 443): 157.0, ("clip_b16_laion", 554): 265.1, ("dino_s16", 443): 45.2, ("dino_s16", 554): 80.5,
}


#: Rows whose data needs a registration (ImageNet-1k): the table also gives the total without them.
RESTRICTED = ("imagenet1k",)


@functools.lru_cache(maxsize=None)
def count_gflop(model: str, px: int) -> float:
    """Forward GFLOP of one ``px`` x ``px`` image through ``model`` (2 per multiply-add), counted with
    ``torch.utils.flop_counter`` on the meta device (nothing is allocated; ``px`` is rounded to a multiple of the
    patch size, as the model would be loaded)."""
    import timm
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vitreg.core.models import get_spec

    spec = get_spec(model)
    size = max(spec.patch_size, round(px / spec.patch_size) * spec.patch_size)
    with torch.device("meta"):
        net = timm.create_model(spec.full_name, pretrained=False, img_size=size, num_classes=0).eval()
        x = torch.empty(1, 3, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net.forward_features(x)
    return round(counter.get_total_flops() / 1e9, 1)


def gflop(model: str, px: int) -> float:
    """Forward GFLOP per image: :data:`GFLOP`'s entry, else counted (:func:`count_gflop`)."""
    return GFLOP.get((model, px)) or count_gflop(model, px)


def flops(rows: Iterable[Work]) -> float:
    """Forward FLOPs of ``rows``."""
    return sum(gflop(w.model, w.px) * 1e9 * w.images for w in rows)


def decode_s(px: int) -> float:
    """Seconds to decode, resize and normalise one image to ``px`` pixels on one CPU core (:data:`DECODE_A_S`)."""
    return DECODE_A_S + DECODE_B_S * px * px


def host_s(rows: Iterable[Work]) -> float:
    """Seconds of image preparation of ``rows`` on the data loader's :data:`WORKERS` processes."""
    return sum(w.images * decode_s(w.px) for w in rows) / WORKERS


def _total(rows: list[Work], models: list[str], other_s: float | None) -> float:
    gpu = flops(rows) / (PEAK_FLOPS * SHARE)
    return max(gpu, host_s(rows)) + costs.KERNEL_S + costs.loading_s(models) + (other_s or 0.0)


def _besides(rows: list[costs.Cost]) -> str:
    """The table's "besides forwards" cell: each cost with its seconds, or "not estimated"."""
    return "; ".join(f"{c.what}: {'not estimated' if c.seconds is None else _t(c.seconds)}" for c in rows)


def row(name: str, exp: Experiment | None = None, params: Mapping | None = None) -> dict:
    """One notebook's line of the table (at its real defaults, or ``params``): images, forward PFLOP, GPU compute, decoding,
    expected total (and without the :data:`RESTRICTED` rows), loading its models (``load_s``), the work besides
    forwards (``costs``: its rows).

    Args:
        name: the notebook.
        exp: its experiment (default: the catalog's).
        params: the parameters the run uses, by name (default: the real experiment's defaults).
    """
    exp = exp or catalog.experiment(name)
    p = exp.build(params)
    work, models, besides = exp.work(p), exp.model_loads(p), list(exp.costs(p))
    other = costs.total_s(besides)
    free_other = costs.total_s([c for c in besides if c.needs not in RESTRICTED])
    free = [w for w in work if w.needs not in RESTRICTED]
    return {"notebook": name, "pflop": flops(work) / 1e15, "gpu_s": flops(work) / (PEAK_FLOPS * SHARE),
            "host_s": host_s(work), "total_s": _total(work, models, other),
            "free_total_s": _total(free, models, free_other), "images": sum(w.images for w in work),
            "n_models": len(models), "load_s": costs.loading_s(models), "other_s": other or 0.0, "costs": besides,
            "note": _besides(besides)}


def rows(names: list[str] | None = None, params: Mapping[str, Mapping] | None = None) -> list[dict]:
    """One dict per notebook of ``names`` (default: every notebook of the catalog), as :func:`row`; ``params``:
    each notebook's parameters for this run (a notebook not in it: its defaults)."""
    return [row(name, params=(params or {}).get(name))
            for name in (names if names is not None else list(catalog.MODULES))]


def _t(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def dominant(table: list[dict]) -> str:
    """What dominates the total: the largest notebook, and whether its decoding or its GPU compute bounds it."""
    top = max(table, key=lambda r: r["total_s"])
    share = top["total_s"] / max(1e-9, sum(r["total_s"] for r in table))
    if top.get("other_s", 0.0) > max(top["host_s"], top["gpu_s"]):
        bound = "its work besides forwards"
    else:
        bound = "decoding images on the CPU" if top["host_s"] > top["gpu_s"] else "GPU compute"
    return f"{top['notebook']} ({share:.0%} of the total, bound by {bound})"


def render(names: list[str] | None = None, *, markdown: bool = False,
           params: Mapping[str, Mapping] | None = None) -> str:
    """The per-notebook table with the total against :data:`GOAL_S` and what dominates it (``params``: each
    notebook's parameters for this run, as :func:`rows`)."""
    table = rows(names, params)
    total, free = sum(r["total_s"] for r in table), sum(r.get("free_total_s", r["total_s"]) for r in table)
    head = ("notebook", "images", "forward PFLOP", "GPU compute", "decoding", "expected total", "besides forwards")
    body = [(r["notebook"], f"{r['images']:,}", f"{r['pflop']:.2f}", _t(r["gpu_s"]), _t(r["host_s"]),
             _t(r["total_s"]), r["note"]) for r in table]
    verdict = "within" if total <= GOAL_S else "over"
    whole = names is None or set(names) >= set(catalog.MODULES)
    against = (f"{verdict} the one-hour goal on one H100-class GPU" if whole else
               f"for the {len(table)} notebook(s) selected, on one H100-class GPU (the one-hour goal is for the whole run)")
    foot = (f"total {_t(total)}: {against} (an H100 SXM's rates; a PCIe card is slower) ({total / GOAL_S:.1f}x the "
            f"hour); without the "
            f"ImageNet-1k parts (registration needed) {_t(free)}; dominated by {dominant(table)}. Estimate: "
            f"{SHARE:.0%} of {PEAK_FLOPS / 1e12:.0f} TFLOP/s bf16 assumed, {decode_s(224) * 1e3:.1f} ms per image decoded to "
            f"224 px on one core ({decode_s(518) * 1e3:.1f} ms to 518), {WORKERS} loader workers; "
            f"{sum(r.get('n_models', 0) for r in table)} model loads, {_t(sum(r.get('load_s', 0.0) for r in table))}: "
            f"{costs.loading_rule()}.")
    left = [f"{r['notebook'][:2]} {c.what}" for r in table for c in costs.unestimated(r.get("costs", ()))]
    if left:
        foot += f" Not estimated, so left out of the total: {'; '.join(left)}."
    how = [f"- `{r['notebook']}`, {c.what}: {c.scaling}" for r in table for c in r.get("costs", ()) if c.scaling]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(f"`{c}`" if i == 0 else c for i, c in enumerate(r)) + " |" for r in body]
        rates = ["", "The rates the cost models divide by (`vitreg/experiments/costs.py`):", "",
                 *[f"- {r}" for r in costs.named_rates()]]
        return "\n".join(lines + ["", foot] + (["", "How the work besides forwards is estimated:", "", *how] if how else [])
                         + rates)
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i in (0, 6) else str(c).rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return "\n".join([fmt(head), *map(fmt, body), foot] + (["how the work besides forwards is estimated:", *how] if how else []))


def totals(table: list[Mapping]) -> float:
    """Sum of the rows' expected totals, seconds."""
    return float(sum(r["total_s"] for r in table))


def rates_from_benchmark(measured: Mapping) -> dict[str, float]:
    """The table's rates that ``benchmarks/bench_gpu.py --json`` measured, by constant name (a rate it did not measure
    is left out): the forward's share of the bf16 peak (median over its rows), the fp32 and memory shares, the
    host-to-GPU, disk and first-touch rates (median over its files), and the kernel start.

    Paper: all findings (the real run's cost, re-estimated with a GPU's own figures)."""
    if measured.get("dry_run"):
        raise ValueError("these figures come from a dry run (toy sizes): run `make benchmark-gpu` on the GPU without "
                         "--dry-run and pass its --json file")
    out: dict[str, float] = {}
    shares = [r["share_of_peak"] for r in (measured.get("forward") or {}).values() if r.get("share_of_peak")]
    if shares:
        out["SHARE"] = statistics.median(shares)
    if measured.get("fp32_matmul_flops"):
        out["FP32_SHARE"] = measured["fp32_matmul_flops"] / costs.FP32_FLOPS
    if measured.get("hbm_copy_bytes_s"):
        out["HBM_SHARE"] = measured["hbm_copy_bytes_s"] / costs.HBM_BYTES_S
    for key, name in (("h2d_bytes_s", "PCIE_BYTES_S"), ("host_touch_bytes_s", "HOST_TOUCH_BYTES_S"),
                      ("kernel_start_s", "KERNEL_S")):
        if measured.get(key):
            out[name] = float(measured[key])
    if reads := [v for v in (measured.get("disk_read_bytes_s") or {}).values() if v]:
        out["DISK_BYTES_S"] = statistics.median(reads)
    return out


#: The rates ``benchmarks/bench_gpu.py`` measures and :func:`measured_rates` may replace (each read when a cost is
#: computed, never bound earlier): the forward share here, the rest in :mod:`vitreg.experiments.costs`.
MEASURED_RATES = ("SHARE", "FP32_SHARE", "HBM_SHARE", "PCIE_BYTES_S", "HOST_TOUCH_BYTES_S", "DISK_BYTES_S", "KERNEL_S")


@contextmanager
def measured_rates(rates: Mapping[str, float]) -> Iterator[None]:
    """Estimate with ``rates`` (constant name -> value, :func:`rates_from_benchmark`) in place of the assumed ones
    while the block runs; the assumed values are restored on exit."""
    unknown = [k for k in rates if k not in MEASURED_RATES]
    if unknown:
        raise KeyError(f"not a rate the GPU benchmark measures: {', '.join(unknown)} (known: {', '.join(MEASURED_RATES)})")
    targets = [(globals() if k == "SHARE" else vars(costs), k) for k in rates]
    before = [(space, k, space[k]) for space, k in targets]
    try:
        for space, k in targets:
            space[k] = float(rates[k])
        yield
    finally:
        for space, k, value in before:
            space[k] = value
