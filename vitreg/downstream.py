"""Downstream linear probes on frozen features: ImageNet-1k classification, ADE20k segmentation, NYUd depth.

Paper: Table 2 (F8; IN1k linear top-1 / ADE20k mIoU / NYUd RMSE, DINOv2-L 84.3/46.6/0.378 -> +reg
84.8/47.9/0.366; [TTR] targets for the PUBLIC DINOv2-L pair 86.4/48.3/0.388 -> 86.7/49.1/0.382).
Used in notebook 09.

We follow the DINOv2 linear protocol (Oquab et al. 2023, and the heads in facebookresearch/dinov2
``eval/segmentation`` and ``eval/depth``) as far as it is documented, on features computed ONCE and
cached (``vitreg.cache``), which is what makes it affordable. What is the same:

* Segmentation ("lin."): final-LayerNorm patch tokens of the last block -> BatchNorm -> 1x1 conv to the
  150 ADE20k classes (label 0 "other" ignored, ``reduce_zero_label``) -> logits bilinearly upsampled to
  the label map; cross-entropy; AdamW (lr 1e-3, weight decay 1e-4: our reading of the published mmseg
  configs, which are not in the DINOv2 repository), linear warm-up then poly decay.
  mIoU accumulated over the whole validation set (intersection and union per class, mean over classes
  that occur), as mmsegmentation does.
* Depth ("lin. 1"): final-LayerNorm patch tokens with the [CLS] token concatenated to each, upsampled x4
  (bilinear), a 1x1 conv to 256 depth bins uniform in [min_depth, max_depth] (1e-3 to 10 m for NYUd),
  AdaBins' linear normalisation (``relu + 0.1``, divided by the sum), depth = sum of bin centres weighted;
  trained with the scale-invariant log loss (SigLoss, 0.15 weight on the mean term); no BatchNorm (the
  public DINOv2 depth head has it commented out). RMSE per image over valid pixels (gt in
  (min_depth, max_depth]) inside the Eigen crop, averaged over images.
* ImageNet: a linear classifier on [CLS], on the mean patch token, and on both concatenated (DINOv2's
  ``avgpool`` option), 224 px with DINOv2's resize-256/centre-crop-224 evaluation transform.

What differs (recorded in the notebook's results; the reason our numbers may differ from [TTR]'s):

* no data augmentation (DINOv2 trains its heads on random resized crops, flips and photometric
  distortions; cached features allow none), a fixed input size (ADE20k: shorter side resized and centre
  square cropped at ``image_size``, DINOv2: 512 crops and sliding-window inference; NYUd: the whole
  image resized to a patch multiple, DINOv2: 416x544 random crops), and the label maps resized (nearest)
  to ``label_size`` instead of scoring at the original resolution;
* far fewer training iterations and, by default, a training SUBSET (a parameter of the notebook);
* ImageNet: logistic regression (L-BFGS or Adam, L2 chosen on a held-out split of the training subset,
  ``vitreg.probes``), not DINOv2's SGD grid over learning rates and last-4-block concatenations;
* depth: the gradient loss that some DINOv2 configs add is not used; no test-time flip.

Datasets (root ``$VITREG_DATA``, default ``<repo>/data/datasets``; a missing one raises
:class:`vitreg.data.DatasetUnavailable`, which the notebook turns into a skipped line):

* ImageNet-1k: ``imagenet1k/train/<wnid>/*.JPEG`` and ``imagenet1k/val/<wnid>/*.JPEG`` (``vitreg.data``).
* ADE20k (SceneParsing, ADEChallengeData2016): ``ade20k/ADEChallengeData2016/images/{training,validation}/*.jpg``
  and ``.../annotations/{training,validation}/*.png`` (or the same two folders directly under ``ade20k/``).
* NYU-Depth v2 in the BTS layout used by DINOv2: ``nyud/<split>/**/rgb_XXXXX.jpg`` beside
  ``sync_depth_XXXXX.png`` (16-bit PNG, millimetres); split folders ``train`` (or ``sync``) and ``test``
  (or ``official_splits/test``).

For smoke runs and tests: :class:`SyntheticDenseDataset` (images whose tiles carry a planted class and a
planted depth) and :func:`planted_segmentation` / :func:`planted_depth` (features with a planted relation
to the targets, and a noise control whose features ignore them).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vitreg.data import DatasetUnavailable, data_root
from vitreg.device import pick_device

IGNORE_INDEX = 255
ADE20K_CLASSES = 150
#: NYU-Depth v2 evaluation: depth range (m) and the Eigen crop as fractions of the 480x640 frame.
NYUD_MIN_DEPTH, NYUD_MAX_DEPTH = 1e-3, 10.0
EIGEN_CROP = (45 / 480, 471 / 480, 41 / 640, 601 / 640)
_IMAGE_EXT = (".jpg", ".jpeg", ".png")


# ---------------------------------------------------------------------------------------------------
# Datasets: pairs of (image, dense target)
# ---------------------------------------------------------------------------------------------------
def ade20k_pairs(split: Literal["train", "val"] = "train", *, root: str | os.PathLike | None = None,
                 data_dir: str | os.PathLike | None = None) -> list[tuple[Path, Path]]:
    """``(image, annotation)`` paths of one ADE20k split.

    Paper: Table 2 (ADE20k linear segmentation, 150 classes).

    Args:
        split: ``"train"`` or ``"val"``.
        root: the ADE20k folder itself (default ``<data_dir>/ade20k``).
        data_dir: the datasets folder (default ``$VITREG_DATA`` or ``data/datasets``).

    Raises:
        DatasetUnavailable: the folders are missing (the message gives the expected layout).
    """
    base = Path(root).expanduser() if root is not None else data_root(data_dir) / "ade20k"
    if (base / "ADEChallengeData2016").is_dir():
        base = base / "ADEChallengeData2016"
    sub = {"train": "training", "val": "validation"}[split]
    img_dir, ann_dir = base / "images" / sub, base / "annotations" / sub
    if not img_dir.is_dir() or not ann_dir.is_dir():
        raise DatasetUnavailable("ade20k", f"no {img_dir} and {ann_dir}; unpack ADEChallengeData2016 under "
                                           f"$VITREG_DATA/ade20k (images/ and annotations/ with training/ and "
                                           f"validation/)")
    pairs = [(p, ann_dir / f"{p.stem}.png") for p in sorted(img_dir.iterdir()) if p.suffix.lower() in _IMAGE_EXT]
    pairs = [(i, a) for i, a in pairs if a.exists()]
    if not pairs:
        raise DatasetUnavailable("ade20k", f"no image with a matching annotation PNG in {img_dir}")
    return pairs


def nyud_pairs(split: Literal["train", "test"] = "test", *, root: str | os.PathLike | None = None,
               data_dir: str | os.PathLike | None = None) -> list[tuple[Path, Path]]:
    """``(rgb, depth)`` paths of one NYU-Depth v2 split (BTS layout: ``rgb_*.jpg`` + ``sync_depth_*.png``).

    Paper: Table 2 (NYUd linear depth, RMSE in metres).

    Args:
        split: ``"train"`` or ``"test"``.
        root: the NYUd folder itself (default ``<data_dir>/nyud``).
        data_dir: the datasets folder (default ``$VITREG_DATA`` or ``data/datasets``).

    Raises:
        DatasetUnavailable: the folders are missing (the message gives the expected layout).
    """
    base = Path(root).expanduser() if root is not None else data_root(data_dir) / "nyud"
    candidates = {"train": ["train", "sync"], "test": ["test", "official_splits/test"]}[split]
    folder = next((base / c for c in candidates if (base / c).is_dir()), None)
    if folder is None:
        raise DatasetUnavailable("nyud", f"none of {[str(base / c) for c in candidates]} exists; put the BTS-style "
                                         f"NYU-Depth v2 split there (rgb_XXXXX.jpg beside sync_depth_XXXXX.png)")
    pairs = []
    for rgb in sorted(folder.rglob("rgb_*")):
        depth = rgb.with_name("sync_depth_" + rgb.stem[len("rgb_"):] + ".png")
        if rgb.suffix.lower() in _IMAGE_EXT and depth.exists():
            pairs.append((rgb, depth))
    if not pairs:
        raise DatasetUnavailable("nyud", f"no rgb_*.jpg with a sync_depth_*.png beside it under {folder}")
    return pairs


def subset(items: Sequence[Any], n: int | None, *, seed: int = 0) -> list[Any]:
    """``n`` items drawn at random (all when ``n`` is None or too large), in their original order."""
    if n is None or n >= len(items):
        return list(items)
    idx = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return [items[i] for i in idx.tolist()]


def read_ade20k_label(path: str | os.PathLike) -> np.ndarray:
    """ADE20k annotation -> ``(H, W)`` uint8 class map 0..149, ``255`` where the label was 0 ("other")."""
    from PIL import Image

    lab = np.asarray(Image.open(path), dtype=np.int64)
    return np.where(lab == 0, IGNORE_INDEX, lab - 1).astype(np.uint8)


def read_nyud_depth(path: str | os.PathLike) -> np.ndarray:
    """NYUd BTS depth PNG (uint16, millimetres) -> ``(H, W)`` float32 metres (0 = no measurement)."""
    from PIL import Image

    return np.asarray(Image.open(path), dtype=np.float32) / 1000.0


def resize_crop_target(target: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (nearest) and centre-crop a dense target exactly as ``vitreg.images.preprocess`` does the image.

    The shorter side is scaled to cover ``size`` and the centre is cropped, so pixels stay aligned with
    the model's input. Nearest neighbour keeps class ids and never mixes a missing depth (0) in.
    """
    h, w = size
    scale = max(h / target.shape[0], w / target.shape[1])
    nh, nw = max(h, round(target.shape[0] * scale)), max(w, round(target.shape[1] * scale))
    rows = np.minimum((np.arange(nh) + 0.5) * target.shape[0] / nh, target.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(nw) + 0.5) * target.shape[1] / nw, target.shape[1] - 1).astype(int)
    top, left = (nh - h) // 2, (nw - w) // 2
    return target[rows[top:top + h]][:, cols[left:left + w]]


class DenseDataset(torch.utils.data.Dataset):
    """``(RGB PIL image, target array)`` pairs read from disk.

    Args:
        pairs: ``(image path, target path)``.
        read_target: e.g. :func:`read_ade20k_label` or :func:`read_nyud_depth`.
        name: dataset name (for results and cache keys).
    """

    def __init__(self, pairs: Sequence[tuple[Path, Path]], read_target: Callable[[Path], np.ndarray], name: str) -> None:
        self.pairs, self.read_target, self.name = list(pairs), read_target, name

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Any, np.ndarray]:
        from PIL import Image

        img, tgt = self.pairs[i]
        return Image.open(img).convert("RGB"), self.read_target(tgt)


class SyntheticDenseDataset(torch.utils.data.Dataset):
    """Images whose square tiles carry a planted class (its colour) and a planted depth (its brightness).

    For smoke runs: a linear head on patch tokens has something to learn even from a random ViT, since
    colour and brightness survive a random patch embedding linearly. Class ``c`` colours a tile with
    ``palette[c]``; the depth ``d`` in [1, 9] m sets its brightness. Tiles are ``tile`` pixels wide
    (use a multiple of the patch size). Targets are ``{"seg": (H, W) uint8, "depth": (H, W) float32}``.

    Args:
        n: number of images.
        image_size: side in pixels.
        tile: tile side in pixels.
        n_classes: number of classes (at most 8).
        seed: images are a function of ``seed`` and their index.
        name: a name for results and cache keys.
    """

    PALETTE = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, .5, 0], [.5, 0, 1]],
                       dtype=np.float32)

    def __init__(self, n: int = 32, image_size: int = 112, tile: int = 28, n_classes: int = 4, seed: int = 0,
                 name: str = "synthetic_dense") -> None:
        if image_size % tile or not 1 < n_classes <= len(self.PALETTE):
            raise ValueError(f"need image_size % tile == 0 and 2 <= n_classes <= {len(self.PALETTE)}")
        self.n, self.image_size, self.tile, self.n_classes, self.seed, self.name = n, image_size, tile, n_classes, seed, name

    def __len__(self) -> int:
        return self.n

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image float HxWx3 in [0, 1], seg uint8 HxW, depth float32 HxW)`` of item ``i``."""
        rng = np.random.default_rng([self.seed, i])
        g = self.image_size // self.tile
        cls = rng.integers(0, self.n_classes, size=(g, g))
        depth = rng.uniform(1.0, 9.0, size=(g, g)).astype(np.float32)
        up = np.ones((self.tile, self.tile), dtype=np.float32)
        seg = np.kron(cls, up).astype(np.uint8)
        dmap = np.kron(depth, up).astype(np.float32)
        bright = 1.0 - 0.8 * (dmap - 1.0) / 8.0  # near = bright
        img = self.PALETTE[seg] * (0.25 + 0.75 * bright[..., None])
        img = np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1)
        return img.astype(np.float32), seg, dmap

    def __getitem__(self, i: int) -> tuple[Any, dict[str, np.ndarray]]:
        from PIL import Image

        if not 0 <= i < self.n:
            raise IndexError(i)
        img, seg, depth = self.sample(i)
        return Image.fromarray((img * 255).round().astype(np.uint8)), {"seg": seg, "depth": depth}


# ---------------------------------------------------------------------------------------------------
# Frozen features
# ---------------------------------------------------------------------------------------------------
def dense_features(loaded: Any, images: Sequence[Any], *, batch_size: int = 8, progress: bool = False,
                   dtype: torch.dtype = torch.float16, keep_patch: bool = True) -> dict[str, torch.Tensor]:
    """Final-LayerNorm features of the last block: patch grid and [CLS].

    Paper: Table 2 (DINOv2's linear heads read ``x_norm_patchtokens`` and ``x_norm_clstoken``).

    Args:
        loaded: a :class:`vitreg.weights.LoadedModel`.
        images: PIL images (any size: resized and centre-cropped to the model's input size).
        batch_size: images per forward pass.
        progress: tqdm bar.
        dtype: storage dtype (float16 halves the cache).
        keep_patch: False drops the patch grid (image classification needs only [CLS] and the mean).

    Returns:
        ``{"patch": (B, h, w, D), "cls": (B, D), "patch_mean": (B, D)}``; ``cls`` is zeros for a model
        without a class token.
    """
    from vitreg.extract import extract

    rec = extract(loaded, list(images), batch_size=batch_size, progress=progress, final_norm=True)
    parts = loaded.layout.split(rec.final_norm.float())
    patch = loaded.layout.to_grid(parts.patch)
    cls = parts.cls if parts.cls is not None else torch.zeros(patch.shape[0], patch.shape[-1])
    out = {"cls": cls.to(dtype), "patch_mean": parts.patch.mean(1).to(dtype)}
    if keep_patch:
        out["patch"] = patch.to(dtype)
    return out


def dinov2_eval_crop(image: Any, fraction: float = 224 / 256) -> Any:
    """The central square holding ``fraction`` of the shorter side (DINOv2's resize-256 / crop-224).

    Paper: Table 2 (ImageNet linear evaluation transform). ``vitreg.images.preprocess`` then resizes it
    to the model's input size.
    """
    w, h = image.size
    side = fraction * min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    return image.crop((round(left), round(top), round(left + side), round(top + side)))


def cached_task_features(loaded: Any, dataset: Any, indices: Sequence[int], *, dataset_name: str, split: str,
                         target: Literal["seg", "depth", "seg+depth", "label"], label_size: tuple[int, int] | None = None,
                         batch_size: int = 8, cache: bool = True, cache_root: str | os.PathLike | None = None,
                         chunk_size: int = 256, progress: bool = True, **key_extra: Any) -> dict[str, torch.Tensor]:
    """Frozen features of ``dataset[indices]`` and their targets, through the feature cache.

    Paper: Table 2 (all three probes read frozen features; extraction is the slow part).

    Args:
        loaded: the model.
        dataset: items ``(PIL image, target)``; a dict target is indexed by ``target``.
        indices: which items.
        dataset_name, split: for the cache key.
        target: ``"seg"`` / ``"depth"`` / ``"seg+depth"`` (dense targets resized like the image to
            ``label_size``; a dict target is indexed by each name) or
            ``"label"`` (an int class; only [CLS] and the mean patch are kept, after DINOv2's eval crop).
        label_size: ``(H, W)`` of the stored dense targets.
        batch_size: images per forward pass.
        cache: use the on-disk cache (``vitreg.cache``); False computes in memory.
        cache_root: cache folder (default ``$VITREG_CACHE`` or ``data/cache``).
        chunk_size: images per cache chunk.
        progress: tqdm bars.
        **key_extra: anything else that changes the features or targets (subset seed, ...).

    Returns:
        ``{"cls", "patch_mean", ["patch"], "labels" | "depth"}`` tensors over the selected items.
    """
    from vitreg.cache import cached_features, feature_key, model_fields

    indices = [int(i) for i in indices]
    dense = target in ("seg", "depth", "seg+depth")
    if dense and label_size is None:
        raise ValueError("dense targets need label_size=(H, W)")

    def compute(start: int, stop: int) -> dict[str, torch.Tensor]:
        items = [dataset[i] for i in indices[start:stop]]
        imgs = [im if dense else dinov2_eval_crop(im) for im, _ in items]
        pick = lambda t, name: t[name] if isinstance(t, dict) else t  # noqa: E731
        out = dense_features(loaded, imgs, batch_size=batch_size, keep_patch=dense)
        if "seg" in target:
            out["labels"] = targets_at([pick(t, "seg") for _, t in items], label_size, torch.uint8)
        if "depth" in target:
            out["depth"] = targets_at([pick(t, "depth") for _, t in items], label_size, torch.float32)
        if target == "label":
            out["labels"] = torch.tensor([int(t) for _, t in items], dtype=torch.long)
        return out

    key = feature_key(**model_fields(loaded), dataset=dataset_name, split=split, layer="final_norm", target=target,
                      label_size=None if label_size is None else list(label_size), n_items=len(indices),
                      indices_hash=hash_indices(indices), **key_extra)
    return cached_features(key, len(indices), compute, chunk_size=chunk_size, root=cache_root, enabled=cache,
                           progress=progress)


def hash_indices(indices: Sequence[Any]) -> str:
    """A short stable hash of a list of indices or file names (part of a cache key)."""
    import hashlib

    return hashlib.sha256(",".join(map(str, indices)).encode()).hexdigest()[:16]


def targets_at(targets: Sequence[np.ndarray], size: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """Stack dense targets resized/cropped like the images (:func:`resize_crop_target`) to ``size``."""
    return torch.stack([torch.from_numpy(np.ascontiguousarray(resize_crop_target(t, size))).to(dtype)
                        for t in targets])


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
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs, desc="head", unit="epoch")
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
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        head = LinearSegmentationHead(patch.shape[-1], n_classes).to(dev)
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
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        head = LinearDepthHead(patch.shape[-1], n_bins=n_bins, min_depth=min_depth, max_depth=max_depth,
                               concat_cls=concat_cls).to(dev)
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
    inter, area_p, area_t = (torch.zeros(n_classes, dtype=torch.float64) for _ in range(3))
    correct = total = 0
    for i in range(0, len(pred), 64):  # in chunks: 2,000 label maps of 518x518 are 0.5 G pixels
        p, t = pred[i:i + 64].reshape(-1).long(), labels[i:i + 64].reshape(-1).long()
        keep = t != ignore_index
        p, t = p[keep], t[keep]
        if ((p < 0) | (p >= n_classes) | (t < 0) | (t >= n_classes)).any():
            raise ValueError(f"class ids must lie in [0, {n_classes}) (or be {ignore_index} in labels)")
        inter += torch.bincount(t[p == t], minlength=n_classes).double()
        area_p += torch.bincount(p, minlength=n_classes).double()
        area_t += torch.bincount(t, minlength=n_classes).double()
        correct, total = correct + int((p == t).sum()), total + len(t)
    union = area_p + area_t - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(union, float("nan")))
    valid = ~torch.isnan(iou)
    return {
        "miou": float(iou[valid].mean() * 100) if valid.any() else float("nan"),
        "pixel_accuracy": correct / total * 100 if total else float("nan"),
        "iou": [None if math.isnan(v) else round(float(v) * 100, 3) for v in iou.tolist()],
    }


def chance_miou(labels: torch.Tensor, n_classes: int, *, ignore_index: int = IGNORE_INDEX) -> float:
    """mIoU (%) of always predicting the most frequent class: the floor a head must beat."""
    counts = sum(torch.bincount(labels[i:i + 64].reshape(-1).long(), minlength=max(n_classes, ignore_index + 1))
                 for i in range(0, len(labels), 64))
    major = int(counts[:n_classes].argmax())
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


# ---------------------------------------------------------------------------------------------------
# Whole probes (train on one split, score on another)
# ---------------------------------------------------------------------------------------------------
def segmentation_probe(train: Mapping[str, torch.Tensor], test: Mapping[str, torch.Tensor], n_classes: int, *,
                       cfg: TrainConfig | None = None, progress: bool = False) -> dict:
    """Train a linear segmentation head on ``train`` and score mIoU on ``test``.

    Paper: Table 2 (ADE20k mIoU: DINOv2-L 46.6 -> 47.9 with registers; [TTR] public pair 48.3 -> 49.1).

    Args:
        train, test: ``{"patch": (N, h, w, D), "labels": (N, H, W)}``.
        n_classes: number of classes.
        cfg: training settings.
        progress: tqdm bar.

    Returns:
        ``{"miou", "pixel_accuracy", "chance_miou", "iou", "train_loss": [...]}`` (percentages).
    """
    head = train_segmentation_head(train["patch"], train["labels"], n_classes, cfg=cfg, progress=progress)
    pred = predict_segmentation(head, test["patch"], tuple(test["labels"].shape[-2:]))
    out = mean_iou(pred, test["labels"], n_classes)
    out["chance_miou"] = chance_miou(test["labels"], n_classes)
    out["train_loss"] = [round(v, 4) for v in head.losses]  # type: ignore[attr-defined]
    return out


def depth_probe(train: Mapping[str, torch.Tensor], test: Mapping[str, torch.Tensor], *,
                min_depth: float = NYUD_MIN_DEPTH, max_depth: float = NYUD_MAX_DEPTH,
                crop: tuple[float, float, float, float] | None = None, concat_cls: bool = True,
                cfg: TrainConfig | None = None, progress: bool = False) -> dict:
    """Train a linear depth head on ``train`` and score RMSE on ``test``.

    Paper: Table 2 (NYUd RMSE: DINOv2-L 0.378 -> 0.366 with registers; [TTR] public pair 0.388 -> 0.382).

    Args:
        train, test: ``{"patch": (N, h, w, D), "cls": (N, D), "depth": (N, H, W)}``.
        min_depth, max_depth: depth range (m).
        crop: evaluation crop (NYUd: :data:`EIGEN_CROP`).
        concat_cls: concatenate [CLS] (DINOv2 "lin. 1").
        cfg: training settings.
        progress: tqdm bar.

    Returns:
        ``{"rmse", "abs_rel", "delta1", "n_images", "constant_rmse", "train_loss": [...]}``.
    """
    head = train_depth_head(train["patch"], train.get("cls"), train["depth"], min_depth=min_depth,
                            max_depth=max_depth, concat_cls=concat_cls, cfg=cfg, progress=progress)
    size = tuple(test["depth"].shape[-2:])
    pred = predict_depth(head, test["patch"], test.get("cls"), size)
    out = depth_metrics(pred, test["depth"], min_depth=min_depth, max_depth=max_depth, crop=crop)
    out["constant_rmse"] = constant_depth_rmse(train["depth"], test["depth"], min_depth=min_depth,
                                               max_depth=max_depth, crop=crop)
    out["train_loss"] = [round(v, 4) for v in head.losses]  # type: ignore[attr-defined]
    return out


CLASSIFICATION_VARIANTS = ("cls", "patch_mean", "cls+patch_mean")


def classification_probe(train: Mapping[str, torch.Tensor], test: Mapping[str, torch.Tensor], *,
                         variants: Sequence[str] = CLASSIFICATION_VARIANTS, seed: int = 0,
                         **fit_kwargs: Any) -> dict:
    """Linear classification of images from [CLS], the mean patch token, or both concatenated.

    Paper: Table 2 (ImageNet-1k linear top-1: DINOv2-L 84.3 -> 84.8; [TTR] public pair 86.4 -> 86.7).
    Logistic regression from ``vitreg.probes`` (L2 chosen on a held-out part of the training set).

    Args:
        train, test: ``{"cls": (N, D), "patch_mean": (N, D), "labels": (N,)}``.
        variants: feature sets to try (``cls``, ``patch_mean``, ``cls+patch_mean``).
        seed: seed of the validation split.
        **fit_kwargs: passed to :func:`vitreg.probes.fit_logistic_cv` (e.g. ``batch_size`` for big sets).

    Returns:
        ``{variant: {"top1": %, "l2": chosen}, "chance_top1": %}``.
    """
    from vitreg.probes import accuracy, fit_logistic_cv

    def feats(d: Mapping[str, torch.Tensor], v: str) -> torch.Tensor:
        if v not in CLASSIFICATION_VARIANTS:
            raise ValueError(f"unknown variant {v!r}; use one of {CLASSIFICATION_VARIANTS}")
        return torch.cat([d[k].float() for k in v.split("+")], dim=1)

    out: dict[str, Any] = {}
    for v in variants:
        sel = fit_logistic_cv(feats(train, v), train["labels"], seed=seed, **fit_kwargs)
        out[v] = {"top1": accuracy(sel.classifier, feats(test, v), test["labels"]), "l2": sel.l2}
    counts = torch.bincount(test["labels"].long())
    out["chance_top1"] = float(counts.max() / counts.sum() * 100)
    return out


# ---------------------------------------------------------------------------------------------------
# Planted ground truth (tests and smoke checks)
# ---------------------------------------------------------------------------------------------------
def _cell_maps(gen: torch.Generator, n: int, grid: tuple[int, int], n_values: int) -> torch.Tensor:
    """Random piecewise-constant class maps: blocks of 2x2 cells share a class."""
    h, w = grid
    coarse = torch.randint(0, n_values, (n, (h + 1) // 2, (w + 1) // 2), generator=gen)
    return coarse.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, :h, :w]


def planted_segmentation(n_train: int, n_test: int, *, grid: tuple[int, int] = (8, 8), dim: int = 32,
                         n_classes: int = 5, upsample: int = 4, noise: float = 0.5, planted: bool = True,
                         seed: int = 0) -> tuple[dict, dict]:
    """Patch tokens whose class is planted: token = prototype of its cell's class + noise.

    Train and test share the prototypes (the relation) but not the images. With ``planted=False`` the
    tokens come from an independent class map (the noise control: the labels cannot be read from them).

    Returns:
        ``(train, test)``, each ``{"patch": (n, h, w, dim), "labels": (n, h*upsample, w*upsample) uint8}``.
    """
    gen = torch.Generator().manual_seed(seed)
    protos = torch.randn(n_classes, dim, generator=gen)

    def make(n: int) -> dict:
        labels = _cell_maps(gen, n, grid, n_classes)
        source = labels if planted else _cell_maps(gen, n, grid, n_classes)
        patch = protos[source] + noise * torch.randn(n, *grid, dim, generator=gen)
        up = labels.repeat_interleave(upsample, 1).repeat_interleave(upsample, 2).to(torch.uint8)
        return {"patch": patch, "labels": up}

    return make(n_train), make(n_test)


def planted_depth(n_train: int, n_test: int, *, grid: tuple[int, int] = (8, 8), dim: int = 32, upsample: int = 4,
                  depth_range: tuple[float, float] = (1.0, 9.0), noise: float = 0.3, planted: bool = True,
                  seed: int = 0) -> tuple[dict, dict]:
    """Patch tokens that encode their cell's depth along a planted direction (+ noise).

    ``token = 3 * (depth - mid) / half_range * u + noise``, ``u`` a random unit direction shared by train
    and test. With ``planted=False`` the tokens encode an independent depth map (the noise control).

    Returns:
        ``(train, test)``, each ``{"patch": (n, h, w, dim), "cls": (n, dim), "depth": (n, h*upsample, w*upsample)}``.
    """
    gen = torch.Generator().manual_seed(seed)
    lo, hi = depth_range
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    u = torch.randn(dim, generator=gen)
    u = u / u.norm()

    def depth_map(n: int) -> torch.Tensor:
        return lo + (hi - lo) * _cell_maps(gen, n, grid, 16).float() / 15.0

    def make(n: int) -> dict:
        depth = depth_map(n)
        source = depth if planted else depth_map(n)
        patch = ((source - mid) / half)[..., None] * u * 3.0 + noise * torch.randn(n, *grid, dim, generator=gen)
        up = depth.repeat_interleave(upsample, 1).repeat_interleave(upsample, 2)
        return {"patch": patch, "cls": noise * torch.randn(n, dim, generator=gen), "depth": up}

    return make(n_train), make(n_test)
