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
  ``vitreg.estimators``), not DINOv2's SGD grid over learning rates and last-4-block concatenations;
* depth: the gradient loss that some DINOv2 configs add is not used; no test-time flip.

Data: :mod:`vitreg.dense_data`; features: :mod:`vitreg.features`; heads: :mod:`vitreg.heads`; planted
ground truth for tests: :mod:`vitreg.planting`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from vitreg.cache import hash_indices
from vitreg.data import DatasetUnavailable, load_dataset, subset_indices, try_load_dataset
from vitreg.dense_data import (ADE20K_CLASSES, EIGEN_CROP, NYUD_MAX_DEPTH, NYUD_MIN_DEPTH, DenseDataset,
                               SyntheticDenseDataset, ade20k_pairs, nyud_pairs, read_ade20k_label, read_nyud_depth)
from vitreg.estimators import accuracy, fit_logistic_cv
from vitreg.heads import (TrainConfig, chance_miou, constant_depth_rmse, depth_metrics, mean_iou, predict_depth,
                          predict_segmentation, train_depth_head, train_segmentation_head)
from vitreg.features import cached_task_features
from vitreg.weights import load_model


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
    Logistic regression from ``vitreg.estimators`` (L2 chosen on a held-out part of the training set).

    Args:
        train, test: ``{"cls": (N, D), "patch_mean": (N, D), "labels": (N,)}``.
        variants: feature sets to try (``cls``, ``patch_mean``, ``cls+patch_mean``).
        seed: seed of the validation split.
        **fit_kwargs: passed to :func:`vitreg.estimators.fit_logistic_cv` (e.g. ``batch_size`` for big sets).

    Returns:
        ``{variant: {"top1": %, "l2": chosen}, "chance_top1": %}``.
    """
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
# Table 2: one call per task (notebook 09)
# ---------------------------------------------------------------------------------------------------
#: The headline metric(s) of each task: marked skipped for both models when the task does not run.
TASK_KEYS = {"imagenet": ["imagenet_top1"], "ade20k": ["ade20k_miou"], "nyud": ["nyud_rmse"]}
#: Table 2's three columns, and the sign of "better" (higher top-1 and mIoU, lower RMSE).
TABLE2_METRICS = {"imagenet_top1": 1, "ade20k_miou": 1, "nyud_rmse": -1}


@dataclass
class Table2Settings:
    """Every setting of the Table 2 probes (notebook 09's parameters of the same names).

    Paper: Table 2. See the module docstring for the protocol.
    """

    pretrained: bool = True
    device: str = "auto"
    seed: int = 0
    data_root: str | None = None
    imagenet_root: str | None = None
    ade20k_root: str | None = None
    nyud_root: str | None = None
    batch_size: int = 32
    use_cache: bool = True
    cache_dir: str | None = None
    imagenet_image_size: int = 224
    imagenet_n_train: int | None = 100000
    imagenet_n_val: int | None = None
    imagenet_l2_grid: Sequence[float] = (1e-3, 1e-4, 1e-5, 1e-6)
    imagenet_probe_batch_size: int | None = None
    ade20k_image_size: int = 518
    ade20k_label_size: int = 518
    ade20k_n_train: int | None = 2000
    ade20k_n_val: int | None = None
    nyud_image_size: Sequence[int] = (476, 630)
    nyud_label_size: Sequence[int] = (476, 630)
    nyud_n_train: int | None = 2000
    nyud_n_test: int | None = None
    head_epochs: int = 20
    head_batch_size: int = 16
    head_lr: float = 1e-3
    synthetic_image_size: int = 112
    synthetic_n_train: int = 32
    synthetic_n_val: int = 16

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Table2Settings:
        """The settings named in ``params`` (e.g. a notebook's variables); the rest keep their defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})

    def train_config(self) -> TrainConfig:
        """How the dense heads are trained."""
        return TrainConfig(epochs=self.head_epochs, batch_size=self.head_batch_size, lr=self.head_lr, seed=self.seed,
                           device=self.device)

    def protocol(self) -> dict[str, Any]:
        """The protocol in words, for the results file (Paper: Table 2; what differs from DINOv2's)."""
        return {
            "features": "final-LayerNorm tokens of the last block, computed once and cached (no augmentation)",
            "imagenet": f"logistic regression on [CLS]+mean patch (headline), [CLS], mean patch; {self.imagenet_image_size} px "
                        "after DINOv2's 256->224 centre crop; L2 chosen on a held-out part of the training subset",
            "ade20k": f"BatchNorm + 1x1 conv on patch tokens, {self.ade20k_image_size} px square centre crop, labels "
                      f"resized to {self.ade20k_label_size}, cross-entropy (0 ignored), AdamW lr {self.head_lr}, "
                      f"{self.head_epochs} epochs",
            "nyud": f"[CLS]+patch, x4 upsampling, 256 uniform bins in [0.001, 10] m, linear normalisation, SigLoss; "
                    f"{list(self.nyud_image_size)} px; RMSE per image in the Eigen crop; AdamW lr {self.head_lr}, "
                    f"{self.head_epochs} epochs",
            "differs_from_dinov2": ["no augmentation", "fewer head updates", "training subsets",
                                    "fixed crop instead of sliding-window inference", "logistic regression for ImageNet",
                                    "no gradient loss, no test-time flip for depth"],
        }

    def extraction(self) -> dict:
        """Keyword arguments of :func:`vitreg.features.cached_task_features` shared by every task."""
        return dict(batch_size=self.batch_size, cache=self.use_cache, cache_root=self.cache_dir)


class Table2:
    """Table 2 for one model pair: run each task with one call, collect numbers, skips and models.

    Paper: Table 2 (F8; DINOv2-L 84.3/46.6/0.378 -> +reg 84.8/47.9/0.366). Used in notebook 09.

    Args:
        models: ``[without registers, with registers]``.
        settings: the probes' settings.
    """

    def __init__(self, models: Sequence[str], settings: Table2Settings) -> None:
        if len(models) != 2:
            raise ValueError(f"models must be a pair [without registers, with registers], got {list(models)}")
        self.roles = dict(zip(("no_reg", "reg"), models))
        self.settings = settings
        self.ours: dict[str, dict[str, Any]] = {role: {"model": name} for role, name in self.roles.items()}
        self.skipped: list[str] = []
        self.described: list[dict] = []
        self.datasets: dict[str, dict[str, int]] = {}

    def skip(self, task: str, reason: str) -> None:
        """Mark a task as not run (the results say why; the runner's summary prints it)."""
        print(f"SKIPPED {task}: {reason}")
        self.skipped.append(f"{task}: {reason}")
        for role in self.roles:
            self.ours[role].update({k: {"skipped": reason} for k in TASK_KEYS[task]})

    def run(self, task: str, *, enabled: bool = True) -> None:
        """Run one task (``"imagenet"``, ``"ade20k"`` or ``"nyud"``) for both models; a missing dataset skips it."""
        if not enabled:
            self.skip(task, "not in `tasks`")
            return
        try:
            {"imagenet": self._imagenet, "ade20k": self._ade20k, "nyud": self._nyud}[task]()
        except DatasetUnavailable as err:
            self.skip(task, err.reason)

    def value(self, role: str, key: str) -> float | None:
        """A measured number, None when skipped or not measured."""
        v = self.ours[role].get(key)
        return v if isinstance(v, (int, float)) else None

    def pair_values(self) -> dict[str, tuple[float | None, float | None]]:
        """Table 2's columns as ``metric -> (without, with registers)``; None where not measured."""
        return {m: (self.value("no_reg", m), self.value("reg", m)) for m in TABLE2_METRICS}

    def register_gain(self) -> dict[str, Any]:
        """``{"model": <register model>, metric: with - without registers or {"skipped": why}}``.

        Paper: Table 2 (DINOv2-L: +0.5 top-1, +1.3 mIoU, -0.012 m RMSE; [TTR], public pair: +0.3, +0.8, -0.006).
        """
        out: dict[str, Any] = {"model": self.roles["reg"]}
        for m, (a, b) in self.pair_values().items():
            why = next((v for v in (self.ours["no_reg"].get(m), self.ours["reg"].get(m)) if isinstance(v, dict)),
                       {"skipped": "not measured"})
            out[m] = b - a if a is not None and b is not None else why
        return out

    def _load(self, name: str, image_size: Any, n_images: int) -> Any:
        loaded = load_model(name, pretrained=self.settings.pretrained, image_size=image_size,
                            device=self.settings.device)
        self.described.append(loaded.describe())  # the run-time estimate: the feature cache's progress bar
        return loaded

    def _imagenet(self) -> None:
        s = self.settings
        data = {}
        for split, ours, n in (("train", "train", s.imagenet_n_train), ("val", "test", s.imagenet_n_val)):
            ds, why = try_load_dataset(s.imagenet_root or "imagenet1k", ours, root=s.data_root)
            if ds is None:
                raise DatasetUnavailable("imagenet1k", why)
            data[split] = (ds, subset_indices(ds.labels, n, seed=s.seed))
        self.datasets["imagenet"] = {split: len(i) for split, (_, i) in data.items()}
        print(f"ImageNet-1k: {len(data['train'][1])} training, {len(data['val'][1])} validation images")
        for role, name in self.roles.items():
            loaded = self._load(name, s.imagenet_image_size, sum(len(i) for _, i in data.values()))
            feats = {split: cached_task_features(loaded, ds, idx.tolist(), dataset_name="imagenet", split=split,
                                                 target="label", subset_seed=s.seed, **s.extraction())
                     for split, (ds, idx) in data.items()}
            r = classification_probe(feats["train"], feats["val"], l2_grid=s.imagenet_l2_grid, seed=s.seed,
                                     batch_size=s.imagenet_probe_batch_size, device=s.device)
            self.ours[role].update(imagenet_top1=r["cls+patch_mean"]["top1"], imagenet_top1_cls=r["cls"]["top1"],
                                   imagenet_top1_patch_mean=r["patch_mean"]["top1"], imagenet_chance=r["chance_top1"])
            print(f"  top-1: [CLS] {r['cls']['top1']:.2f} | mean patch {r['patch_mean']['top1']:.2f} | "
                  f"both {r['cls+patch_mean']['top1']:.2f} (chance {r['chance_top1']:.2f})")

    def _dense_features(self, loaded: Any, name: str, pairs: Mapping[str, list], read: Any, target: str,
                        size: tuple[int, int]) -> dict:
        return {split: cached_task_features(loaded, DenseDataset(p, read, name), range(len(p)), dataset_name=name,
                                            split=split, target=target, label_size=size,
                                            files=hash_indices([a for a, _ in p]), **self.settings.extraction())
                for split, p in pairs.items()}

    def _ade20k(self) -> None:
        s = self.settings
        pairs = {split: pick(ade20k_pairs(split, root=s.ade20k_root, data_dir=s.data_root), n, seed=s.seed)
                 for split, n in (("train", s.ade20k_n_train), ("val", s.ade20k_n_val))}
        self.datasets["ade20k"] = {split: len(p) for split, p in pairs.items()}
        size = (s.ade20k_label_size, s.ade20k_label_size)
        for role, name in self.roles.items():
            loaded = self._load(name, s.ade20k_image_size, sum(map(len, pairs.values())))
            feats = self._dense_features(loaded, "ade20k", pairs, read_ade20k_label, "seg", size)
            r = segmentation_probe(feats["train"], feats["val"], ADE20K_CLASSES, cfg=s.train_config(), progress=True)
            self.ours[role].update(ade20k_miou=r["miou"], ade20k_pixel_accuracy=r["pixel_accuracy"],
                                   ade20k_chance_miou=r["chance_miou"])
            print(f"  mIoU {r['miou']:.2f} (pixel accuracy {r['pixel_accuracy']:.1f}, chance {r['chance_miou']:.2f})")

    def _nyud(self) -> None:
        s = self.settings
        pairs = {split: pick(nyud_pairs(split, root=s.nyud_root, data_dir=s.data_root), n, seed=s.seed)
                 for split, n in (("train", s.nyud_n_train), ("test", s.nyud_n_test))}
        self.datasets["nyud"] = {split: len(p) for split, p in pairs.items()}
        for role, name in self.roles.items():
            loaded = self._load(name, tuple(s.nyud_image_size), sum(map(len, pairs.values())))
            feats = self._dense_features(loaded, "nyud", pairs, read_nyud_depth, "depth", tuple(s.nyud_label_size))
            r = depth_probe(feats["train"], feats["test"], crop=EIGEN_CROP, cfg=s.train_config(), progress=True)
            self.ours[role].update(nyud_rmse=r["rmse"], nyud_abs_rel=r["abs_rel"], nyud_delta1=r["delta1"],
                                   nyud_constant_rmse=r["constant_rmse"])
            print(f"  RMSE {r['rmse']:.3f} m (abs rel {r['abs_rel']:.3f}, δ1 {r['delta1']:.1f}%; "
                  f"constant depth {r['constant_rmse']:.3f} m)")

    def synthetic(self) -> dict:
        """Smoke check on planted data: the heads must learn the planted relation, not shuffled targets.

        Returns:
            ``{role: {"model", "seg_miou", "seg_miou_shuffled", "seg_chance_miou", "depth_rmse",
            "depth_rmse_shuffled", "depth_constant_rmse", "cls_top1", "cls_chance"}}``.
        """
        s, cfg = self.settings, self.settings.train_config()
        size = s.synthetic_image_size
        dense = {split: SyntheticDenseDataset(n=n, image_size=size, tile=size // 4, n_classes=4, seed=s.seed + k)
                 for k, (split, n) in enumerate((("train", s.synthetic_n_train), ("val", s.synthetic_n_val)))}
        glob = {split: load_dataset("synthetic", "train" if split == "train" else "test", n=n, image_size=size,
                                    seed=s.seed) for split, n in (("train", 2 * s.synthetic_n_train),
                                                                  ("val", 2 * s.synthetic_n_val))}
        shuffle = torch.roll(torch.arange(s.synthetic_n_train), 1)  # every image gets another image's targets
        out = {}
        for role, name in self.roles.items():
            loaded = load_model(name, pretrained=s.pretrained, image_size=size, device=s.device)
            self.described.append(loaded.describe())
            f = {split: cached_task_features(loaded, d, range(len(d)), dataset_name=f"synthetic_dense-{s.seed}",
                                             split=split, target="seg+depth", label_size=(size // 2, size // 2),
                                             progress=False, **s.extraction()) for split, d in dense.items()}
            seg = segmentation_probe(f["train"], f["val"], 4, cfg=cfg)
            seg_noise = segmentation_probe({**f["train"], "labels": f["train"]["labels"][shuffle]}, f["val"], 4, cfg=cfg)
            dep = depth_probe(f["train"], f["val"], cfg=cfg)
            dep_noise = depth_probe({**f["train"], "depth": f["train"]["depth"][shuffle]}, f["val"], cfg=cfg)
            g = {split: cached_task_features(loaded, d, range(len(d)), dataset_name=f"synthetic_global-{s.seed}",
                                             split=split, target="label", progress=False, **s.extraction())
                 for split, d in glob.items()}
            cls = classification_probe(g["train"], g["val"], variants=["cls+patch_mean"], l2_grid=[1e-2, 1e-4],
                                       seed=s.seed)
            out[role] = {"model": name, "seg_miou": seg["miou"], "seg_miou_shuffled": seg_noise["miou"],
                         "seg_chance_miou": seg["chance_miou"], "depth_rmse": dep["rmse"],
                         "depth_rmse_shuffled": dep_noise["rmse"], "depth_constant_rmse": dep["constant_rmse"],
                         "cls_top1": cls["cls+patch_mean"]["top1"], "cls_chance": cls["chance_top1"]}
        return out


def synthetic_checks(r: Mapping[str, Any]) -> dict[str, bool]:
    """What the heads must learn on planted data (one role of :meth:`Table2.synthetic`), in words -> passed.

    Not a paper claim: a check of the probes' code on planted ground truth (smoke runs).
    """
    bars = {
        "segmentation mIoU beats chance x2": (r["seg_miou"], 2 * r["seg_chance_miou"]),
        "segmentation beats shuffled targets": (r["seg_miou"], r["seg_miou_shuffled"] + 10),
        "depth RMSE below 0.8 x constant": (-r["depth_rmse"], -0.8 * r["depth_constant_rmse"]),
        "depth beats shuffled targets": (-r["depth_rmse"], -r["depth_rmse_shuffled"]),
        "classification beats chance": (r["cls_top1"], r["cls_chance"] + 10),
    }
    return {f"{r['model']}: {what}: {abs(got):.3f} vs {abs(bar):.3f}": got > bar for what, (got, bar) in bars.items()}


def pick(items: Sequence[Any], n: int | None, *, seed: int = 0) -> list[Any]:
    """``n`` items drawn at random (all when ``n`` is None or too large), in their original order
    (:func:`vitreg.data.subset_indices` without labels)."""
    return [items[i] for i in subset_indices(len(items), n, seed=seed).tolist()]
