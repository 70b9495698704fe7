"""The Table 2 run: settings, one call per task and model pair, seeds.

Paper: Table 2 (F8), the register pair's linear probes on ImageNet-1k, ADE20k and NYUd (notebook 09). The
probes and the statistics over seeds live in :mod:`vitreg.measure.downstream` (its docstring gives the protocol
and what differs from DINOv2's); this module loads the data and the models, extracts (cached) features
and runs the probes for every seed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from vitreg.utils.cache import feature_key, hash_indices, model_fields
from vitreg.utils.distributed import cached_features
from vitreg.data.datasets import DatasetUnavailable, load_dataset, subset_indices, try_load_dataset
from vitreg.data.dense import (ADE20K_CLASSES, EIGEN_CROP, DenseDataset, SyntheticDenseDataset, ade20k_pairs,
                               cover_crop, nyud_pairs, read_ade20k_label, read_nyud_depth, resize_and_pad,
                               resize_image_only)
from vitreg.measure.heads import (TrainConfig, depth_working_bytes, majority_class, on_device, score_heads,
                                  seg_working_bytes, train_segmentation_head)
from vitreg.measure.features import cached_task_features, dense_features
from vitreg.measure.downstream import (TABLE2_METRICS, TASK_KEYS, budget, classification_features_on,
                               classification_probe, depth_probe, register_gains, seed_summary)
from vitreg.experiments.steps import load


@dataclass
class Table2Settings:
    """Every setting of the Table 2 probes (notebook 09's parameters of the same names).

    Paper: Table 2. See the module docstring for the protocol. Defaults are the full protocol where one
    GPU and its host allow it (ImageNet and ADE20k: every training image; NYUd: a subset, for memory).
    """

    pretrained: bool = True
    device: str = "auto"
    seed: int = 0
    seeds: int = 3
    data_root: str | None = None
    imagenet_root: str | None = None
    ade20k_root: str | None = None
    nyud_root: str | None = None
    batch_size: int = 32
    use_cache: bool = True
    cache_dir: str | None = None
    imagenet_image_size: int = 224
    imagenet_n_train: int | None = None
    imagenet_n_val: int | None = None
    imagenet_l2_grid: Sequence[float] = (1e-3, 1e-4, 1e-5, 1e-6)
    imagenet_probe_batch_size: int | None = 1024
    imagenet_probe_epochs: int = 10
    imagenet_full_batch_max: int = 100_000
    ade20k_image_size: int = 518
    ade20k_eval_size: int = 686
    ade20k_n_train: int | None = None
    ade20k_n_val: int | None = None
    nyud_image_size: Sequence[int] = (476, 630)
    nyud_n_train: int | None = 8000
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

    def seed_list(self) -> list[int]:
        """The seeds of the heads: ``seed, seed + 1, ...`` (``seeds`` of them)."""
        if int(self.seeds) < 1:
            raise ValueError(f"seeds must be at least 1, got {self.seeds}")
        return [int(self.seed) + k for k in range(int(self.seeds))]

    def train_config(self, seed: int | None = None) -> TrainConfig:
        """How the dense heads are trained (``seed``: the head's initialisation and batch order)."""
        return TrainConfig(epochs=self.head_epochs, batch_size=self.head_batch_size, lr=self.head_lr,
                           seed=self.seed if seed is None else seed, device=self.device)

    def probe_batch_size(self, n_train: int) -> int | None:
        """The ImageNet probe's minibatch size on ``n_train`` images: None (full-batch L-BFGS) up to
        ``imagenet_full_batch_max`` images or when ``imagenet_probe_batch_size`` is None, else that size.

        Paper: Table 2 (DINOv2's linear evaluation trains with SGD on minibatches of 1,024 for 10 epochs; full-batch
        L-BFGS on all 1.28M images is estimated at up to 79 minutes for the pair and three seeds on one H100,
        against 13 with minibatches: ``vitreg estimate``)."""
        if self.imagenet_probe_batch_size is None or n_train <= self.imagenet_full_batch_max:
            return None
        return int(self.imagenet_probe_batch_size)

    def protocol(self) -> dict[str, Any]:
        """The protocol in words, for the results file (Paper: Table 2; what differs from DINOv2's)."""
        return {
            "features": "final-LayerNorm tokens of the last block, computed once and cached (no augmentation)",
            "seeds": f"{self.seeds} seeds of each head (initialisation, batch order; ImageNet: the L2 validation "
                     "split); the register difference is taken per seed, then mean and std over seeds",
            "imagenet": f"logistic regression on [CLS]+mean patch (headline), [CLS], mean patch; {self.imagenet_image_size} px "
                        "after DINOv2's 256->224 centre crop; L2 chosen on a held-out part of the training set; "
                        + (f"on more than {self.imagenet_full_batch_max:,} training images Adam on minibatches of "
                           f"{self.imagenet_probe_batch_size} for {self.imagenet_probe_epochs} epochs (cosine schedule, "
                           "as DINOv2's 10 epochs of 1,024), full-batch L-BFGS (200 iterations) up to that size"
                           if self.imagenet_probe_batch_size is not None else "full-batch L-BFGS (200 iterations)"),
            "ade20k": f"BatchNorm + 1x1 conv on patch tokens; trained on {self.ade20k_image_size} px crops (shorter side "
                      f"resized, centre crop, labels moved with the image by transforms.v2); scored on WHOLE "
                      f"validation images resized (aspect kept) to a {self.ade20k_eval_size} px canvas and padded, "
                      f"logits upsampled to each label map's original size; cross-entropy (0 ignored), AdamW lr "
                      f"{self.head_lr}, {self.head_epochs} epochs",
            "nyud": f"[CLS]+patch, x4 upsampling, 256 uniform bins in [0.001, 10] m, linear normalisation, SigLoss; "
                    f"trained on {list(self.nyud_image_size)} px crops; scored on whole test frames fed at "
                    f"{list(self.nyud_image_size)} px, depth upsampled to the original 480x640, RMSE per image in "
                    f"the Eigen crop; AdamW lr {self.head_lr}, {self.head_epochs} epochs",
            "differs_from_dinov2": ["no augmentation (features are cached)", "fewer head updates",
                                    "resize-and-pad whole images instead of 512 px sliding windows (stride 341)",
                                    "logistic regression for ImageNet (Adam, not SGD, on large sets)", "NYUd on a training subset by default",
                                    "no gradient loss, no test-time flip for depth"],
        }

    def extraction(self) -> dict:
        """Keyword arguments of :func:`vitreg.measure.features.cached_task_features` shared by every task."""
        return dict(batch_size=self.batch_size, cache=self.use_cache, cache_root=self.cache_dir)


def whole_image_features(loaded: Any, images: Any, n: int, *, canvas: int, dataset_name: str, split: str,
                         files: str, settings: Table2Settings, progress: bool = True) -> dict[str, torch.Tensor]:
    """Patch tokens of whole images fed resize-and-pad on a ``canvas`` square, through the feature cache.

    Paper: Table 2 (ADE20k validation images scored whole, at their labels' original resolution).
    ``images(i)`` returns image ``i`` (PIL); ``loaded`` must be loaded at ``canvas``.
    """
    def compute(start: int, stop: int) -> dict[str, torch.Tensor]:
        imgs = [resize_and_pad(images(i), canvas) for i in range(start, stop)]
        return dense_features(loaded, imgs, batch_size=settings.batch_size)

    key = feature_key(**model_fields(loaded), dataset=dataset_name, split=split, layer="final_norm",
                      target="whole-image", canvas=canvas, n_items=n, files=files)
    return cached_features(key, n, compute, chunk_size=256, root=settings.cache_dir, enabled=settings.use_cache,
                           progress=progress)


class Table2:
    """Table 2 for one model pair: run each task with one call over ``seeds`` seeds; numbers, skips, models.

    Paper: Table 2 (F8; DINOv2-L 84.3/46.6/0.378 -> +reg 84.8/47.9/0.366). Used in notebook 09. Features
    are extracted once per model; each seed trains its own head on them. ``ours[role][metric]`` is the
    mean over seeds (``_std`` and ``_per_seed`` beside it); :meth:`register_gain` pairs the seeds.

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
        self.per_seed: dict[str, dict[str, list[float]]] = {role: {} for role in self.roles}
        self.skipped: list[str] = []
        self.described: list[dict] = []
        self.datasets: dict[str, dict[str, int]] = {}
        self.budget: dict[str, dict[str, Any]] = {}

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
            data = self.data(task)
        except DatasetUnavailable as err:
            self.skip(task, err.reason)
            return
        {"imagenet": self._imagenet, "ade20k": self._ade20k, "nyud": self._nyud}[task](data)

    def data(self, task: str) -> dict:
        """A task's images (its subsets drawn), their counts recorded in ``datasets`` and ``budget``.

        Raises:
            vitreg.data.datasets.DatasetUnavailable: the task's data is not on this machine.
        """
        return {"imagenet": self._imagenet_data, "ade20k": self._ade20k_data, "nyud": self._nyud_data}[task]()

    def features(self, task: str, name: str, data: dict) -> dict:
        """One model's training and test features of a task (:meth:`data`), through the feature cache."""
        return {"imagenet": self._imagenet_features, "ade20k": self._ade20k_features,
                "nyud": self._nyud_features}[task](name, data)

    def extract(self, task: str) -> Iterator[str]:
        """Fill the feature cache of one task for both models, without training a probe (``vitreg extract 09``:
        the same :meth:`data` and :meth:`features` as :meth:`run`).

        Yields:
            one line per model filled, or why the task was skipped.
        """
        try:
            data = self.data(task)
        except DatasetUnavailable as err:
            yield f"{task}: skipped ({err.reason})"
            return
        for name in dict.fromkeys(self.roles.values()):
            self.features(task, name, data)
            yield f"{name} / {task}: features of {', '.join(f'{k} {v}' for k, v in self.datasets[task].items())} images"

    def record(self, role: str, seeded: Sequence[Mapping[str, float]]) -> None:
        """Store one role's per-seed numbers: the mean under each name, ``_std`` and ``_per_seed`` beside it."""
        for name in seeded[0]:
            summary = seed_summary([r[name] for r in seeded])
            self.per_seed[role][name] = summary["per_seed"]
            self.ours[role].update({name: summary["mean"], f"{name}_std": summary["std"],
                                    f"{name}_per_seed": summary["per_seed"]})

    def value(self, role: str, key: str) -> float | None:
        """A measured number, None when skipped or not measured."""
        v = self.ours[role].get(key)
        return v if isinstance(v, (int, float)) else None

    def pair_values(self) -> dict[str, tuple[float | None, float | None]]:
        """Table 2's columns as ``metric -> (without, with registers)`` (means over seeds); None where not measured."""
        return {m: (self.value("no_reg", m), self.value("reg", m)) for m in TABLE2_METRICS}

    def register_gain(self) -> dict[str, Any]:
        """``{"model": <register model>, metric: mean over seeds of (with - without), metric_std, ...}``.

        Paper: Table 2 (DINOv2-L: +0.5 top-1, +1.3 mIoU, -0.012 m RMSE; [TTR], public pair: +0.3, +0.8, -0.006).
        A metric not measured holds its skip reason. Values set directly in ``ours`` (no seeds) count as one seed.
        """
        seeded = {role: {m: self.per_seed[role].get(m) or ([self.value(role, m)] if self.value(role, m) is not None
                                                            else []) for m in TABLE2_METRICS} for role in self.roles}
        gains = register_gains({m: v for m, v in seeded["no_reg"].items() if v},
                               {m: v for m, v in seeded["reg"].items() if v})
        out: dict[str, Any] = {"model": self.roles["reg"]}
        for m in TABLE2_METRICS:
            if m in gains:
                out.update({k: gains[k] for k in (m, f"{m}_std", f"{m}_per_seed", f"{m}_n_seeds")})
                continue
            why = next((v for v in (self.ours["no_reg"].get(m), self.ours["reg"].get(m)) if isinstance(v, dict)),
                       {"skipped": "not measured"})
            out.update({m: why, f"{m}_std": why})
        return out

    def _load(self, name: str, image_size: Any) -> Any:
        loaded = load(self.settings, name, image_size)  # random weights: seeded by the name, at any resolution
        self.described.append(loaded.describe())  # the run-time estimate: the feature cache's progress bar
        return loaded

    def _imagenet_data(self) -> dict:
        s = self.settings
        data = {}
        for split, ours, n in (("train", "train", s.imagenet_n_train), ("val", "test", s.imagenet_n_val)):
            ds, why = try_load_dataset(s.imagenet_root or "imagenet1k", ours, root=s.data_root)
            if ds is None:
                raise DatasetUnavailable("imagenet1k", why)
            data[split] = (ds, subset_indices(ds.labels, n, seed=s.seed))
        self.datasets["imagenet"] = {split: len(i) for split, (_, i) in data.items()}
        self.budget["imagenet"] = budget("imagenet", len(data["train"][1]))
        print(f"ImageNet-1k: {len(data['train'][1])} training, {len(data['val'][1])} validation images")
        return data

    def _imagenet_features(self, name: str, data: dict) -> dict:
        s = self.settings
        loaded = self._load(name, s.imagenet_image_size)
        return {split: cached_task_features(loaded, ds, idx.tolist(), dataset_name="imagenet", split=split,
                                            target="label", subset_seed=s.seed, **s.extraction())
                for split, (ds, idx) in data.items()}

    def _imagenet(self, data: dict) -> None:
        s = self.settings
        for role, name in self.roles.items():
            feats = {split: classification_features_on(f, s.device)  # on the GPU once, for every seed
                     for split, f in self._imagenet_features(name, data).items()}
            seeded = []
            for seed in s.seed_list():
                r = classification_probe(feats["train"], feats["val"], l2_grid=s.imagenet_l2_grid, seed=seed,
                                         batch_size=s.probe_batch_size(len(feats["train"]["labels"])),
                                         epochs=s.imagenet_probe_epochs, device=s.device)
                seeded.append(dict(imagenet_top1=r["cls+patch_mean"]["top1"], imagenet_top1_cls=r["cls"]["top1"],
                                   imagenet_top1_patch_mean=r["patch_mean"]["top1"]))
            self.record(role, seeded)
            self.ours[role]["imagenet_chance"] = r["chance_top1"]
            print(f"  top-1 (mean of {len(seeded)} seeds): [CLS] {self.ours[role]['imagenet_top1_cls']:.2f} | "
                  f"mean patch {self.ours[role]['imagenet_top1_patch_mean']:.2f} | "
                  f"both {self.ours[role]['imagenet_top1']:.2f} (chance {r['chance_top1']:.2f})")

    def _dense_train(self, loaded: Any, name: str, pairs: list, read: Any, target: str,
                     size: tuple[int, int]) -> dict:
        """Training features, the label maps moved with the image by one transforms.v2 transform."""
        ds = DenseDataset(pairs, read, name, transform=cover_crop(size))
        return cached_task_features(loaded, ds, range(len(pairs)), dataset_name=name, split="train", target=target,
                                    label_size=size, files=hash_indices([a for a, _ in pairs]),
                                    transform="cover_crop-v2", **self.settings.extraction())

    def _ade20k_data(self) -> dict:
        s = self.settings
        pairs = {split: pick(ade20k_pairs(split, root=s.ade20k_root, data_dir=s.data_root), n, seed=s.seed)
                 for split, n in (("train", s.ade20k_n_train), ("val", s.ade20k_n_val))}
        self.datasets["ade20k"] = {split: len(p) for split, p in pairs.items()}
        self.budget["ade20k"] = budget("ade20k", len(pairs["train"]))
        return pairs

    def _ade20k_features(self, name: str, pairs: dict) -> dict:
        s = self.settings
        size, val = (s.ade20k_image_size, s.ade20k_image_size), pairs["val"]
        train = self._dense_train(self._load(name, s.ade20k_image_size), "ade20k", pairs["train"],
                                  read_ade20k_label, "seg", size)
        val_ds = DenseDataset(val, read_ade20k_label, "ade20k")
        test = self.whole_images(self._load(name, s.ade20k_eval_size), "ade20k", val, lambda i: val_ds[i][0])
        return {"train": train, "test": test}

    def _ade20k(self, pairs: dict) -> None:
        s = self.settings
        val = pairs["val"]
        for role, name in self.roles.items():
            feats = self._ade20k_features(name, pairs)
            train, test = feats["train"], feats["test"]
            majority = majority_class(train["labels"], ADE20K_CLASSES)  # once per model, not per seed
            working = seg_working_bytes(s.head_batch_size, ADE20K_CLASSES, tuple(train["labels"].shape[-2:]))
            train = on_device({k: train[k] for k in ("patch", "labels")}, s.device, working)  # shared by the seeds
            seeded = self.segment_seeds(train, test, lambda i: read_ade20k_label(val[i][1]), ADE20K_CLASSES,
                                        s.seed_list(), s.ade20k_eval_size, majority=majority)
            del train
            self.record(role, [{f"ade20k_{k}": r[k] for k in ("miou", "pixel_accuracy")} for r in seeded])
            self.ours[role]["ade20k_chance_miou"] = seeded[0]["chance_miou"]
            self.ours[role]["ade20k_n_val"] = seeded[0]["n_images"]
            print(f"  mIoU {self.ours[role]['ade20k_miou']:.2f} ± {_std_text(self.ours[role]['ade20k_miou_std'])} "
                  f"over {len(seeded)} seeds (chance {seeded[0]['chance_miou']:.2f})")

    def whole_images(self, loaded: Any, name: str, items: Sequence[Any], image_of: Any) -> dict:
        """Features of whole validation images, resize-and-pad at ``ade20k_eval_size`` (or the synthetic size)."""
        canvas = int(loaded.image_size[0])
        return whole_image_features(loaded, image_of, len(items), canvas=canvas, dataset_name=name, split="val",
                                    files=hash_indices([str(x) for x in items]), settings=self.settings)

    def segment(self, train: Mapping[str, torch.Tensor], test: Mapping[str, torch.Tensor], label_of: Any,
                n_classes: int, seed: int, canvas: int, *, majority: int | None = None, progress: bool = True) -> dict:
        """One seed of the segmentation probe: train on crops, score whole images at the labels' own size
        (``majority``: the training labels' most frequent class, the chance floor; None counts it here)."""
        return self.segment_seeds(train, test, label_of, n_classes, [seed], canvas, majority=majority,
                                  progress=progress)[0]

    def segment_seeds(self, train: Mapping[str, torch.Tensor], test: Mapping[str, torch.Tensor], label_of: Any,
                      n_classes: int, seeds: Sequence[int], canvas: int, *, majority: int | None = None,
                      progress: bool = True) -> list[dict]:
        """:meth:`segment` for each of ``seeds``: one head per seed, then all heads scored in one pass over the
        validation images (:func:`vitreg.measure.heads.score_heads`: the same numbers as one pass per seed)."""
        s = self.settings
        heads = [train_segmentation_head(train["patch"], train["labels"], n_classes, cfg=s.train_config(seed),
                                         progress=progress) for seed in seeds]
        if majority is None:
            majority = majority_class(train["labels"], n_classes)
        return score_heads(heads, test["patch"], label_of, canvas, n_classes, majority=majority, device=s.device)

    def _nyud_data(self) -> dict:
        s = self.settings
        pairs = {split: pick(nyud_pairs(split, root=s.nyud_root, data_dir=s.data_root), n, seed=s.seed)
                 for split, n in (("train", s.nyud_n_train), ("test", s.nyud_n_test))}
        self.datasets["nyud"] = {split: len(p) for split, p in pairs.items()}
        self.budget["nyud"] = budget("nyud", len(pairs["train"]))
        return pairs

    def _nyud_features(self, name: str, pairs: dict) -> dict:
        s = self.settings
        size = tuple(s.nyud_image_size)
        label_size = tuple(read_nyud_depth(pairs["test"][0][1]).shape)  # the original frame (480x640)
        loaded = self._load(name, size)
        train = self._dense_train(loaded, "nyud", pairs["train"], read_nyud_depth, "depth", size)
        ds = DenseDataset(pairs["test"], read_nyud_depth, "nyud", transform=resize_image_only(size))
        test = cached_task_features(loaded, ds, range(len(ds)), dataset_name="nyud", split="test", target="depth",
                                    label_size=label_size, files=hash_indices([a for a, _ in pairs["test"]]),
                                    transform="whole-image", **s.extraction())
        return {"train": train, "test": test}

    def _nyud(self, pairs: dict) -> None:
        s = self.settings
        for role, name in self.roles.items():
            feats = self._nyud_features(name, pairs)
            train, test = feats["train"], feats["test"]
            working = depth_working_bytes(s.head_batch_size, 256, tuple(train["patch"].shape[1:3]))
            train = on_device({k: train[k] for k in ("patch", "cls", "depth")}, s.device, working)  # shared by the seeds
            seeded = [depth_probe(train, test, crop=EIGEN_CROP, cfg=s.train_config(seed), progress=True)
                      for seed in s.seed_list()]
            del train
            self.record(role, [{f"nyud_{k}": r[k] for k in ("rmse", "abs_rel", "delta1")} for r in seeded])
            self.ours[role]["nyud_constant_rmse"] = seeded[0]["constant_rmse"]
            print(f"  RMSE {self.ours[role]['nyud_rmse']:.3f} ± {_std_text(self.ours[role]['nyud_rmse_std'])} m over "
                  f"{len(seeded)} seeds (constant depth {seeded[0]['constant_rmse']:.3f} m)")

    def synthetic(self) -> dict:
        """Smoke check on planted data, through the real pipeline (transforms, whole-image scoring, seeds).

        The heads must learn the planted relation, not shuffled targets (first seed); every seed's
        segmentation mIoU and depth RMSE are kept for :meth:`synthetic_gain`.

        Returns:
            ``{role: {"model", "seg_miou", "seg_miou_shuffled", "seg_chance_miou", "depth_rmse",
            "depth_rmse_shuffled", "depth_constant_rmse", "cls_top1", "cls_chance", "seg_miou_per_seed",
            "depth_rmse_per_seed"}}``.
        """
        s = self.settings
        size = s.synthetic_image_size
        dense = {split: SyntheticDenseDataset(n=n, image_size=size, tile=size // 4, n_classes=4, seed=s.seed + k)
                 for k, (split, n) in enumerate((("train", s.synthetic_n_train), ("val", s.synthetic_n_val)))}
        train_ds = SyntheticDenseDataset(n=s.synthetic_n_train, image_size=size, tile=size // 4, n_classes=4,
                                         seed=s.seed, transform=cover_crop(size))
        glob = {split: load_dataset("synthetic", "train" if split == "train" else "test", n=n, image_size=size,
                                    seed=s.seed) for split, n in (("train", 2 * s.synthetic_n_train),
                                                                  ("val", 2 * s.synthetic_n_val))}
        shuffle = torch.roll(torch.arange(s.synthetic_n_train), 1)  # every image gets another image's targets
        val_seg = lambda i: dense["val"].sample(i)[1]  # noqa: E731  (the label map at its original size)
        out = {}
        for role, name in self.roles.items():
            loaded = self._load(name, size)
            f = cached_task_features(loaded, train_ds, range(len(train_ds)), dataset_name=f"synthetic_dense-{s.seed}",
                                     split="train", target="seg+depth", label_size=(size, size), progress=False,
                                     transform="cover_crop-v2", **s.extraction())
            val = cached_task_features(loaded, dense["val"], range(len(dense["val"])),
                                       dataset_name=f"synthetic_dense-{s.seed}", split="val", target="seg+depth",
                                       label_size=(size, size), progress=False, **s.extraction())
            whole = whole_image_features(loaded, lambda i: dense["val"][i][0], len(dense["val"]), canvas=size,
                                         dataset_name=f"synthetic_dense-{s.seed}", split="val",
                                         files=f"synthetic-{len(dense['val'])}", settings=s, progress=False)
            segs = self.segment_seeds(f, whole, val_seg, 4, s.seed_list(), size, progress=False)
            seg_noise = self.segment({**f, "labels": f["labels"][shuffle]}, whole, val_seg, 4, s.seed, size,
                                     progress=False)
            deps = [depth_probe(f, val, cfg=s.train_config(seed)) for seed in s.seed_list()]
            dep_noise = depth_probe({**f, "depth": f["depth"][shuffle]}, val, cfg=s.train_config())
            g = {split: cached_task_features(loaded, d, range(len(d)), dataset_name=f"synthetic_global-{s.seed}",
                                             split=split, target="label", progress=False, **s.extraction())
                 for split, d in glob.items()}
            cls = classification_probe(g["train"], g["val"], variants=["cls+patch_mean"], l2_grid=[1e-2, 1e-4],
                                       seed=s.seed)
            out[role] = {"model": name, "seg_miou": segs[0]["miou"], "seg_miou_shuffled": seg_noise["miou"],
                         "seg_chance_miou": segs[0]["chance_miou"], "depth_rmse": deps[0]["rmse"],
                         "depth_rmse_shuffled": dep_noise["rmse"], "depth_constant_rmse": deps[0]["constant_rmse"],
                         "cls_top1": cls["cls+patch_mean"]["top1"], "cls_chance": cls["chance_top1"],
                         "seg_miou_per_seed": [r["miou"] for r in segs], "depth_rmse_per_seed": [r["rmse"] for r in deps]}
        return out

    def synthetic_gain(self, results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The register difference on the synthetic data, per seed -> mean and std (smoke: exercises the
        seed-spread path of :meth:`register_gain`; random weights, so its size means nothing)."""
        per = {role: {m: list(results[role][f"{m}_per_seed"]) for m in ("seg_miou", "depth_rmse")}
               for role in self.roles}
        return {"model": self.roles["reg"], **register_gains(per["no_reg"], per["reg"])}


def _std_text(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "n/a"


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
    (:func:`vitreg.data.datasets.subset_indices` without labels)."""
    return [items[i] for i in subset_indices(len(items), n, seed=seed).tolist()]


def gain_table(ours: Mapping[str, Mapping[str, Any]], reference: Mapping[str, Mapping[str, float]]
               ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Register differences to plot: ``(values, errors)``, each ``{source: {metric: number}}``.

    Paper: Table 2 (with registers minus without). ``ours`` maps a label to a :meth:`Table2.register_gain`
    (or :meth:`Table2.synthetic_gain`) dict: its measured metrics are kept with their seed std as the error
    (0 where there is no spread); ``reference`` adds the sources' differences (no error) for those metrics.
    """
    values: dict[str, dict[str, float]] = {}
    errors: dict[str, dict[str, float]] = {}
    for label, gain in ours.items():
        got = {m: float(v) for m, v in gain.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and not m.endswith(("_std", "_n_seeds"))}
        if got:
            values[label] = got
            errors[label] = {m: float(gain[f"{m}_std"]) if isinstance(gain.get(f"{m}_std"), (int, float)) else 0.0
                             for m in got}
    shown = {m for v in values.values() for m in v}
    for label, deltas in reference.items():
        values[label] = {m: float(v) for m, v in deltas.items() if m in shown}
        errors[label] = {m: 0.0 for m in values[label]}
    return values, errors
