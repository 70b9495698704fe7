"""Notebook 03_emergence: F3 (Fig. 4).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

from dataclasses import dataclass

from vitreg.experiments.base import Common, Experiment, Work, param


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 03_emergence (defaults: the real experiment; the notebook's parameters cell is the same)."""

    depth_models: list = param(['dinov2_g', 'dinov2_l'], 'list', "Fig. 4a: every block's norms")
    size_models: list = param(['dinov2_s', 'dinov2_b', 'dinov2_l', 'dinov2_g'], 'list', 'Fig. 4c proxy, smallest first')
    image_size: int | list[int] = param(518, 'size', "DINOv2's native resolution; recorded")
    image_dir: str | None = param(None, 'str', 'a folder of natural images (wins over `images`)')
    images: str = param('auto', 'image_source', "auto: ImageNet val if $VITREG_DATA has it, else Imagenette val (downloaded once); or 'imagenet', 'imagenette', 'pets', 'photos' (the 14 bundled photos: smoke only)")
    n_images: int = param(256, 'count', '')
    threshold: float = param(150.0, 'positive', "the paper's cut-off, applied at every block; None uses mean + k_std * std per block")
    k_std: float = param(3.0, 'positive', '')
    min_fraction: float = param(0.005, 'fraction', 'emergence: share of outliers (0.5%) that must be reached and kept')
    span: int = param(3, 'count', '... for this many consecutive blocks')
    n_bootstrap: int = param(1000, 'count', '')
    batch_size: int = param(8, 'count', '')
    plant: bool = param(False, 'bool', 'smoke runs: plant high-norm tokens at 15/40 of the depth of the random models')


#: Overrides of the defaults per profile (the smoke profile: random weights, planted truth, offline, CPU; the
#: lecture profile: small pretrained models at 224 px on the bundled photos).
PROFILES = {'smoke': {'images': 'photos',
           'depth_models': ['dinov2_s'],
           'size_models': ['dinov2_s'],
           'image_size': 112,
           'n_images': 8,
           'n_bootstrap': 200,
           'batch_size': 8,
           'plant': True},
 'lecture': {'images': 'photos',
             'depth_models': ['dinov2_l'],
             'size_models': ['dinov2_s', 'dinov2_b', 'dinov2_l'],
             'image_size': 224,
             'n_images': 6,
             'batch_size': 4}}


def models(p: Params) -> list[str]:
    """Every model a run with ``p`` loads, in load order: each model of both lists once."""
    return list(dict.fromkeys([*p.size_models, *p.depth_models]))


def work(p: Params) -> list[Work]:
    """The forwards a run with ``p`` does: every model once over the images, every block's norms."""
    from vitreg.experiments.base import image_count, px

    return [Work(m, px(p.image_size, m), image_count(p), "norms, every block") for m in models(p)]


EXPERIMENT = Experiment("03_emergence", Params, models, work, PROFILES)
