"""Notebook 04_redundant_patches: F4 (Fig. 5a).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

from dataclasses import dataclass

from vitreg.experiments.base import Common, Experiment, Work, param


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 04_redundant_patches (defaults: the real experiment; the notebook's parameters cell is the same)."""

    model: str = param('dinov2_g', 'text', "the paper's model for Fig. 5a")
    image_size: int | list[int] = param(518, 'size', "DINOv2's native resolution; recorded")
    image_dir: str | None = param(None, 'str', 'a folder of natural images (wins over `images`)')
    images: str = param('auto', 'image_source', "auto: ImageNet val if $VITREG_DATA has it, else Imagenette val (downloaded once); or 'imagenet', 'imagenette', 'pets', 'photos' (the 14 bundled photos: smoke only)")
    n_images: int = param(256, 'count', '')
    threshold: float = param(150.0, 'positive', 'outlier cut-off on the output norm (paper); None uses mean + k_std * std')
    k_std: float = param(3.0, 'positive', '')
    block: int = param(-1, 'int', "block whose output norm decides 'outlier' (-1 is the last, before the final LayerNorm)")
    batch_size: int = param(8, 'count', '')
    plant: bool = param(False, 'bool', 'smoke runs: plant high-norm tokens on the most redundant patches of the random model')


#: Overrides of the defaults per profile (the smoke profile: random weights, planted truth, offline, CPU; the
#: lecture profile: small pretrained models at 224 px on the bundled photos).
PROFILES = {'smoke': {'images': 'photos',
           'model': 'dinov2_s',
           'image_size': 112,
           'n_images': 8,
           'batch_size': 8,
           'plant': True},
 'lecture': {'images': 'photos', 'model': 'dinov2_l', 'image_size': 224, 'n_images': 6, 'batch_size': 4}}


def models(p: Params) -> list[str]:
    """Every model a run with ``p`` loads, in load order."""
    return [p.model]


def work(p: Params) -> list[Work]:
    """The forwards a run with ``p`` does: one pass over the images (twice when ``plant``: planted, then again)."""
    from vitreg.experiments.base import image_count, px

    rows = [Work(p.model, px(p.image_size, p.model), image_count(p), "patch embeddings and norms (Fig. 5a)")]
    if p.plant:
        rows.append(Work(p.model, px(p.image_size, p.model), image_count(p), "again with planted outliers"))
    return rows


EXPERIMENT = Experiment("04_redundant_patches", Params, models, work, PROFILES)
