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
#: Host -> GPU copy rate of pageable host memory, bytes/s: ASSUMED (PCIe Gen5 x16 peaks at 64 GB/s; a pageable
#: copy is staged through a pinned buffer and reaches a fraction of it).
H2D_BYTES_S = 10e9
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


@functools.lru_cache(maxsize=None)
def token_width(model: str) -> int:
    """Width ``D`` of ``model``'s tokens, read from its timm definition on the meta device (nothing allocated)."""
    import timm
    import torch

    from vitreg.core.models import get_spec

    with torch.device("meta"):
        return int(timm.create_model(get_spec(model).full_name, pretrained=False, num_classes=0).num_features)


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
    gather at :data:`CPU_GATHER_BYTES_S` and copy at :data:`H2D_BYTES_S` (a loop that reads its loss back every
    step serialises the two); per optimizer step :data:`HEAD_STEP_S`.

    Paper: Table 2 (ADE20k and NYUd linear heads, ``seeds x epochs`` passes over the cached features)."""
    per_image = gpu_bytes_s(step_bytes) + gpu_matmul_s(step_flop)
    if feed_bytes:
        per_image += feed_bytes / CPU_GATHER_BYTES_S + feed_bytes / 2 / H2D_BYTES_S
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


def logistic_probe_s(*, n: int, d: int, c: int, fits: float, max_iter: int = 200, batch_size: int | None = None,
                     epochs: int = 50) -> float:
    """Seconds on one GPU of ``fits`` logistic-regression fits on ``n x d`` features and ``c`` classes
    (:func:`vitreg.measure.estimators.fit_logistic`): full-batch L-BFGS up to its ``max_eval = 1.25 max_iter``
    objective evaluations (an upper bound), or ``epochs`` minibatch passes of ``batch_size``.

    Paper: Table 2 (ImageNet-1k linear). A stand-in with the signature of the linear-probe section's model
    (the two are one function once both exist): per sample and evaluation, the forward matmul and the weight
    gradient (4 d c FLOPs) and 8 float32 passes over the ``c`` logits; per minibatch step :data:`HEAD_STEP_S`.
    """
    per_sample = gpu_matmul_s(4 * d * c) + gpu_bytes_s(32 * c)
    if batch_size is None:
        return fits * int(max_iter * 1.25) * n * per_sample
    steps = epochs * -(-n // batch_size)
    return fits * (epochs * n * (per_sample + gpu_bytes_s(8 * d)) + steps * HEAD_STEP_S)


# ---------------------------------------------------------------------------------------------------
# LOST sweeps and bootstraps (02, 08, 10)
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# Loading models
# ---------------------------------------------------------------------------------------------------
