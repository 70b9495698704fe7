"""Notebook 10_test_time_registers: F7 (beyond the paper: [TTR] (test-time registers)).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

from dataclasses import dataclass

from vitreg.experiments.base import Common, Experiment, Work, param


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
    batch_size: int = param(8, 'count', '')
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


#: Seconds of work besides forwards on one H100 for the run-time table (None: not estimated), and what it
#: leaves out.
OTHER_S: float | None = None
NOTE = '[TTR] sweep scoring and probe fitting not estimated (as 08 and 06)'


def models(p: Params) -> list[str]:
    """Every model a run with ``p`` loads, in load order: ``models``, their register twins, LOST's pair."""
    from vitreg.core.models import register_twin

    twins = [t for t in map(register_twin, p.models) if t is not None]
    lost = [p.lost_model, register_twin(p.lost_model)] if p.lost_model in p.models and p.lost_datasets else []
    return list(dict.fromkeys([*p.models, *twins, *[m for m in lost if m is not None]]))


def work(p: Params) -> list[Work]:
    """The forwards a run with ``p`` does: detection, the evaluation images as is, with a test-time register and
    through the twin, the shifted register, LOST over each box dataset three times (as is, with a test-time
    register, the twin; at the model's native size), the probes, and the exercises (four neuron counts, the
    corner patch)."""
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
        twin = register_twin(p.lost_model)
        for d in p.lost_datasets:
            count, needs = sizes.box_images(d, p.lost_limit), "" if d == "synthetic" else d
            rows += [Work(p.lost_model, px(None, p.lost_model), count, f"LOST on {d}", needs),
                     Work(p.lost_model, px(None, p.lost_model), count, f"LOST on {d} + test-time register", needs)]
            if twin is not None:
                rows.append(Work(twin, px(None, twin), count, f"LOST on {d}, trained registers", needs))
    needs = "" if p.probe_dataset == "synthetic" else p.probe_dataset
    for k in [k for k in p.probe_models if k in p.models]:
        rows += [Work(k, px(p.image_size, k), p.probe_n_train, "probe train", needs),
                 Work(k, px(p.image_size, k), p.probe_n_val, "probe val", needs)]
    rows += [Work(first, px(p.image_size, first), min(p.n_show, n_eval), f"exercise: top {k} neurons")
             for k in (10, 20, 50, 100)]
    rows.append(Work(first, px(p.image_size, first), min(p.n_show, n_eval), "exercise: register in the corner"))
    return rows


EXPERIMENT = Experiment("10_test_time_registers", Params, models, work, PROFILES, other_s=OTHER_S, note=NOTE)
