"""Notebook 07_registers: F7 (Fig. 1 (bottom), Fig. 7, Fig. 9, App. D.1, D.3).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from vitreg.experiments.base import Common, Experiment, Work, param
from vitreg.measure.registers import RegisterMeasurement, RegisterPair, dinov2_pairs, measure_model, overhead_pct


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 07_registers (defaults: the real experiment; the notebook's parameters cell is the same)."""

    model_pairs: list = param([['dinov2_s', 'dinov2_s_reg'], ['dinov2_b', 'dinov2_b_reg'], ['dinov2_l', 'dinov2_l_reg'], ['dinov2_g', 'dinov2_g_reg']], 'list', 'public DINOv2 pairs: without vs with 4 registers')
    image_size: int | list[int] = param(518, 'size', "DINOv2's native resolution (recorded in the results)")
    n_images: int = param(256, 'count', 'images to average over (a seeded class-balanced subset)')
    image_dir: str | None = param(None, 'str', 'a folder of your own images (wins over `images`)')
    images: str = param('auto', 'image_source', "auto: ImageNet val if $VITREG_DATA has it, else Imagenette val (downloaded once); or 'imagenet', 'imagenette', 'pets', 'photos' (the 14 bundled photos: smoke only)")
    batch_size: int = param(8, 'count', 'images per forward pass')
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


# --- the results record ------------------------------------------------------------------------------
#: The DINOv2 sizes the paper's claims name (Fig. 7: S/B/L/g), in the results' order.
SIZES = ("s", "b", "l", "g")


def _skipped(what: str, why: str) -> dict[str, str]:
    """A skipped number as the results hold it (what :meth:`vitreg.present.notebook.NotebookRun.skip` returns)."""
    return {"skipped": why}


@dataclass
class ModelNumbers:
    """One model's numbers (Fig. 7 norms, Fig. 1 bottom [CLS] maps, Fig. 16 attention): the JSON-able part of
    :func:`vitreg.measure.registers.model_summary`, field for field (percentages 0-100).

    Attributes:
        n_images: images measured.
        tokens: the token layout in words (``1 cls + 4 reg + 256 patches = 261 tokens``).
        threshold: the absolute outlier cut-off (150 for DINOv2).
        patch_outlier_pct: patch tokens above ``threshold``, pre-LN, last block (Fig. 3, Fig. 7).
        patch_norm_median, patch_norm_p99, patch_norm_max: patch-norm statistics.
        high_norms: the scale-free two-Gaussian fit of :func:`vitreg.measure.norms.high_norm_modes`.
        prefix_norm_median: [CLS] and each register -> median norm.
        prefix_norm_cv: [CLS] and each register -> std / mean of its norm over images.
        patch_high_mode_pct: patches in a separate high-norm mode (0 when unimodal).
        cls_artifact_score: share of [CLS] attention on the top 2% of patches (Fig. 1 bottom).
        attention: [CLS] and each register -> shares of its mean map (``border``, ``top``, ``support``,
            ``border_uniform``; Fig. 16).
    """

    n_images: int
    tokens: str
    threshold: float | None
    patch_outlier_pct: float
    patch_norm_median: float
    patch_norm_p99: float
    patch_norm_max: float
    high_norms: dict[str, Any]
    prefix_norm_median: dict[str, float]
    prefix_norm_cv: dict[str, float]
    patch_high_mode_pct: float
    cls_artifact_score: float
    attention: dict[str, dict[str, float]]


@dataclass
class RegModelNumbers(ModelNumbers):
    """A register model's numbers: :class:`ModelNumbers` and where the high norms went (Fig. 7, App. D.1).

    Attributes:
        model: zoo key of the register model.
        register_norm_quantisation: :class:`vitreg.measure.registers.Quantisation` of all register norms.
        register_above_patch_p99_pct: register norms above the patches' 99th percentile.
    """

    model: str
    register_norm_quantisation: dict[str, Any]
    register_above_patch_p99_pct: float


@dataclass
class Pair:
    """One DINOv2 size, without and with 4 registers (Fig. 7, §2.2).

    Attributes:
        no_reg: the model without registers.
        reg: its register twin.
        flops_overhead_pct: extra FLOPs of the twin, in percent, at the run's image size.
    """

    no_reg: ModelNumbers
    reg: RegModelNumbers
    flops_overhead_pct: float


@dataclass
class SkippedClaims:
    """The claimed numbers of a register model that did not run, each ``{"skipped": why}``."""

    register_above_patch_p99_pct: dict[str, str]
    patch_high_mode_pct: dict[str, str]


@dataclass
class SkippedPair:
    """A DINOv2 size the paper's claims name that is not in ``model_pairs``: its claims, skipped."""

    reg: SkippedClaims


@dataclass
class Pairs:
    """Every DINOv2 size of the paper's claims: measured (:class:`Pair`) or skipped (:class:`SkippedPair`)."""

    s: Pair | SkippedPair
    b: Pair | SkippedPair
    l: Pair | SkippedPair  # noqa: E741 (the size's name)
    g: Pair | SkippedPair

    def measured(self) -> dict[str, Pair]:
        """Size -> :class:`Pair` of the sizes this run measured, in :data:`SIZES` order."""
        return {f.name: v for f in fields(self) if isinstance(v := getattr(self, f.name), Pair)}


@dataclass
class NoRegNorms:
    """Patch outliers of the largest pair's model without registers (Fig. 3)."""

    model: str
    outlier_pct: float
    high_mode_pct: float


@dataclass
class Norms:
    """The largest pair's patch outliers without and with registers (Fig. 3 -> Fig. 7: they leave the patches).

    Attributes:
        model: zoo key of the register model.
        reg_outlier_pct: its patch tokens above the cut-off (paper: none for ViT-g).
        reg_high_mode_pct: its patch tokens in a separate high-norm mode.
        no_reg_outlier_pct: the same as ``no_reg.outlier_pct``.
        no_reg: the model without registers.
    """

    model: str
    reg_outlier_pct: float
    reg_high_mode_pct: float
    no_reg_outlier_pct: float
    no_reg: NoRegNorms


@dataclass
class Cost:
    """What 4 registers cost (§2.2: < 2% FLOPs), for the L pair (the largest pair when L did not run)."""

    model: str
    flops_overhead_pct: float
    image_size: int | list[int]


@dataclass
class Record:
    """What notebook 07 saves (``results/07_registers.json``'s ``numbers``).

    Attributes:
        pairs: every DINOv2 size of the claims (Fig. 7).
        norms: the largest pair's patch outliers (Fig. 3, Fig. 7).
        cost: the FLOPs of 4 registers (§2.2).
        n_images: images measured per model.
        planted: whether the smoke profile planted the norms.
    """

    pairs: Pairs
    norms: Norms
    cost: Cost
    n_images: int
    planted: bool


# --- the steps the notebook calls -----------------------------------------------------------------------
def register_pairs(p: Params) -> list[RegisterPair]:
    """The pairs of ``p.model_pairs``, checked against the zoo's register twins (Fig. 7)."""
    return dinov2_pairs(p.model_pairs)


def pair_models(pairs: Sequence[RegisterPair]) -> list[str]:
    """The zoo keys of ``pairs`` in the order they are measured: each model, then its twin."""
    return [key for pair in pairs for key in (pair.no_reg, pair.reg)]


def measure(p: Params, images: Sequence[Any], pairs: Sequence[RegisterPair]) -> dict[str, RegisterMeasurement]:
    """Section 1: load every model of ``pairs`` in turn, record the last block's pre-LN norms and its prefix
    tokens' attention rows, and measure them (:func:`vitreg.measure.registers.measure_model`).

    Paper: Fig. 7 (norms), Fig. 1 bottom, Fig. 9, Fig. 16 (attention), §2.2 (FLOPs). With ``p.plant`` (smoke
    only) high norms are planted while recording: in the patches without registers, in the registers with them.
    One model is in memory at a time; a line per model is printed once it is measured.

    Returns:
        zoo key -> :class:`vitreg.measure.registers.RegisterMeasurement`, in load order.
    """
    from vitreg import planting
    from vitreg.core import weights
    from vitreg.core.extract import extract

    measured: dict[str, RegisterMeasurement] = {}
    for key in pair_models(pairs):
        loaded = weights.load_model(key, pretrained=p.pretrained, image_size=p.image_size, device=p.device)
        planted = planting.planted_registers(loaded, len(images), seed=p.seed) if p.plant else contextlib.nullcontext()
        with planted:  # recordings stay on the model's device, then move with a blocking copy
            rec = extract(loaded, images, batch_size=p.batch_size, norms=[-1], attn=[-1], attn_rows="prefix", to=None)
        measured[key] = measure_model(loaded, rec, levels=p.levels, border_width=p.border_width, n_show=p.n_show)
        print(measured[key])
        del loaded, rec  # free memory for the next model
    return measured


def flops_overhead(pairs: Sequence[RegisterPair], measured: dict[str, RegisterMeasurement]) -> dict[str, float]:
    """Size -> extra FLOPs of the register twin in percent (§2.2: 4 registers cost < 2%)."""
    return {pair.size: overhead_pct(measured[pair.no_reg].flops, measured[pair.reg].flops) for pair in pairs}


def _pair(pair: RegisterPair, measured: dict[str, RegisterMeasurement], overhead: float) -> Pair:
    return Pair(no_reg=ModelNumbers(**measured[pair.no_reg].summary),
                reg=RegModelNumbers(model=pair.reg, **measured[pair.reg].summary), flops_overhead_pct=overhead)


def build_record(p: Params, pairs: Sequence[RegisterPair], measured: dict[str, RegisterMeasurement], *,
                 n_images: int, skip: Callable[[str, str], dict[str, str]] = _skipped) -> Record:
    """The numbers notebook 07 saves, from what :func:`measure` measured.

    Paper: Fig. 3 and Fig. 7 (the largest pair's patch outliers without and with registers), Fig. 7 and App. D.1
    (register norms above the patches'), §2.2 (FLOPs of the L pair, else the largest).

    Args:
        p: the run's parameters.
        pairs: :func:`register_pairs` (the last is the largest).
        measured: :func:`measure` of those pairs.
        n_images: images measured per model.
        skip: records a size of the claims that did not run (``skip("pairs.b", why)``, e.g.
            :meth:`vitreg.present.notebook.NotebookRun.skip`) and returns its ``{"skipped": why}``.
    """
    if not pairs:
        raise ValueError("model_pairs is empty: list at least one [dinov2_<size>, dinov2_<size>_reg] pair")
    overhead = flops_overhead(pairs, measured)
    by_size: dict[str, Pair | SkippedPair] = {pair.size: _pair(pair, measured, overhead[pair.size]) for pair in pairs}
    for size in [s for s in SIZES if s not in by_size]:
        why = skip(f"pairs.{size}", f"dinov2_{size}_reg not in model_pairs")
        by_size[size] = SkippedPair(SkippedClaims(register_above_patch_p99_pct=why, patch_high_mode_pct=why))
    big = pairs[-1]
    cost = next((pair for pair in pairs if pair.size == "l"), big)
    no_reg, reg = measured[big.no_reg].summary, measured[big.reg].summary
    return Record(
        pairs=Pairs(**by_size),
        norms=Norms(model=big.reg, reg_outlier_pct=reg["patch_outlier_pct"],
                    reg_high_mode_pct=reg["patch_high_mode_pct"], no_reg_outlier_pct=no_reg["patch_outlier_pct"],
                    no_reg=NoRegNorms(model=big.no_reg, outlier_pct=no_reg["patch_outlier_pct"],
                                      high_mode_pct=no_reg["patch_high_mode_pct"])),
        cost=Cost(model=cost.reg, flops_overhead_pct=overhead[cost.size], image_size=p.image_size),
        n_images=n_images, planted=p.plant)


def claims(record: Record) -> list[tuple[str, Any, str]]:
    """``(results key, ours, model)`` of every number of ``record`` that the paper's claims are judged on.

    Paper: Fig. 3 (outliers without registers), Fig. 7 (none with them; the high norms in the registers; no
    separate high-norm mode on the scale-free measure, which applies to S/B where 150 says nothing), §2.2 (FLOPs).
    """
    out: list[tuple[str, Any, str]] = [
        ("norms.no_reg.outlier_pct", record.norms.no_reg.outlier_pct, record.norms.no_reg.model),
        ("norms.reg_outlier_pct", record.norms.reg_outlier_pct, record.norms.model)]
    for size in SIZES:
        out.append((f"pairs.{size}.reg.register_above_patch_p99_pct",
                    getattr(record.pairs, size).reg.register_above_patch_p99_pct, f"dinov2_{size}_reg"))
    for size, pair in record.pairs.measured().items():
        out.append((f"pairs.{size}.reg.patch_high_mode_pct", pair.reg.patch_high_mode_pct, pair.reg.model))
    out.append(("cost.flops_overhead_pct", record.cost.flops_overhead_pct, record.cost.model))
    return out


def planted_checks(record: Record) -> dict[str, bool]:
    """What the smoke profile's planted norms must give (:func:`vitreg.planting.planted_registers`): high-norm
    patches without registers, fewer with them, and a separate high-norm mode only without them (Fig. 7)."""
    no_reg, reg = record.norms.no_reg_outlier_pct, record.norms.reg_outlier_pct
    big = list(record.pairs.measured().values())[-1]
    return {f"high-norm patch tokens without registers ({no_reg:.2f}% > 0.1%)": no_reg > 0.1,
            f"fewer with registers ({reg:.2f}% < {no_reg:.2f}%)": reg < no_reg,
            "the scale-free fit finds the planted mode without registers and none with them":
                bool(big.no_reg.high_norms["bimodal"]) and not big.reg.high_norms["bimodal"]}


EXPERIMENT = Experiment("07_registers", Params, models, work, PROFILES, record=Record)
