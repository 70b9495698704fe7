"""Notebook 02_high_norm_tokens: F2 (Fig. 3, App. A (Fig. 10), Fig. 21).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vitreg import planting
from vitreg.core.capture import Recording
from vitreg.core.extract import extract
from vitreg.core.weights import LoadedModel, load_model
from vitreg.experiments.base import Common, Experiment, Work, param
from vitreg.experiments.costs import Cost
from vitreg.measure import attention, norms
from vitreg.utils.results import finite_or_skipped

#: What a run without any outlier patch records instead of the numbers that need them.
NO_OUTLIERS = "no outlier patches in this run"


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
    threshold: float = param(150.0, 'positive', "the paper's cut-off for DINOv2, applied to `model`'s patch norms (a number: None is not accepted)")
    k_std: float = param(3.0, 'positive', 'relative rule ([TTR]); used for the reference model (no published cut-off)')
    block: int = param(-1, 'int', 'block whose output is measured (-1 is the last), before the final LayerNorm')
    n_detail: int = param(16, 'count', 'images also recorded after the final LayerNorm and with attention (Fig. 21)')
    n_show: int = param(4, 'count', 'images drawn in the norm/attention figure')
    n_bootstrap: int = param(1000, 'count', 'bootstrap resamples (over images) for the confidence interval')
    batch_size: int = param(8, 'count', 'images per forward pass')
    plant: bool = param(False, 'bool', 'smoke runs: plant high-norm tokens (with vertical stripes) in the random model')
    scan_models: list = param(['dino_b16', 'dinov2_g', 'dinov2_g_reg', 'dinov3_l', 'clip_b16_laion', 'vit_base_patch16_siglip_224.webli', 'mae_b16'], 'names', 'models of the zoo table: DINO, DINOv2 without and with registers, DINOv3, CLIP, SigLIP, MAE')
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


def costs(p: Params) -> list[Cost]:
    """What a run with ``p`` does besides forwards, for the run-time table (:mod:`vitreg.experiments.costs`): the
    bootstrap intervals of the outlier share (:func:`outliers`: one for the model, one for the reference; Fig. 3)."""
    from vitreg.core.models import get_spec
    from vitreg.experiments.base import image_count, px
    from vitreg.experiments.costs import bootstrap_s

    n = image_count(p)
    intervals = [(p.n_bootstrap, n, (px(size, m) // get_spec(m).patch_size) ** 2)
                 for m, size in ((p.model, p.image_size), (p.reference_model, p.reference_image_size))]
    return [Cost(f"bootstrap intervals: {len(intervals)} x {p.n_bootstrap:,} resamples of {n} images (CPU)",
                 bootstrap_s(intervals), "resamples x images and images x patches at the rates measured on one core "
                 "here (benchmarks/bench_costs.py), as is: the interval runs on the CPU")]


def models(p: Params) -> list[str]:
    """Every model a run with ``p`` loads, in load order: the model, its reference, then the zoo table's."""
    return list(dict.fromkeys([p.model, p.reference_model, *p.scan_models]))


def loads(p: Params) -> list[str]:
    """Every load a run with ``p`` does, in order: the model and its reference (:func:`load_models`), then each
    model of the zoo table again (:func:`vitreg.measure.scan.scan_models` loads its own, at native size)."""
    return [p.model, p.reference_model, *p.scan_models]


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


# ---------------------------------------------------------------------------------------------------
# The results record
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outliers:
    """The high-norm patch tokens of ``model`` (Fig. 3, right; §2.1's "about 10x"; Fig. 21's norms after the LN)."""

    model: str
    block: int
    image_size: int | list[int]
    threshold: float
    outlier_pct: float
    ci_low_pct: float
    ci_high_pct: float
    ci_level: float
    n_images: int
    n_tokens: int
    norm_ratio: float
    norm_ratio_after_ln: float
    n_images_after_ln: int


@dataclass(frozen=True)
class Reference:
    """The same measure on the reference model without high-norm tokens (Fig. 3, left)."""

    model: str
    image_size: int | list[int]
    threshold: float
    rule: str
    outlier_pct: float
    ci_low_pct: float
    ci_high_pct: float
    norm_ratio: float


@dataclass(frozen=True)
class AttentionShare:
    """The last block's [CLS] attention on the outlier patches (Fig. 21): a number, or ``{"skipped": why}``."""

    model: str
    cls_share_on_outliers_pct: float | dict[str, str]
    cls_share_over_patch_share: float | dict[str, str]
    n_images: int


@dataclass(frozen=True)
class Stripes:
    """Where the outliers sit (App. A, Fig. 10): the busiest position, the column stripes, the border."""

    model: str
    max_position_pct: float
    stripe_index: float | dict[str, str]
    border_ratio: float | dict[str, str]


@dataclass(frozen=True)
class Claims:
    """The reference's max/median norm over the model's (Fig. 3: far below 1)."""

    model: str
    reference_over_model_norm_ratio: float


@dataclass(frozen=True)
class Record:
    """What notebook 02 measured (Fig. 3, App. A Fig. 10, Fig. 21)."""

    outliers: Outliers
    reference: Reference
    attention: AttentionShare
    stripes: Stripes
    claims: Claims
    planted: bool


# ---------------------------------------------------------------------------------------------------
# The steps
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outlying:
    """Patch norms of one model with their cut-off, outlier mask, outlier fraction and max/median ratio."""

    norms: torch.Tensor
    cut: float
    mask: torch.Tensor
    ci: norms.FractionCI
    ratio: float


@dataclass(frozen=True)
class Detail:
    """The first ``n_detail`` images again: norms before and after the final LayerNorm, and [CLS] attention."""

    pre_ln: torch.Tensor
    post_ln: torch.Tensor
    cls_attn: torch.Tensor
    ratio_after_ln: float


@dataclass(frozen=True)
class Positions:
    """How often each position holds an outlier (App. A, Fig. 10), and the summaries of that map."""

    freq: torch.Tensor
    stripe_index: float
    border_ratio: float
    max_position_pct: float


def load_models(p: Params) -> tuple[LoadedModel, LoadedModel]:
    """The model with high-norm tokens and the reference without them (Fig. 3, right and left), at their sizes.

    Args:
        p: the run's parameters.

    Returns:
        ``(model, reference)``.
    """
    loaded = load_model(p.model, pretrained=p.pretrained, image_size=p.image_size, device=p.device)
    reference = load_model(p.reference_model, pretrained=p.pretrained, image_size=p.reference_image_size,
                           device=p.device)
    return loaded, reference


def plant_mask(p: Params, n_images: int, grid: tuple[int, int]) -> torch.Tensor | None:
    """Smoke runs: where to plant high-norm tokens (3% of the patches, more often in three columns, so Fig. 10's
    stripes have a truth to find); None when ``p.plant`` is off.

    Args:
        p: the run's parameters.
        n_images: images that will be forwarded.
        grid: the model's patch grid ``(h, w)``.

    Returns:
        a ``(n_images, h * w)`` bool mask, or None.
    """
    if not p.plant:
        return None
    stripes = torch.ones(grid[1])
    stripes[[1, grid[1] // 2, grid[1] - 2]] = 12.0
    return planting.random_outlier_mask(n_images, grid, fraction=0.03, seed=p.seed, column_bias=stripes)


def block_norms(loaded: LoadedModel, images: Sequence[Any], p: Params,
                mask: torch.Tensor | None = None) -> Recording:
    """Forward ``images`` and keep the norm of every token at the output of ``p.block`` (Fig. 3).

    Args:
        loaded: the model.
        images: the images.
        p: the run's parameters.
        mask: planted high-norm tokens (:func:`plant_mask`), or None.

    Returns:
        the recording (``rec.norms[p.block]``: ``(B, T)``, before the final LayerNorm).
    """
    with planting.planted(loaded, mask):
        return extract(loaded, images, batch_size=p.batch_size, norms=[p.block])


def outliers(patch_norms: torch.Tensor, *, threshold: float | None, k_std: float, n_bootstrap: int,
             seed: int) -> Outlying:
    """The outlier patches among ``patch_norms`` and their share with a bootstrap interval (Fig. 3).

    Args:
        patch_norms: ``(B, N)`` patch-token norms.
        threshold: the absolute cut-off, or None for mean + ``k_std`` std.
        k_std: the relative rule's multiple.
        n_bootstrap: bootstrap resamples over images.
        seed: seed of the resamples.

    Returns:
        the :class:`Outlying` summary.
    """
    cut = norms.outlier_threshold(patch_norms, threshold=threshold, k_std=k_std)
    mask = norms.outlier_mask(patch_norms, threshold=cut)
    ci = norms.outlier_fraction(mask, n_boot=n_bootstrap, seed=seed)
    return Outlying(patch_norms, cut, mask, ci, norms.norm_ratio(patch_norms))


def detail(loaded: LoadedModel, images: Sequence[Any], p: Params, mask: torch.Tensor | None = None) -> Detail:
    """The first ``p.n_detail`` images again, with the final LayerNorm's output and the last block's [CLS]
    attention (Fig. 21; pitfall 2: the final LayerNorm hides the outliers).

    Args:
        loaded: the model.
        images: the run's images (the first ``p.n_detail`` are used).
        p: the run's parameters.
        mask: the planted tokens over all images (:func:`plant_mask`), or None.

    Returns:
        the :class:`Detail` of those images.
    """
    some = images[:p.n_detail]
    with planting.planted(loaded, None if mask is None else mask[:len(some)]):
        rec = extract(loaded, some, batch_size=p.batch_size, norms=[p.block], attn=[-1], attn_rows="prefix",
                      final_norm=True)
    pre_ln = loaded.layout.patches(rec.norms[p.block])
    post_ln = norms.token_norms(loaded.layout.patches(rec.final_norm))
    return Detail(pre_ln, post_ln, rec.attn[-1], norms.norm_ratio(post_ln))


def cls_attention(d: Detail, loaded: LoadedModel, cut: float, *, plant: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """The last block's [CLS] attention maps and their share on the outlier patches (Fig. 21).

    Args:
        d: the detail images (:func:`detail`).
        loaded: the model.
        cut: the outlier cut-off.
        plant: smoke runs: random weights do not attend to planted tokens, so a spike of half the attention mass
            is planted on the first outlier of every image that has one.

    Returns:
        ``(maps, outlier_mask, share)``: ``(B, h, w)`` maps summing to 1, the ``(B, N)`` outlier mask and
        :func:`vitreg.measure.attention.share_on_mask`'s summary.
    """
    mask = norms.outlier_mask(d.pre_ln, threshold=cut)
    cls_attn = d.cls_attn
    has_outlier = mask.any(dim=1)   # an image without outliers gets no spike (argmax of all-False is 0)
    if plant and has_outlier.any():
        cls_attn = cls_attn.float().clone()
        cls_attn[has_outlier] = planting.attention_peak(cls_attn[has_outlier], loaded.layout,
                                                        mask[has_outlier].float().argmax(dim=1), mass=0.5)
    maps = attention.attention_maps(cls_attn, loaded.layout)
    return maps, mask, attention.share_on_mask(maps, mask)


def positions(mask: torch.Tensor, grid: tuple[int, int]) -> Positions:
    """How often each position holds an outlier, with the stripe index, border ratio and the busiest position
    (App. A, Fig. 10).

    Args:
        mask: ``(B, N)`` outlier mask.
        grid: the patch grid ``(h, w)``.

    Returns:
        the :class:`Positions`.
    """
    freq = norms.outlier_frequency_map(mask, grid)
    return Positions(freq, norms.stripe_index(freq), norms.border_ratio(freq), 100 * float(freq.max()))


def build_record(p: Params, main: Outlying, ref: Outlying, reference_rule: str, d: Detail,
                 share: dict[str, float], where: Positions) -> Record:
    """The results record of notebook 02 (Fig. 3, Fig. 10, Fig. 21) from what the steps measured.

    Args:
        p: the run's parameters.
        main: :func:`outliers` of the model.
        ref: :func:`outliers` of the reference model.
        reference_rule: how the reference's cut-off was chosen (its spec's ``threshold_note``).
        d: :func:`detail`.
        share: the [CLS] attention share on outliers (:func:`cls_attention`).
        where: :func:`positions`.

    Returns:
        the :class:`Record`.
    """
    ci, rci = main.ci, ref.ci
    return Record(
        outliers=Outliers(p.model, p.block, p.image_size, main.cut, 100 * ci.fraction, 100 * ci.low, 100 * ci.high,
                          ci.level, ci.n_images, ci.n_tokens, main.ratio, d.ratio_after_ln, len(d.pre_ln)),
        reference=Reference(p.reference_model, p.reference_image_size, ref.cut, reference_rule, 100 * rci.fraction,
                            100 * rci.low, 100 * rci.high, ref.ratio),
        attention=AttentionShare(p.model, finite_or_skipped(100 * share["mean_share"], NO_OUTLIERS),
                                 finite_or_skipped(share["ratio"], NO_OUTLIERS), len(d.pre_ln)),
        stripes=Stripes(p.model, where.max_position_pct, finite_or_skipped(where.stripe_index, NO_OUTLIERS),
                        finite_or_skipped(where.border_ratio, "no outliers in the interior")),
        claims=Claims(p.model, ref.ratio / main.ratio),
        planted=p.plant,
    )


def checks(r: Record) -> list[tuple[str, Any, str]]:
    """The record's numbers the paper gives, as ``(results key, value, model)`` for ``run.check``."""
    m = r.outliers.model
    return [("outliers.outlier_pct", r.outliers.outlier_pct, m),
            ("reference.outlier_pct", r.reference.outlier_pct, r.reference.model),
            ("outliers.norm_ratio", r.outliers.norm_ratio, m),
            ("outliers.norm_ratio_after_ln", r.outliers.norm_ratio_after_ln, m),
            ("claims.reference_over_model_norm_ratio", r.claims.reference_over_model_norm_ratio, m),
            ("attention.cls_share_over_patch_share", r.attention.cls_share_over_patch_share, m),
            ("stripes.max_position_pct", r.stripes.max_position_pct, m)]


def planted_truths(r: Record) -> dict[str, bool]:
    """Smoke runs: whether each part of :func:`plant_mask`'s truth was recovered (3% of the tokens, more often in
    three columns, with an attention spike on them)."""
    o, share = r.outliers, r.attention.cls_share_over_patch_share
    return {
        "outlier share near the planted 3% (0.5-6%)": 0.5 <= o.outlier_pct <= 6,
        "no outliers in the reference model (< 1%)": r.reference.outlier_pct < 1,
        "planted max/median norm at least 5x": o.norm_ratio >= 5,
        "the final LayerNorm hides them (max/median < 2x)": o.norm_ratio_after_ln < 2,
        "reference spread below half the model's": r.reference.norm_ratio < o.norm_ratio / 2,
        "[CLS] attention on them above their patch share": isinstance(share, float) and share > 1,
        "planted stripes: a position holds outliers in at least 20% of images": r.stripes.max_position_pct >= 20,
    }


EXPERIMENT = Experiment("02_high_norm_tokens", Params, models, work, PROFILES,
                        record=Record, costs=costs, loads=loads)
