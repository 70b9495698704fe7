"""Notebook 01_attention_artifacts: F1 (Fig. 1, Fig. 2, App. F).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

from dataclasses import dataclass

from vitreg.experiments.base import Common, Experiment, Work, param


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 01_attention_artifacts (defaults: the real experiment; the notebook's parameters cell is the same)."""

    models: list = param(['dino_b16', 'dinov2_l', 'dinov2_g', 'deit3_b16', 'clip_b16_laion', 'mae_l16'], 'list', '')
    head_model: str = param('dinov2_l', 'text', 'the model whose per-head maps are drawn (App. F, Fig. 18); must be in models')
    image_size: int | list[int] | None = param(None, 'size', 'None runs each model at its native resolution; an int runs all models at it')
    image_dir: str | None = param(None, 'str', 'a folder of natural images (wins over `images`)')
    images: str = param('auto', 'image_source', "auto: ImageNet val if $VITREG_DATA has it, else Imagenette val (downloaded once); or 'imagenet', 'imagenette', 'pets', 'photos' (the 14 bundled photos: smoke only)")
    n_images: int = param(256, 'count', 'images scored (a seeded class-balanced subset)')
    n_show: int = param(4, 'count', 'images drawn')
    display_size: int | list[int] = param(448, 'size', 'maps are upsampled to this many pixels for display')
    upsample_mode: str = param('nearest', 'text', "nearest keeps single artifact patches visible; or 'bilinear'")
    top_frac: float = param(0.02, 'fraction', 'artifact score: attention share of the top 2% of patches')
    k_std: float = param(3.0, 'positive', 'relative outlier rule for models without a published norm cut-off')
    batch_size: int = param(8, 'count', '')
    plant: bool = param(False, 'bool', 'smoke runs: plant attention spikes in the models the paper says have artifacts')


#: Overrides of the defaults per profile (the smoke profile: random weights, planted truth, offline, CPU; the
#: lecture profile: small pretrained models at 224 px on the bundled photos).
PROFILES = {'smoke': {'images': 'photos',
           'models': ['dino_s16', 'dinov2_s', 'mae_b16'],
           'head_model': 'dinov2_s',
           'image_size': 112,
           'n_images': 4,
           'n_show': 3,
           'display_size': 112,
           'batch_size': 4,
           'plant': True},
 'lecture': {'images': 'photos',
             'models': ['dino_s16', 'dinov2_l', 'deit3_b16', 'clip_b16_laion', 'mae_b16'],
             'head_model': 'dinov2_l',
             'image_size': 224,
             'n_images': 4,
             'n_show': 4,
             'display_size': 224,
             'batch_size': 4}}


def models(p: Params) -> list[str]:
    """Every model a run with ``p`` loads, in load order (``head_model`` is one of them)."""
    return list(dict.fromkeys(p.models))


def work(p: Params) -> list[Work]:
    """The forwards a run with ``p`` does: every model over the images (last-block attention and norms)."""
    from vitreg.experiments.base import image_count, px

    return [Work(m, px(p.image_size, m), image_count(p), "last-block attention and norms") for m in p.models]


EXPERIMENT = Experiment("01_attention_artifacts", Params, models, work, PROFILES)
