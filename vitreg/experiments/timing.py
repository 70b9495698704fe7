"""How long the real run takes on one H100-class GPU, per notebook: the one source of the README's table
"Run time (estimate)" and of the table ``vitreg run --profile real`` prints before it starts.

Paper: all findings (issue 13: the whole run timed; goal: under one hour on one H100-class GPU).

An ESTIMATE from per-image costs, not a measurement (no GPU was lent where this was written): each notebook's
real-profile work is a list of :class:`Work` rows (model, resolution, images forwarded), and

* GPU time = forward FLOPs (:data:`GFLOP`, counted per image with ``torch.utils.flop_counter`` on the meta
  device: ``benchmarks/bench_scale.py``'s ``flops_per_image``) / (:data:`PEAK_FLOPS` x :data:`SHARE`), the
  dense bf16 peak of an H100 SXM times the share a ViT forward reaches under bf16 autocast (assumed; the
  benchmark measures it on a GPU, target >= 50% for ViT-L/g at 518 px);
* host time = images decoded and resized x :data:`DECODE_S` (per image on one core, measured here on a
  500x375 JPEG) / :data:`WORKERS` (the data loader's processes); the two overlap, so a row costs the larger;
* fixed time = kernel start + model loading (:data:`KERNEL_S`, :data:`LOAD_S` per model) + what the notebook
  does besides forwards, where known (:attr:`Estimate.other_s`; "not estimated" otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: The goal of the whole real run (issue 13), seconds.
GOAL_S = 3600.0
#: Dense bf16 tensor-core peak of an H100 SXM, FLOP/s (vendor data sheet).
PEAK_FLOPS = 989e12
#: Share of that peak a ViT forward reaches under bf16 autocast: ASSUMED (benchmarks/bench_scale.py measures it).
SHARE = 0.4
#: Decode + resize + normalise of one 500x375 JPEG on one CPU core, seconds: `vitreg.core.images.preprocess` (PIL
#: decode, PIL bicubic resize, float conversion) to 224 px took 11.9 ms per image, best of 3 x 32 images, on the
#: 2-core machine this was written on at load average 1.6 (26.5 ms to 518 px); 24 ms under a load of 10+.
DECODE_S = 0.012
#: Data-loader worker processes decoding in parallel (vitreg.core.device.loader_workers on a 16-core GPU node).
WORKERS = 8
#: Jupyter kernel start and imports, seconds per notebook; reading one model's weights and moving them to the GPU.
KERNEL_S, LOAD_S = 10.0, 20.0

#: Forward GFLOP per image, counted with torch's FlopCounter (2 per multiply-add) on the meta device.
GFLOP: dict[tuple[str, int], float] = {
    ("dinov2_s", 224): 12.2, ("dinov2_s", 518): 93.4, ("dinov2_b", 518): 303.1, ("dinov2_l", 224): 162.0,
    ("dinov2_l", 448): 723.6, ("dinov2_l", 518): 1013.6, ("dinov2_l", 556): 1150.0, ("dinov2_l", 686): 2020.8,
    ("dinov2_g", 224): 598.8, ("dinov2_g", 518): 3566.7, ("dino_b16", 224): 35.1, ("dino_s16", 448): 45.2,
    ("deit3_b16", 224): 35.1, ("deit3_b16", 448): 157.0, ("clip_b16_laion", 224): 35.1,
    ("clip_b16_laion", 448): 157.0, ("mae_l16", 224): 123.1,
}


@dataclass(frozen=True)
class Work:
    """``images`` forwards of ``model`` at ``px`` (the FLOP key; NYUd's 476x630 frames count as 556 px)."""

    model: str
    px: int
    images: int
    what: str = ""

    @property
    def flops(self) -> float:
        return GFLOP[(self.model, self.px)] * 1e9 * self.images


@dataclass(frozen=True)
class Estimate:
    """One notebook's real-profile work and what it does besides forwards (``other_s``; None: not estimated)."""

    work: tuple[Work, ...]
    models: int
    other_s: float | None = 0.0
    note: str = ""
    restricted: tuple[Work, ...] = field(default=())  # rows whose data needs a registration (ImageNet-1k)

    def gpu_s(self, rows: tuple[Work, ...] | None = None) -> float:
        return sum(w.flops for w in (self.work if rows is None else rows)) / (PEAK_FLOPS * SHARE)

    def host_s(self, rows: tuple[Work, ...] | None = None) -> float:
        return sum(w.images for w in (self.work if rows is None else rows)) * DECODE_S / WORKERS

    def total_s(self, *, free_only: bool = False) -> float:
        rows = tuple(w for w in self.work if not (free_only and w in self.restricted))
        return max(self.gpu_s(rows), self.host_s(rows)) + KERNEL_S + LOAD_S * self.models + (self.other_s or 0.0)


def _w(model: str, px: int, images: int, what: str = "") -> Work:
    return Work(model, px, images, what)


_G06 = 437_800 - 60_000  # 14 Table 1 datasets, each capped at 50k train + 10k test (summed), less ImageNet-1k
_IN06 = (_w("dinov2_g", 224, 60_000, "ImageNet-1k"), _w("dinov2_l", 224, 60_000, "ImageNet-1k"),
         _w("dinov2_l", 224, 60_000, "ImageNet-1k +reg"))
_IN09 = _w("dinov2_l", 224, 1_331_167, "ImageNet-1k"), _w("dinov2_l", 224, 1_331_167, "ImageNet-1k +reg")

#: The real profile's work per notebook (the notebooks' default parameters).
REAL: dict[str, Estimate] = {
    "00_tour": Estimate((_w("dinov2_l", 518, 8),), 1),
    "01_attention_artifacts": Estimate(tuple(_w(m, px, 256) for m, px in (
        ("dino_b16", 224), ("dinov2_l", 518), ("dinov2_g", 518), ("deit3_b16", 224), ("clip_b16_laion", 224),
        ("mae_l16", 224))), 6),
    "02_high_norm_tokens": Estimate((_w("dinov2_g", 518, 272), _w("dino_b16", 224, 256)), 2, 30.0,
                                    "bootstrap 1,000x"),
    "03_emergence": Estimate(tuple(_w(m, 518, 256) for m in ("dinov2_s", "dinov2_b", "dinov2_l", "dinov2_g")), 4),
    "04_redundant_patches": Estimate((_w("dinov2_g", 518, 256),), 1),
    "05_local_information": Estimate((_w("dinov2_g", 224, 300), _w("dinov2_l", 224, 600)), 3, 180.0,
                                     "position and pixel probes"),
    "06_global_information": Estimate((_w("dinov2_g", 224, _G06), _w("dinov2_l", 224, 60_000 * 4), *_IN06), 3, None,
                                      "probe fitting not estimated", restricted=_IN06),
    "07_registers": Estimate(tuple(_w(m, 518, 256) for m in ("dinov2_s", "dinov2_s", "dinov2_b", "dinov2_b",
                                                                  "dinov2_l", "dinov2_l", "dinov2_g", "dinov2_g")), 8),
    "08_lost": Estimate(tuple(_w(m, 448, 36_368) for m in ("dinov2_l", "dinov2_l", "deit3_b16", "clip_b16_laion",
                                                            "dino_s16")), 5, None, "[TTR] sweep not estimated"),
    "09_downstream": Estimate((*_IN09, *(_w("dinov2_l", 518, 20_210) for _ in range(2)),
                               *(_w("dinov2_l", 686, 2_000) for _ in range(2)),
                               *(_w("dinov2_l", 556, 8_654) for _ in range(2))), 2, None,
                              "heads (3 seeds x 20 epochs) and ImageNet L-BFGS not estimated", restricted=_IN09),
    "10_test_time_registers": Estimate((_w("dinov2_l", 224, 712), _w("clip_b16_laion", 224, 356)), 2),
    "11_beyond_the_paper": Estimate((_w("dinov2_l", 224, 1_024), _w("dinov2_l", 224, 40_000)), 2, 60.0),
}


def _t(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def rows(names: list[str] | None = None) -> list[dict]:
    """One dict per notebook of ``names`` (default: all of :data:`REAL`): compute, decode, total, note."""
    out = []
    for name in names if names is not None else list(REAL):
        e = REAL.get(name)
        if e is None:
            out.append({"notebook": name, "pflop": 0.0, "gpu_s": 0.0, "host_s": 0.0, "total_s": 0.0,
                        "images": 0, "note": "no estimate"})
            continue
        out.append({"notebook": name, "pflop": sum(w.flops for w in e.work) / 1e15, "gpu_s": e.gpu_s(),
                    "host_s": e.host_s(), "total_s": e.total_s(), "free_total_s": e.total_s(free_only=True),
                    "images": sum(w.images for w in e.work), "note": e.note})
    return out


def dominant(table: list[dict]) -> str:
    """What dominates the total: the largest notebook, and whether its decoding or its GPU compute bounds it."""
    top = max(table, key=lambda r: r["total_s"])
    share = top["total_s"] / max(1e-9, sum(r["total_s"] for r in table))
    bound = "decoding images on the CPU" if top["host_s"] > top["gpu_s"] else "GPU compute"
    return f"{top['notebook']} ({share:.0%} of the total, bound by {bound})"


def render(names: list[str] | None = None, *, markdown: bool = False) -> str:
    """The per-notebook table with the total against :data:`GOAL_S` and what dominates it."""
    table = rows(names)
    total, free = sum(r["total_s"] for r in table), sum(r.get("free_total_s", r["total_s"]) for r in table)
    head = ("notebook", "images", "forward PFLOP", "GPU compute", "decoding", "expected total", "not included")
    body = [(r["notebook"], f"{r['images']:,}", f"{r['pflop']:.2f}", _t(r["gpu_s"]), _t(r["host_s"]),
             _t(r["total_s"]), r["note"]) for r in table]
    verdict = "within" if total <= GOAL_S else "over"
    foot = (f"total {_t(total)}: {verdict} the one-hour goal on one H100-class GPU ({total / GOAL_S:.1f}x); without the "
            f"ImageNet-1k parts (registration needed) {_t(free)}; dominated by {dominant(table)}. Estimate: "
            f"{SHARE:.0%} of {PEAK_FLOPS / 1e12:.0f} TFLOP/s bf16 assumed, {DECODE_S * 1e3:.0f} ms per image decoded "
            f"on one core, {WORKERS} loader workers.")
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(f"`{c}`" if i == 0 else c for i, c in enumerate(r)) + " |" for r in body]
        return "\n".join(lines + ["", foot])
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i in (0, 6) else str(c).rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return "\n".join([fmt(head), *map(fmt, body), foot])


def totals(table: list[Mapping]) -> float:
    """Sum of the rows' expected totals, seconds."""
    return float(sum(r["total_s"] for r in table))
