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
from functools import lru_cache  # noqa: E402  (this section's own import, kept beside its use)

#: Seconds of one eager PyTorch op on the GPU node (Python dispatch + a CUDA kernel launch; the kernels of the
#: LOST steps other than the similarity and the per-setting passes over it are tiny, so a step costs its launch):
#: ASSUMED, a typical eager figure on an H100 node (``make benchmark-gpu`` does not measure it yet).
GPU_OP_S = 10e-6

#: Bytes moved per similarity entry and setting by LOST's per-setting passes (:func:`vitreg.measure.lost.seed_scores`
#: on ``a + bias``): read ``a`` and write ``a + bias`` (4 + 4), read it and write ``> 0`` (4 + 1), count (1); counted.
LOST_BYTES_PER_ENTRY = 14
#: Ops (kernel launches) of the sweep's scoring of one batch, counted with a ``TorchDispatchMode`` on the CPU by
#: ``benchmarks/bench_costs.py`` (12 x 14 patch grid, 4 images; independent of the sizes): per setting (bias add,
#: degree, sort, gathers, score), per flood-fill step (grow 4 ways, clip, compare), and per flood fill + box
#: extraction (run once per batch since the settings' masks are stacked; once per setting before).
LOST_OPS_PER_SETTING, LOST_OPS_PER_FILL_STEP, LOST_OPS_PER_FILL = 20, 23, 42
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
    """

    images: int
    batches: int
    grid: tuple[int, int]
    width: int
    groups: int
    settings: int


@lru_cache(maxsize=None)
def model_width(model: str) -> int:
    """Feature width D of ``model`` (timm's ``embed_dim``, read on the meta device: nothing is allocated)."""
    import timm
    import torch

    from vitreg.core.models import get_spec

    with torch.device("meta"):
        return int(timm.create_model(get_spec(model).full_name, pretrained=False, num_classes=0).embed_dim)


def lost_run(dataset: str, images: int, *, model: str, patch: int, batch_size: int, groups: int, settings: int,
             stretched_px: int | None = None, synthetic_hw: tuple[int, int] = (375, 500)) -> LostRun:
    """The :class:`LostRun` of ``images`` of ``dataset`` (padded protocol, or ``stretched_px`` squares)."""
    import math

    if stretched_px is not None:
        side = stretched_px // patch
        grid, sizes = (side, side), 1
    else:
        h, w = BOX_IMAGE_HW.get(dataset, synthetic_hw)
        grid, sizes = (math.ceil(h / patch), math.ceil(w / patch)), PADDED_SIZES.get(dataset, 1)
    batches = min(images, math.ceil(images / batch_size) + sizes - 1)  # one partial batch per size more
    return LostRun(images, batches, grid, model_width(model), groups, settings)


def lost_ops(run: LostRun, *, stacked: bool = True) -> float:
    """Ops (kernel launches) of the sweep's scoring, flood fill bounded by ``h + w`` steps (a component without
    detours; its true bound ``h * w`` is never approached). ``stacked``: one flood fill per batch (else one per
    setting, as before the settings' masks were stacked)."""
    h, w = run.grid
    fill = LOST_OPS_PER_FILL + (h + w) * LOST_OPS_PER_FILL_STEP
    return run.batches * run.settings * LOST_OPS_PER_SETTING + run.batches * fill * (1 if stacked else run.settings)


def lost_flop(run: LostRun) -> float:
    """FLOPs of the patch similarities ``F Fᵀ``: ``2 N² D`` per image and (features, block, normalize) group."""
    n = run.grid[0] * run.grid[1]
    return 2.0 * n * n * run.width * run.groups * run.images


def lost_bytes(run: LostRun) -> float:
    """Bytes the per-setting passes move: :data:`LOST_BYTES_PER_ENTRY` per similarity entry and setting."""
    n = run.grid[0] * run.grid[1]
    return float(LOST_BYTES_PER_ENTRY) * n * n * run.settings * run.images


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
                 "per image and (q/k/v, block) group 2 N² D similarity FLOPs at FP32_FLOPS x FP32_SHARE; per setting "
                 f"{LOST_BYTES_PER_ENTRY} bytes per similarity entry at HBM_BYTES_S x HBM_SHARE; per batch "
                 f"{LOST_OPS_PER_SETTING} ops per setting and one stacked flood fill of at most h + w steps "
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
