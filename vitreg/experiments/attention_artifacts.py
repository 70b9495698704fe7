"""Notebook 01_attention_artifacts: F1 (Fig. 1, Fig. 2, App. F).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vitreg import planting
from vitreg.core.extract import extract
from vitreg.core.weights import LoadedModel, load_model
from vitreg.experiments.base import Common, Experiment, Work, param
from vitreg.measure import attention, norms

#: The models the paper says have artifacts (Fig. 1-2): their score minus DINO's is checked.
PAPER_ARTIFACT_MODELS = ("dinov2_l", "dinov2_g", "deit3_b16", "clip_b16_laion")

#: The paper's control without artifacts (App. E): its score minus the artifact models' is checked.
PAPER_CONTROL_MODELS = ("mae_l16",)

#: How the artifact score is computed, in words (saved beside the numbers).
SCORE = "top-k attention share above the grid's uniform share k/N, over 1 - k/N (attention.artifact_score)"

#: Smoke runs: the share of the [CLS] attention moved onto one random patch per image in the artifact families.
PLANTED_MASS = 0.6


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 01_attention_artifacts (defaults: the real experiment; the notebook's parameters cell is the same)."""

    models: list = param(['dino_b16', 'dinov2_l', 'dinov2_g', 'deit3_b16', 'clip_b16_laion', 'mae_l16'], 'list', 'models whose last-block attention and patch norms are scored and drawn (Fig. 2); DINO and MAE are the controls without artifacts')
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
    batch_size: int = param(8, 'count', 'images per forward pass')
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


# ---------------------------------------------------------------------------------------------------
# The results record
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelScores:
    """One model's last-layer [CLS] attention artifact scores (Fig. 2; per head: App. F) and the attention share on
    its high-norm patches."""

    label: str
    family: str
    grid: list[int]
    image_size: list[int]
    per_head_score: list[float]
    artifact_score_mean: float
    artifact_score_median: float
    top_share_mean: float
    top_share_median: float
    top_share_uniform: float
    top_frac: float
    outlier_share_mean: float
    outlier_fraction: float


@dataclass(frozen=True)
class Claims:
    """F1 as differences of mean artifact scores: each artifact model minus DINO, the control minus the lowest
    artifact model (a number, or ``{"skipped": why}`` for a model of the paper that did not run)."""

    artifact_minus_dino: dict[str, float | dict[str, str]] = field(metadata={"keys": PAPER_ARTIFACT_MODELS})
    control_minus_artifacts: dict[str, float | dict[str, str]] = field(metadata={"keys": PAPER_CONTROL_MODELS})


@dataclass(frozen=True)
class HeadModel:
    """App. F, Fig. 18: the share of the head model's heads whose mean score is above DINO's best head."""

    model: str
    heads_above_dino_pct: float | dict[str, str]
    dino_mean_head_score: float | dict[str, str]


@dataclass(frozen=True)
class Record:
    """What notebook 01 measured (Fig. 1, Fig. 2, App. E, App. F)."""

    models: dict[str, ModelScores]
    top_frac: float
    score: str
    display_size: int | list[int]
    upsample_mode: str
    planted: bool
    claims: Claims
    head_model: HeadModel


# ---------------------------------------------------------------------------------------------------
# The steps
# ---------------------------------------------------------------------------------------------------
def check_head_model(p: Params) -> None:
    """Stop with what to do when ``p.head_model`` (App. F) is not one of ``p.models``."""
    if p.head_model not in p.models:
        raise ValueError(f"head_model {p.head_model!r} must be one of models {p.models}")


def load(name: str, p: Params) -> LoadedModel:
    """Model ``name`` at ``p.image_size`` (None: its native resolution)."""
    return load_model(name, pretrained=p.pretrained, image_size=p.image_size, device=p.device)


def artifacts(loaded: LoadedModel, images: Sequence[Any], p: Params,
              spikes: torch.Generator | None = None) -> attention.ArtifactMaps:
    """The last block's [CLS] attention maps of ``loaded`` with their artifact scores (Fig. 2, App. F) and the
    attention share on the high-norm patches (the model's published cut-off, else mean + ``p.k_std`` std).

    Args:
        loaded: the model.
        images: the images.
        p: the run's parameters.
        spikes: smoke runs (``p.plant``): random weights have no spikes, so :data:`PLANTED_MASS` of the attention
            is moved onto one patch per image drawn from this generator, in the families the paper says have
            artifacts (one generator for the whole run, drawn from in the order of ``p.models``).

    Returns:
        :class:`vitreg.measure.attention.ArtifactMaps`.
    """
    layout = loaded.layout
    rec = extract(loaded, images, batch_size=p.batch_size, attn=[-1], attn_rows="prefix", norms=[-1])
    attn = rec.attn[-1]
    if p.plant and spikes is not None and loaded.spec.family in attention.ARTIFACT_FAMILIES:
        where = torch.randint(0, layout.num_patches, (attn.shape[0],), generator=spikes)
        attn = planting.attention_peak(attn, layout, where, mass=PLANTED_MASS)
    outliers = norms.outlier_mask(layout.patches(rec.norms[-1]), threshold=loaded.spec.threshold, k_std=p.k_std)
    return attention.artifact_maps(attn, layout, top_frac=p.top_frac, outliers=outliers)


def model_scores(loaded: LoadedModel, art: attention.ArtifactMaps) -> ModelScores:
    """One model's part of the record: what ran (label, family, grid, size) and :attr:`ArtifactMaps.summary`."""
    return ModelScores(label=loaded.spec.paper_name, family=loaded.spec.family, grid=list(loaded.layout.grid),
                       image_size=list(loaded.image_size), **art.summary)


def build_record(p: Params, scores: Mapping[str, ModelScores], head_scores: torch.Tensor | None) -> Record:
    """The results record of notebook 01 (Fig. 2, App. E, App. F).

    Args:
        p: the run's parameters.
        scores: :func:`model_scores` per model key, in the order of ``p.models``.
        head_scores: ``(B, heads)`` head scores of ``p.head_model`` (:attr:`ArtifactMaps.head_scores`), or None.

    Returns:
        the :class:`Record`.
    """
    summaries = {n: dataclasses.asdict(s) for n, s in scores.items()}
    got = attention.artifact_claims(summaries, head_scores, p.head_model,
                                    paper_models=[*PAPER_ARTIFACT_MODELS, *PAPER_CONTROL_MODELS])
    claims, head = got["claims"], got["head_model"]
    missing = head["heads_above_dino_pct"] if isinstance(head["heads_above_dino_pct"], dict) else None
    return Record(models=dict(scores), top_frac=p.top_frac, score=SCORE, display_size=p.display_size,
                  upsample_mode=p.upsample_mode, planted=p.plant,
                  claims=Claims(claims["artifact_minus_dino"], claims["control_minus_artifacts"]),
                  head_model=HeadModel(p.head_model, head["heads_above_dino_pct"],
                                       missing or head["dino_mean_head_score"]))


def checks(r: Record) -> list[tuple[str, Any, str | None]]:
    """The record's numbers the paper gives, as ``(results key, value, model)`` for ``run.check`` (None: the
    paper number's own model)."""
    out: list[tuple[str, Any, str | None]] = []
    for part in ("artifact_minus_dino", "control_minus_artifacts"):
        out += [(f"claims.{part}.{m}", v, None) for m, v in getattr(r.claims, part).items()]
    return out + [("head_model.heads_above_dino_pct", r.head_model.heads_above_dino_pct, r.head_model.model)]


def planted_truths(r: Record, p: Params) -> dict[str, bool]:
    """Smoke runs: whether the planted spikes (:data:`PLANTED_MASS` in every artifact-family model) were found: every
    artifact model above DINO, the control below them, and most of the head model's heads above DINO's."""
    above, below = r.claims.artifact_minus_dino, r.claims.control_minus_artifacts
    heads = r.head_model.heads_above_dino_pct
    return {
        "artifact models score above DINO": all(_number(above[m]) and above[m] > 0 for m in p.models if m in above),
        "the control scores below every artifact model": all(_number(below[m]) and below[m] < 0
                                                             for m in p.models if m in below),
        f"at least 75% of {p.head_model}'s heads score above DINO's": _number(heads) and heads >= 75,
    }


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


EXPERIMENT = Experiment("01_attention_artifacts", Params, models, work, PROFILES, record=Record)
