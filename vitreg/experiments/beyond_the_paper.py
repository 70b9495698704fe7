"""Notebook 11_beyond_the_paper: F7 (beyond the paper: Sun et al. 2024 (massive activations), Denoising ViT (Yang et al. 2024)).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.

The notebook calls the steps below and draws: :func:`find_massive` (Sun et al.), :func:`register_fix` (registers
fixed to their mean), :func:`ttr_neurons` and :func:`measure_positional` (Denoising ViT's positional artifact,
also with a test-time register), then :func:`record` builds the :class:`Record` it saves. Smoke runs plant the
answers (:func:`planted_truth`, from the profile's ``plant``); each step enters the planting for its own forwards.
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
from vitreg.core.images import preprocess
from vitreg.core.weights import LoadedModel, load_model
from vitreg.data.datasets import labels_of, subset_indices, try_load_dataset
from vitreg.experiments.base import Common, Experiment, Work, param
from vitreg.experiments.costs import Cost
from vitreg.experiments.records import to_numbers
from vitreg.measure import massive, positional, ttr


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 11_beyond_the_paper (defaults: the real experiment; the notebook's parameters cell is the same)."""

    model_pair: list = param(['dinov2_l', 'dinov2_l_reg'], 'list', 'without vs with 4 registers')
    image_size: int | list[int] = param(224, 'size', "Sun et al. and DINOv2's linear evaluation use 224 px")
    n_images: int = param(256, 'count', 'images for the massive activations and the positional measure')
    image_dir: str | None = param(None, 'str', 'a folder of your own images (wins over `images`)')
    images: str = param('auto', 'image_source', "auto: ImageNet val if $VITREG_DATA has it, else Imagenette val; or 'photos' (smoke)")
    batch_size: int = param(16, 'count', 'images per forward pass')
    top_k: int = param(10, 'count', 'activations kept per image and block')
    probe_dataset: str = param('imagenet1k', 'text', "the register-mean experiment: ImageNet-1k (skipped when absent) or 'synthetic'")
    mean_n_images: int = param(10000, 'count', 'images (train split) the register means are taken over (Sun et al.: 10k)')
    probe_n_train: int = param(10000, 'count', 'training images of the [CLS] linear probe (class-balanced subset)')
    probe_n_val: int = param(10000, 'count', 'validation images it is evaluated on, as is and with fixed registers')
    test_time_register: bool = param(True, 'bool', 'also measure the model without registers with a test-time register ([TTR], notebook 10)')
    ttr_detect: dict = param({'detect_block': -2, 'threshold': 150.0, 'highest_layer': 17, 'top_k': 50}, 'mapping', "[TTR]'s DINOv2-L settings: used only when notebook 10's neuron list (results/neurons/10_<model>.json) is absent")
    n_detect: int = param(100, 'count', 'images that find the register neurons then ([TTR]: about 100)')
    plant: bool = param(False, 'bool', 'smoke only: plant massive activations and a position-only grid (and a content control)')


#: Overrides of the defaults per profile (the smoke profile: random weights, planted truth, offline, CPU; the
#: lecture profile: small pretrained models at 224 px on the bundled photos).
PROFILES = {'smoke': {'images': 'photos',
           'model_pair': ['dinov2_s', 'dinov2_s_reg'],
           'image_size': 112,
           'n_images': 8,
           'batch_size': 4,
           'top_k': 5,
           'probe_dataset': 'synthetic',
           'mean_n_images': 8,
           'probe_n_train': 16,
           'probe_n_val': 8,
           'ttr_detect': {'detect_block': -1, 'threshold': 150.0, 'highest_layer': 5, 'top_k': 4},
           'n_detect': 4,
           'plant': True},
 'lecture': {'images': 'photos',
             'model_pair': ['dinov2_l', 'dinov2_l_reg'],
             'image_size': 224,
             'n_images': 6,
             'batch_size': 4,
             'mean_n_images': 20,
             'probe_n_train': 50,
             'probe_n_val': 30}}


def costs(p: Params) -> list[Cost]:
    """What a run with ``p`` does besides forwards, for the run-time table (:mod:`vitreg.experiments.costs`): the
    [CLS] linear probe of the register-mean experiment (:func:`vitreg.measure.massive.linear_accuracy_change`: one
    logistic probe, L2 chosen on validation from the default grid, scored on the validation images as is and with
    fixed registers)."""
    from vitreg.data.datasets import DATASETS
    from vitreg.experiments import costs as cm
    from vitreg.measure.estimators import L2_GRID

    d = cm.token_widths(p.model_pair[-1])[0]
    c = min(DATASETS[p.probe_dataset].num_classes, p.probe_n_train)
    seconds = (cm.logistic_cv_probe_s(n=p.probe_n_train, d=d, c=c, grid=len(L2_GRID))
               + 2 * cm.predict_s(p.probe_n_val, d, c))
    return [Cost(f"{p.probe_dataset} [CLS] probe: {len(L2_GRID) + 1} L-BFGS fits", seconds,
                 cm.LOGISTIC_SCALING, needs=p.probe_dataset)]

#: What :meth:`vitreg.measure.massive.MassiveActivations.summary` holds.
MASSIVE_KEYS = ("model", "n_massive", "max_abs", "max_ratio", "blocks_with_massive", "pct_on_cls", "pct_on_reg",
                "pct_on_patch", "pct_on_high_norm", "channels", "channel_share_pct")
#: What the positional part holds per model
#: (shares of variance in %, :func:`vitreg.measure.positional.variance_shares`).
POSITIONAL_KEYS = ("model", "position", "position_raw", "image", "within_image_position", "rest", "template_corr")
#: What the register-mean experiment holds (top-1 %, its change in points).
REGISTER_FIX_KEYS = ("model", "dataset", "n_mean", "top1", "top1_fixed", "change")


# --- the results record ---------------------------------------------------------------------------
@dataclass
class Massive:
    """Sun et al.'s massive activations of the model without and with registers."""

    no_reg: dict[str, Any] = field(metadata={"keys": MASSIVE_KEYS})
    reg: dict[str, Any] = field(metadata={"keys": MASSIVE_KEYS})


@dataclass
class Positional:
    """Denoising ViT's positional artifact (% of variance) without / with registers / with a test-time register."""

    no_reg: dict[str, Any] = field(metadata={"keys": POSITIONAL_KEYS})
    reg: dict[str, Any] = field(metadata={"keys": POSITIONAL_KEYS})
    ttr: dict[str, Any] | None = field(default=None, metadata={"keys": (*POSITIONAL_KEYS, "neurons", "n_neurons")})


@dataclass
class Record:
    """What notebook 11 saves (``results/11_beyond_the_paper.json``'s ``numbers``)."""

    massive: Massive
    register_fix: dict[str, Any] = field(metadata={"keys": REGISTER_FIX_KEYS})
    positional: Positional
    image_size: Any
    n_images: int
    planted: bool


# --- planted truth (smoke runs), supplied by the profile ------------------------------------------
@dataclass
class PlantedFollowups:
    """Smoke: the known answers of notebook 11 in random models.

    Attributes:
        massive_block: the block from which the massive activations are planted.
        cells: per model key, the ``(token, channel)`` cells given a huge value (every image).
        ttr_block, ttr_units, ttr_patches: the register neurons planted in the model without registers.
        seed: seed of the planted grid signal.
    """

    massive_block: int
    cells: dict[str, list[tuple[int, int]]]
    ttr_block: int
    ttr_units: list[int]
    ttr_patches: list[int]
    seed: int

    def massive(self, key: str, loaded: LoadedModel) -> Any:
        """The planted massive activations of model ``key``."""
        return planting.planted_massive(loaded, self.massive_block, self.cells[key])

    def neurons(self, loaded: LoadedModel) -> Any:
        """The planted register neurons (the model without registers)."""
        return planting.planted_register_neurons(loaded.model, self.ttr_block, self.ttr_units,
                                                 [loaded.layout.num_prefix + q for q in self.ttr_patches])

    def grid(self, loaded: LoadedModel, kind: str = "position") -> Any:
        """A position-only grid signal (``kind="content"``: the content-only control)."""
        return planting.planted_grid_signal(loaded, kind=kind, seed=self.seed)


def planted_truth(p: Params, models: dict[str, LoadedModel]) -> PlantedFollowups | None:
    """The smoke profile's planted truth (``plant``): the same huge scalar at two cells of every image from block 1
    on, ``ttr_detect["top_k"]`` register neurons of block 2 on two patches, a grid signal; None when not planting."""
    if not p.plant:
        return None
    no_reg = models[p.model_pair[0]]
    hidden = hooks.mlp_hidden_size(no_reg.model, 2)
    units = torch.randperm(hidden, generator=torch.Generator().manual_seed(p.seed))[:p.ttr_detect["top_k"]].tolist()
    return PlantedFollowups(
        massive_block=1,
        cells={k: [(m.layout.num_prefix + 3, 7), (m.layout.num_prefix - 1, 11)] for k, m in models.items()},
        ttr_block=2, ttr_units=units, ttr_patches=[0, no_reg.layout.num_patches // 2], seed=p.seed)


@contextlib.contextmanager
def _maybe(plant: PlantedFollowups | None, make: Callable[[PlantedFollowups], Any]) -> Iterator[None]:
    if plant is None:
        yield
        return
    with make(plant):
        yield


# --- steps ---------------------------------------------------------------------------------------
def load(p: Params) -> dict[str, LoadedModel]:
    """The model pair (without, with registers) at the notebook's resolution."""
    return {key: load_model(key, pretrained=p.pretrained, image_size=p.image_size, device=p.device)
            for key in p.model_pair}


def find_massive(p: Params, models: dict[str, LoadedModel], images: Sequence[Any],
                 plant: PlantedFollowups | None) -> dict[str, massive.MassiveActivations]:
    """Every block's top activations of each model (Sun et al.'s criterion, their ViT section)."""
    found = {}
    for key, loaded in models.items():
        with _maybe(plant, lambda pl: pl.massive(key, loaded)):
            found[key] = massive.measure(loaded, images, k=p.top_k, batch_size=p.batch_size)
    return found


def register_fix(p: Params, reg_model: LoadedModel, skip: Callable[[str, str], Any]) -> dict[str, Any]:
    """Top-1 of a [CLS] linear probe as is and with every block's registers fixed to their mean (Sun et al.).

    ``skip(what, why)`` records the experiment as not run when the dataset is absent."""
    key = reg_model.spec.key
    size = {"image_size": p.image_size, "seed": p.seed}
    train_ds, why_train = try_load_dataset(p.probe_dataset, "train", n=p.probe_n_train, **size)
    val_ds, why_val = try_load_dataset(p.probe_dataset, "test", n=p.probe_n_val, **size)
    if train_ds is None or val_ds is None:
        why = why_train or why_val
        return {"model": key, **{k: skip(f"register_fix.{k}", why) for k in ("top1", "top1_fixed", "change")}}
    tr = subset_indices(labels_of(train_ds), p.probe_n_train, seed=p.seed)
    va = subset_indices(labels_of(val_ds), p.probe_n_val, seed=p.seed)
    mean_idx = subset_indices(labels_of(train_ds), p.mean_n_images, seed=p.seed + 1)
    # Subset: images are decoded batch by batch, never 10k at once
    means = massive.register_means(reg_model, Subset(train_ds, mean_idx.tolist()), batch_size=p.batch_size)
    return {"model": key, "dataset": p.probe_dataset, "n_mean": len(mean_idx), **massive.linear_accuracy_change(
        reg_model, Subset(train_ds, tr.tolist()), labels_of(train_ds)[tr], Subset(val_ds, va.tolist()),
        labels_of(val_ds)[va], means, batch_size=p.batch_size)}


def ttr_neurons(p: Params, no_reg: LoadedModel, images: Sequence[Any], plant: PlantedFollowups | None,
                output_dir: Path) -> tuple[ttr.RegisterNeurons | None, str | None]:
    """The register neurons of the model without registers ([TTR]): notebook 10's saved list, or found here with
    ``ttr_detect`` (always in smoke runs, on the planted neurons). None when ``test_time_register`` is off, or when
    no detection image has an outlier (the second value then says why).

    Returns:
        the list and where it came from, in words.
    """
    if not p.test_time_register:
        return None, None
    saved = Path(output_dir) / "results" / "neurons" / f"10_{no_reg.spec.key}.json"
    if saved.exists() and plant is None and ttr.RegisterNeurons.load(saved).model == no_reg.spec.key:
        return ttr.RegisterNeurons.load(saved), f"notebook 10's list ({saved.name})"
    try:
        with _maybe(plant, lambda pl: pl.neurons(no_reg)):
            neurons, _ = ttr.find_register_neurons(no_reg, preprocess(images[:p.n_detect], no_reg),
                                                   batch_size=p.batch_size, **p.ttr_detect)
    except ttr.NoOutliersError as err:  # nothing to move (random weights, or a model without outliers)
        return None, f"no test-time register: {err}"
    return neurons, f"found here on {min(p.n_detect, len(images))} images"


def ttr_name(p: Params) -> str:
    """The name of the model without registers with a test-time register, in figures and printouts."""
    return f"{p.model_pair[0]} + test-time register"


def measure_positional(p: Params, models: dict[str, LoadedModel], neurons: ttr.RegisterNeurons | None,
                       images: Sequence[Any], plant: PlantedFollowups | None) -> dict[str, dict[str, Any]]:
    """The positional artifact of each model, and of the model without registers with a test-time register.

    Paper: Denoising ViT (Yang et al. 2024): ``{name: {"shares", "corr", "maps"}}`` (variance shares, the zero
    image's correlation with the per-position mean, the first-component maps of both).
    """
    variants = {key: (loaded, None) for key, loaded in models.items()}
    if neurons is not None:  # the model without registers, with the test-time register (extra token dropped)
        variants[ttr_name(p)] = (models[p.model_pair[0]], neurons)
    out = {}
    for name, (loaded, nrn) in variants.items():
        with contextlib.ExitStack() as stack:
            if nrn is not None:
                stack.enter_context(_maybe(plant, lambda pl: pl.neurons(loaded)))  # the neurons the register moves
                stack.enter_context(ttr.test_time_register(loaded, nrn))
            stack.enter_context(_maybe(plant, lambda pl: pl.grid(loaded)))
            feats = positional.patch_features(loaded, images, batch_size=p.batch_size)
            zero = positional.zero_image_features(loaded)
        out[name] = {"shares": positional.variance_shares(feats), "corr": positional.template_correlation(zero, feats),
                     "maps": (positional.first_component_map(zero, loaded.layout.grid),
                              positional.first_component_map(feats.mean(0), loaded.layout.grid))}
    return out


def content_control(p: Params, models: dict[str, LoadedModel], images: Sequence[Any],
                    plant: PlantedFollowups | None) -> dict[str, float] | None:
    """Smoke: the variance shares of a content-only signal of the same strength (must not count as position)."""
    if plant is None:
        return None
    loaded = models[p.model_pair[0]]
    with plant.grid(loaded, kind="content"):
        return positional.variance_shares(positional.patch_features(loaded, images, batch_size=p.batch_size))


def record(p: Params, found: dict[str, massive.MassiveActivations], fix: dict[str, Any], pos: dict[str, dict[str, Any]],
           neurons: ttr.RegisterNeurons | None, source: str | None, *, n_images: int) -> Record:
    """The results record of the run."""
    no_reg, reg = p.model_pair

    def shares(name: str, key: str) -> dict[str, Any]:
        pct = {k: 100 * v for k, v in pos[name]["shares"].items()}
        return {"model": key, **pct, "template_corr": pos[name]["corr"]}

    ttr_part = None
    if p.test_time_register and neurons is not None:  # no paper number for it
        ttr_part = {**shares(ttr_name(p), no_reg), "neurons": source, "n_neurons": len(neurons.neurons)}
    elif p.test_time_register:  # no detection image had an outlier: the reason, where the shares would be
        ttr_part = {"skipped": source or "no register neurons"}
    return Record(massive=Massive(no_reg={"model": no_reg, **found[no_reg].summary()},
                                  reg={"model": reg, **found[reg].summary()}),
                  register_fix=fix,
                  positional=Positional(no_reg=shares(no_reg, no_reg), reg=shares(reg, reg), ttr=ttr_part),
                  image_size=p.image_size, n_images=n_images, planted=bool(p.plant))


def checks(rec: Record) -> list[tuple[str, Any, str]]:
    """``(record path, value, model)`` of every number the paper states for this notebook."""
    out = []
    for role in ("no_reg", "reg"):
        m, pos = getattr(rec.massive, role), getattr(rec.positional, role)
        out += [(f"massive.{role}.{k}", m[k], m["model"]) for k in ("max_ratio", "max_abs")]
        out.append((f"positional.{role}.position", pos["position"], pos["model"]))
    out.append(("register_fix.change", rec.register_fix["change"], rec.register_fix["model"]))
    return out


def planted_checks(p: Params, models: dict[str, LoadedModel], found: dict[str, massive.MassiveActivations],
                   pos: dict[str, dict[str, Any]], neurons: ttr.RegisterNeurons | None,
                   control: dict[str, float] | None, plant: PlantedFollowups | None) -> dict[str, bool]:
    """What the run must recover of the planted truth (empty without one)."""
    if plant is None:
        return {}
    out = {}
    for key in p.model_pair:
        s, shares, corr = found[key].summary(), pos[key]["shares"], pos[key]["corr"]
        out[f"{key}: the planted massive activations are found exactly"] = \
            found[key].positions() == set(plant.cells[key])
        out[f"{key}: they appear from the planted block on"] = \
            s["blocks_with_massive"] == list(range(plant.massive_block, models[key].num_blocks))
        out[f"{key}: the planted grid is found as position ({100 * shares['position']:.0f}% > 50%)"] = \
            shares["position"] > 0.5
        out[f"{key}: the zero image shows the planted grid (r = {corr:.2f} > 0.9)"] = corr > 0.9
    if p.test_time_register:
        name, shares = ttr_name(p), pos[ttr_name(p)]["shares"]
        out[f"{p.model_pair[0]}: the planted register neurons are found exactly"] = \
            set(neurons.neurons) == {(plant.ttr_block, u) for u in plant.ttr_units}
        out[f"{name}: the planted grid is still position ({100 * shares['position']:.0f}% > 50%)"] = \
            shares["position"] > 0.5
    out[f"a content-only signal is not position ({100 * control['position']:.1f}% < 10%)"] = control["position"] < 0.1
    return out


def numbers(rec: Record) -> dict[str, Any]:
    """The record as saved (:func:`vitreg.experiments.records.to_numbers`)."""
    return to_numbers(rec)


def models(p: Params) -> list[str]:
    """Every model a run with ``p`` loads, in load order: the pair (without registers first)."""
    return list(dict.fromkeys(p.model_pair))


def work(p: Params) -> list[Work]:
    """The forwards a run with ``p`` does: massive activations of both models, the register-mean probe (the
    model with registers), the test-time register's detection (unless notebook 10's saved list is used: real
    runs after 10), and the positional measure (images and a zero image) per variant, with its control."""
    from vitreg.experiments.base import image_count, px

    n = image_count(p)
    no_reg, reg = p.model_pair
    size = {k: px(p.image_size, k) for k in p.model_pair}
    needs = "" if p.probe_dataset == "synthetic" else p.probe_dataset
    rows = [Work(k, size[k], n, "massive activations") for k in p.model_pair]
    rows += [Work(reg, size[reg], min(p.mean_n_images, p.probe_n_train), "register means", needs),
             Work(reg, size[reg], p.probe_n_train, "[CLS] probe train", needs),
             Work(reg, size[reg], 2 * p.probe_n_val, "[CLS] probe val, as is and with fixed registers", needs)]
    variants = list(p.model_pair) + ([no_reg] if p.test_time_register else [])
    if p.test_time_register:
        rows.append(Work(no_reg, size[no_reg], min(p.n_detect, n), "register-neuron detection"))
    for k in variants:
        rows += [Work(k, size[k], n, "positional features"), Work(k, size[k], 1, "zero image")]
    if p.plant:
        rows.append(Work(no_reg, size[no_reg], n, "content-only control"))
    return rows


EXPERIMENT = Experiment("11_beyond_the_paper", Params, models, work, PROFILES, record=Record,
                        costs=costs)
