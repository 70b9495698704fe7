"""Notebook 05_local_information: F5 (Fig. 5b, App. D.2).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

from dataclasses import dataclass

from vitreg.experiments.base import Common, Experiment, Work, param


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 05_local_information (defaults: the real experiment; the notebook's parameters cell is the same)."""

    model: str = param('dinov2_g', 'text', 'DINOv2 ViT-g/14 without registers (Fig. 5b)')
    register_models: list = param(['dinov2_l', 'dinov2_l_reg'], 'list', 'App. D.2 Table 5 stand-in: normal patches, 0 vs 4 registers ([] to skip)')
    image_size: int | list[int] = param(224, 'size', 'not given in the paper; 224 px gives a 16x16 grid (256 position classes)')
    dataset: str = param('pets', 'text', "where the images come from: a vitreg.data.datasets name, or 'photos' (bundled photos)")
    split: str = param('test', 'text', '')
    download: bool = param(True, 'bool', 'allow a torchvision download (never when offline)')
    data_root: str | None = param(None, 'str', 'datasets folder (default $VITREG_DATA or data/datasets)')
    image_dir: str | None = param(None, 'str', 'a folder of your own images instead (overrides dataset)')
    n_images: int = param(300, 'count', 'a few hundred images: about 77k patch tokens at 224 px')
    train_fraction: float = param(0.7, 'fraction', 'share of the images that train the probes; the rest test them')
    max_train_tokens: int | None = param(None, 'count', 'subsample the training patches for speed (None: all of them)')
    layer: str = param('final_norm', 'text', 'probed features: the output after the final LayerNorm, or a block index')
    threshold: float | None = param(None, 'positive', "outlier cut-off on pre-LN norms (None: the model's own, 150 for DINOv2)")
    l2_grid: list = param([0.01, 0.001, 0.0001, 1e-05], 'positives', 'position probe strengths (chosen on validation)')
    ridge_grid: list = param([10.0, 1.0, 0.1, 0.01], 'positives', 'pixel probe strengths (chosen on validation)')
    batch_size: int = param(32, 'count', '')
    use_cache: bool = param(True, 'bool', 'keep features on disk ($VITREG_CACHE or data/cache): a rerun skips extraction')
    cache_dir: str | None = param(None, 'str', '')
    plant_fraction: float = param(0.0, 'fraction0', 'smoke only: share of patches planted as outliers in random-weight models')
    plant_norm: float = param(1000.0, 'positive', '')


#: Overrides of the defaults per profile (the smoke profile: random weights, planted truth, offline, CPU; the
#: lecture profile: small pretrained models at 224 px on the bundled photos).
PROFILES = {'smoke': {'model': 'dinov2_s',
           'register_models': ['dinov2_s', 'dinov2_s_reg'],
           'image_size': 112,
           'dataset': 'photos',
           'n_images': 8,
           'l2_grid': [0.001],
           'ridge_grid': [1.0, 0.01],
           'batch_size': 8,
           'use_cache': False,
           'plant_fraction': 0.08},
 'lecture': {'model': 'dinov2_l',
             'register_models': ['dinov2_l', 'dinov2_l_reg'],
             'image_size': 224,
             'dataset': 'photos',
             'n_images': 10,
             'l2_grid': [0.001, 0.0001],
             'ridge_grid': [1.0, 0.1],
             'batch_size': 4}}


#: Seconds of work besides forwards on one H100 for the run-time table (None: not estimated), and what it
#: leaves out.
OTHER_S: float | None = None
NOTE = ('probes not estimated: they run on the GPU (on one CPU core here: 127 s for 30 of the 300 images, '
        'linear in images, for each of 3 models)')


def models(p: Params) -> list[str]:
    """Every model a run with ``p`` loads, in load order: the probed model, then the register comparison's."""
    return list(dict.fromkeys([p.model, *p.register_models]))


def _n_images(p: Params) -> int:
    """Images probed: ``n_images`` of ``dataset`` or ``image_dir``; of the bundled photos at most 14."""
    from vitreg.experiments.base import BUNDLED_PHOTOS

    return min(p.n_images, BUNDLED_PHOTOS) if p.image_dir is None and p.dataset == "photos" else p.n_images


def work(p: Params) -> list[Work]:
    """The forwards a run with ``p`` does: each model once over the images (the features are cached on disk:
    a rerun with ``use_cache`` does none)."""
    from vitreg.experiments.base import px

    return [Work(m, px(p.image_size, m), _n_images(p), "patch features") for m in models(p)]


EXPERIMENT = Experiment("05_local_information", Params, models, work, PROFILES, other_s=OTHER_S, note=NOTE)
