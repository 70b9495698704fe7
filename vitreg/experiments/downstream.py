"""Notebook 09_downstream: F8 (Table 2).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

from dataclasses import dataclass

from vitreg.experiments.base import Common, Experiment, Work, param


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 09_downstream (defaults: the real experiment; the notebook's parameters cell is the same)."""

    seeds: int = param(3, 'count', 'heads trained per task and model (seeds seed, seed+1, ...): the register difference is mean ± std over them')
    models: list = param(['dinov2_l', 'dinov2_l_reg'], 'list', '[without registers, with registers]: any zoo pair works')
    tasks: list = param(['imagenet', 'ade20k', 'nyud'], 'list', 'which probes to run')
    data_root: str | None = param(None, 'str', 'datasets folder (default $VITREG_DATA or data/datasets)')
    imagenet_root: str | None = param(None, 'str', 'ImageFolder with train/ and val/ (default <data_root>/imagenet1k)')
    ade20k_root: str | None = param(None, 'str', 'ADEChallengeData2016 (default <data_root>/ade20k)')
    nyud_root: str | None = param(None, 'str', 'BTS-layout NYU-Depth v2 (default <data_root>/nyud)')
    batch_size: int = param(32, 'count', 'images per forward pass (feature extraction)')
    use_cache: bool = param(True, 'bool', 'keep features on disk ($VITREG_CACHE or data/cache): a rerun skips extraction')
    cache_dir: str | None = param(None, 'str', 'ImageNet-1k linear classification')
    imagenet_image_size: int | list[int] = param(224, 'size', '')
    imagenet_n_train: int | None = param(None, 'count', 'None: all 1.28M training images (an int: a class-balanced subset, a proxy)')
    imagenet_n_val: int | None = param(None, 'count', 'None: all 50k validation images')
    imagenet_l2_grid: list = param([0.001, 0.0001, 1e-05, 1e-06], 'positives', '')
    imagenet_probe_batch_size: int | None = param(None, 'count', 'None: full-batch L-BFGS; an int: Adam minibatches (less memory) ADE20k linear segmentation')
    ade20k_image_size: int | list[int] = param(518, 'size', 'training crops: 37x37 patch grid (DINOv2 trains on 512 crops)')
    ade20k_eval_size: int | list[int] = param(686, 'size', 'whole validation images resized to fit this square and padded (49x49 grid)')
    ade20k_n_train: int | None = param(None, 'count', 'None: all 20,210 training images (an int: a subset, a proxy)')
    ade20k_n_val: int | None = param(None, 'count', 'None: all 2,000 validation images NYU-Depth v2 linear depth')
    nyud_image_size: list = param([476, 630], 'size', 'the 480x640 frame at a patch multiple (34x45 grid); test depth scored at 480x640')
    nyud_n_train: int = param(8000, 'count', 'of the 24,231 BTS training frames (None: all, ~75 GB of host memory): a proxy')
    nyud_n_test: int | None = param(None, 'count', 'None: all 654 test frames heads (segmentation and depth)')
    head_epochs: int = param(20, 'count', '')
    head_batch_size: int = param(16, 'count', '')
    head_lr: float = param(0.001, 'positive', 'synthetic planted data (smoke runs: the heads must learn a planted relation, and not a shuffled one)')
    synthetic: bool = param(False, 'bool', '')
    synthetic_image_size: int | list[int] = param(112, 'size', '')
    synthetic_n_train: int = param(32, 'count', '')
    synthetic_n_val: int = param(16, 'count', '')


#: Overrides of the defaults per profile (the smoke profile: random weights, planted truth, offline, CPU; the
#: lecture profile: small pretrained models at 224 px on the bundled photos).
PROFILES = {'smoke': {'models': ['dinov2_s', 'dinov2_s_reg'],
           'synthetic': True,
           'synthetic_image_size': 56,
           'synthetic_n_train': 24,
           'synthetic_n_val': 12,
           'head_epochs': 15,
           'head_batch_size': 8,
           'head_lr': 0.01,
           'seeds': 2,
           'batch_size': 8,
           'use_cache': False},
 'lecture': {'models': ['dinov2_s', 'dinov2_s_reg'],
             'tasks': ['ade20k'],
             'ade20k_image_size': 224,
             'ade20k_eval_size': 224,
             'ade20k_n_train': 40,
             'ade20k_n_val': 20,
             'head_epochs': 5,
             'head_batch_size': 8,
             'seeds': 1,
             'batch_size': 8}}


#: Seconds of work besides forwards on one H100 for the run-time table (None: not estimated), and what it
#: leaves out.
OTHER_S: float | None = None
NOTE = 'heads (3 seeds x 20 epochs) and ImageNet L-BFGS not estimated'


def models(p: Params) -> list[str]:
    """Every model a run with ``p`` loads, in load order: the pair (without registers first)."""
    return list(dict.fromkeys(p.models))


def work(p: Params) -> list[Work]:
    """The forwards a run with ``p`` does, per model of the pair: each task of ``tasks`` (train and test
    features; skipped where its dataset is absent; cached on disk) and the synthetic check."""
    from vitreg.experiments import sizes
    from vitreg.experiments.base import px

    rows = []
    for m in p.models:
        if "imagenet" in p.tasks:
            train, val = sizes.CLASSIFICATION["imagenet1k"]
            rows += [Work(m, px(p.imagenet_image_size, m), sizes.capped(train, p.imagenet_n_train),
                          "ImageNet-1k train", "imagenet1k"),
                     Work(m, px(p.imagenet_image_size, m), sizes.capped(val, p.imagenet_n_val),
                          "ImageNet-1k val", "imagenet1k")]
        if "ade20k" in p.tasks:
            rows += [Work(m, px(p.ade20k_image_size, m), sizes.capped(sizes.ADE20K[0], p.ade20k_n_train),
                          "ADE20k train crops", "ade20k"),
                     Work(m, px(p.ade20k_eval_size, m), sizes.capped(sizes.ADE20K[1], p.ade20k_n_val),
                          "ADE20k val, whole images", "ade20k")]
        if "nyud" in p.tasks:
            rows += [Work(m, px(p.nyud_image_size, m), sizes.capped(sizes.NYUD[0], p.nyud_n_train),
                          "NYUd train crops", "nyud"),
                     Work(m, px(p.nyud_image_size, m), sizes.capped(sizes.NYUD[1], p.nyud_n_test),
                          "NYUd test", "nyud")]
        if p.synthetic:  # dense train + val + whole val, then the global set (twice as many)
            rows.append(Work(m, px(p.synthetic_image_size, m), 3 * p.synthetic_n_train + 4 * p.synthetic_n_val,
                             "synthetic planted data"))
    return rows


EXPERIMENT = Experiment("09_downstream", Params, models, work, PROFILES, other_s=OTHER_S, note=NOTE)
