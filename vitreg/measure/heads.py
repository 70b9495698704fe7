"""Linear heads for dense tasks on frozen features: segmentation and depth, their training and metrics.

Paper: Table 2 (ADE20k "lin." segmentation, NYUd "lin. 1" depth; DINOv2's ``BNHead``s). Used by
:mod:`vitreg.measure.downstream` (notebook 09). See :mod:`vitreg.measure.downstream` for the protocol and what differs
from DINOv2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vitreg.data.dense import IGNORE_INDEX, NYUD_MAX_DEPTH, NYUD_MIN_DEPTH
from vitreg.core.device import pick_device

# ---------------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------------
class LinearSegmentationHead(nn.Module):
    """DINOv2's linear segmentation head: BatchNorm then a 1x1 conv over patch tokens.

    Paper: Table 2 (ADE20k "linear"; DINOv2 ``BNHead``).

    Args:
        dim: token width.
        n_classes: number of classes.
    """

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)  # = BatchNorm2d over (B, D, h, w): statistics over images and positions
        self.linear = nn.Linear(dim, n_classes)  # = a 1x1 conv

    def forward(self, patch: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """``(B, h, w, D)`` tokens -> ``(B, C, H, W)`` logits (bilinear to ``size``, else ``(h, w)``)."""
        b, h, w, d = patch.shape
        logits = self.linear(self.bn(patch.float().reshape(-1, d))).reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False) if size else logits


class LinearDepthHead(nn.Module):
    """DINOv2's linear depth head ("lin. 1"): [CLS] concatenated to every patch token, x4 upsampling,
    a 1x1 conv to ``n_bins`` uniform depth bins, AdaBins' linear normalisation.

    Paper: Table 2 (NYUd linear; DINOv2 depth ``BNHead``, classify=True, 256 bins, "UD", "linear").

    Args:
        dim: token width (the input is ``2 * dim`` wide with ``concat_cls``).
        n_bins: depth bins.
        min_depth, max_depth: range of the bins (metres).
        concat_cls: concatenate the [CLS] token to every patch token.
        upsample: token upsampling factor before the prediction.
    """

    def __init__(self, dim: int, *, n_bins: int = 256, min_depth: float = NYUD_MIN_DEPTH,
                 max_depth: float = NYUD_MAX_DEPTH, concat_cls: bool = True, upsample: int = 4) -> None:
        super().__init__()
        self.concat_cls, self.upsample = concat_cls, upsample
        self.linear = nn.Linear(dim * (2 if concat_cls else 1), n_bins)  # = a 1x1 conv
        self.register_buffer("bins", torch.linspace(min_depth, max_depth, n_bins))

    def forward(self, patch: torch.Tensor, cls: torch.Tensor | None = None,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        """``(B, h, w, D)`` tokens (+ ``(B, D)`` [CLS]) -> ``(B, H, W)`` depth in metres.

        The 1x1 conv and bilinear upsampling are both linear, so the logits are upsampled instead of the
        (wider) tokens: the same result for less memory.
        """
        x = patch.float()
        if self.concat_cls:
            if cls is None:
                raise ValueError("this depth head concatenates [CLS]: pass cls=(B, D)")
            x = torch.cat([x, cls.float()[:, None, None, :].expand_as(x)], dim=-1)
        logits = self.linear(x).permute(0, 3, 1, 2)
        if self.upsample > 1:
            logits = F.interpolate(logits, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        prob = torch.relu(logits) + 0.1
        prob = prob / prob.sum(1, keepdim=True)
        depth = torch.einsum("bkhw,k->bhw", prob, self.bins)
        if size is not None and tuple(depth.shape[-2:]) != tuple(size):
            depth = F.interpolate(depth[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        return depth


def sig_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Scale-invariant log loss (AdaBins / DINOv2 ``SigLoss``): ``sqrt(var(g) + 0.15 mean(g)^2)``, g = log ratio."""
    g = torch.log(pred[valid] + eps) - torch.log(gt[valid] + eps)
    if g.numel() < 2:
        return pred.sum() * 0.0
    return torch.sqrt(g.var() + 0.15 * g.mean() ** 2)


# ---------------------------------------------------------------------------------------------------
# Where the cached training features live
# ---------------------------------------------------------------------------------------------------
#: Share of the free device memory the features and a step's working memory may take together.
DEVICE_MARGIN = 0.9


def seg_working_bytes(batch_size: int, n_classes: int, label_hw: tuple[int, int]) -> float:
    """Device memory of one segmentation training step: about four float32 ``C x H x W`` tensors per image alive at
    once (upsampled logits, log-probabilities, their gradients)."""
    return 4 * batch_size * 4 * n_classes * label_hw[0] * label_hw[1]


def depth_working_bytes(batch_size: int, n_bins: int, grid_hw: tuple[int, int], upsample: int = 4) -> float:
    """Device memory of one depth training step: about eight float32 ``K x 4h x 4w`` tensors per image alive at
    once (the bin logits, probabilities and their gradients)."""
    return 8 * batch_size * 4 * n_bins * grid_hw[0] * upsample * grid_hw[1] * upsample


def fits_on_device(nbytes: float, working: float, free: float) -> bool:
    """Whether ``nbytes`` of features can stay on a device with ``free`` bytes while a step needs ``working``."""
    return nbytes + working <= DEVICE_MARGIN * free


def on_device(tensors: dict[str, torch.Tensor], device: str | torch.device, working: float) -> dict[str, torch.Tensor]:
    """``tensors`` moved to ``device`` once when they fit its free memory with ``working`` bytes to spare (every
    seed's head then reads them there, with no copy per step), else unchanged (fed from the host per batch).

    Paper: Table 2 (the dense heads train ``seeds x epochs`` passes over the cached features). The values are the
    same either way: only where they are read from changes.
    """
    dev = pick_device(device)
    if dev.type != "cuda":
        return dict(tensors)
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    if not fits_on_device(nbytes, working, torch.cuda.mem_get_info(dev)[0]):
        return dict(tensors)
    return {k: t.to(dev) for k, t in tensors.items()}


def majority_class(labels: torch.Tensor, n_classes: int, *, ignore_index: int = IGNORE_INDEX,
                   chunk: int = 64) -> int:
    """The most frequent class of ``(N, H, W)`` label maps, counted in chunks of ``chunk`` maps (uint8 maps are
    counted as they are, with no int64 copy): the chance floor's class (Paper: Table 2, ADE20k)."""
    size = max(n_classes, ignore_index + 1)
    as_int = lambda t: t if t.dtype == torch.uint8 else t.long()  # noqa: E731
    counts = sum(torch.bincount(as_int(labels[i:i + chunk].reshape(-1)), minlength=size).cpu()
                 for i in range(0, len(labels), chunk))
    return int(counts[:n_classes].argmax())


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """How a dense head is trained (DINOv2: AdamW lr 1e-3, wd 1e-4, warm-up then poly decay).

    Attributes:
        epochs: passes over the (cached) training features.
        batch_size: images per step.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_fraction: share of the steps with a linear warm-up.
        seed: seed of the batch order and of the head's initialisation.
        device: ``"auto"`` uses a GPU when present.
    """

    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    seed: int = 0
    device: str = "auto"


def _fit(head: nn.Module, n: int, loss_of: Callable[[torch.Tensor], torch.Tensor], cfg: TrainConfig,
         progress: bool) -> list[float]:
    """Minimise ``loss_of(batch indices)`` over ``n`` items with AdamW + warm-up + poly decay."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, cfg.epochs * math.ceil(n / cfg.batch_size))
    warm = max(1, int(cfg.warmup_fraction * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, 1.0 - s / steps))
    losses = []
    bar = None
    if progress:
        from vitreg.utils.progress import progress_bar

        bar = progress_bar(total=cfg.epochs, desc="head", unit="epoch")
    head.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        # drop a last batch of 1 (BatchNorm needs 2 samples)
        starts = [s for s in range(0, n, cfg.batch_size) if min(cfg.batch_size, n - s) > 1 or s == 0]
        for s in starts:
            loss = loss_of(perm[s:s + cfg.batch_size])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        losses.append(total / len(starts))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    if bar is not None:
        bar.close()
    head.eval()
    return losses


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` under ``seed``, in a forked RNG so the caller's random stream is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def train_segmentation_head(patch: torch.Tensor, labels: torch.Tensor, n_classes: int, *,
                            cfg: TrainConfig | None = None, progress: bool = False) -> LinearSegmentationHead:
    """Train :class:`LinearSegmentationHead` with cross-entropy (``255`` ignored) on cached tokens.

    Paper: Table 2 (ADE20k linear).

    Args:
        patch: ``(N, h, w, D)`` training tokens.
        labels: ``(N, H, W)`` class maps (long or uint8; ``255`` = ignore).
        n_classes: number of classes.
        cfg: training settings.
        progress: tqdm bar over epochs.
    """
    cfg = cfg or TrainConfig()
    dev = pick_device(cfg.device)
    _check_pairs(patch, labels)
    head = _seeded(cfg.seed, lambda: LinearSegmentationHead(patch.shape[-1], n_classes)).to(dev)
    size = tuple(labels.shape[-2:])

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        logits = head(patch[idx].to(dev), size=size)
        return F.cross_entropy(logits, labels[idx].to(dev).long(), ignore_index=IGNORE_INDEX)

    head.losses = _fit(head, len(patch), loss_of, cfg, progress)  # type: ignore[assignment]
    return head


def train_depth_head(patch: torch.Tensor, cls: torch.Tensor | None, depth: torch.Tensor, *,
                     min_depth: float = NYUD_MIN_DEPTH, max_depth: float = NYUD_MAX_DEPTH,
                     concat_cls: bool = True, n_bins: int = 256, cfg: TrainConfig | None = None,
                     progress: bool = False) -> LinearDepthHead:
    """Train :class:`LinearDepthHead` with the SigLoss on valid pixels (``min_depth < gt <= max_depth``).

    Paper: Table 2 (NYUd linear).

    Args:
        patch: ``(N, h, w, D)`` training tokens.
        cls: ``(N, D)`` [CLS] tokens (needed with ``concat_cls``).
        depth: ``(N, H, W)`` ground-truth depth in metres (0 = missing).
        min_depth, max_depth: bin range and valid range.
        concat_cls: concatenate [CLS] to the patch tokens (DINOv2 "lin. 1").
        n_bins: depth bins.
        cfg: training settings.
        progress: tqdm bar over epochs.
    """
    cfg = cfg or TrainConfig()
    dev = pick_device(cfg.device)
    _check_pairs(patch, depth)
    head = _seeded(cfg.seed, lambda: LinearDepthHead(patch.shape[-1], n_bins=n_bins, min_depth=min_depth,
                                                     max_depth=max_depth, concat_cls=concat_cls)).to(dev)
    size = tuple(depth.shape[-2:])

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        gt = depth[idx].to(dev).float()
        pred = head(patch[idx].to(dev), None if cls is None else cls[idx].to(dev), size=size)
        return sig_loss(pred, gt, (gt > min_depth) & (gt <= max_depth))

    head.losses = _fit(head, len(patch), loss_of, cfg, progress)  # type: ignore[assignment]
    return head


def _check_pairs(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 4 or y.ndim != 3 or len(x) != len(y):
        raise ValueError(f"expected tokens (N, h, w, D) and targets (N, H, W) with the same N, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) < 2:
        raise ValueError("need at least 2 training images (BatchNorm and the loss need a batch)")


# ---------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_segmentation(head: LinearSegmentationHead, patch: torch.Tensor, size: tuple[int, int], *,
                         batch_size: int = 16) -> torch.Tensor:
    """``(N, H, W)`` predicted classes (uint8 when they fit) for ``(N, h, w, D)`` tokens."""
    dev = next(head.parameters()).device
    out = [head(patch[i:i + batch_size].to(dev), size=size).argmax(1).cpu() for i in range(0, len(patch), batch_size)]
    pred = torch.cat(out)
    return pred.to(torch.uint8) if head.linear.out_features <= 255 else pred


@torch.no_grad()
def predict_depth(head: LinearDepthHead, patch: torch.Tensor, cls: torch.Tensor | None, size: tuple[int, int], *,
                  batch_size: int = 16) -> torch.Tensor:
    """``(N, H, W)`` predicted depth (metres)."""
    dev = next(head.parameters()).device
    out = [head(patch[i:i + batch_size].to(dev), None if cls is None else cls[i:i + batch_size].to(dev),
                size=size).cpu() for i in range(0, len(patch), batch_size)]
    return torch.cat(out)


def mean_iou(pred: torch.Tensor, labels: torch.Tensor, n_classes: int, *, ignore_index: int = IGNORE_INDEX) -> dict:
    """Dataset-level mIoU as mmsegmentation computes it.

    Paper: Table 2 (ADE20k mIoU).

    Intersections and unions are summed over all pixels of all images, per class; mIoU is the mean over
    the classes whose union is not empty.

    Returns:
        ``{"miou": %, "pixel_accuracy": %, "iou": [% or None per class]}``.
    """
    if pred.shape != labels.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and labels {tuple(labels.shape)} differ in shape")
    counts = IoUCounts(n_classes, ignore_index)
    for i in range(0, len(pred), 64):  # in chunks: 2,000 label maps of 518x518 are 0.5 G pixels
        counts.add(pred[i:i + 64], labels[i:i + 64])
    return counts.result()


class IoUCounts:
    """Per-class intersections and unions summed image by image, for label maps of DIFFERENT sizes.

    Paper: Table 2 (ADE20k mIoU on whole validation images at their original resolution; the same
    dataset-level mIoU as :func:`mean_iou`, which needs maps of one size).
    """

    def __init__(self, n_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.n_classes, self.ignore_index = n_classes, ignore_index
        self.inter, self.area_p, self.area_t = (torch.zeros(n_classes, dtype=torch.float64) for _ in range(3))
        self.correct = self.total = 0

    def add(self, pred: torch.Tensor, labels: torch.Tensor) -> None:
        """Count one prediction against its label map (same shape, any size)."""
        if pred.shape != labels.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and labels {tuple(labels.shape)} differ in shape")
        p, t = pred.reshape(-1).long(), labels.reshape(-1).long().to(pred.device)  # counted where pred lives
        keep = t != self.ignore_index
        p, t = p[keep], t[keep]
        n = self.n_classes
        if ((p < 0) | (p >= n) | (t < 0) | (t >= n)).any():
            raise ValueError(f"class ids must lie in [0, {n}) (or be {self.ignore_index} in labels)")
        self.inter += torch.bincount(t[p == t], minlength=n).cpu().double()
        self.area_p += torch.bincount(p, minlength=n).cpu().double()
        self.area_t += torch.bincount(t, minlength=n).cpu().double()
        self.correct, self.total = self.correct + int((p == t).sum()), self.total + len(t)

    def result(self) -> dict:
        """``{"miou": %, "pixel_accuracy": %, "iou": [% or None per class]}`` (mean over classes that occur)."""
        union = self.area_p + self.area_t - self.inter
        iou = torch.where(union > 0, self.inter / union.clamp_min(1), torch.full_like(union, float("nan")))
        valid = ~torch.isnan(iou)
        return {
            "miou": float(iou[valid].mean() * 100) if valid.any() else float("nan"),
            "pixel_accuracy": self.correct / self.total * 100 if self.total else float("nan"),
            "iou": [None if math.isnan(v) else round(float(v) * 100, 3) for v in iou.tolist()],
        }


@torch.no_grad()
def score_whole_images(head: LinearSegmentationHead, patch: torch.Tensor, label_of: Callable[[int], Any],
                       canvas: int, n_classes: int, *, majority: int | None = None,
                       device: str = "auto") -> dict:
    """mIoU of ``head`` on whole images fed resize-and-pad, scored at each label map's ORIGINAL resolution.

    Paper: Table 2 (ADE20k mIoU). Image ``i`` was resized (aspect kept) so its longer side is ``canvas``
    and padded at the bottom/right (:func:`vitreg.data.dense.fit_in_canvas`); its logits are upsampled to
    the canvas, the padding is cut off, and the rest is upsampled (bilinear) to the label map's own size.
    One head of :func:`score_heads`.

    Args:
        head: a trained head.
        patch: ``(N, g, g, D)`` tokens of the padded canvases.
        label_of: ``label_of(i)`` -> ``(H, W)`` class map at its original resolution (255 = ignore).
        canvas: side of the square canvas the images were fed at.
        n_classes: number of classes.
        majority: also score "always this class" (the chance floor) when given.
        device: where the head runs.

    Returns:
        ``{"miou", "pixel_accuracy", "iou", "n_images"[, "chance_miou"]}``.
    """
    return score_heads([head], patch, label_of, canvas, n_classes, majority=majority, device=device)[0]


@torch.no_grad()
def score_heads(heads: Sequence[nn.Module], patch: torch.Tensor, label_of: Callable[[int], Any], canvas: int,
                n_classes: int, *, majority: int | None = None, device: str = "auto") -> list[dict]:
    """:func:`score_whole_images` of several heads (the seeds of one model) in ONE pass over the images: each
    label map is read, moved to the device and counted for the chance floor once, each image's tokens are
    moved once, and the heads' counts are taken on the device. The counts are integers, so every head's result
    equals its own :func:`score_whole_images`.

    Paper: Table 2 (ADE20k mIoU of each seed's head).
    """
    from vitreg.data.dense import fit_in_canvas

    dev = pick_device(device)
    heads = [h.to(dev).eval() for h in heads]
    counts, floor = [IoUCounts(n_classes) for _ in heads], IoUCounts(n_classes)
    for i in range(len(patch)):
        labels = torch.as_tensor(np.asarray(label_of(i))).to(dev)
        h, w = fit_in_canvas(tuple(labels.shape), canvas)
        tokens = patch[i:i + 1].to(dev)
        for head, count in zip(heads, counts):
            logits = head(tokens, size=(canvas, canvas))[:, :, :h, :w]
            logits = F.interpolate(logits, size=tuple(labels.shape), mode="bilinear", align_corners=False)
            count.add(logits.argmax(1)[0], labels)
        if majority is not None:
            floor.add(torch.full_like(labels, majority), labels)
    out = [{**c.result(), "n_images": len(patch)} for c in counts]
    if majority is not None:
        chance = floor.result()["miou"]
        out = [{**r, "chance_miou": chance} for r in out]
    return out


def chance_miou(labels: torch.Tensor, n_classes: int, *, ignore_index: int = IGNORE_INDEX) -> float:
    """mIoU (%) of always predicting the most frequent class: the floor a head must beat."""
    major = majority_class(labels, n_classes, ignore_index=ignore_index)
    return mean_iou(torch.full_like(labels, major), labels, n_classes, ignore_index=ignore_index)["miou"]


def crop_mask(size: tuple[int, int], crop: tuple[float, float, float, float] | None) -> torch.Tensor:
    """``(H, W)`` bool mask of an evaluation crop given as fractions ``(top, bottom, left, right)``."""
    mask = torch.zeros(size, dtype=torch.bool)
    if crop is None:
        mask[:] = True
        return mask
    h, w = size
    mask[int(round(crop[0] * h)):int(round(crop[1] * h)), int(round(crop[2] * w)):int(round(crop[3] * w))] = True
    return mask


def depth_metrics(pred: torch.Tensor, gt: torch.Tensor, *, min_depth: float = NYUD_MIN_DEPTH,
                  max_depth: float = NYUD_MAX_DEPTH,
                  crop: tuple[float, float, float, float] | None = None) -> dict:
    """Per-image depth errors averaged over images (the DINOv2 / depth-toolbox convention).

    Paper: Table 2 (NYUd RMSE, metres; lower is better).

    Args:
        pred: ``(N, H, W)`` predicted depth (clamped to the valid range first).
        gt: ``(N, H, W)`` ground truth (0 = missing).
        min_depth, max_depth: valid range of the ground truth.
        crop: evaluation crop as fractions (NYUd: :data:`EIGEN_CROP`), or None.

    Returns:
        ``{"rmse": m, "abs_rel": ratio, "delta1": % of pixels with max(p/g, g/p) < 1.25, "n_images": int}``.
    """
    pred = pred.float().clamp(min_depth, max_depth)
    gt = gt.float()
    region = crop_mask(tuple(gt.shape[-2:]), crop)
    rmse, rel, d1 = [], [], []
    for p, g in zip(pred, gt):
        valid = (g > min_depth) & (g <= max_depth) & region
        if not valid.any():
            continue
        pv, gv = p[valid], g[valid]
        rmse.append(float(torch.sqrt(((pv - gv) ** 2).mean())))
        rel.append(float(((pv - gv).abs() / gv).mean()))
        d1.append(float((torch.maximum(pv / gv, gv / pv) < 1.25).float().mean() * 100))
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    return {"rmse": mean(rmse), "abs_rel": mean(rel), "delta1": mean(d1), "n_images": len(rmse)}


def constant_depth_rmse(train_depth: torch.Tensor, test_depth: torch.Tensor, **kwargs: Any) -> float:
    """RMSE of predicting the mean training depth everywhere: the floor a depth head must beat."""
    valid = (train_depth > kwargs.get("min_depth", NYUD_MIN_DEPTH)) & (train_depth <= kwargs.get("max_depth", NYUD_MAX_DEPTH))
    const = torch.full_like(test_depth.float(), float(train_depth[valid].float().mean()))
    return depth_metrics(const, test_depth, **kwargs)["rmse"]


