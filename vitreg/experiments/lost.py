"""Notebook 08_lost: F8 (Table 3).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vitreg.experiments.base import Common, Experiment, Work, param
from vitreg.experiments.costs import Cost
from vitreg.measure.lost import (PROTOCOLS, TABLE3_DATASETS, Discovery, Setting, bias_curves, corloc_numbers, discover,
                                 lost_steps, patch_features, planted_corloc, planted_corloc_checks, ttr_settings)

if TYPE_CHECKING:
    from vitreg.data.boxes import BoxDataset


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 08_lost (defaults: the real experiment; the notebook's parameters cell is the same)."""

    models: list = param(['dinov2_l', 'dinov2_l_reg', 'deit3_b16', 'clip_b16_laion', 'dino_s16'], 'list', 'models LOST runs with on every dataset (Table 3); its DINOv2 models are the pair drawn in the box figures')
    datasets: list = param(['VOC07', 'VOC12', 'COCO20k'], 'list', "trainval for VOC; 'synthetic' for smoke runs")
    data_root: str | None = param(None, 'str', 'dataset root; None: $VITREG_DATA, else data/datasets (see vitreg/data/boxes.py)')
    protocol: str = param('padded', 'str', "'padded': LOST's own, each image at its size padded to the patch grid; or 'stretched'")
    image_size: int | list[int] = param(448, 'size', 'the square every image is resized to, for the stretched protocol only (multiple of 14, 16)')
    synthetic_image_size: int | list[int] = param(375, 'size', "height of the 'synthetic' images (width 4/3 of it: VOC-like 375 x 500)")
    limit: int | None = param(None, 'count', 'images per dataset (None: all: 5011 / 11540 / 19817)')
    k_patches: int = param(100, 'count', "LOST's k")
    which: str | None = param(None, 'str', "plain LOST's features, 'q'/'k'/'v'; None: the zoo's (k for DINO/DINOv2, v for DeiT-III/CLIP)")
    bias_sweep: list = param([-1.0, -0.9, -0.8, -0.7, -0.6, -0.5, -0.4, -0.3, -0.2, -0.1, 0.0], 'numbers', '[TTR]: biases on normalised features')
    sweep_blocks: list = param([-4, -3, -2, -1], 'list', '[TTR]: the last 4 blocks')
    sweep_features: list = param(['q', 'k', 'v'], 'list', '[TTR]: queries, keys and values')
    batch_size: int = param(32, 'count', 'at most: images of one padded size are batched together')
    num_workers: int = param(8, 'count0', 'processes that read and pad images (0: none; image decoding limits GPU runs)')
    n_show: int = param(6, 'count', 'images in the figure of discovered boxes (the first n_show, not selected)')


#: Overrides of the defaults per profile (the smoke profile: random weights, planted truth, offline, CPU; the
#: lecture profile: small pretrained models at 224 px on the bundled photos).
PROFILES = {'smoke': {'models': ['dinov2_s', 'dinov2_s_reg'],
           'datasets': ['VOC07', 'synthetic'],
           'image_size': 112,
           'synthetic_image_size': 112,
           'limit': 8,
           'bias_sweep': [0.0, -0.2],
           'batch_size': 8,
           'num_workers': 0,
           'n_show': 3},
 'lecture': {'models': ['dino_s16', 'dinov2_l', 'dinov2_l_reg'],
             'datasets': ['VOC07'],
             'protocol': 'stretched',
             'image_size': 224,
             'limit': 10,
             'bias_sweep': [-0.5, 0.0],
             'sweep_blocks': [-2, -1],
             'sweep_features': ['k'],
             'batch_size': 4,
             'num_workers': 0,
             'n_show': 4}}


def costs(p: Params) -> list[Cost]:
    """What a run with ``p`` does besides forwards, for the run-time table (:mod:`vitreg.experiments.costs`): LOST's
    scoring of plain LOST and every sweep setting on each image of every model and dataset (on the model's device,
    :func:`vitreg.measure.lost.discover`), and their CorLoc (CPU). Paper: Table 3."""
    from vitreg.core.models import get_spec
    from vitreg.experiments import costs as cost_models
    from vitreg.experiments import sizes

    sweep, plain = sweep_settings(p), plain_settings(p)
    runs = []
    for key in p.models:
        settings = [plain[key], *sweep]
        groups = len({(s.which, s.block, s.normalize) for s in settings})
        runs += [cost_models.lost_run(d, sizes.box_images(d, p.limit), model=key, patch=get_spec(key).patch_size,
                                      batch_size=p.batch_size, groups=groups, settings=len(settings),
                                      stretched_px=p.image_size if p.protocol == "stretched" else None,
                                      synthetic_hw=(p.synthetic_image_size, p.synthetic_image_size * 4 // 3),
                                      k_patches=p.k_patches)
                 for d in p.datasets]
    return cost_models.lost_sweep_rows(runs, what="plain LOST + [TTR] sweep")


def _demo(p: Params) -> list[str]:
    """The models of the three-step figure: the DINOv2 ones, else the first."""
    from vitreg.core.models import get_spec

    return [k for k in p.models if get_spec(k).family == "dinov2"] or list(p.models[:1])


def models(p: Params) -> list[str]:
    """Every model a run with ``p`` loads, in load order: the figure's models, then every model of ``models``."""
    return list(dict.fromkeys([*_demo(p), *p.models]))


def loads(p: Params) -> list[str]:
    """Every load a run with ``p`` does, in order: the figure's models at ``image_size`` (:func:`demo`), then every
    model of ``models`` again for the box datasets (:func:`discover_all`: native size for the padded protocol)."""
    return [*_demo(p), *p.models]


def work(p: Params) -> list[Work]:
    """The forwards a run with ``p`` does: one photo per figure model, then every box dataset once per model (the
    [TTR] sweep is scored on the same pass); absent datasets are skipped. Stretched images count at ``image_size``,
    padded ones at their own size (:func:`vitreg.experiments.costs.padded_px`: a typical image of the dataset)."""
    from vitreg.core.models import get_spec
    from vitreg.experiments import sizes
    from vitreg.experiments.base import px
    from vitreg.experiments.costs import padded_px

    def side(d: str, k: str) -> int:
        if p.protocol == "stretched":
            return px(p.image_size, k)
        return padded_px(d, get_spec(k).patch_size, (p.synthetic_image_size, p.synthetic_image_size * 4 // 3))

    rows = [Work(k, px(p.image_size, k), 1, "LOST's steps on one photo") for k in _demo(p)]
    for k in p.models:
        rows += [Work(k, side(d, k), sizes.box_images(d, p.limit), f"LOST on {d}",
                      "" if d == "synthetic" else d) for d in p.datasets]
    return rows


# --- the results record ------------------------------------------------------------------------------
@dataclass
class SweepSettings:
    """[TTR]'s sweep as run: ``features x blocks x biases`` on L2-normalised features.

    Attributes:
        biases, blocks, features: the parameters ``bias_sweep``, ``sweep_blocks``, ``sweep_features``.
        n_settings: the number of settings scored per model and dataset.
        chosen: how a sweep row's setting is chosen (best on the evaluation set, as [TTR] report it).
    """

    biases: list[float]
    blocks: list[int]
    features: list[str]
    n_settings: int
    chosen: str


@dataclass
class Settings:
    """How LOST ran (Table 3's protocol).

    Attributes:
        protocol: ``padded`` (LOST's own: each image at its size, padded) or ``stretched``.
        plain: model key -> its plain LOST setting's name (``k-1:dot+0.00``).
        sweep: [TTR]'s sweep.
        k_patches: LOST's k.
        limit: images per dataset (None: all).
        image_size: the stretched square, or the padded protocol's own sizes in words.
    """

    protocol: str
    plain: dict[str, str]
    sweep: SweepSettings
    k_patches: int
    limit: int | None
    image_size: int | list[int] | str


@dataclass
class Rows:
    """Table 3's rows under one protocol (plain LOST or [TTR]'s sweep), CorLoc in %.

    A row (``dict``) holds ``model`` (zoo key), ``features`` and per dataset (``voc07``, ``voc12``, ``coco20k`` and
    those of ``datasets``, lower case) the CorLoc or ``{"skipped": why}``, ``<dataset>_n_images`` where it ran
    and, for the sweep, ``<dataset>_setting`` (the winning setting).

    Attributes:
        by_model: model key -> its row, every model of the run.
        no_reg, reg: the rows of the first DINOv2 model without / with registers (each Table 3 dataset
            ``{"skipped": why}`` when there is none).
        dino: the row of DINO ViT-S/16, LOST's own reference.
        register_gain: CorLoc with registers minus without, per Table 3 dataset, for the first model listed with
            its register twin (``model``: the register model).
    """

    by_model: dict[str, dict[str, Any]]
    no_reg: dict[str, Any] = field(metadata={"keys": TABLE3_DATASETS})
    reg: dict[str, Any] = field(metadata={"keys": TABLE3_DATASETS})
    dino: dict[str, Any] = field(metadata={"keys": TABLE3_DATASETS})
    register_gain: dict[str, Any] = field(metadata={"keys": TABLE3_DATASETS})


@dataclass
class Record:
    """What notebook 08 saves (``results/08_lost.json``'s ``numbers``).

    Attributes:
        settings: how LOST ran.
        plain: Table 3 rows of plain LOST (the official code's setting).
        ttr_sweep: Table 3 rows of [TTR]'s sweep (best on the evaluation set).
        bias_curves: model key -> dataset -> ``q-1``... -> bias (``"-0.50"``) -> CorLoc.
        planted: CorLoc of LOST on planted feature maps (:func:`vitreg.measure.lost.planted_corloc`).
    """

    settings: Settings
    plain: Rows
    ttr_sweep: Rows
    bias_curves: dict[str, dict[str, dict[str, dict[str, float]]]]
    planted: dict[str, float] = field(metadata={"keys": ("clean", "artifact", "offset_plain", "offset_sweep")})


# --- the steps the notebook calls -----------------------------------------------------------------------
def open_sets(p: Params) -> dict[str, "BoxDataset"]:
    """The box datasets of ``p.datasets`` found under ``p.data_root`` (a missing one is left out and recorded as
    skipped by :func:`build_record`); ``synthetic``: VOC-like planted boxes of ``p.synthetic_image_size``."""
    from vitreg.data.boxes import open_box_datasets
    from vitreg.utils.paths import data_root

    print("dataset root:", data_root(p.data_root))
    hw = (p.synthetic_image_size, p.synthetic_image_size * 4 // 3)
    return open_box_datasets(p.datasets, p.data_root, synthetic_hw=hw, limit=p.limit, seed=p.seed)


def plain_settings(p: Params) -> dict[str, Setting]:
    """Model key -> its plain LOST setting: ``p.which`` or the zoo's features (k for DINO/DINOv2, v for DeiT-III
    and CLIP) of the last block, dot product, bias 0 (the official code; Table 3)."""
    from vitreg.core.models import get_spec

    return {key: Setting(p.which or get_spec(key).lost_features) for key in p.models}


def sweep_settings(p: Params) -> list[Setting]:
    """[TTR]'s sweep: ``p.sweep_features x p.sweep_blocks x p.bias_sweep`` on normalised features."""
    return ttr_settings(p.bias_sweep, blocks=p.sweep_blocks, features=p.sweep_features)


def check_planted(seed: int = 0) -> tuple[dict[str, float], dict[str, bool]]:
    """LOST on planted feature maps, before any model: CorLoc of each case and what it must recover (every
    object; a collapse with one artifact token per image; plain LOST's miss and the sweep's hit on offset
    features). Runs in every profile: a miss is a bug in the code, not a result. Paper: Table 3, §3.3."""
    planted = planted_corloc(n_images=32, seed=seed)
    return planted, planted_corloc_checks(planted)


@dataclass
class Demo:
    """LOST's three steps on one photo with one model (the figure of section 0).

    Attributes:
        label: the model's label (weights included).
        model: ``loaded.describe()``.
        setting: the plain LOST setting's name.
        image: the photo as the model saw it, ``(H, W, 3)`` in [0, 1].
        steps: :func:`vitreg.measure.lost.lost_steps`.
        patch_norms: ``(N,)`` pre-LN norms of the patch tokens at the last block.
    """

    label: str
    model: dict[str, Any]
    setting: str
    image: Any
    steps: dict[str, Any]
    patch_norms: Any


def dinov2_models(p: Params) -> list[str]:
    """The DINOv2 models of ``p.models`` (the pair whose boxes the notebook draws without and with registers)."""
    from vitreg.core.models import get_spec

    return [k for k in p.models if get_spec(k).family == "dinov2"]


def demo_models(p: Params) -> list[str]:
    """The models of the three-step figure: the DINOv2 models of ``p.models`` (else the first model)."""
    return dinov2_models(p) or list(p.models[:1])


def demo(p: Params, plain: dict[str, Setting], photo: Any) -> dict[str, Demo]:
    """LOST's three steps (:func:`vitreg.measure.lost.lost_steps`) on ``photo`` with each of :func:`demo_models`,
    loaded at ``p.image_size``: one forward of one image per model. Paper: §3.3, Table 3.

    Returns:
        model key -> :class:`Demo`.
    """
    from vitreg.core import weights
    from vitreg.core.extract import extract
    from vitreg.core.images import preprocess, to_display

    out: dict[str, Demo] = {}
    for key in demo_models(p):
        loaded = weights.load_model(key, pretrained=p.pretrained, image_size=p.image_size, device=p.device)
        rec = extract(loaded, [photo], batch_size=1, progress=False, qkv=[-1], norms=[-1])
        steps = lost_steps(patch_features(getattr(rec, plain[key].which)[-1], loaded.layout), loaded.layout.grid,
                           k_patches=p.k_patches)
        out[key] = Demo(label=loaded.label, model=loaded.describe(), setting=plain[key].name,
                        image=to_display(preprocess([photo], loaded), loaded)[0], steps=steps,
                        patch_norms=loaded.layout.patches(rec.norms[-1])[0])
        del loaded, rec
    return out


def discover_all(p: Params, sets: dict[str, "BoxDataset"], plain: dict[str, Setting],
                 sweep: Sequence[Setting]) -> tuple[dict[tuple[str, str], Discovery], list[dict[str, Any]]]:
    """LOST with every model of ``p.models`` on every dataset of ``sets``, scoring plain LOST and every sweep
    setting on one forward pass per batch (:func:`vitreg.measure.lost.discover`). Paper: Table 3.

    Each model is loaded once (at its native size for the padded protocol, at ``p.image_size`` for the stretched
    one); a line per model and dataset is printed.

    Returns:
        ``{(model key, dataset name): Discovery}`` and each model's ``describe()`` with its ``lost_protocol``.
    """
    from vitreg.core import weights

    results: dict[tuple[str, str], Discovery] = {}
    described: list[dict[str, Any]] = []
    for key in p.models:
        loaded = weights.load_model(key, pretrained=p.pretrained, device=p.device,
                                    image_size=p.image_size if p.protocol == "stretched" else None)
        described.append({**loaded.describe(), "lost_protocol": p.protocol})
        for name, ds in sets.items():
            d = discover(loaded, ds, [plain[key], *sweep], protocol=p.protocol, k_patches=p.k_patches,
                         batch_size=p.batch_size, num_workers=p.num_workers)
            results[(key, name)] = d
            best, best_corloc = d.best(sweep) if sweep else ("no sweep", float("nan"))
            print(f"{loaded.label:34s} {name:8s} plain LOST {d.corloc[plain[key].name]:5.1f}% | "
                  f"[TTR]'s sweep {best_corloc:5.1f}% ({best}, best on the evaluation set)")
        del loaded
    return results, described


def build_record(p: Params, results: dict[tuple[str, str], Discovery], *, plain: dict[str, Setting],
                 sweep: Sequence[Setting], planted: dict[str, float]) -> Record:
    """The numbers notebook 08 saves: the settings, Table 3's rows under each protocol
    (:func:`vitreg.measure.lost.corloc_numbers`), the bias curves of the sweep and the planted check.

    Paper: Table 3 (plain rows against DINO ViT-S/16's reference, sweep rows against [TTR]'s public pair).
    """
    from vitreg.utils.paths import data_root

    rows = corloc_numbers(results, p.models, p.datasets, plain=plain, sweep=sweep, root=data_root(p.data_root))
    names = list(dict.fromkeys(name for _, name in results))
    return Record(
        settings=Settings(protocol=p.protocol, plain={k: s.name for k, s in plain.items()},
                          sweep=SweepSettings(biases=list(p.bias_sweep), blocks=list(p.sweep_blocks),
                                              features=list(p.sweep_features), n_settings=len(sweep),
                                              chosen="best on the evaluation set ([TTR])"),
                          k_patches=p.k_patches, limit=p.limit,
                          image_size=p.image_size if p.protocol == "stretched" else "own, padded to the patch size"),
        plain=_rows(rows["plain"]), ttr_sweep=_rows(rows["ttr_sweep"]),
        bias_curves={key: {name: bias_curves(results[(key, name)], sweep) for name in names if (key, name) in results}
                     for key in p.models},
        planted=dict(planted))


def _rows(block: dict[str, Any]) -> Rows:
    return Rows(by_model=block["by_model"], no_reg=block["no_reg"], reg=block["reg"], dino=block["dino"],
                register_gain=block["register_gain"])


def row_label(protocol: str, key: str) -> str:
    """The table's and the figure's label of our row of ``key`` under ``protocol`` (``ours, plain LOST: DINO
    ViT-S/16``)."""
    from vitreg.core.models import get_spec

    what = {"plain": "ours, plain LOST", "ttr_sweep": "ours, [TTR]'s sweep"}[protocol]
    return f"{what}: {get_spec(key).paper_name}"


def corloc_table(record: Record) -> dict[str, dict[str, float]]:
    """Our Table 3: :func:`row_label` -> dataset -> CorLoc (%), every model under each protocol, the datasets
    that ran (Table 3's and ``synthetic``)."""
    out: dict[str, dict[str, float]] = {}
    for protocol in PROTOCOLS:
        for key, row in getattr(record, protocol).by_model.items():
            out[row_label(protocol, key)] = {ds: v for ds, v in row.items()
                                             if ds in (*TABLE3_DATASETS, "synthetic") and not isinstance(v, dict)}
    return out


def claims(record: Record) -> list[tuple[str, Any, str | None]]:
    """``(results key, ours, model)`` of every Table 3 number the paper's claims are judged on: per protocol the
    rows without and with registers, DINO's reference and the register gain, per Table 3 dataset."""
    out: list[tuple[str, Any, str | None]] = []
    for protocol in PROTOCOLS:
        rows = getattr(record, protocol)
        for role in ("no_reg", "reg", "dino", "register_gain"):
            row = getattr(rows, role)
            out += [(f"{protocol}.{role}.{name}", row[name], row.get("model")) for name in TABLE3_DATASETS]
    return out


EXPERIMENT = Experiment("08_lost", Params, models, work, PROFILES, record=Record, costs=costs, loads=loads)
