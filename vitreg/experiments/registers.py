"""Notebook 07_registers: F7 (Fig. 1 (bottom), Fig. 7, Fig. 9, App. D.1, D.3).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

from dataclasses import dataclass

from vitreg.experiments.base import Common, Experiment, Work, param


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 07_registers (defaults: the real experiment; the notebook's parameters cell is the same)."""

    model_pairs: list = param([['dinov2_s', 'dinov2_s_reg'], ['dinov2_b', 'dinov2_b_reg'], ['dinov2_l', 'dinov2_l_reg'], ['dinov2_g', 'dinov2_g_reg']], 'list', '')
    image_size: int | list[int] = param(518, 'size', "DINOv2's native resolution (recorded in the results)")
    n_images: int = param(256, 'count', 'images to average over (a seeded class-balanced subset)')
    image_dir: str | None = param(None, 'str', 'a folder of your own images (wins over `images`)')
    images: str = param('auto', 'image_source', "auto: ImageNet val if $VITREG_DATA has it, else Imagenette val (downloaded once); or 'imagenet', 'imagenette', 'pets', 'photos' (the 14 bundled photos: smoke only)")
    batch_size: int = param(8, 'count', '')
    n_show: int = param(4, 'count', 'images in the attention-map figures')
    levels: int = param(4, 'count', "levels of the 1-D k-means that measures how 'quantised' register norms are")
    border_width: int = param(1, 'count0', 'width (patches) of the border ring for the Fig. 16 numbers')
    plant: bool = param(False, 'bool', 'smoke only: plant high norms (patches without registers, registers with them)')


#: Overrides of the defaults per profile (the smoke profile: random weights, planted truth, offline, CPU; the
#: lecture profile: small pretrained models at 224 px on the bundled photos).
PROFILES = {'smoke': {'images': 'photos',
           'model_pairs': [['dinov2_s', 'dinov2_s_reg']],
           'image_size': 112,
           'n_images': 4,
           'batch_size': 4,
           'n_show': 2,
           'plant': True},
 'lecture': {'images': 'photos',
             'model_pairs': [['dinov2_s', 'dinov2_s_reg'], ['dinov2_l', 'dinov2_l_reg']],
             'image_size': 224,
             'n_images': 6,
             'n_show': 4,
             'batch_size': 4}}


def models(p: Params) -> list[str]:
    """Every model a run with ``p`` loads, in load order: each pair, without registers first."""
    return list(dict.fromkeys(key for pair in p.model_pairs for key in pair))


def work(p: Params) -> list[Work]:
    """The forwards a run with ``p`` does: each model over the images, and one image to count its FLOPs."""
    from vitreg.experiments.base import image_count, px

    rows = []
    for key in [key for pair in p.model_pairs for key in pair]:
        rows += [Work(key, px(p.image_size, key), image_count(p), "norms and attention"),
                 Work(key, px(p.image_size, key), 1, "FLOP count (Sec. 2.2)")]
    return rows


EXPERIMENT = Experiment("07_registers", Params, models, work, PROFILES)
