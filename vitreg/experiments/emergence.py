"""Notebook 03_emergence: F3 (Fig. 4).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vitreg import planting
from vitreg.core.extract import extract
from vitreg.core.weights import LoadedModel, load_model
from vitreg.experiments.base import Common, Experiment, Work, param
from vitreg.measure import norms

#: The models of the paper's size claim (Fig. 4c), smallest first: each has an entry in the record, measured or
#: skipped with the reason.
CLAIM_SIZES = ("dinov2_s", "dinov2_b", "dinov2_l", "dinov2_g")

#: The one model trained from scratch; the public S/B/L are distilled from it.
UNDISTILLED = "dinov2_g"

#: Smoke runs: share of patches that get planted high-norm tokens.
PLANTED_SHARE = 0.03


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 03_emergence (defaults: the real experiment; the notebook's parameters cell is the same)."""

    depth_models: list = param(['dinov2_g', 'dinov2_l'], 'list', "Fig. 4a: every block's norms")
    size_models: list = param(['dinov2_s', 'dinov2_b', 'dinov2_l', 'dinov2_g'], 'list', 'Fig. 4c proxy, smallest first')
    image_size: int | list[int] = param(518, 'size', "DINOv2's native resolution; recorded")
    image_dir: str | None = param(None, 'str', 'a folder of natural images (wins over `images`)')
    images: str = param('auto', 'image_source', "auto: ImageNet val if $VITREG_DATA has it, else Imagenette val (downloaded once); or 'imagenet', 'imagenette', 'pets', 'photos' (the 14 bundled photos: smoke only)")
    n_images: int = param(256, 'count', 'images forwarded through every model (a seeded class-balanced subset)')
    threshold: float = param(150.0, 'positive', "the paper's cut-off on patch-token norms, applied at every block (a number: None is not accepted)")
    k_std: float = param(3.0, 'positive', 'width of the relative rule mean + k_std * std per block, which applies only without a cut-off: unused while threshold is set')
    min_fraction: float = param(0.005, 'fraction', 'emergence: share of outliers (0.5%) that must be reached and kept')
    span: int = param(3, 'count', 'emergence: consecutive blocks over which the share min_fraction must hold')
    n_bootstrap: int = param(1000, 'count', 'bootstrap resamples (over images) for the interval of the output outlier share (Fig. 4c proxy)')
    batch_size: int = param(8, 'count', 'images per forward pass')
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


# ---------------------------------------------------------------------------------------------------
# The results record
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Depth:
    """Fig. 4a's main model: the block (from 1) where outliers settle in (``{"skipped": why}`` when no block has
    them), and the outlier share per block (%)."""

    model: str
    emergence_block: int | dict[str, str]
    n_blocks: int
    fractions_pct: list[float]


@dataclass(frozen=True)
class DepthClaim:
    """What the paper claims of a model's depth profile: no outliers in the first 10% of blocks (%, or
    ``{"skipped": why}`` for a model of the claim that was not run)."""

    early_outlier_pct: float | dict[str, str]


@dataclass(frozen=True)
class DepthProfile(DepthClaim):
    """One model's patch norms along depth (Fig. 4a): :meth:`vitreg.measure.norms.DepthProfile.to_dict`."""

    emergence_block: int | None
    n_blocks: int
    fractions_pct: list[float]
    median_norm: list[float]
    max_norm: list[float]


@dataclass(frozen=True)
class SizeClaim:
    """What the paper claims of a model size (Fig. 4c): its outlier share above the cut-off and in a separate
    high-norm mode (%, or ``{"skipped": why}`` for a model of the claim that was not run)."""

    outlier_pct: float | dict[str, str]
    high_mode_pct: float | dict[str, str]


@dataclass(frozen=True)
class SizeProxy(SizeClaim):
    """One model size at the output (Fig. 4c proxy): the share above the cut-off with its bootstrap interval, and the
    scale-free two-mode fit (:meth:`vitreg.measure.norms.HighNorms.to_dict`)."""

    ci_low_pct: float
    ci_high_pct: float
    max_median_ratio: float
    separation: float
    mode_gap: float
    bimodal: bool
    mode_cut: float | None
    separation_min: float
    mode_gap_min: float
    distilled: bool


@dataclass(frozen=True)
class Record:
    """What notebook 03 measured (Fig. 4a, the Fig. 4c proxy; Fig. 4b skipped)."""

    depth: Depth
    depth_models: dict[str, DepthClaim] = field(metadata={"keys": CLAIM_SIZES})
    size_proxy: dict[str, SizeClaim] = field(metadata={"keys": CLAIM_SIZES})
    size_rule: str
    training_time: dict[str, str]
    threshold: float | None
    min_fraction: float
    span: int
    image_size: int | list[int]
    planted: bool


# ---------------------------------------------------------------------------------------------------
# The steps
# ---------------------------------------------------------------------------------------------------
def model_order(p: Params) -> list[str]:
    """Every model once, in the order they are loaded: the size panel's, then the depth panel's others."""
    return list(dict.fromkeys([*p.size_models, *p.depth_models]))


def load(name: str, p: Params) -> LoadedModel:
    """Model ``name`` at ``p.image_size``."""
    return load_model(name, pretrained=p.pretrained, image_size=p.image_size, device=p.device)


@contextlib.contextmanager
def planted(loaded: LoadedModel, p: Params, n_images: int) -> Iterator[None]:
    """Smoke runs (``p.plant``): high-norm tokens on :data:`PLANTED_SHARE` of the patches from
    :func:`vitreg.planting.planted_emergence_block` (15/40 of the depth) on, for every forward inside the ``with``;
    nothing otherwise."""
    mask = None
    if p.plant:
        mask = planting.random_outlier_mask(n_images, loaded.layout.grid, fraction=PLANTED_SHARE, seed=p.seed)
    with planting.planted(loaded, mask, block=planting.planted_emergence_block(loaded.num_blocks)):
        yield


def patch_norm_stack(loaded: LoadedModel, images: Sequence[Any], p: Params) -> torch.Tensor:
    """The patch norms at every block's output, before the final LayerNorm (Fig. 4a).

    Args:
        loaded: the model.
        images: the images.
        p: the run's parameters.

    Returns:
        ``(L, B, N)`` norms.
    """
    rec = extract(loaded, images, batch_size=p.batch_size, norms="all")
    return rec.norm_stack()[:, :, loaded.layout.patch_slice]


def depth(stack: torch.Tensor, p: Params) -> norms.DepthProfile:
    """Fig. 4a: the outlier share and norm quantiles per block, and the emergence block (``p.min_fraction`` of the
    patches for ``p.span`` blocks)."""
    return norms.depth_profile(stack, threshold=p.threshold, k_std=p.k_std, min_fraction=p.min_fraction, span=p.span)


def size_measures(stack: torch.Tensor, p: Params) -> tuple[norms.FractionCI, norms.HighNorms]:
    """Fig. 4c proxy: the outlier share at the output above the cut-off (with its bootstrap interval) and the
    scale-free two-mode fit (no 150 cut-off: S/B norms are smaller)."""
    out = stack[-1]
    ci = norms.outlier_fraction(norms.outlier_mask(out, threshold=p.threshold, k_std=p.k_std), n_boot=p.n_bootstrap,
                                seed=p.seed)
    return ci, norms.high_norm_modes(out, seed=p.seed)


def build_record(p: Params, profiles: Mapping[str, norms.DepthProfile],
                 size_cis: Mapping[str, norms.FractionCI], size_modes: Mapping[str, norms.HighNorms]) -> Record:
    """The results record of notebook 03 (Fig. 4a, Fig. 4c proxy): every model of :data:`CLAIM_SIZES` that did not
    run gets the claim's numbers as skipped, with the reason.

    Args:
        p: the run's parameters.
        profiles: :func:`depth` per model (those of ``p.depth_models`` are recorded).
        size_cis: the outlier shares of :func:`size_measures`, per model of ``p.size_models``.
        size_modes: the two-mode fits of :func:`size_measures`, per model of ``p.size_models``.

    Returns:
        the :class:`Record`.
    """
    main = profiles[p.depth_models[0]]
    depth_models: dict[str, DepthClaim] = {n: DepthProfile(**profiles[n].to_dict()) for n in p.depth_models}
    if UNDISTILLED not in depth_models:
        depth_models[UNDISTILLED] = DepthClaim({"skipped": f"{UNDISTILLED} not in depth_models"})
    size_proxy: dict[str, SizeClaim] = {n: SizeProxy(**size_cis[n].to_pct_dict(), **size_modes[n].to_dict(),
                                                     distilled=n != UNDISTILLED) for n in p.size_models}
    for n in CLAIM_SIZES:
        if n not in size_proxy:
            why = {"skipped": f"{n} not in size_models"}
            size_proxy[n] = SizeClaim(why, why)
    return Record(
        depth=Depth(p.depth_models[0], _emergence_or_why(main.emergence, p), main.n_blocks,
                    main.to_dict()["fractions_pct"]),
        depth_models=depth_models, size_proxy=size_proxy,
        size_rule="high_mode_pct: share of patches in the high component of a two-Gaussian fit in log-norm when "
                  f"it is separated (Ashman's D > {norms.SEPARATION_MIN}); outlier_pct: above the absolute cut-off "
                  "(ViT-g/L's 150)",
        training_time={"skipped": "needs intermediate training checkpoints, which are not public"},
        threshold=p.threshold, min_fraction=p.min_fraction, span=p.span, image_size=p.image_size, planted=p.plant,
    )


def _emergence_or_why(block: int | None, p: Params) -> int | dict[str, str]:
    """The emergence block, or why there is none (a results file holds a number or ``{"skipped": why}``)."""
    if block is not None:
        return block
    return {"skipped": f"no block has {p.min_fraction:.1%} of its patches above {p.threshold:g} for {p.span} "
                       "consecutive blocks (no outliers at this depth profile)"}


def checks(r: Record, p: Params) -> list[tuple[str, Any, str | None]]:
    """The record's numbers the paper gives, as ``(results key, value, model)`` for ``run.check`` (None: the
    paper number's own model)."""
    out: list[tuple[str, Any, str | None]] = [
        ("depth.emergence_block", r.depth.emergence_block, r.depth.model),
        (f"depth_models.{UNDISTILLED}.early_outlier_pct", r.depth_models[UNDISTILLED].early_outlier_pct, None),
        (f"size_proxy.{UNDISTILLED}.outlier_pct", r.size_proxy[UNDISTILLED].outlier_pct, None)]
    return out + [(f"size_proxy.{n}.high_mode_pct", r.size_proxy[n].high_mode_pct, n) for n in p.size_models]


def planted_truths(r: Record, p: Params) -> dict[str, bool]:
    """Smoke runs: whether :func:`planted`'s truth was recovered: the emergence block right after the planted one, a
    quiet start, and the planted outliers at the output of the largest model (above the cut-off and as a mode)."""
    out: dict[str, bool] = {}
    for n in p.depth_models:
        d = r.depth_models[n]
        out[f"{n}: emergence at the planted block"] = (
            d.emergence_block == planting.planted_emergence_block(d.n_blocks) + 1)
        out[f"{n}: no outliers in the first 10% of blocks"] = d.early_outlier_pct < 100 * p.min_fraction
    largest = r.size_proxy[p.size_models[-1]]
    out[f"{p.size_models[-1]} (largest) has the planted outliers at the output"] = (
        largest.outlier_pct >= 100 * p.min_fraction)
    out[f"{p.size_models[-1]}: the scale-free fit finds the planted mode"] = largest.bimodal
    return out


EXPERIMENT = Experiment("03_emergence", Params, models, work, PROFILES, record=Record)
