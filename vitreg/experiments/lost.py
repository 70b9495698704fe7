"""Notebook 08_lost: F8 (Table 3).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

from dataclasses import dataclass

from vitreg.experiments.base import Common, Experiment, Work, param


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 08_lost (defaults: the real experiment; the notebook's parameters cell is the same)."""

    models: list = param(['dinov2_l', 'dinov2_l_reg', 'deit3_b16', 'clip_b16_laion', 'dino_s16'], 'list', '')
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


#: Seconds of work besides forwards on one H100 for the run-time table (None: not estimated), and what it
#: leaves out.
OTHER_S: float | None = None
NOTE = '[TTR] sweep scoring not estimated (132 LOST settings per image, on the CPU)'


def _demo(p: Params) -> list[str]:
    """The models of the three-step figure: the DINOv2 ones, else the first."""
    from vitreg.core.models import get_spec

    return [k for k in p.models if get_spec(k).family == "dinov2"] or list(p.models[:1])


def models(p: Params) -> list[str]:
    """Every model a run with ``p`` loads, in load order: the figure's models, then every model of ``models``."""
    return list(dict.fromkeys([*_demo(p), *p.models]))


def work(p: Params) -> list[Work]:
    """The forwards a run with ``p`` does: one photo per figure model, then every box dataset once per model (the
    [TTR] sweep is scored on the same pass); absent datasets are skipped. Padded images count at ``image_size``."""
    from vitreg.experiments import sizes
    from vitreg.experiments.base import px

    rows = [Work(k, px(p.image_size, k), 1, "LOST's steps on one photo") for k in _demo(p)]
    for k in p.models:
        rows += [Work(k, px(p.image_size, k), sizes.box_images(d, p.limit), f"LOST on {d}",
                      "" if d == "synthetic" else d) for d in p.datasets]
    return rows


EXPERIMENT = Experiment("08_lost", Params, models, work, PROFILES, other_s=OTHER_S, note=NOTE)
