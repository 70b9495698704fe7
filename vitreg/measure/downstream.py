"""Downstream linear probes on frozen features: ImageNet-1k classification, ADE20k segmentation, NYUd depth.

Paper: Table 2 (F8; IN1k linear top-1 / ADE20k mIoU / NYUd RMSE, DINOv2-L 84.3/46.6/0.378 -> +reg
84.8/47.9/0.366; [TTR] targets for the PUBLIC DINOv2-L pair 86.4/48.3/0.388 -> 86.7/49.1/0.382).
Used in notebook 09.

We follow the DINOv2 linear protocol (Oquab et al. 2023; the heads of facebookresearch/dinov2
``eval/segmentation`` and ``eval/depth``) on features computed ONCE and cached (``vitreg.utils.cache``):

* Segmentation ("lin."): final-LayerNorm patch tokens -> BatchNorm -> 1x1 conv to the 150 ADE20k classes
  (label 0 ignored), logits bilinearly upsampled; cross-entropy; AdamW (lr 1e-3, wd 1e-4), warm-up then
  poly decay. Trained on ``ade20k_image_size`` crops (image and label moved together by one
  ``transforms.v2`` transform). Scored on WHOLE validation images at their labels' ORIGINAL resolution:
  each image is resized (aspect kept) to fit an ``ade20k_eval_size`` square and padded (resize-and-pad),
  the logits of the image region are upsampled to the label map. DINOv2 slides 512 px windows (stride
  341) over the image with its shorter side at 512; one padded canvas per image keeps the cached features
  one tensor, sees the whole image at once and, at 686 px, gives a 4:3 image a shorter side of ~514 px.
  mIoU over the whole validation set (per-class intersections and unions summed, as mmsegmentation).
* Depth ("lin. 1"): [CLS] concatenated to every patch token, x4 upsampling, 256 uniform bins in
  [1e-3, 10] m, AdaBins' linear normalisation, SigLoss (0.15); no BatchNorm. Test frames fed whole at
  ``nyud_image_size``, the depth upsampled to the original 480x640 frame, RMSE per image over valid pixels
  inside the Eigen crop, averaged over images.
* ImageNet: a linear classifier on [CLS], on the mean patch token, and on both (DINOv2's ``avgpool``),
  224 px after DINOv2's resize-256/centre-crop-224; L2-regularised logistic regression
  (``vitreg.measure.estimators``), not DINOv2's SGD grid: on a large training set Adam on minibatches for a
  stated number of epochs (DINOv2 trains 10 epochs of 1,024), full-batch L-BFGS on a small one.
* Seeds: each head is trained with ``seeds`` seeds on the same features; the register difference is
  taken per seed and reported as mean and std over seeds (:func:`register_gains`), since [TTR]'s effects
  (+0.3 / +0.8 / -0.006) are small. A training set smaller than the protocol's marks the task a PROXY
  (:func:`budget`).

What differs (recorded in the results): no augmentation (cached features), fewer head updates, the
resize-and-pad evaluation, logistic regression for ImageNet, NYUd on a subset by default (the 24k frames'
features need ~75 GB of host memory), no gradient loss and no test-time flip for depth.

The whole Table 2 run (settings, one call per task): :mod:`vitreg.experiments.table2`. Data:
:mod:`vitreg.data.dense`; features: :mod:`vitreg.measure.features`; heads: :mod:`vitreg.measure.heads`; planted ground
truth for tests: :mod:`vitreg.planting`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


import numpy as np
import torch

from vitreg.data.dense import NYUD_MAX_DEPTH, NYUD_MIN_DEPTH
from vitreg.core.device import pick_device
from vitreg.measure.estimators import accuracy, fit_logistic_cv, fit_logistic_cv_joint
from vitreg.measure.heads import (TrainConfig, chance_miou, constant_depth_rmse, depth_metrics, mean_iou,
                          predict_depth, predict_segmentation, train_depth_head, train_segmentation_head)


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
    Logistic regression from ``vitreg.measure.estimators`` (L2 chosen on a held-out part of the training set). In
    minibatch mode (``batch_size`` given) the variants are trained together by
    :func:`~vitreg.measure.estimators.fit_logistic_cv_joint` (one batch order and one optimizer step for all; each
    variant's probe is the one its own fit gives); full-batch L-BFGS fits each variant on its own. On a GPU the
    cached tokens are moved there once (:func:`classification_features_on`; a no-op when the caller moved them
    before its seeds) and the variants are built, gathered and scored there.

    Args:
        train, test: ``{"cls": (N, D), "patch_mean": (N, D), "labels": (N,)}``.
        variants: feature sets to try (``cls``, ``patch_mean``, ``cls+patch_mean``).
        seed: seed of the validation split.
        **fit_kwargs: passed to :func:`vitreg.measure.estimators.fit_logistic_cv` (e.g. ``batch_size`` for big sets).

    Returns:
        ``{variant: {"top1": %, "l2": chosen}, "chance_top1": %}``.
    """
    dev = pick_device(fit_kwargs.get("device", "auto"))
    train, test = classification_features_on(train, dev), classification_features_on(test, dev)

    def feats(d: Mapping[str, torch.Tensor], v: str) -> torch.Tensor:
        if v not in CLASSIFICATION_VARIANTS:
            raise ValueError(f"unknown variant {v!r}; use one of {CLASSIFICATION_VARIANTS}")
        if dev.type == "cpu":
            return torch.cat([d[k].float() for k in v.split("+")], dim=1)
        return _variant_on_device([d[k] for k in v.split("+")])

    out: dict[str, Any] = {}
    if fit_kwargs.get("batch_size") is not None:  # one minibatch run for every variant, each as if fitted alone
        fitted = fit_logistic_cv_joint([feats(train, v) for v in variants], train["labels"], seed=seed, **fit_kwargs)
    else:
        fitted = [fit_logistic_cv(feats(train, v), train["labels"], seed=seed, **fit_kwargs) for v in variants]
    for v, sel in zip(variants, fitted):
        out[v] = {"top1": accuracy(sel.classifier, feats(test, v), test["labels"]), "l2": sel.l2}
    counts = torch.bincount(test["labels"].long())
    out["chance_top1"] = float(counts.max() / counts.sum() * 100)
    return out


def classification_features_on(features: Mapping[str, torch.Tensor],
                               device: str | torch.device) -> dict[str, torch.Tensor]:
    """``features`` with its [CLS] and mean patch tokens on ``device`` when it is a GPU, in their cached dtype (the
    labels stay where they are); on the CPU the same mapping.

    Paper: Table 2 (ImageNet linear probe). Moving the float16 cache once per model, before its seeds, copies half
    the bytes of float32 variants, and :func:`classification_probe` then builds each seed's variants on the GPU.
    """
    dev = pick_device(device)
    if dev.type == "cpu":
        return dict(features)
    return {k: v.to(dev) if k in ("cls", "patch_mean") else v for k, v in features.items()}


def _variant_on_device(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """One variant's features from its cached parts on the GPU, in their common dtype (a float16 cache stays
    float16 until each fit converts its rows: exact), float32 when they differ; a single part is used as is."""
    if len(parts) == 1:
        return parts[0]
    if len({p.dtype for p in parts}) > 1:
        parts = [p.float() for p in parts]
    return torch.cat(list(parts), dim=1)




# ---------------------------------------------------------------------------------------------------
# Table 2 statistics: seeds, register gains, budgets (the run itself: vitreg.experiments.table2)
# ---------------------------------------------------------------------------------------------------
#: The headline metric(s) of each task: marked skipped for both models when the task does not run.
TASK_KEYS = {"imagenet": ["imagenet_top1"], "ade20k": ["ade20k_miou"], "nyud": ["nyud_rmse"]}
#: Table 2's three columns, and the sign of "better" (higher top-1 and mIoU, lower RMSE).
TABLE2_METRICS = {"imagenet_top1": 1, "ade20k_miou": 1, "nyud_rmse": -1}
#: Training images of each task's full protocol (DINOv2's linear evaluation, which [TTR] follows): ImageNet-1k
#: train, ADE20k (SceneParsing) training, NYUd's BTS/Eigen training frames. A run on fewer is a PROXY.
PROTOCOL_N_TRAIN = {"imagenet": 1_281_167, "ade20k": 20_210, "nyud": 24_231}
def seed_summary(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample std (``ddof=1``) and the values of a measurement repeated over seeds.

    Paper: Table 2 (the register effect, +0.3 / +0.8 / -0.006 for [TTR]'s public pair, is small: it is
    only a result when it is larger than the spread over seeds). The std of one seed is
    ``{"skipped": ...}``: one seed has no spread.
    """
    xs = [float(v) for v in values]
    if not xs:
        return {"mean": {"skipped": "no seed ran"}, "std": {"skipped": "no seed ran"}, "per_seed": []}
    std: Any = float(np.std(xs, ddof=1)) if len(xs) > 1 else {"skipped": "one seed has no spread (seeds = 1)"}
    if isinstance(std, float) and std <= 1e-9 * max(1.0, abs(float(np.mean(xs)))):
        std = {"skipped": f"the {len(xs)} seeds agree exactly: no spread to compare with"}
    return {"mean": float(np.mean(xs)), "std": std, "per_seed": xs}


def register_gains(no_reg: Mapping[str, Sequence[float]], reg: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """Per-seed register effect ``reg - no_reg`` of each metric (the seeds are paired) -> mean, std, values.

    Paper: Table 2 (with registers minus without). Keys: ``<metric>`` (mean over seeds), ``<metric>_std``
    (std over seeds of the per-seed difference), ``<metric>_per_seed``, ``<metric>_n_seeds``. The report
    compares the mean with its std (``data/paper_numbers.yaml``: the ``ratio`` rows of F8).
    """
    out: dict[str, Any] = {}
    for m in set(no_reg) & set(reg):
        if len(no_reg[m]) != len(reg[m]):
            raise ValueError(f"{m}: {len(no_reg[m])} seeds without registers, {len(reg[m])} with")
        summary = seed_summary([b - a for a, b in zip(no_reg[m], reg[m])])
        out.update({m: summary["mean"], f"{m}_std": summary["std"], f"{m}_per_seed": summary["per_seed"],
                    f"{m}_n_seeds": len(summary["per_seed"])})
    return out


def budget(task: str, n_train: int) -> dict[str, Any]:
    """Whether a task ran on its protocol's full training set; fewer images make its rows a PROXY.

    Paper: Table 2 ([TTR]'s numbers are on the full training sets; a subset lowers the level of every
    number, so the absolute rows are not comparable and only the register difference says something).
    """
    full = PROTOCOL_N_TRAIN[task]
    proxy = n_train < full
    return {"n_train": int(n_train), "protocol_n_train": full, "proxy": proxy,
            "why": f"trained on {n_train:,} of {full:,} images: a proxy of the protocol" if proxy else "full protocol"}
