"""Notebook 04_redundant_patches: F4 (Fig. 5a).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vitreg import planting
from vitreg.core.weights import LoadedModel, load_model
from vitreg.experiments.base import Common, Experiment, Work, param
from vitreg.measure import norms, similarity
from vitreg.utils.results import finite_or_skipped

#: What a run without any outlier patch records instead of the numbers that need them.
NO_OUTLIERS = "no outlier patches in this run"

#: Where the neighbour similarity is measured: the key of :func:`similarities`' output, in words.
STAGES = {"embed": "after the patch embedding", "embed_pos": "after adding the position embedding"}

#: Smoke runs: share of the most redundant patches that get planted high-norm tokens.
PLANTED_SHARE = 0.03


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 04_redundant_patches (defaults: the real experiment; the notebook's parameters cell is the same)."""

    model: str = param('dinov2_g', 'text', "the paper's model for Fig. 5a")
    image_size: int | list[int] = param(518, 'size', "DINOv2's native resolution; recorded")
    image_dir: str | None = param(None, 'str', 'a folder of natural images (wins over `images`)')
    images: str = param('auto', 'image_source', "auto: ImageNet val if $VITREG_DATA has it, else Imagenette val (downloaded once); or 'imagenet', 'imagenette', 'pets', 'photos' (the 14 bundled photos: smoke only)")
    n_images: int = param(256, 'count', 'images forwarded (a seeded class-balanced subset)')
    threshold: float = param(150.0, 'positive', "outlier cut-off on the output norm (the paper's; a number: None is not accepted)")
    k_std: float = param(3.0, 'positive', 'width of the relative rule mean + k_std * std, which applies only without a cut-off: unused while threshold is set')
    block: int = param(-1, 'int', "block whose output norm decides 'outlier' (-1 is the last, before the final LayerNorm)")
    batch_size: int = param(8, 'count', 'images per forward pass')
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


# ---------------------------------------------------------------------------------------------------
# The results record
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Similarity:
    """Fig. 5a: cosine similarity to the 4 neighbours at the patch embedding, outliers vs normal patches (a number,
    or ``{"skipped": why}`` when the run has no outlier)."""

    model: str
    measured_at: str
    outlier_mean: float | dict[str, str]
    normal_mean: float
    outlier_median: float | dict[str, str]
    normal_median: float
    auc: float | dict[str, str]
    n_outlier: int
    n_normal: int
    outlier_minus_normal: float | dict[str, str]


@dataclass(frozen=True)
class SimilarityWithPos:
    """The same after adding the position embedding (no verdict: the paper measures before it)."""

    model: str
    measured_at: str
    outlier_mean: float | dict[str, str]
    normal_mean: float
    auc: float | dict[str, str]


@dataclass(frozen=True)
class Record:
    """What notebook 04 measured (Fig. 5a)."""

    similarity: Similarity
    similarity_with_pos: SimilarityWithPos
    position_embedding_changes_result: bool
    threshold: float
    block: int
    image_size: int | list[int]
    planted: bool


# ---------------------------------------------------------------------------------------------------
# The steps
# ---------------------------------------------------------------------------------------------------
def load(p: Params) -> LoadedModel:
    """The model of Fig. 5a at ``p.image_size``."""
    return load_model(p.model, pretrained=p.pretrained, image_size=p.image_size, device=p.device)


def similarities(loaded: LoadedModel, images: Sequence[Any], p: Params) -> dict[str, torch.Tensor]:
    """Neighbour similarity at the patch embedding, before and after the position embedding, and the patch norms
    at ``p.block``'s output (Fig. 5a).

    Smoke runs (``p.plant``): random weights have no outliers, so high-norm tokens are planted on the
    :data:`PLANTED_SHARE` most redundant patches and the images are forwarded again.

    Args:
        loaded: the model.
        images: the images.
        p: the run's parameters.

    Returns:
        ``embed`` and ``embed_pos`` ``(B, h, w)`` similarities and ``norms`` ``(B, N)`` patch norms.
    """
    sims = similarity.patch_embedding_similarity(loaded, images, block=p.block, batch_size=p.batch_size)
    if p.plant:
        redundant = sims["embed"].flatten(1) >= sims["embed"].flatten().quantile(1 - PLANTED_SHARE)
        with planting.planted(loaded, redundant):
            sims = similarity.patch_embedding_similarity(loaded, images, block=p.block, batch_size=p.batch_size)
    return sims


def outliers(patch_norms: torch.Tensor, p: Params) -> tuple[float, torch.Tensor]:
    """The cut-off on the output norm (``p.threshold``, or mean + ``p.k_std`` std) and the ``(B, N)`` outlier mask."""
    cut = norms.outlier_threshold(patch_norms, threshold=p.threshold, k_std=p.k_std)
    return cut, norms.outlier_mask(patch_norms, threshold=cut)


def summaries(sims: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, dict[str, float]]:
    """:func:`vitreg.measure.similarity.similarity_summary` of outliers vs normal patches at each of :data:`STAGES`."""
    return {stage: similarity.similarity_summary(sims[stage], mask) for stage in STAGES}


def build_record(p: Params, cut: float, summary: dict[str, dict[str, float]]) -> Record:
    """The results record of notebook 04 (Fig. 5a) from :func:`summaries`.

    Args:
        p: the run's parameters.
        cut: the outlier cut-off used.
        summary: :func:`summaries`.

    Returns:
        the :class:`Record`.
    """
    e, q = summary["embed"], summary["embed_pos"]
    return Record(
        similarity=Similarity(
            p.model, "patch embedding, before the position embedding",
            finite_or_skipped(e["mean_outlier"], NO_OUTLIERS), e["mean_normal"],
            finite_or_skipped(e["median_outlier"], NO_OUTLIERS), e["median_normal"],
            finite_or_skipped(e["auc"], NO_OUTLIERS), e["n_outlier"], e["n_normal"],
            finite_or_skipped(e["mean_outlier"] - e["mean_normal"], NO_OUTLIERS)),
        similarity_with_pos=SimilarityWithPos(
            p.model, "after adding the position embedding", finite_or_skipped(q["mean_outlier"], NO_OUTLIERS),
            q["mean_normal"], finite_or_skipped(q["auc"], NO_OUTLIERS)),
        position_embedding_changes_result=similarity.position_embedding_changes(e, q),
        threshold=cut, block=p.block, image_size=p.image_size, planted=p.plant,
    )


def checks(r: Record) -> list[tuple[str, Any, str]]:
    """The record's numbers the paper gives, as ``(results key, value, model)`` for ``run.check``."""
    s = r.similarity
    return [(f"similarity.{key}", getattr(s, key), s.model)
            for key in ("outlier_minus_normal", "auc", "outlier_mean", "normal_mean")]


def _above(a: Any, b: Any) -> bool:
    return isinstance(a, float) and isinstance(b, float) and a > b


def planted_truths(r: Record) -> dict[str, bool]:
    """Smoke runs: whether the outliers planted on the most redundant patches (:func:`similarities`) were found."""
    s, q = r.similarity, r.similarity_with_pos
    auc = f"{s.auc:.3f}" if isinstance(s.auc, float) else "none"
    return {
        f"outliers exist on the planted patches ({s.n_outlier} patches)": s.n_outlier > 0,
        "planted outliers are more similar to their neighbours than normal patches": _above(s.outlier_mean,
                                                                                            s.normal_mean),
        f"similarity predicts the planted outliers (AUC {auc} >= 0.6)": isinstance(s.auc, float) and s.auc >= 0.6,
        "same order after the position embedding": _above(q.outlier_mean, q.normal_mean),
    }


EXPERIMENT = Experiment("04_redundant_patches", Params, models, work, PROFILES, record=Record)
