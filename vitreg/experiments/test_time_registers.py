"""Notebook 10_test_time_registers: F7 (beyond the paper: [TTR] (test-time registers)).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.

The notebook calls the steps below and draws: :func:`detect` (register neurons), :func:`measure` (the last block
without / with the test-time register, and the trained-register twin), :func:`shifted`, :func:`lost_with_ttr`,
:func:`probes`, then :func:`record` builds the :class:`Record` it saves. Smoke runs plant the answer
(:func:`planted_truth`, from the profile's ``plant``); each step enters the planting itself, for its own forwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from vitreg import planting
from vitreg.core import hooks
from vitreg.core.extract import extract
from vitreg.core.images import preprocess
from vitreg.core.models import get_spec, register_twin
from vitreg.core.weights import LoadedModel, load_model
from vitreg.data.boxes import data_root as find_root
from vitreg.data.boxes import open_box_datasets
from vitreg.data.datasets import labels_of, subset_indices, try_load_dataset
from vitreg.experiments.base import Common, Experiment, Work, param
from vitreg.experiments.costs import Cost
from vitreg.experiments.records import to_numbers
from vitreg.measure import lost, ttr



@dataclass(frozen=True)
class Params(Common):
    """The parameters of 10_test_time_registers (defaults: the real experiment; the notebook's parameters cell is the same)."""

    models: list = param(['dinov2_l', 'clip_b16_laion'], 'list', "[TTR]'s public code: DINOv2-L and OpenCLIP B/16 (LAION-2B)")
    detect_settings: dict = param({'dinov2_l': {'detect_block': -2, 'threshold': 150.0, 'highest_layer': 17, 'top_k': 50}, 'clip_b16_laion': {'detect_block': -1, 'threshold': 30.0, 'highest_layer': 5, 'top_k': 10}}, 'mapping', "per model: [TTR]'s settings (their public code)")
    sparsity: bool = param(True, 'bool', 'keep a unit only if at least half of all tokens have activation < 0.5 (on in [TTR])')
    image_size: int | list[int] = param(224, 'size', "[TTR]'s resolution")
    n_images: int = param(356, 'count', 'the first n_detect find the neurons, the other 256 measure the effect')
    n_detect: int = param(100, 'count', '[TTR]: about 100 detection images')
    image_dir: str | None = param(None, 'str', 'a folder of your own images (wins over `images`)')
    images: str = param('auto', 'image_source', "auto: ImageNet val if $VITREG_DATA has it, else Imagenette val (downloaded once); or 'imagenet', 'imagenette', 'pets', 'photos' (the 14 bundled photos: smoke only)")
    batch_size: int = param(8, 'count', 'images per forward pass (neuron detection and measurement)')
    n_show: int = param(4, 'count', 'images in the attention-map figures')
    plant: bool = param(False, 'bool', 'smoke only: plant register neurons (known answer) in the random models')
    plant_block: int = param(2, 'count0', 'smoke: the block whose MLP units write the planted outliers')
    plant_units: int = param(4, 'count', 'smoke: how many units (detection must return exactly these)')
    lost_model: str = param('dinov2_l', 'text', "LOST with a test-time register ([TTR]'s VOC07 row): this model of `models`, beside its twin")
    lost_datasets: list = param(['VOC07'], 'list', "[TTR]'s row: VOC07 trainval (also 'VOC12', 'COCO20k'); 'synthetic' for smoke runs")
    data_root: str | None = param(None, 'str', "box datasets' root; None: $VITREG_DATA, else data/datasets (see vitreg/data/boxes.py)")
    lost_limit: int | None = param(None, 'count', 'images per box dataset (None: all 5011 of VOC07 trainval)')
    synthetic_image_size: int | list[int] = param(375, 'size', "height of the 'synthetic' box images (width 4/3 of it: VOC-like)")
    bias_sweep: list = param([-1.0, -0.9, -0.8, -0.7, -0.6, -0.5, -0.4, -0.3, -0.2, -0.1, 0.0], 'numbers', "[TTR]'s sweep, as notebook 08")
    sweep_blocks: list = param([-4, -3, -2, -1], 'list', '[TTR]: the last 4 blocks')
    sweep_features: list = param(['q', 'k', 'v'], 'list', '[TTR]: queries, keys and values')
    lost_batch_size: int = param(32, 'count', 'at most: images of one padded size are batched together')
    num_workers: int = param(8, 'count0', 'processes that read and pad the box images (0: none)')
    probe_models: list = param(['dinov2_l'], 'list', 'linear probes on the test-time register token ([TTR] Table 1: DINOv2-L)')
    probe_dataset: str = param('imagenet1k', 'text', "ImageNet-1k (skipped when absent) or 'synthetic' (smoke: a planted global signal)")
    probe_n_train: int = param(10000, 'count', 'training images of the probes (class-balanced subset)')
    probe_n_val: int = param(10000, 'count', 'validation images they are scored on')


#: Overrides of the defaults per profile (the smoke profile: random weights, planted truth, offline, CPU; the
#: lecture profile: small pretrained models at 224 px on the bundled photos).
PROFILES = {'smoke': {'images': 'photos',
           'models': ['dinov2_s', 'clip_b16_laion'],
           'detect_settings': {'dinov2_s': {'detect_block': -1,
                                            'threshold': 150.0,
                                            'highest_layer': 5,
                                            'top_k': 4},
                               'clip_b16_laion': {'detect_block': -1,
                                                  'threshold': 150.0,
                                                  'highest_layer': 5,
                                                  'top_k': 4}},
           'image_size': 112,
           'n_images': 8,
           'n_detect': 4,
           'batch_size': 4,
           'n_show': 3,
           'plant': True,
           'plant_block': 2,
           'plant_units': 4,
           'lost_model': 'dinov2_s',
           'lost_datasets': ['VOC07', 'synthetic'],
           'synthetic_image_size': 112,
           'lost_limit': 8,
           'bias_sweep': [0.0, -0.2],
           'lost_batch_size': 8,
           'num_workers': 0,
           'probe_models': ['dinov2_s'],
           'probe_dataset': 'synthetic',
           'probe_n_train': 32,
           'probe_n_val': 16},
 'lecture': {'images': 'photos',
             'models': ['dinov2_l', 'clip_b16_laion'],
             'image_size': 224,
             'n_images': 10,
             'n_detect': 4,
             'n_show': 4,
             'batch_size': 4}}


def costs(p: Params) -> list[Cost]:
    """What a run with ``p`` does besides forwards, for the run-time table (:mod:`vitreg.experiments.costs`): LOST's
    sweep scoring and CorLoc of the three LOST runs per box dataset (:func:`lost_sweep_costs`), and the linear probes
    of :func:`probes` ([TTR] Table 1)."""
    return [*lost_sweep_costs(p), _probe_cost(p)]


def lost_sweep_costs(p: Params) -> list[Cost]:
    """[TTR]'s sweep scored on every box image of ``lost_datasets``, three times (as is, with a test-time register,
    the twin; padded, native size), on the model's device, and its CorLoc (CPU). Paper: Table 3; [TTR]'s VOC07 row."""
    from vitreg.experiments import costs as cost_models
    from vitreg.experiments import sizes

    if p.lost_model not in p.models:
        return []
    sweep = lost.ttr_settings(p.bias_sweep, blocks=p.sweep_blocks, features=p.sweep_features)
    groups = len({(s.which, s.block, s.normalize) for s in sweep})
    twin = register_twin(p.lost_model)
    runs = [cost_models.lost_run(d, sizes.box_images(d, p.lost_limit), model=m, patch=get_spec(m).patch_size,
                                 batch_size=p.lost_batch_size, groups=groups, settings=len(sweep),
                                 synthetic_hw=(p.synthetic_image_size, p.synthetic_image_size * 4 // 3))
            for d in p.lost_datasets for m in [p.lost_model, p.lost_model, *([twin] if twin else [])]]
    return cost_models.lost_sweep_rows(runs, what="[TTR] sweep")


def _probe_cost(p: Params) -> Cost:
    """The probes of :func:`probes`: per model of ``probe_models`` that is in ``models``, one logistic probe per
    token kind ([CLS], central patch, test-time register), L2 chosen on validation (the default grid), each
    scored on the ``probe_n_val`` validation images ([TTR] Table 1)."""
    from vitreg.data.datasets import DATASETS
    from vitreg.experiments import costs as cm
    from vitreg.measure.estimators import L2_GRID

    kinds = 3
    probed = [k for k in p.probe_models if k in p.models]
    c = min(DATASETS[p.probe_dataset].num_classes, p.probe_n_train)
    seconds = sum(kinds * (cm.logistic_cv_probe_s(n=p.probe_n_train, d=cm.token_widths(k)[0], c=c, grid=len(L2_GRID))
                           + cm.predict_s(p.probe_n_val, cm.token_widths(k)[0], c)) for k in probed)
    return Cost(f"{p.probe_dataset} probes: {kinds * len(probed)} x {len(L2_GRID) + 1} L-BFGS fits", seconds,
                cm.LOGISTIC_SCALING, needs=p.probe_dataset)

#: [TTR]'s two models: the paper's numbers are about them (a run without one records it as skipped).
TTR_MODELS = ("dinov2_l", "clip_b16_laion")
#: What :func:`vitreg.measure.ttr.measure` summarises of one run of the last block.
SUMMARY_KEYS = ("patch_outlier_pct", "detect_block_outlier_pct", "patch_high_mode_pct", "patch_max_norm",
                "patch_median_norm", "cls_artifact_score",
                "extra_norm_median", "extra_above_threshold_pct", "extra_above_patch_p99_pct")
#: The box datasets LOST may run on (lower-cased, as the rows name them).
LOST_KEYS = ("voc07", "voc12", "coco20k", "synthetic")
#: The LOST roles, as the figure names them.
LOST_LABELS = {"no_reg": "as is", "test_time_register": "+ test-time register", "reg": "trained registers"}


# --- the results record ---------------------------------------------------------------------------
@dataclass
class ModelResult:
    """One model: its register neurons and its last block without / with a test-time register ([TTR] Fig. 1, §4).

    A model of :data:`TTR_MODELS` the run did not load holds only the skipped ``ttr`` and ``cls_artifact_drop``.
    """

    ttr: dict[str, Any] = field(metadata={"keys": SUMMARY_KEYS})
    cls_artifact_drop: Any
    model: str | None = None
    settings: dict[str, Any] | None = None
    n_neurons: int | None = None
    neurons_per_block: dict[str, int] | None = None
    no_ttr: dict[str, Any] | None = field(default=None, metadata={"keys": SUMMARY_KEYS})
    trained_registers: dict[str, Any] | None = None


@dataclass
class Shifted:
    """[TTR]'s "shifted" demonstration: the neurons' value written into one chosen patch."""

    model: str
    patch: int
    chosen_patch_is_max_pct: float


@dataclass
class Lost:
    """LOST CorLoc (%) as is, with a test-time register and with trained registers ([TTR]'s VOC07 row, Table 3):
    per role ``{"model", <dataset>, <dataset>_setting, <dataset>_n_images}`` (a dataset not run: ``{"skipped"}``)."""

    protocol: str
    sweep: dict[str, Any]
    no_reg: dict[str, Any] = field(metadata={"keys": LOST_KEYS})
    test_time_register: dict[str, Any] = field(metadata={"keys": LOST_KEYS})
    ttr_gain: dict[str, Any] = field(metadata={"keys": LOST_KEYS})
    reg: dict[str, Any] | None = field(default=None, metadata={"keys": LOST_KEYS})


@dataclass
class Record:
    """What notebook 10 saves (``results/10_test_time_registers.json``'s ``numbers``)."""

    models: dict[str, ModelResult] = field(metadata={"keys": TTR_MODELS})
    n_detect: int
    n_eval: int
    image_size: Any
    planted: bool
    shifted: Shifted
    lost: Lost
    probe: dict[str, Any]


# --- planted truth (smoke runs), supplied by the profile ------------------------------------------
@dataclass
class PlantedNeurons:
    """Smoke: ``n_units`` random MLP units of ``block`` made to write a high-norm vector on two patches of every
    image (:func:`vitreg.planting.planted_register_neurons`): what detection must return exactly.

    Attributes:
        units: per model key, the planted units (chosen by :meth:`choose`).
        patches: per model key, the two patches (indices in the grid at the notebook's resolution).
    """

    block: int
    n_units: int
    seed: int
    units: dict[str, list[int]] = field(default_factory=dict)
    patches: dict[str, list[int]] = field(default_factory=dict)

    def choose(self, key: str, loaded: LoadedModel) -> None:
        """Draw the units of model ``key`` (seeded) and its patches (the first and the middle one)."""
        hidden = hooks.mlp_hidden_size(loaded.model, self.block)
        order = torch.randperm(hidden, generator=torch.Generator().manual_seed(self.seed))
        self.units[key] = order[:self.n_units].tolist()
        self.patches[key] = [0, loaded.layout.num_patches // 2]

    def on(self, key: str, loaded: LoadedModel) -> Any:
        """The planting context of model ``key`` on ``loaded`` (a copy at another size keeps units and patches)."""
        tokens = [loaded.layout.num_prefix + q for q in self.patches[key]]
        return planting.planted_register_neurons(loaded.model, self.block, self.units[key], tokens)


def planted_truth(p: Params) -> PlantedNeurons | None:
    """The planted register neurons the smoke profile asks for (``plant``), or None (the real experiment)."""
    return PlantedNeurons(int(p.plant_block), int(p.plant_units), int(p.seed)) if p.plant else None


@contextlib.contextmanager
def _planted(plant: PlantedNeurons | None, key: str, loaded: LoadedModel) -> Iterator[None]:
    if plant is None or key not in plant.units:
        yield
        return
    with plant.on(key, loaded):
        yield


# --- steps ---------------------------------------------------------------------------------------
def load(p: Params, key: str, *, native: bool = False) -> LoadedModel:
    """Model ``key`` at the notebook's resolution (``native``: at its own, as notebook 08's LOST)."""
    return load_model(key, pretrained=p.pretrained, image_size=None if native else p.image_size, device=p.device)


def detect(p: Params, key: str, loaded: LoadedModel, images: Sequence[Any], plant: PlantedNeurons | None,
           output_dir: Path) -> tuple[ttr.RegisterNeurons, ttr.NeuronScores, Path]:
    """Find model ``key``'s register neurons on ``images`` with its [TTR] settings, and save the list.

    Paper: [TTR] §3 (register neurons). Smoke: the planted neurons are drawn and planted first. When no detection
    image has an outlier (random weights, a model without artifacts) the list is empty and says so by its length:
    the test-time register then moves nothing.

    Returns:
        the list as saved (read back), the full scores (for the figure) and the file.
    """
    if plant is not None:
        plant.choose(key, loaded)
    names = [getattr(im, "filename", "") or f"image {i}" for i, im in enumerate(images)]
    x = preprocess(images, loaded)
    with _planted(plant, key, loaded):
        try:
            neurons, scores = ttr.find_register_neurons(loaded, x, sparsity=p.sparsity, batch_size=p.batch_size,
                                                        image_names=names, **p.detect_settings[key])
        except ttr.NoOutliersError:  # nothing to rank ([TTR]'s code stops): an empty list, whose register moves nothing
            settings = p.detect_settings[key]
            scores = ttr.neuron_scores(loaded, x, detect_block=settings["detect_block"],
                                       threshold=settings["threshold"], batch_size=p.batch_size)
            neurons = ttr.RegisterNeurons(model=key, neurons=[], scores=[], images=names,
                                          settings={**settings, "sparsity": p.sparsity,
                                                    "image_size": list(loaded.image_size), "n_images": scores.n_images,
                                                    "n_images_with_outliers": 0})
    path = neurons.save(Path(output_dir) / "results" / "neurons" / f"10_{key}.json")
    return ttr.RegisterNeurons.load(path), scores, path


def _last_block(p: Params, loaded: LoadedModel, images: Sequence[Any], threshold: float,
                layout: Any = None, detect_block: int = -1) -> ttr.Measurement:
    """The last block's norms and [CLS] attention, and the detection block's norms (where [TTR] detect outliers)."""
    blocks = sorted({-1, detect_block})
    rec = extract(loaded, images, batch_size=p.batch_size, norms=blocks, attn=[-1], attn_rows="prefix")
    return ttr.measure(loaded.layout if layout is None else layout, rec.norms[-1], rec.attn[-1], threshold=threshold,
                       n_show=p.n_show, detect_norms=rec.norms[detect_block])


def measure(p: Params, key: str, loaded_models: dict[str, LoadedModel], neurons: ttr.RegisterNeurons,
            images: Sequence[Any], plant: PlantedNeurons | None) -> dict[str, ttr.Measurement]:
    """The last block of model ``key`` without and with the test-time register, and of its trained-register
    twin (loaded here into ``loaded_models``; DINOv2 only): ``{key, key+ttr, twin}``.

    Paper: [TTR] Fig. 1 (norms), Fig. 4 ([CLS] attention).
    """
    loaded, thr = loaded_models[key], p.detect_settings[key]["threshold"]
    block = p.detect_settings[key].get("detect_block", -1)
    with _planted(plant, key, loaded):
        out = {key: _last_block(p, loaded, images, thr, detect_block=block)}
        with ttr.test_time_register(loaded, neurons) as layout:
            out[f"{key}+ttr"] = _last_block(p, loaded, images, thr, layout, detect_block=block)
    twin = register_twin(key)
    if twin is not None:
        loaded_models[twin] = load(p, twin)
        out[twin] = _last_block(p, loaded_models[twin], images, thr, detect_block=block)
    return out


def shifted(p: Params, key: str, loaded: LoadedModel, neurons: ttr.RegisterNeurons, images: Sequence[Any],
            plant: PlantedNeurons | None) -> tuple[Shifted, torch.Tensor]:
    """Write the neurons' value into the centre patch instead of an extra token ([TTR] "shifted").

    Returns:
        the record part and the ``(B, h, w)`` last-block norms (for the figure).
    """
    centre = loaded.layout.num_patches // 2 + loaded.layout.grid[1] // 2
    with _planted(plant, key, loaded), ttr.test_time_register(loaded, neurons, shift_to=centre) as layout:
        rec = extract(loaded, images, batch_size=p.batch_size, norms=[-1])
    norms = layout.patch_grid(rec.norms[-1])
    share = float((norms.flatten(1).argmax(1) == centre).float().mean() * 100)
    return Shifted(model=key, patch=centre, chosen_patch_is_max_pct=share), norms


def lost_names(p: Params) -> list[str]:
    """The LOST datasets of the record: those asked, and [TTR]'s VOC07 (skipped with a reason if not run)."""
    return list(dict.fromkeys([*p.lost_datasets, "VOC07"]))


def lost_with_ttr(p: Params, found: dict[str, Any], loaded_models: dict[str, LoadedModel],
                  plant: PlantedNeurons | None) -> Lost:
    """LOST ([TTR]'s sweep, padded images) on ``lost_model`` as is, with a test-time register, and on its twin.

    Paper: Table 3, [TTR] (VOC07: 32.2 -> 53.8 with a test-time register, 56.2 with trained registers). The
    models are loaded at their native size (as notebook 08) and let go at the end.
    """
    sweep = lost.ttr_settings(p.bias_sweep, blocks=p.sweep_blocks, features=p.sweep_features)
    box_sets = open_box_datasets(p.lost_datasets, p.data_root, limit=p.lost_limit, seed=p.seed, synthetic_hw=(
        p.synthetic_image_size, p.synthetic_image_size * 4 // 3)) if p.lost_model in found else {}
    runs: dict[str, Any] = {"no_reg": (p.lost_model, {}), "test_time_register": (p.lost_model, {})}
    if box_sets:
        model = load(p, p.lost_model, native=True)
        twin = register_twin(p.lost_model)
        twin_loaded = load(p, twin, native=True) if twin else None
        with _planted(plant, p.lost_model, model):
            runs = ttr.lost_with_ttr(model, found[p.lost_model][0], box_sets, sweep, twin=twin_loaded,
                                     batch_size=p.lost_batch_size, num_workers=p.num_workers)
        del model, twin_loaded

    def missing(name: str) -> str:
        if p.lost_model not in found:
            return f"lost_model {p.lost_model!r} is not in models"
        if name not in p.lost_datasets:
            return f"{name} not in lost_datasets"
        return f"{name} not found under {find_root(p.data_root)}"

    rows = ttr.lost_rows(runs, sweep, lost_names(p), missing=missing)
    sweep_record = {"biases": p.bias_sweep, "blocks": p.sweep_blocks, "features": p.sweep_features,
                    "chosen": "best on the evaluation set ([TTR])"}
    return Lost(protocol="padded", sweep=sweep_record, **rows)


def lost_table(p: Params, result: Lost) -> dict[str, dict[str, float]]:
    """The CorLoc of every role on the datasets run, by figure label (``"as is: dinov2_l"``)."""
    rows = {role: getattr(result, role) for role in LOST_LABELS if getattr(result, role) is not None}
    return {f"{LOST_LABELS[role]}: {row['model']}": {ds.lower(): row[ds.lower()] for ds in p.lost_datasets
                                                     if not isinstance(row[ds.lower()], dict)}
            for role, row in rows.items()}


def lost_reference(p: Params, table3_rows: dict[str, dict[str, float]], numbers: Sequence[Any]) -> dict[str, dict]:
    """[TTR]'s rows for the figure, by the same labels: Table 3's [TTR] rows and the paper number behind this
    notebook's ``lost.test_time_register.voc07`` (``numbers``: :func:`vitreg.claims.paper.paper_numbers`).
    Empty unless ``lost_model`` is DINOv2-L ([TTR]'s numbers are about the public pair)."""
    if p.lost_model != "dinov2_l":
        return {}
    name, reg = get_spec("dinov2_l").paper_name, get_spec("dinov2_l_reg").paper_name
    ttr_row = {n.key.rsplit(".", 1)[1]: n.value for n in numbers if n.notebook == "10_test_time_registers"
               and n.model == "dinov2_l" and n.key == "lost.test_time_register.voc07"}
    return {f"{LOST_LABELS['no_reg']}: {name}": table3_rows.get(f"[TTR]: {name}", {}),
            f"{LOST_LABELS['reg']}: {reg}": table3_rows.get(f"[TTR]: {reg}", {}),
            f"{LOST_LABELS['test_time_register']}: {name}": ttr_row}


def probes(p: Params, found: dict[str, Any], loaded_models: dict[str, LoadedModel], plant: PlantedNeurons | None,
           skip: Callable[[str, str], Any]) -> tuple[dict[str, Any], float | None]:
    """Linear probes on [CLS], the central patch and the test-time register token of each of ``probe_models``.

    Paper: [TTR] Table 1. ``skip(what, why)`` records a probe not run (no dataset, model not in ``models``).

    Returns:
        per model its row (top-1 % per token kind, with the dataset and sizes), and chance level (%).
    """
    size = {"image_size": p.image_size, "seed": p.seed}
    train_ds, why_train = try_load_dataset(p.probe_dataset, "train", n=p.probe_n_train, **size)
    val_ds, why_val = try_load_dataset(p.probe_dataset, "test", n=p.probe_n_val, **size)
    kinds, out = ("cls", "central", "test_time_register"), {}
    for key in p.probe_models:
        if key not in found or train_ds is None or val_ds is None:
            why = f"{key} not in models" if key not in found else (why_train or why_val)
            out[key] = {"model": key, **{k: skip(f"probe.{key}.{k}", why) for k in kinds}}
            continue
        tr = subset_indices(labels_of(train_ds), p.probe_n_train, seed=p.seed)
        va = subset_indices(labels_of(val_ds), p.probe_n_val, seed=p.seed)
        with _planted(plant, key, loaded_models[key]):
            top1 = ttr.probe_ttr_tokens(loaded_models[key], found[key][0], Subset(train_ds, tr.tolist()),
                                        labels_of(train_ds)[tr], Subset(val_ds, va.tolist()), labels_of(val_ds)[va],
                                        batch_size=p.batch_size)
        out[key] = {"model": key, "dataset": p.probe_dataset, "n_train": len(tr), "n_val": len(va), **top1}
    chance = None if val_ds is None else 100 / len(torch.unique(labels_of(val_ds)))
    return out, chance


def record(p: Params, found: dict[str, Any], measured: dict[str, ttr.Measurement], shift: Shifted, lost_result: Lost,
           probe: dict[str, Any], *, n_detect: int, n_eval: int, skip: Callable[[str, str], Any]) -> Record:
    """The results record of the run (a [TTR] model not run is recorded as skipped through ``skip``)."""
    models: dict[str, ModelResult] = {}
    for key in p.models:
        neurons, _ = found[key]
        before, after = measured[key].summary, measured[f"{key}+ttr"].summary
        twin = register_twin(key)
        models[key] = ModelResult(
            model=key, settings=neurons.settings, n_neurons=len(neurons.neurons),
            neurons_per_block={str(b): n for b, n in ttr.blocks_of(neurons).items()}, no_ttr=before, ttr=after,
            cls_artifact_drop=before["cls_artifact_score"] - after["cls_artifact_score"],
            trained_registers={"model": twin, **measured[twin].summary} if twin is not None else None)
    for key in [k for k in TTR_MODELS if k not in models]:
        why = skip(f"models.{key}", f"{key} not in models")
        models[key] = ModelResult(ttr={k: why for k in ("patch_outlier_pct", "extra_above_patch_p99_pct",
                                                         "detect_block_outlier_pct", "patch_high_mode_pct")},
                                  no_ttr={"detect_block_outlier_pct": why}, cls_artifact_drop=why)
    return Record(models=models, n_detect=n_detect, n_eval=n_eval, image_size=p.image_size, planted=bool(p.plant),
                  shifted=shift, lost=lost_result, probe=probe)


def checks(p: Params, rec: Record) -> list[tuple[str, Any, str]]:
    """``(record path, value, model)`` of every number the paper states for this notebook ([TTR]'s two models, the
    LOST row and its gain), for :meth:`vitreg.present.notebook.NotebookRun.check`."""
    out = []
    for key in TTR_MODELS:
        m = rec.models[key]
        out += [(f"models.{key}.ttr.patch_outlier_pct", m.ttr["patch_outlier_pct"], key),
                (f"models.{key}.ttr.extra_above_patch_p99_pct", m.ttr["extra_above_patch_p99_pct"], key),
                (f"models.{key}.cls_artifact_drop", m.cls_artifact_drop, key)]
    for ds in lost_names(p):
        for role in ("test_time_register", "ttr_gain"):
            row = getattr(rec.lost, role)
            out.append((f"lost.{role}.{ds.lower()}", row[ds.lower()], row["model"]))
    return out


def planted_checks(rec: Record, found: dict[str, Any], plant: PlantedNeurons | None) -> dict[str, bool]:
    """What the run must recover of the planted truth (empty without one): the planted neurons exactly, the
    outliers they write gone into the extra token, the shifted patch, the synthetic set's global signal."""
    if plant is None:
        return {}
    out = {}
    for key in plant.units:
        got, want = set(found[key][0].neurons), {(plant.block, u) for u in plant.units[key]}
        out[f"{key}: detection returns exactly the planted neurons {sorted(want)}"] = got == want
        before, after = rec.models[key].no_ttr, rec.models[key].ttr
        out[f"{key}: planted outliers without the register ({before['patch_outlier_pct']:.2f}% > 0)"] = \
            before["patch_outlier_pct"] > 0
        out[f"{key}: none with it, and the extra token above the cut-off ({after['patch_outlier_pct']:.2f}%, "
            f"{after['extra_above_threshold_pct']:.0f}%)"] = \
            after["patch_outlier_pct"] == 0 and after["extra_above_threshold_pct"] == 100
    share = rec.shifted.chosen_patch_is_max_pct
    out[f"shifted: the chosen patch holds the outlier ({share:.0f}% of images)"] = share == 100
    for key, row in rec.probe.items():  # the synthetic set's planted global signal (share of red tiles, 4 classes)
        if not isinstance(row["test_time_register"], dict):
            out[f"{key}: the planted global signal is read from the test-time register token "
                f"({row['test_time_register']:.0f}% > twice chance, 50%)"] = row["test_time_register"] > 50
    return out


def numbers(rec: Record) -> dict[str, Any]:
    """The record as saved: :func:`vitreg.experiments.records.to_numbers` (parts a run did not have left out)."""
    return to_numbers(rec)


def models(p: Params) -> list[str]:
    """Every model a run with ``p`` loads, in load order: ``models``, their register twins, LOST's pair."""
    from vitreg.core.models import register_twin

    twins = [t for t in map(register_twin, p.models) if t is not None]
    lost = [p.lost_model, register_twin(p.lost_model)] if p.lost_model in p.models and p.lost_datasets else []
    return list(dict.fromkeys([*p.models, *twins, *[m for m in lost if m is not None]]))


def loads(p: Params) -> list[str]:
    """Every load a run with ``p`` does, in order: ``models`` at ``image_size``, each one's register twin
    (:func:`measure`), then LOST's model and its twin again at their native size (:func:`lost_with_ttr`)."""
    from vitreg.core.models import register_twin

    twins = [t for t in map(register_twin, p.models) if t is not None]
    lost = [p.lost_model, register_twin(p.lost_model)] if p.lost_model in p.models and p.lost_datasets else []
    return [*p.models, *twins, *[m for m in lost if m is not None]]


def work(p: Params) -> list[Work]:
    """The forwards a run with ``p`` does: detection, the evaluation images as is, with a test-time register and
    through the twin, the shifted register, LOST over each box dataset three times (as is, with a test-time
    register, the twin; padded, each image at its own size: :func:`vitreg.experiments.costs.padded_px`), the probes,
    and the exercises (four neuron counts, the corner patch)."""
    from vitreg.core.models import register_twin
    from vitreg.experiments import sizes
    from vitreg.experiments.base import image_count, px

    n = image_count(p)
    n_detect = min(p.n_detect, n)
    n_eval = n - p.n_detect if n > p.n_detect else n
    rows = [Work(k, px(p.image_size, k), n_detect, "register-neuron detection") for k in p.models]
    for k in p.models:
        rows += [Work(k, px(p.image_size, k), n_eval, "as is"),
                 Work(k, px(p.image_size, k), n_eval, "+ test-time register")]
        if (twin := register_twin(k)) is not None:
            rows.append(Work(twin, px(p.image_size, twin), n_eval, "trained registers"))
    first = p.models[0]
    rows.append(Work(first, px(p.image_size, first), min(p.n_show, n_eval), "register shifted to the centre"))
    if p.lost_model in p.models:
        from vitreg.experiments.costs import padded_px

        twin = register_twin(p.lost_model)
        synthetic_hw = (p.synthetic_image_size, p.synthetic_image_size * 4 // 3)
        for d in p.lost_datasets:
            count, needs = sizes.box_images(d, p.lost_limit), "" if d == "synthetic" else d
            side = padded_px(d, get_spec(p.lost_model).patch_size, synthetic_hw)  # each image at its own size
            rows += [Work(p.lost_model, side, count, f"LOST on {d}", needs),
                     Work(p.lost_model, side, count, f"LOST on {d} + test-time register", needs)]
            if twin is not None:
                rows.append(Work(twin, padded_px(d, get_spec(twin).patch_size, synthetic_hw), count,
                                 f"LOST on {d}, trained registers", needs))
    needs = "" if p.probe_dataset == "synthetic" else p.probe_dataset
    for k in [k for k in p.probe_models if k in p.models]:
        rows += [Work(k, px(p.image_size, k), p.probe_n_train, "probe train", needs),
                 Work(k, px(p.image_size, k), p.probe_n_val, "probe val", needs)]
    rows += [Work(first, px(p.image_size, first), min(p.n_show, n_eval), f"exercise: top {k} neurons")
             for k in (10, 20, 50, 100)]
    rows.append(Work(first, px(p.image_size, first), min(p.n_show, n_eval), "exercise: register in the corner"))
    return rows


EXPERIMENT = Experiment("10_test_time_registers", Params, models, work, PROFILES, record=Record,
                        costs=costs, loads=loads)
