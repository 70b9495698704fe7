"""Notebook 00_tour: - (§2 (pitfalls, token layout)).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vitreg import planting
from vitreg.core.capture import Recording, capture, explicit_attention
from vitreg.core.extract import extract
from vitreg.core.weights import LoadedModel, load_model
from vitreg.experiments.base import Common, Experiment, Work, param

#: Smoke runs: the patches (row-major, counted from the first patch) that get planted high-norm tokens.
PLANTED_PATCHES = (3, 7)


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 00_tour (defaults: the real experiment; the notebook's parameters cell is the same)."""

    model: str = param('dinov2_l', 'text', 'DINOv2 ViT-L/14 without registers: it has artifacts')
    image_size: int | list[int] = param(518, 'size', "DINOv2's native resolution; 224 changes the numbers")
    n_images: int = param(4, 'count', 'images to look at (the tour draws every one)')
    image_dir: str | None = param(None, 'str', 'a folder of your own images (wins over `images`)')
    images: str = param('auto', 'image_source', "auto: ImageNet val if $VITREG_DATA has it, else Imagenette val (downloaded once); or 'imagenet', 'imagenette', 'pets', 'photos' (the 14 bundled photos: smoke only)")
    batch_size: int = param(4, 'count', 'images per forward pass')
    plant: bool = param(False, 'bool', 'smoke only: plant high-norm tokens so random weights have something to find')


#: Overrides of the defaults per profile (the smoke profile: random weights, planted truth, offline, CPU; the
#: lecture profile: small pretrained models at 224 px on the bundled photos).
PROFILES = {'smoke': {'images': 'photos', 'model': 'dinov2_s', 'image_size': 224, 'plant': True},
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


# ---------------------------------------------------------------------------------------------------
# The results record
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claims:
    """§2.1 and pitfall 2: the max/median patch norm before the final LayerNorm over the one after it."""

    model: str
    ln_spread_ratio: float


@dataclass(frozen=True)
class Record:
    """What the tour measured (§2: token layout, norms before and after the final LayerNorm, attention)."""

    num_tokens: int
    num_patches: int
    max_over_median_norm_pre_ln: float
    max_over_median_norm_post_ln: float
    outlier_fraction_pre_ln: float | None
    attention_recompute_max_abs_diff: float
    n_images: int
    claims: Claims


# ---------------------------------------------------------------------------------------------------
# The steps
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spread:
    """Patch norms at the last block's output (``pre``) and after the final LayerNorm (``post``), ``(B, N)``
    each, with their max/median ratios and the share above the model's published cut-off (None without one)."""

    pre: torch.Tensor
    post: torch.Tensor
    ratio_pre: float
    ratio_post: float
    outlier_fraction: float | None


def load(p: Params) -> LoadedModel:
    """The tour's model at ``p.image_size``."""
    return load_model(p.model, pretrained=p.pretrained, image_size=p.image_size, device=p.device)


@contextlib.contextmanager
def planted(loaded: LoadedModel, p: Params) -> Iterator[None]:
    """Smoke runs (``p.plant``): high-norm tokens on :data:`PLANTED_PATCHES` at the middle block's output for every
    forward inside the ``with``; nothing otherwise."""
    if not p.plant:
        yield
        return
    tokens = [loaded.layout.num_prefix + i for i in PLANTED_PATCHES]
    with planting.planted_outliers(loaded.model, block=loaded.num_blocks // 2, tokens=tokens):
        yield


def record_tokens(loaded: LoadedModel, images: Sequence[Any], p: Params) -> Recording:
    """Every block's output norms, the last block's prefix attention rows and the final LayerNorm's output (§2).

    Args:
        loaded: the model.
        images: the images.
        p: the run's parameters.

    Returns:
        the recording (``rec.norms[b]`` for every block ``b``, ``rec.attn[-1]``, ``rec.final_norm``).
    """
    return extract(loaded, images, batch_size=p.batch_size, desc=f"{p.model} forward",
                   norms="all", attn=[-1], attn_rows="prefix", final_norm=True)


def norm_spread(rec: Recording, loaded: LoadedModel) -> Spread:
    """Pitfall 2: the patch norms before and after the final LayerNorm and their max/median spread.

    Args:
        rec: :func:`record_tokens`.
        loaded: the model.

    Returns:
        the :class:`Spread`.
    """
    layout = loaded.layout
    pre = layout.patches(rec.norms[loaded.num_blocks - 1])
    post = layout.patches(rec.final_norm).norm(dim=-1)
    threshold = loaded.spec.threshold
    share = None if threshold is None else (pre > threshold).float().mean().item()
    return Spread(pre, post, (pre.max() / pre.median()).item(), (post.max() / post.median()).item(), share)


def fused_attention() -> bool:
    """Whether timm builds its attention on the fused kernel (``scaled_dot_product_attention``), which never
    materialises the attention weights (pitfall 3)."""
    from timm.layers import use_fused_attn

    return bool(use_fused_attn())


def attention_difference(loaded: LoadedModel, x: torch.Tensor) -> float:
    """Pitfall 3: the largest difference between the last block's attention recomputed from q and k
    (:func:`vitreg.core.capture.capture`) and timm's explicit softmax path, on the batch ``x``."""
    with torch.inference_mode(), explicit_attention(loaded.model, [-1]) as explicit, \
            capture(loaded.model, attn=[-1]) as check:
        loaded.forward(x)
    return (explicit[-1][0].float() - check.attn[-1].to(explicit[-1][0].device)).abs().max().item()


def build_record(p: Params, loaded: LoadedModel, spread: Spread, attn_diff: float, n_images: int) -> Record:
    """The results record of the tour from what the steps measured.

    Args:
        p: the run's parameters.
        loaded: the model (its token layout).
        spread: :func:`norm_spread`.
        attn_diff: :func:`attention_difference`.
        n_images: images forwarded.

    Returns:
        the :class:`Record`.
    """
    return Record(loaded.layout.num_tokens, loaded.layout.num_patches, spread.ratio_pre, spread.ratio_post,
                  spread.outlier_fraction, attn_diff, n_images, Claims(p.model, spread.ratio_pre / spread.ratio_post))


def checks(r: Record) -> list[tuple[str, Any, str]]:
    """The record's numbers the paper gives, as ``(results key, value, model)`` for ``run.check``."""
    return [("claims.ln_spread_ratio", r.claims.ln_spread_ratio, r.claims.model)]


def planted_truths(r: Record) -> dict[str, bool]:
    """Smoke runs: whether the planted outliers show before the final LayerNorm and vanish after it."""
    return {"the final LayerNorm hides the planted outliers (spread before > 2x after)":
            r.max_over_median_norm_pre_ln > 2 * r.max_over_median_norm_post_ln}


EXPERIMENT = Experiment("00_tour", Params, models, work, PROFILES, record=Record)
