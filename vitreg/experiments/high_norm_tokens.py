"""Notebook 02_high_norm_tokens: F2 (Fig. 3, App. A (Fig. 10), Fig. 21).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

from dataclasses import dataclass

from vitreg.experiments.base import Common, Experiment, Work, param


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 02_high_norm_tokens (defaults: the real experiment; the notebook's parameters cell is the same)."""

    model: str = param('dinov2_g', 'text', 'the model with high-norm tokens (Fig. 3, right)')
    reference_model: str = param('dino_b16', 'text', 'the model without them (Fig. 3, left)')
    image_size: int | list[int] = param(518, 'size', "DINOv2's native resolution (37x37 patches); the result depends on it")
    reference_image_size: int | list[int] = param(224, 'size', "DINO's native resolution")
    image_dir: str | None = param(None, 'str', 'a folder of natural images (wins over `images`)')
    images: str = param('auto', 'image_source', "auto: ImageNet val if $VITREG_DATA has it, else Imagenette val (downloaded once); or 'imagenet', 'imagenette', 'pets', 'photos' (the 14 bundled photos: smoke only)")
    n_images: int = param(256, 'count', "'a few hundred images' (a seeded class-balanced subset)")
    threshold: float = param(150.0, 'positive', "the paper's cut-off for DINOv2; None uses mean + k_std * std of the patch norms")
    k_std: float = param(3.0, 'positive', 'relative rule ([TTR]); used for the reference model (no published cut-off)')
    block: int = param(-1, 'int', 'block whose output is measured (-1 is the last), before the final LayerNorm')
    n_detail: int = param(16, 'count', 'images also recorded after the final LayerNorm and with attention (Fig. 21)')
    n_show: int = param(4, 'count', 'images drawn in the norm/attention figure')
    n_bootstrap: int = param(1000, 'count', 'bootstrap resamples (over images) for the confidence interval')
    batch_size: int = param(8, 'count', '')
    plant: bool = param(False, 'bool', 'smoke runs: plant high-norm tokens (with vertical stripes) in the random model')
    scan_models: list = param(['dino_b16', 'dinov2_g', 'dinov2_g_reg', 'dinov3_l', 'clip_b16_laion', 'vit_base_patch16_siglip_224.webli', 'mae_b16'], 'names', 'the zoo table: DINO, DINOv2')
    scan_n_images: int = param(32, 'count', 'images per model in the zoo table (the first of `images`)')
    scan_image_size: int | list[int] | None = param(None, 'size', 'None: each model at its native resolution; a number: its nearest patch multiple')


#: Overrides of the defaults per profile (the smoke profile: random weights, planted truth, offline, CPU; the
#: lecture profile: small pretrained models at 224 px on the bundled photos).
PROFILES = {'smoke': {'images': 'photos',
           'model': 'dinov2_s',
           'reference_model': 'dino_s16',
           'image_size': 112,
           'reference_image_size': 112,
           'n_images': 8,
           'n_detail': 4,
           'n_bootstrap': 200,
           'batch_size': 8,
           'plant': True,
           'scan_models': ['dinov2_s_reg', 'dinov3_s'],
           'scan_n_images': 2,
           'scan_image_size': 64},
 'lecture': {'images': 'photos',
             'model': 'dinov2_l',
             'reference_model': 'dino_s16',
             'image_size': 224,
             'reference_image_size': 224,
             'n_images': 8,
             'n_detail': 4,
             'n_show': 4,
             'batch_size': 4,
             'scan_models': ['dino_s16', 'dinov2_s', 'dinov2_s_reg', 'dinov3_s', 'clip_b16_laion', 'mae_b16'],
             'scan_n_images': 4,
             'scan_image_size': 224}}


#: Seconds of work besides forwards on one H100 for the run-time table (None: not estimated), and what it
#: leaves out.
OTHER_S: float | None = 2.0
NOTE = 'bootstraps: 0.15 s per 1,000-resample interval (256 x 1,369 patches, one CPU core)'


def models(p: Params) -> list[str]:
    """Every model a run with ``p`` loads, in load order: the model, its reference, then the zoo table's."""
    return list(dict.fromkeys([p.model, p.reference_model, *p.scan_models]))


def work(p: Params) -> list[Work]:
    """The forwards a run with ``p`` does: norms of both models, the detail images again, the zoo scan."""
    from vitreg.core.models import get_spec
    from vitreg.experiments.base import image_count, px

    n = image_count(p)
    rows = [Work(p.model, px(p.image_size, p.model), n, "norms (Fig. 3)"),
            Work(p.reference_model, px(p.reference_image_size, p.reference_model), n, "norms, reference (Fig. 3)"),
            Work(p.model, px(p.image_size, p.model), min(p.n_detail, n), "after the final LayerNorm (Fig. 21)")]
    for m in p.scan_models:
        patch = get_spec(m).patch_size
        size = px(None, m) if p.scan_image_size is None else max(patch, round(p.scan_image_size / patch) * patch)
        rows.append(Work(m, size, min(p.scan_n_images, n), "zoo table"))
    return rows


EXPERIMENT = Experiment("02_high_norm_tokens", Params, models, work, PROFILES, other_s=OTHER_S, note=NOTE)
