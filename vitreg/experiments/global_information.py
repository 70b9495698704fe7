"""Notebook 06_global_information: F6 (Table 1, App. G Table 6).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

from dataclasses import dataclass

from vitreg.experiments.base import Common, Experiment, Work, param


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 06_global_information (defaults: the real experiment; the notebook's parameters cell is the same)."""

    model: str = param('dinov2_g', 'text', 'Table 1: DINOv2 ViT-g/14 without registers')
    image_size: int | list[int] = param(224, 'size', "not given in the paper; DINOv2's linear evaluations use 224 px")
    datasets: list = param(['aircraft', 'cifar10', 'cifar100', 'cub', 'caltech101', 'cars', 'dtd', 'flowers', 'food', 'imagenet1k', 'places205', 'pets', 'sun', 'voc'], 'list', '')
    ttr_models: list = param(['dinov2_l', 'dinov2_l_reg'], 'list', '[TTR] Table 1 comparison (first without, second with registers)')
    ttr_datasets: list = param(['imagenet1k', 'cifar10', 'cifar100'], 'list', '')
    download: bool = param(True, 'bool', 'torchvision sets download when missing (never when offline)')
    data_root: str | None = param(None, 'str', 'datasets folder (default $VITREG_DATA or data/datasets); ImageFolder sets live there')
    max_train: int = param(50000, 'count', 'class-balanced subset of the training split (CIFAR: all of it)')
    max_test: int = param(10000, 'count', '')
    n_draws: int = param(3, 'count', 'random tokens per kind and image: mean and std over the draws (Table 6)')
    layer: str = param('final_norm', 'text', 'probed features: the output after the final LayerNorm, or a block index')
    threshold: float | None = param(None, 'positive', "outlier cut-off on pre-LN norms (None: the model's own, 150 for DINOv2)")
    l2_grid: list = param([0.1, 0.01, 0.001, 0.0001, 1e-05, 1e-06], 'positives', 'L2 strengths, chosen on the validation split')
    val_fraction: float = param(0.2, 'fraction', '')
    batch_size: int = param(64, 'count', '')
    use_cache: bool = param(True, 'bool', 'keep features on disk ($VITREG_CACHE or data/cache): a rerun skips extraction')
    cache_dir: str | None = param(None, 'str', '')
    synthetic_n: int = param(256, 'count', "training images of the 'synthetic' set (smoke runs); its test split has half")
    plant_fraction: float = param(0.0, 'fraction0', 'smoke only: share of patches planted as outliers in random-weight models')
    plant_norm: float = param(1000.0, 'positive', '')


#: Overrides of the defaults per profile (the smoke profile: random weights, planted truth, offline, CPU; the
#: lecture profile: small pretrained models at 224 px on the bundled photos).
PROFILES = {'smoke': {'model': 'dinov2_s_reg',
           'image_size': 112,
           'datasets': ['synthetic', 'cifar10'],
           'ttr_models': ['dinov2_s_reg', 'dinov2_s_reg'],
           'ttr_datasets': ['synthetic'],
           'download': False,
           'n_draws': 2,
           'l2_grid': [0.01, 0.0001],
           'batch_size': 16,
           'use_cache': False,
           'synthetic_n': 48,
           'plant_fraction': 0.08},
 'lecture': {'model': 'dinov2_l',
             'image_size': 224,
             'datasets': ['cifar10'],
             'ttr_datasets': [],
             'max_train': 40,
             'max_test': 20,
             'n_draws': 3,
             'l2_grid': [0.01, 0.001, 0.0001],
             'batch_size': 8}}


#: Seconds of work besides forwards on one H100 for the run-time table (None: not estimated), and what it
#: leaves out.
OTHER_S: float | None = None
NOTE = 'probe fitting not estimated (L-BFGS per dataset and token kind: its iterations vary)'


def models(p: Params) -> list[str]:
    """Every model a run with ``p`` loads, in load order: the Table 1 model, then [TTR]'s pair."""
    return list(dict.fromkeys([p.model, *p.ttr_models]))


def _split(p: Params, name: str, split: str) -> int:
    """Images of one split of dataset ``name`` the probes read (the synthetic set is sized by ``synthetic_n``)."""
    from vitreg.experiments import sizes

    cap = p.max_train if split == "train" else p.max_test
    if name == "synthetic":
        return sizes.capped(p.synthetic_n if split == "train" else max(2, p.synthetic_n // 2), cap)
    return sizes.split_images(name, split, cap)


def work(p: Params) -> list[Work]:
    """The forwards a run with ``p`` does: train and test split of every dataset, for the Table 1 model and for
    each [TTR] model (a pair already measured above is not measured again); absent datasets are skipped."""
    from vitreg.experiments.base import px

    rows = []
    pairs = [(p.model, d) for d in p.datasets]
    pairs += [(m, d) for m in p.ttr_models for d in p.ttr_datasets if not (m == p.model and d in p.datasets)]
    for m, d in pairs:
        needs = "" if d == "synthetic" else d
        rows += [Work(m, px(p.image_size, m), _split(p, d, s), f"{d} {s}", needs) for s in ("train", "test")]
    return rows


EXPERIMENT = Experiment("06_global_information", Params, models, work, PROFILES, other_s=OTHER_S, note=NOTE)
