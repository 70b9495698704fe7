"""Notebook 05_local_information: F5 (Fig. 5b, App. D.2).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from vitreg.experiments.base import Common, Experiment, Work, param, patch_grid
from vitreg.experiments.costs import Cost
from vitreg.experiments.steps import Skipped, load


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 05_local_information (defaults: the real experiment; the notebook's parameters cell is the same)."""

    model: str = param('dinov2_g', 'text', 'DINOv2 ViT-g/14 without registers (Fig. 5b)')
    register_models: list = param(['dinov2_l', 'dinov2_l_reg'], 'list', 'App. D.2 Table 5 stand-in: normal patches, 0 vs 4 registers ([] to skip)')
    image_size: int | list[int] = param(224, 'size', 'not given in the paper; 224 px gives a 16x16 grid (256 position classes)')
    dataset: str = param('pets', 'text', "where the images come from: a vitreg.data.datasets name, or 'photos' (bundled photos)")
    split: str = param('test', 'text', 'split of `dataset` the images are drawn from (a seeded class-balanced subset)')
    download: bool = param(True, 'bool', 'allow a torchvision download (never when offline)')
    data_root: str | None = param(None, 'str', 'datasets folder (default $VITREG_DATA or data/datasets)')
    image_dir: str | None = param(None, 'str', 'a folder of your own images instead (overrides dataset)')
    n_images: int = param(300, 'count', 'a few hundred images: about 77k patch tokens at 224 px')
    train_fraction: float = param(0.7, 'fraction', 'share of the images that train the probes; the rest test them')
    max_train_tokens: int | None = param(None, 'count', 'subsample the training patches for speed (None: all of them)')
    layer: str = param('final_norm', 'text', 'probed features: the output after the final LayerNorm, or a block index')
    threshold: float | None = param(None, 'positive', "outlier cut-off on pre-LN norms (None: the model's own, 150 for DINOv2)")
    l2_grid: list = param([0.01, 0.001, 0.0001, 1e-05], 'positives', 'position probe strengths (chosen on validation)')
    ridge_grid: list = param([10.0, 1.0, 0.1, 0.01], 'positives', 'pixel probe strengths (chosen on validation)')
    batch_size: int = param(32, 'count', 'images per forward pass (feature extraction)')
    use_cache: bool = param(True, 'bool', 'keep features on disk ($VITREG_CACHE or data/cache): a rerun skips extraction')
    cache_dir: str | None = param(None, 'str', 'feature cache folder (default $VITREG_CACHE or data/cache)')
    plant_fraction: float = param(0.0, 'fraction0', 'smoke only: share of patches planted as outliers in random-weight models')
    plant_norm: float = param(1000.0, 'positive', 'smoke only: norm of the vector added to each planted patch (at the middle block)')


#: Overrides of the defaults per profile (the smoke profile: random weights, planted truth, offline, CPU; the
#: lecture profile: small pretrained models at 224 px on the bundled photos).
PROFILES = {'smoke': {'model': 'dinov2_s',
           'register_models': ['dinov2_s', 'dinov2_s_reg'],
           'image_size': 112,
           'dataset': 'photos',
           'n_images': 8,
           'l2_grid': [0.001],
           'ridge_grid': [1.0, 0.01],
           'batch_size': 8,
           'use_cache': False,
           'plant_fraction': 0.08},
 'lecture': {'model': 'dinov2_l',
             'register_models': ['dinov2_l', 'dinov2_l_reg'],
             'image_size': 224,
             'dataset': 'photos',
             'n_images': 10,
             'l2_grid': [0.001, 0.0001],
             'ridge_grid': [1.0, 0.1],
             'batch_size': 4}}


def costs(p: Params) -> list[Cost]:
    """What a run with ``p`` does besides forwards, for the run-time table (:mod:`vitreg.experiments.costs`): the
    position probe (L-BFGS over the grid cells, L2 chosen on validation) and the pixel probe (ridge) of each model,
    on the patch tokens of the training images, scored on the test images' tokens (Fig. 5b, App. D.2 Table 5)."""
    from vitreg.experiments import costs as cm

    position = pixel = 0.0
    for m in models(p):
        d = cm.token_widths(m)[0]
        cells, patch = _grid_cells(p, m)
        n_train, n_test = _probe_tokens(p, cells)
        position += (cm.logistic_cv_probe_s(n=n_train, d=d, c=cells, grid=len(p.l2_grid),
                                            value_bytes=cm.CACHE_VALUE_BYTES)
                     + cm.predict_s(n_test, d, cells, value_bytes=cm.CACHE_VALUE_BYTES))
        pixel += cm.ridge_probe_s(n=n_train, d=d, p=3 * patch * patch, grid=len(p.ridge_grid))
    n = len(models(p))
    fits = 1 if len(p.l2_grid) <= 1 else len(p.l2_grid) + 1
    return [Cost(f"position probe: {fits} L-BFGS fits x {n} models", position,
                 cm.LOGISTIC_SCALING),
            Cost(f"pixel probe: ridge, {len(p.ridge_grid)} strengths x {n} models", pixel,
                 cm.RIDGE_SCALING)]


def _grid_cells(p: Params, model: str) -> tuple[int, int]:
    """``(patch tokens per image, patch side)`` of ``model`` at ``image_size``: the position probe's classes."""
    from vitreg.core.models import get_spec

    h, w = patch_grid(p.image_size, model)
    return h * w, get_spec(model).patch_size


def _probe_tokens(p: Params, cells: int) -> tuple[int, int]:
    """``(training, test)`` patch tokens of the probes: the images split by ``train_fraction`` (as
    :func:`vitreg.measure.local_probes.local_information` does), the training ones capped by ``max_train_tokens``."""
    from vitreg.experiments.costs import validation_rows

    n_images = _n_images(p)
    train_images = validation_rows(n_images, p.train_fraction) if n_images > 1 else n_images
    n_train = train_images * cells
    if p.max_train_tokens is not None:
        n_train = min(n_train, p.max_train_tokens)
    return n_train, (n_images - train_images) * cells


def models(p: Params) -> list[str]:
    """Every model a run with ``p`` loads, in load order: the probed model, then the register comparison's."""
    return list(dict.fromkeys([p.model, *p.register_models]))


def _n_images(p: Params) -> int:
    """Images probed: ``n_images`` of ``dataset`` or ``image_dir``; of the bundled photos at most 14."""
    from vitreg.experiments.base import BUNDLED_PHOTOS

    return min(p.n_images, BUNDLED_PHOTOS) if p.image_dir is None and p.dataset == "photos" else p.n_images


def work(p: Params) -> list[Work]:
    """The forwards a run with ``p`` does: each model once over the images (the features are cached on disk:
    a rerun with ``use_cache`` does none)."""
    from vitreg.experiments.base import px

    return [Work(m, px(p.image_size, m), _n_images(p), "patch features") for m in models(p)]


#: what a non-finite number of the record means.
NOT_MEASURED = "not measured (no tokens of this kind)"
#: the pixel target of the reconstruction probe, recorded with the numbers (the paper does not say its own).
PIXEL_NORMALISATION = "model input normalisation (mean/std); error = L2 norm of a patch's 3*p*p residual"
#: Fig. 5b's three metrics.
METRICS = ("position_top1", "position_distance", "reconstruction_l2")


# --- steps (the notebook and `vitreg extract` call these) -------------------------------------------
@dataclass(frozen=True)
class Images:
    """The probed images (Fig. 5b: "a few hundred natural images").

    Attributes:
        images: PIL images.
        source: where they come from (``"pets-test"``, ``"bundled photos"``, ``"folder:<dir>"``).
        why: why the asked dataset was not used (None: it was).
        key: the images' name in the feature cache.
    """

    images: list
    source: str
    why: str | None
    key: str


def load_images(p: Params) -> Images:
    """The images of a run: ``image_dir``, the bundled photos, or a class-balanced subset of ``dataset``
    (the bundled photos, with the reason, when the dataset is not on this machine).

    Paper: Fig. 5b, App. D.2 Table 5 (the same images for every model)."""
    from vitreg.data.datasets import probe_images

    images, source, why = probe_images(p.dataset, p.split, p.n_images, image_dir=p.image_dir, root=p.data_root,
                                       download=p.download, image_size=p.image_size, seed=p.seed)
    return Images(images, source, why, f"{source}-{len(images)}-seed{p.seed}")


def extract(p: Params, loaded: Any, images: Images) -> dict:
    """Patch tokens, pre-LN norms and input pixels of ``images`` for one model, through the feature cache
    (``use_cache``); smoke runs plant outliers (``plant_fraction``) while the tokens are computed.

    Paper: Fig. 5b, App. D.2 Table 5.

    Returns:
        :func:`vitreg.measure.features.patch_token_features`'s output.
    """
    from vitreg import planting
    from vitreg.measure.features import patch_token_features

    with planting.planted_outlier_share(loaded, fraction=p.plant_fraction, norm=p.plant_norm, seed=p.seed):
        return patch_token_features(loaded, images.images, dataset=images.key, layer=p.layer,
                                    batch_size=p.batch_size, cache=p.use_cache, cache_root=p.cache_dir)


@dataclass
class Probed:
    """One model's measurement: its patch tokens, the outlier cut-off and mask, and both local probes.

    Attributes:
        loaded: the model.
        tokens: :func:`extract`'s output.
        cut: the outlier cut-off on pre-LN norms.
        outlier: ``(B, N)`` bool mask of the outlier patches.
        local: :func:`vitreg.measure.local_probes.local_information`'s output.
    """

    loaded: Any
    tokens: dict
    cut: float
    outlier: Any
    local: dict

    @property
    def outlier_fraction(self) -> float:
        """Share of all patches that are outliers."""
        return self.outlier.float().mean().item()


def mark_outliers(p: Params, loaded: Any, tokens: dict) -> tuple[float, Any]:
    """The outlier cut-off on the last block's pre-LN norms (``threshold``, or the model's own: 150 for
    DINOv2) and the ``(B, N)`` bool mask of the patches above it.

    Paper: Fig. 5b (outliers: norm above the cut-off, before the final LayerNorm)."""
    from vitreg.measure.features import outlier_cut
    from vitreg.measure.norms import outlier_threshold

    cut = float(outlier_threshold(tokens["norms"], threshold=outlier_cut(loaded, p.threshold)))
    return cut, tokens["norms"] > cut


def measure(p: Params, loaded: Any, tokens: dict) -> Probed:
    """Both local probes on one model's patch tokens, normal vs outlier (:func:`mark_outliers`).

    Paper: Fig. 5b (the probed model), App. D.2 Table 5 (each register model)."""
    from vitreg.measure.local_probes import local_information

    cut, outlier = mark_outliers(p, loaded, tokens)
    local = local_information(tokens, outlier, grid=loaded.layout.grid, train_fraction=p.train_fraction,
                              max_train_tokens=p.max_train_tokens, l2_grid=p.l2_grid, ridge_grid=p.ridge_grid,
                              seed=p.seed, device=p.device)
    return Probed(loaded, tokens, cut, outlier, local)


def probe(p: Params, loaded: Any, images: Images) -> Probed:
    """:func:`extract` then :func:`measure`: one model's whole measurement."""
    return measure(p, loaded, extract(p, loaded, images))


def probe_registers(p: Params, main: Probed, images: Images) -> dict[str, Probed]:
    """The same probes on each of ``register_models`` (the probed model is not measured twice).

    Paper: App. D.2 Table 5 (normal patches, 0 vs 4 registers; the public DINOv2-L pair stands in)."""
    return {name: main if name == p.model else probe(p, load(p, name), images) for name in p.register_models}


def prefill(p: Params) -> Iterator[str]:
    """Fill the feature cache a run reads, by the run's own steps (:func:`load_images`, :func:`load`,
    :func:`extract`): the patch tokens of its images for ``model`` and every register model.

    Paper: Fig. 5b, App. D.2 Table 5 (``vitreg extract 05``).

    Yields:
        one line per model filled.
    """
    images = load_images(p)
    for name in dict.fromkeys([p.model, *p.register_models]):
        extract(p, load(p, name), images)
        yield f"{name}: patch tokens of {len(images.images)} images ({images.key})"


# --- the results record ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Group:
    """One token group's probe numbers on the test patches (Fig. 5b: one bar group)."""

    model: str
    position_top1: float
    position_distance: float
    reconstruction_l2: float
    reconstruction_relative: float
    n_test: int


@dataclass(frozen=True)
class Gaps:
    """Fig. 5b's claim: outlier minus normal test patches, per metric (skipped without both groups)."""

    model: str
    position_top1: float | Skipped
    position_distance: float | Skipped
    reconstruction_l2: float | Skipped


@dataclass(frozen=True)
class Claims:
    """The differences the claim of Fig. 5b is judged on."""

    outlier_minus_normal: Gaps


@dataclass(frozen=True)
class RegisterRow:
    """App. D.2 Table 5: one model's normal patches (the metrics are None, and ``skipped`` says why, when its
    test images hold no normal patch)."""

    model: str
    registers: int
    outlier_fraction: float
    position_top1: float | None = None
    position_distance: float | None = None
    reconstruction_l2: float | None = None
    reconstruction_relative: float | None = None
    n_test: int | None = None
    skipped: str | None = None


@dataclass(frozen=True)
class Record:
    """What 05 measured (``results/05_local_information.json``'s ``numbers``).

    Paper: Fig. 5b (``normal``, ``outlier``, ``claims``), App. D.2 Table 5 (``registers``: ``no_reg`` and
    ``reg``, the first two of ``register_models``); the rest is the protocol the numbers were measured under.
    """

    normal: Group | Skipped
    outlier: Group | Skipped
    claims: Claims
    outlier_fraction: float
    outlier_cutoff: float
    images: str
    n_images: int
    n_train_images: int
    n_train_tokens: int
    chance_top1: float
    position_l2: float
    reconstruction_ridge: float
    pixel_normalisation: str
    registers: dict[str, RegisterRow] = field(metadata={"keys": ("no_reg", "reg")})


def _group(entry: dict) -> Group | Skipped:
    return Skipped(entry["skipped"]) if "skipped" in entry else Group(**entry)


def build_record(p: Params, main: Probed, registers: dict[str, Probed], images: Images) -> Record:
    """The results record of a run from its measurements.

    Paper: Fig. 5b, App. D.2 Table 5.

    Args:
        p: the run's parameters.
        main: :func:`probe` of ``model``.
        registers: :func:`probe_registers`'s output.
        images: :func:`load_images`'s output.
    """
    from vitreg.measure import local_probes

    local = main.local
    gaps = local_probes.outlier_minus_normal(local, p.model)
    rows = {}
    for role, (name, r) in zip(("no_reg", "reg"), registers.items()):
        rows[role] = RegisterRow(**{**local_probes.group_numbers(r.local, "normal", name), "model": name},
                                 registers=r.loaded.spec.registers, outlier_fraction=r.outlier_fraction)
    return Record(
        normal=_group(local_probes.group_numbers(local, "normal", p.model)),
        outlier=_group(local_probes.group_numbers(local, "outlier", p.model)),
        claims=Claims(Gaps(**{k: Skipped(v["skipped"]) if isinstance(v, dict) else v for k, v in gaps.items()})),
        outlier_fraction=main.outlier_fraction, outlier_cutoff=main.cut, images=images.source,
        n_images=len(images.images), n_train_images=local["n_train_images"], n_train_tokens=local["n_train_tokens"],
        chance_top1=local["position"]["chance_top1"], position_l2=local["position"]["l2"],
        reconstruction_ridge=local["reconstruction"]["ridge"], pixel_normalisation=PIXEL_NORMALISATION,
        registers=rows)


def checks(numbers: dict) -> Iterator[tuple[str, Any, str | None]]:
    """``(key, value, model)`` of every number of ``data/paper_numbers.yaml`` that 05 writes, from the saved
    ``numbers`` (a skipped number is passed as its ``{"skipped": ...}`` entry).

    Paper: Fig. 5b, App. D.2 Table 5."""
    model = numbers["claims"]["outlier_minus_normal"]["model"]
    for metric in METRICS:
        yield f"claims.outlier_minus_normal.{metric}", numbers["claims"]["outlier_minus_normal"][metric], model
        for group in ("normal", "outlier"):
            yield f"{group}.{metric}", numbers[group].get(metric, numbers[group]), model
    for role, entry in numbers["registers"].items():
        for metric in ("position_top1", "reconstruction_l2"):
            yield f"registers.{role}.{metric}", entry.get(metric, entry), entry.get("model")


def planted_truth(main: Probed) -> list[tuple[str, bool]]:
    """What smoke runs must find about their planted outliers: among the test patches, placed worse and
    reconstructed worse than normal patches (a large planted vector replaces the patch's content).

    Paper: Fig. 5b's direction, on a known ground truth."""
    n, o = main.local["normal"], main.local["outlier"]
    return [(f"planted outliers among the test patches ({o['n_test']})", o["n_test"] > 0),
            (f"position top-1: outlier {o['position_top1']:.2f} < normal {n['position_top1']:.2f}",
             o["position_top1"] < n["position_top1"]),
            (f"pixel L2: outlier {o['reconstruction_l2']:.2f} > normal {n['reconstruction_l2']:.2f}",
             o["reconstruction_l2"] > n["reconstruction_l2"])]


EXPERIMENT = Experiment("05_local_information", Params, models, work, PROFILES,
                        record=Record, costs=costs)
