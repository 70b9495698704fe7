"""Notebook 00_tour: - (§2 (pitfalls, token layout)).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

from dataclasses import dataclass

from vitreg.experiments.base import Common, Experiment, Work, param


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 00_tour (defaults: the real experiment; the notebook's parameters cell is the same)."""

    model: str = param('dinov2_l', 'text', 'DINOv2 ViT-L/14 without registers: it has artifacts')
    image_size: int | list[int] = param(518, 'size', "DINOv2's native resolution; 224 changes the numbers")
    n_images: int = param(4, 'count', 'images to look at (the tour draws every one)')
    image_dir: str | None = param(None, 'str', 'a folder of your own images (wins over `images`)')
    images: str = param('auto', 'image_source', "auto: ImageNet val if $VITREG_DATA has it, else Imagenette val (downloaded once); or 'imagenet', 'imagenette', 'pets', 'photos' (the 14 bundled photos: smoke only)")
    batch_size: int = param(4, 'count', '')
    plant: bool = param(False, 'bool', 'smoke only: plant high-norm tokens so random weights have something to find')


#: Overrides of the defaults per profile (the smoke profile: random weights, planted truth, offline, CPU; the
#: lecture profile: small pretrained models at 224 px on the bundled photos).
PROFILES = {'smoke': {'images': 'photos', 'model': 'dinov2_s_reg', 'image_size': 224, 'plant': True},
 'lecture': {'images': 'photos', 'model': 'dinov2_l', 'image_size': 224, 'n_images': 4, 'batch_size': 4}}


def models(p: Params) -> list[str]:
    """Every model a run with ``p`` loads, in load order: the one model of the tour."""
    return [p.model]


def work(p: Params) -> list[Work]:
    """The forwards a run with ``p`` does: the images once under the capture, once more for the attention check."""
    from vitreg.experiments.base import image_count, px

    n, size = image_count(p), px(p.image_size, p.model)
    return [Work(p.model, size, n, "norms and attention, every block"),
            Work(p.model, size, n, "explicit-attention check")]


EXPERIMENT = Experiment("00_tour", Params, models, work, PROFILES)
