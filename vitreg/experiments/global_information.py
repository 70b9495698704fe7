"""Notebook 06_global_information: F6 (Table 1, App. G Table 6).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from vitreg.data.datasets import PAPER_DATASETS
from vitreg.experiments.base import Common, Experiment, Work, param
from vitreg.experiments.costs import Cost
from vitreg.experiments.steps import Skipped, load


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 06_global_information (defaults: the real experiment; the notebook's parameters cell is the same)."""

    model: str = param('dinov2_g', 'text', 'Table 1: DINOv2 ViT-g/14 without registers')
    image_size: int | list[int] = param(224, 'size', "not given in the paper; DINOv2's linear evaluations use 224 px")
    datasets: list = param(['aircraft', 'cifar10', 'cifar100', 'cub', 'caltech101', 'cars', 'dtd', 'flowers', 'food', 'imagenet1k', 'places205', 'pets', 'sun', 'voc'], 'list', 'Table 1 rows: the datasets probed with `model` (missing ones are skipped)')
    ttr_models: list = param(['dinov2_l', 'dinov2_l_reg'], 'list', '[TTR] Table 1 comparison (first without, second with registers)')
    ttr_datasets: list = param(['imagenet1k', 'cifar10', 'cifar100'], 'list', '[TTR] comparison: the datasets probed with both ttr_models (missing ones are skipped)')
    download: bool = param(True, 'bool', 'torchvision sets download when missing (never when offline)')
    data_root: str | None = param(None, 'str', 'datasets folder (default $VITREG_DATA or data/datasets); ImageFolder sets live there')
    max_train: int = param(50000, 'count', 'class-balanced subset of the training split (CIFAR: all of it)')
    max_test: int = param(10000, 'count', 'class-balanced subset of the test split (CIFAR: all of it)')
    n_draws: int = param(3, 'count', 'random tokens per kind and image: mean and std over the draws (Table 6)')
    layer: str = param('final_norm', 'text', 'probed features: the output after the final LayerNorm, or a block index')
    threshold: float | None = param(None, 'positive', "outlier cut-off on pre-LN norms (None: the model's own, 150 for DINOv2)")
    l2_grid: list = param([0.1, 0.01, 0.001, 0.0001, 1e-05, 1e-06], 'positives', 'L2 strengths, chosen on the validation split')
    val_fraction: float = param(0.2, 'fraction', 'share of the training images held out to choose the L2 strength (the probe is then refit on all)')
    batch_size: int = param(64, 'count', 'images per forward pass (feature extraction)')
    use_cache: bool = param(True, 'bool', 'keep features on disk ($VITREG_CACHE or data/cache): a rerun skips extraction')
    cache_dir: str | None = param(None, 'str', 'feature cache folder (default $VITREG_CACHE or data/cache)')
    synthetic_n: int = param(256, 'count', "training images of the 'synthetic' set (smoke runs); its test split has half")
    plant_fraction: float = param(0.0, 'fraction0', 'smoke only: share of patches planted as outliers in random-weight models')
    plant_norm: float = param(1000.0, 'positive', 'smoke only: norm of the vector added to each planted patch (at the middle block)')


#: Overrides of the defaults per profile (the smoke profile: random weights, planted truth, offline, CPU; the
#: lecture profile: small pretrained models at 224 px on the bundled photos).
PROFILES = {'smoke': {'model': 'dinov2_s_reg',
           'image_size': 112,
           'datasets': ['synthetic', 'cifar10'],
           'ttr_models': ['dinov2_s_reg', 'dinov2_s_reg'],
           'ttr_datasets': ['synthetic'],
           'download': False,
           'n_draws': 2,
           'l2_grid': [0.01, 0.0001],
           'batch_size': 16,
           'use_cache': False,
           'synthetic_n': 48,
           'plant_fraction': 0.08},
 'lecture': {'model': 'dinov2_l',
             'image_size': 224,
             'datasets': ['cifar10'],
             'ttr_datasets': [],
             'max_train': 40,
             'max_test': 20,
             'n_draws': 3,
             'l2_grid': [0.01, 0.001, 0.0001],
             'batch_size': 8}}


def costs(p: Params) -> list[Cost]:
    """What a run with ``p`` does besides forwards, for the run-time table (:mod:`vitreg.experiments.costs`): one
    logistic probe (L2 chosen on validation) per measured (model, dataset) pair, token kind and draw, on the
    training split's tokens, scored on the test split's (Table 1 / App. G Table 6, [TTR] Table 1)."""
    from vitreg.data.datasets import DATASETS
    from vitreg.experiments import costs as cm

    seconds: dict[bool, float] = {False: 0.0, True: 0.0}  # keyed by "needs ImageNet-1k"
    probes: dict[bool, int] = {False: 0, True: 0}
    for m, d in _probed_pairs(p):
        width, n_cls, n_reg = cm.token_widths(m)
        kinds = n_cls + 1 + n_reg + 2 * p.n_draws  # [CLS], central patch, registers, each draw of normal/outlier
        n_train, n_test = _split(p, d, "train"), _split(p, d, "test")
        c = min(DATASETS[d].num_classes, n_train)
        seconds[d == "imagenet1k"] += kinds * (cm.logistic_cv_probe_s(n=n_train, d=width, c=c, grid=len(p.l2_grid),
                                                                     val_fraction=p.val_fraction,
                                                                     value_bytes=cm.CACHE_VALUE_BYTES)
                                               + cm.predict_s(n_test, width, c, value_bytes=cm.CACHE_VALUE_BYTES))
        probes[d == "imagenet1k"] += kinds
    fits = 1 if len(p.l2_grid) <= 1 else len(p.l2_grid) + 1
    return [Cost(f"single-token probes{' on ImageNet-1k' if imnet else ''}: {probes[imnet]} x {fits} L-BFGS fits",
                 seconds[imnet], cm.LOGISTIC_SCALING, needs="imagenet1k" if imnet else "")
            for imnet in (False, True) if probes[imnet]]


def _probed_pairs(p: Params) -> list[tuple[str, str]]:
    """The (model, dataset) pairs a run probes: the Table 1 model on ``datasets``, then the [TTR] pairs not already
    measured (as :func:`work` and :func:`measure_ttr` count them)."""
    pairs = [(p.model, d) for d in p.datasets]
    return pairs + [(m, d) for m in p.ttr_models for d in p.ttr_datasets if not (m == p.model and d in p.datasets)]


def models(p: Params) -> list[str]:
    """Every model a run with ``p`` loads, in load order: the Table 1 model, then [TTR]'s pair."""
    return list(dict.fromkeys([p.model, *p.ttr_models]))


def _split(p: Params, name: str, split: str) -> int:
    """Images of one split of dataset ``name`` the probes read (the synthetic set is sized by ``synthetic_n``)."""
    from vitreg.experiments import sizes

    cap = p.max_train if split == "train" else p.max_test
    if name == "synthetic":
        return sizes.capped(p.synthetic_n if split == "train" else max(2, p.synthetic_n // 2), cap)
    return sizes.split_images(name, split, cap)


def work(p: Params) -> list[Work]:
    """The forwards a run with ``p`` does: train and test split of every dataset, for the Table 1 model and for
    each [TTR] model (a pair already measured above is not measured again); absent datasets are skipped."""
    from vitreg.experiments.base import px

    rows = []
    for m, d in _probed_pairs(p):
        needs = "" if d == "synthetic" else d
        rows += [Work(m, px(p.image_size, m), _split(p, d, s), f"{d} {s}", needs) for s in ("train", "test")]
    return rows


#: Table 1's columns: one random normal patch, one random outlier patch, [CLS].
KINDS = ("normal", "outlier", "cls")
#: the datasets of [TTR] Table 1's comparison.
TTR_DATASETS = ("imagenet1k", "cifar10", "cifar100")
#: what a non-finite number of the record means.
NOT_MEASURED = "not measured (no tokens of this kind)"
#: why a paper dataset has no row in a run.
NOT_RUN = "not run: not in this run's `datasets`/`ttr_datasets` parameter"
#: how outliers are found, recorded with the numbers.
OUTLIERS = ("pre-LN norm at the model's detection block (the last; DINOv2-L: the second-to-last, as [TTR]) above "
            "the model's cut-off")
CLASSIFIER = "multinomial logistic regression, standardised features, L2 chosen on validation"


# --- steps (the notebook and `vitreg extract` call these) -------------------------------------------
def load_models(p: Params) -> dict[str, Any]:
    """``model`` and the ``ttr_models``, each loaded once (:func:`vitreg.experiments.steps.load`).

    Paper: Table 1 (DINOv2 ViT-g), [TTR] Table 1 (the public DINOv2-L pair)."""
    return {name: load(p, name) for name in dict.fromkeys([p.model, *p.ttr_models])}


def extract(p: Params, loaded: Any, dataset: str) -> dict | str:
    """One model's single tokens of both splits of ``dataset``, through the feature cache (``use_cache``);
    smoke runs plant outliers (``plant_fraction``) while the tokens are computed.

    Paper: Table 1 / App. G Table 6.

    Returns:
        :func:`vitreg.measure.global_probes.dataset_tokens`'s output: the features by split, or why the
        dataset was skipped.
    """
    from vitreg import planting
    from vitreg.measure.global_probes import dataset_tokens

    with planting.planted_outlier_share(loaded, fraction=p.plant_fraction, norm=p.plant_norm, seed=p.seed):
        return dataset_tokens(loaded, dataset, root=p.data_root, download=p.download, max_train=p.max_train,
                              max_test=p.max_test, n_draws=p.n_draws, layer=p.layer, threshold=p.threshold,
                              batch_size=p.batch_size, seed=p.seed, cache=p.use_cache, cache_root=p.cache_dir,
                              synthetic_n=p.synthetic_n)


def measure(p: Params, loaded: Any, dataset: str) -> dict:
    """Single-token classification of ``dataset`` with one model: :func:`extract`, then the probes.

    Paper: Table 1 / App. G Table 6 (one row), [TTR] Table 1.

    Returns:
        :func:`vitreg.measure.global_probes.global_information`'s output (``{"dataset", "skipped"}`` when the
        data is not here).
    """
    from vitreg.measure.features import detection_block
    from vitreg.measure.global_probes import classify_tokens

    feats = extract(p, loaded, dataset)
    if isinstance(feats, str):
        return {"dataset": dataset, "skipped": feats}
    return classify_tokens(feats, dataset, detect_block=detection_block(loaded), n_draws=p.n_draws,
                           l2_grid=p.l2_grid, val_fraction=p.val_fraction, seed=p.seed, device=p.device)


def ttr_jobs(p: Params) -> list[tuple[str, str]]:
    """The (model, dataset) pairs of the [TTR] comparison, in order."""
    return [(m, d) for m in p.ttr_models for d in p.ttr_datasets]


def measure_ttr(p: Params, models: Mapping[str, Any], table1: Mapping[str, dict]) -> dict[tuple[str, str], dict]:
    """:func:`measure` of every [TTR] pair; a pair Table 1 already measured (same model, same settings) is reused.

    Paper: [TTR] Table 1 (the public DINOv2-L pair: [CLS], central patch, outlier, register)."""
    return {(m, d): table1[d] if m == p.model and d in table1 else measure(p, models[m], d)
            for m, d in ttr_jobs(p)}


def prefill(p: Params) -> Iterator[str]:
    """Fill the feature cache a run reads, by the run's own steps (:func:`load_models`, :func:`extract`):
    the single tokens of every dataset of ``datasets`` for ``model`` and of ``ttr_datasets`` for the
    ``ttr_models``, both splits (a dataset that is not here is skipped, as in the notebook).

    Paper: Table 1 / App. G Table 6, [TTR] Table 1 (``vitreg extract 06``).

    Yields:
        one line per (model, dataset).
    """
    models = load_models(p)
    for name, dataset in dict.fromkeys([*((p.model, d) for d in p.datasets), *ttr_jobs(p)]):
        feats = extract(p, models[name], dataset)
        if isinstance(feats, str):
            yield f"{name} / {dataset}: skipped ({feats})"
        else:
            yield (f"{name} / {dataset}: single tokens of train {len(feats['train']['labels'])}, "
                   f"test {len(feats['test']['labels'])} images")


# --- the results record ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Table1Row:
    """One dataset's row of Table 1 (mean over the draws; ``skipped`` alone when it was not measured).

    Attributes:
        normal, outlier, cls: top-1 (or mean-per-class, ``metric``) of a classifier on one token of the kind.
        normal_std, outlier_std, cls_std: std over the draws (App. G Table 6).
        outlier_coverage: share of test images that have an outlier (the outlier column is measured on them).
        n_train_by_kind: each column's training images.
        central: the grid-centre patch ([TTR]); registers: each register token (models with registers).
        protocol_differs: why this cell does not follow the paper's protocol (VOC).
    """

    model: str | None = None
    normal: float | Skipped | None = None
    outlier: float | Skipped | None = None
    cls: float | Skipped | None = None
    normal_std: float | None = None
    outlier_std: float | None = None
    cls_std: float | None = None
    outlier_coverage: float | None = None
    n_train: int | None = None
    n_test: int | None = None
    num_classes: int | None = None
    metric: str | None = None
    detect_block: int | None = None
    n_train_by_kind: dict[str, int] | None = None
    protocol_differs: str | None = None
    central: float | None = None
    registers: dict[str, float] | None = None
    skipped: str | None = None


@dataclass(frozen=True)
class TTRRow:
    """One dataset's row of [TTR] Table 1: [CLS], central patch and outlier of the model without registers,
    the mean register of the model with them (``skipped`` alone when it was not measured)."""

    models: list[str] | None = None
    cls: float | Skipped | None = None
    central: float | Skipped | None = None
    outlier: float | Skipped | None = None
    register: float | Skipped | None = None
    registers_each: dict[str, float] | None = None
    skipped: str | None = None


@dataclass(frozen=True)
class Claims:
    """The differences the claim of Table 1 is judged on: ``outlier_minus_normal`` holds ``model`` and, per
    dataset, outlier minus normal single-token accuracy (or ``{"skipped": why}``)."""

    outlier_minus_normal: dict[str, float | Skipped | str] = field(metadata={"keys": ("model", *PAPER_DATASETS)})


@dataclass(frozen=True)
class Details:
    """Every probe's full output (per kind: each draw, chosen L2, counts), by dataset and by ``model/dataset``."""

    table1: dict[str, dict]
    ttr: dict[str, dict]


@dataclass(frozen=True)
class Protocol:
    """What the numbers were measured under."""

    features: str | int
    outliers: str
    detect_block: dict[str, int]
    metric: dict[str, str]
    protocol_differs: dict[str, str]
    classifier: str
    n_draws: int
    max_train: int
    max_test: int
    image_size: Any


@dataclass(frozen=True)
class Record:
    """What 06 measured (``results/06_global_information.json``'s ``numbers``).

    Paper: Table 1 / App. G Table 6 (``table1``: every paper dataset, run or not, and any other run),
    [TTR] Table 1 (``ttr_l``), the claim per dataset (``claims``)."""

    table1: dict[str, Table1Row] = field(metadata={"keys": PAPER_DATASETS})
    ttr_l: dict[str, TTRRow] = field(metadata={"keys": TTR_DATASETS})
    claims: Claims
    details: Details
    protocol: Protocol


def _value(v: Any) -> Any:
    return Skipped(v["skipped"]) if isinstance(v, dict) and set(v) == {"skipped"} else v


def _row(entry: dict) -> Table1Row:
    regs = {k: v for k, v in entry.items() if k.startswith("reg")}
    rest = {k: _value(v) for k, v in entry.items() if k not in regs}
    return Table1Row(**rest, registers=regs or None)


def build_record(p: Params, models: Mapping[str, Any], table1: Mapping[str, dict],
                 ttr: Mapping[tuple[str, str], dict]) -> Record:
    """The results record of a run from its measurements.

    Paper: Table 1 / App. G Table 6, [TTR] Table 1.

    Args:
        p: the run's parameters.
        models: :func:`load_models`'s output.
        table1: :func:`measure` of ``model`` by dataset.
        ttr: :func:`measure_ttr`'s output.
    """
    from vitreg.measure import features, global_probes

    not_run = TTRRow(skipped=NOT_RUN)
    ttr_rows = {d: global_probes.ttr_entry([ttr[(m, d)] for m in p.ttr_models], p.ttr_models) for d in p.ttr_datasets}
    return Record(
        table1={**{d: Table1Row(skipped=NOT_RUN) for d in PAPER_DATASETS},
                **{d: _row(global_probes.table1_entry(r, p.model, KINDS)) for d, r in table1.items()}},
        ttr_l={**{d: not_run for d in TTR_DATASETS},
               **{d: TTRRow(**{k: _value(v) for k, v in e.items()}) for d, e in ttr_rows.items()}},
        claims=Claims({k: _value(v) for k, v in global_probes.outlier_minus_normal(table1, p.model).items()}),
        details=Details(dict(table1), {f"{m}/{d}": r for (m, d), r in ttr.items()}),
        protocol=Protocol(
            features=p.layer, outliers=OUTLIERS,
            detect_block={m: features.detection_block(loaded) for m, loaded in models.items()},
            metric={d: global_probes.dataset_metric(d) for d in p.datasets},
            protocol_differs={d: why for d, why in global_probes.PROTOCOL_DIFFERS.items() if d in p.datasets},
            classifier=CLASSIFIER, n_draws=p.n_draws, max_train=p.max_train, max_test=p.max_test,
            image_size=p.image_size))


def checks(numbers: dict) -> Iterator[tuple[str, Any, str | None]]:
    """``(key, value, model)`` of every number of ``data/paper_numbers.yaml`` that 06 writes, from the saved
    ``numbers`` (a skipped number is passed as its ``{"skipped": ...}`` entry).

    Paper: Table 1 (each measured dataset's three columns and its outlier-minus-normal gap)."""
    gaps = numbers["claims"]["outlier_minus_normal"]
    model = gaps["model"]
    for name in gaps:
        if name != "model":
            yield f"claims.outlier_minus_normal.{name}", gaps[name], model
    for name in numbers["details"]["table1"]:
        for kind in KINDS:
            yield f"table1.{name}.{kind}", numbers["table1"][name].get(kind, numbers["table1"][name]), model


def planted_truth(table1: Mapping[str, dict]) -> list[tuple[str, bool]]:
    """What smoke runs must find: the planted outliers in the test images of every measured dataset.

    Paper: Table 1's outlier column, on a known ground truth."""
    return [(f"{name}: planted outliers found in {res['outlier_share_test']:.0%} of the test images",
             res["outlier_share_test"] > 0) for name, res in table1.items() if "skipped" not in res]


EXPERIMENT = Experiment("06_global_information", Params, models, work, PROFILES,
                        record=Record, costs=costs)
