"""Notebook 11_beyond_the_paper: F7 (beyond the paper: Sun et al. 2024 (massive activations), Denoising ViT (Yang et al. 2024)).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

from dataclasses import dataclass

from vitreg.experiments.base import Common, Experiment, Work, param


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 11_beyond_the_paper (defaults: the real experiment; the notebook's parameters cell is the same)."""

    model_pair: list = param(['dinov2_l', 'dinov2_l_reg'], 'list', 'without vs with 4 registers')
    image_size: int | list[int] = param(224, 'size', "Sun et al. and DINOv2's linear evaluation use 224 px")
    n_images: int = param(256, 'count', 'images for the massive activations and the positional measure')
    image_dir: str | None = param(None, 'str', 'a folder of your own images (wins over `images`)')
    images: str = param('auto', 'image_source', "auto: ImageNet val if $VITREG_DATA has it, else Imagenette val; or 'photos' (smoke)")
    batch_size: int = param(16, 'count', '')
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


#: Seconds of work besides forwards on one H100 for the run-time table (None: not estimated), and what it
#: leaves out.
OTHER_S: float | None = 3300.0
NOTE = ('ImageNet-1k [CLS] probe fit on the CPU: 33 s for 1,000 images x 100 classes here, x100 for 10k images x '
        '1,000 classes')


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


EXPERIMENT = Experiment("11_beyond_the_paper", Params, models, work, PROFILES, other_s=OTHER_S, note=NOTE)
