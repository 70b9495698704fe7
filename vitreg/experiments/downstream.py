"""Notebook 09_downstream: F8 (Table 2).

The one definition of this notebook's experiment: its parameters (the real defaults, what each allows, the smoke
and lecture overrides), the models it loads, the forwards it does and the numbers it saves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from vitreg.experiments.base import Common, Experiment, Work, param, patch_grid, sides
from vitreg.experiments.costs import Cost
from vitreg.experiments.steps import Skipped


@dataclass(frozen=True)
class Params(Common):
    """The parameters of 09_downstream (defaults: the real experiment; the notebook's parameters cell is the same)."""

    seeds: int = param(3, 'count', 'heads trained per task and model (seeds seed, seed+1, ...): the register difference is mean ± std over them')
    models: list = param(['dinov2_l', 'dinov2_l_reg'], 'list', '[without registers, with registers]: any zoo pair works')
    tasks: list = param(['imagenet', 'ade20k', 'nyud'], 'list', 'which probes to run')
    data_root: str | None = param(None, 'str', 'datasets folder (default $VITREG_DATA or data/datasets)')
    imagenet_root: str | None = param(None, 'str', 'ImageFolder with train/ and val/ (default <data_root>/imagenet1k)')
    ade20k_root: str | None = param(None, 'str', 'ADEChallengeData2016 (default <data_root>/ade20k)')
    nyud_root: str | None = param(None, 'str', 'BTS-layout NYU-Depth v2 (default <data_root>/nyud)')
    batch_size: int = param(32, 'count', 'images per forward pass (feature extraction)')
    use_cache: bool = param(True, 'bool', 'keep features on disk ($VITREG_CACHE or data/cache): a rerun skips extraction')
    cache_dir: str | None = param(None, 'str', 'feature cache folder (default $VITREG_CACHE or data/cache)')
    imagenet_image_size: int | list[int] = param(224, 'size', 'ImageNet-1k linear classification: input side in pixels (16x16 patch grid)')
    imagenet_n_train: int | None = param(None, 'count', 'None: all 1.28M training images (an int: a class-balanced subset, a proxy)')
    imagenet_n_val: int | None = param(None, 'count', 'None: all 50k validation images')
    imagenet_l2_grid: list = param([0.001, 0.0001, 1e-05, 1e-06], 'positives', 'L2 strengths tried on a held-out part of the training set, strongest first')
    imagenet_probe_batch_size: int | None = param(1024, 'count', 'minibatch size of the probe on a training set above imagenet_full_batch_max images (DINOv2: 1,024); None: full-batch L-BFGS at any size (all 1.28M images: up to 79 minutes for the pair and three seeds on one H100, `vitreg estimate`)')
    imagenet_probe_epochs: int = param(10, 'count', 'minibatch passes over the training set, Adam with a cosine schedule (DINOv2 trains its linear layer 12,500 steps of 1,024: 10 epochs)')
    imagenet_full_batch_max: int = param(100000, 'count', 'training sets up to this size keep full-batch L-BFGS (200 iterations, deterministic)')
    ade20k_image_size: int | list[int] = param(518, 'size', 'training crops: 37x37 patch grid (DINOv2 trains on 512 crops)')
    ade20k_eval_size: int | list[int] = param(686, 'size', 'whole validation images resized to fit this square and padded (49x49 grid)')
    ade20k_n_train: int | None = param(None, 'count', 'None: all 20,210 training images (an int: a subset, a proxy)')
    ade20k_n_val: int | None = param(None, 'count', 'None: all 2,000 validation images')
    nyud_image_size: list = param([476, 630], 'size', 'the 480x640 frame at a patch multiple (34x45 grid); test depth scored at 480x640')
    nyud_n_train: int = param(8000, 'count', 'of the 24,231 BTS training frames (None: all, ~75 GB of host memory): a proxy')
    nyud_n_test: int | None = param(None, 'count', 'None: all 654 test frames')
    head_epochs: int = param(20, 'count', 'passes over the training crops per head (segmentation and depth), per seed')
    head_batch_size: int = param(16, 'count', 'training crops per optimizer step of a head')
    head_lr: float = param(0.001, 'positive', 'AdamW learning rate of the heads (cosine schedule)')
    synthetic: bool = param(False, 'bool', 'synthetic planted data (smoke runs: the heads must learn a planted relation, and not a shuffled one)')
    synthetic_image_size: int | list[int] = param(112, 'size', 'side of the synthetic images in pixels')
    synthetic_n_train: int = param(32, 'count', 'synthetic training images')
    synthetic_n_val: int = param(16, 'count', 'synthetic validation images')


#: Overrides of the defaults per profile (the smoke profile: random weights, planted truth, offline, CPU; the
#: lecture profile: small pretrained models at 224 px on the bundled photos).
PROFILES = {'smoke': {'models': ['dinov2_s', 'dinov2_s_reg'],
           'synthetic': True,
           'synthetic_image_size': 56,
           'synthetic_n_train': 24,
           'synthetic_n_val': 12,
           'head_epochs': 15,
           'head_batch_size': 8,
           'head_lr': 0.01,
           'seeds': 2,
           'batch_size': 8,
           'use_cache': False},
 'lecture': {'models': ['dinov2_s', 'dinov2_s_reg'],
             'tasks': ['ade20k'],
             'ade20k_image_size': 224,
             'ade20k_eval_size': 224,
             'ade20k_n_train': 40,
             'ade20k_n_val': 20,
             'head_epochs': 5,
             'head_batch_size': 8,
             'seeds': 1,
             'batch_size': 8}}


def task_costs(p: Params) -> dict[str, list[Cost]]:
    """What a run with ``p`` does besides forwards, per task of ``tasks`` (and ``synthetic``), for the run-time
    table (:mod:`vitreg.experiments.costs`: the models and the rules that scale them).

    Paper: Table 2. Per model of the pair: ADE20k and NYUd heads trained ``seeds x head_epochs`` passes over
    the cached training features (the features stay on the GPU when they fit, :func:`vitreg.measure.heads.on_device`),
    the whole-image scoring of each seed, and the ImageNet probe's fits (3 variants x (one fit per L2 of the grid on
    80% of the training set + the refit), per seed; in minibatch mode the variants share each optimizer step)."""
    import math

    from vitreg.experiments import costs as c
    from vitreg.experiments import sizes
    from vitreg.experiments.table2 import Table2Settings
    from vitreg.measure.heads import depth_working_bytes, fits_on_device, seg_working_bytes

    n_models = len(p.models)
    out: dict[str, list[Cost]] = {}
    if "imagenet" in p.tasks:
        n = sizes.capped(sizes.CLASSIFICATION["imagenet1k"][0], p.imagenet_n_train)
        n_test = sizes.capped(sizes.CLASSIFICATION["imagenet1k"][1], p.imagenet_n_val)
        batch = Table2Settings(imagenet_probe_batch_size=p.imagenet_probe_batch_size,
                               imagenet_full_batch_max=p.imagenet_full_batch_max).probe_batch_size(n)
        grid = len(p.imagenet_l2_grid)
        fits = grid + 1 if grid > 1 else 1
        dims = [[d * c.token_widths(m)[0] for d in (1, 1, 2)] for m in p.models]  # [CLS], mean patch, both
        if batch is None:
            fitting = sum(c.logistic_cv_probe_s(n=n, d=d, c=1000, grid=grid, value_bytes=c.CACHE_VALUE_BYTES)
                          for ds in dims for d in ds)
            how, rule = "full-batch L-BFGS, at most 251 objective evaluations per fit (max_eval + 1: an upper bound)", c.LOGISTIC_SCALING
        else:  # the three variants share each minibatch step (vitreg.measure.estimators.fit_logistic_cv_joint)
            fitting = sum(c.joint_logistic_cv_probe_s(n=n, dims=ds, c=1000, grid=grid, batch_size=batch,
                                                      epochs=p.imagenet_probe_epochs, value_bytes=c.CACHE_VALUE_BYTES)
                          for ds in dims)
            how = f"Adam, {p.imagenet_probe_epochs} epochs of minibatches of {batch}, the variants trained together"
            rule = c.JOINT_ADAM_SCALING
        scoring = sum(c.variant_features_s(n + n_test, ds[2])  # each seed builds "both" again and scores the test set
                      + sum(c.predict_s(n_test, d, 1000, value_bytes=c.CACHE_VALUE_BYTES, on_gpu=True) for d in ds)
                      for ds in dims)
        copies = sum(c.feature_copy_s(n + n_test, ds[2], c.CACHE_VALUE_BYTES) for ds in dims)  # once per model
        out["imagenet"] = [Cost(
            f"ImageNet-1k linear probe: 3 variants x {fits} fits x {p.seeds} seeds x {n_models} models, {how}",
            copies + p.seeds * (fitting + scoring),
            f"{rule}; n = {n:,}, d = D, D, 2D; the float16 [CLS] and mean patch tokens copied to the GPU once per "
            f"model (at PCIE_BYTES_S), per seed the concatenated variant built there and the {n_test:,} test images "
            "scored there", needs="imagenet1k")]
    if "ade20k" in p.tasks:
        n = sizes.capped(sizes.ADE20K[0], p.ade20k_n_train)
        heads = 0.0
        for m in p.models:
            hw, grid, dim = sides(p.ade20k_image_size), patch_grid(p.ade20k_image_size, m), c.token_widths(m)[0]
            resident = fits_on_device(n * (2 * grid[0] * grid[1] * dim + hw[0] * hw[1]),
                                      seg_working_bytes(p.head_batch_size, 150, hw), c.GPU_MEMORY_BYTES)
            feed = 0.0 if resident else c.host_feed_bytes(grid, dim, hw[0] * hw[1])
            heads += c.head_training_s(p.seeds * p.head_epochs * n,
                                       p.seeds * p.head_epochs * math.ceil(n / p.head_batch_size),
                                       c.seg_step_bytes(150, hw, grid, dim), c.seg_step_flop(150, grid, dim), feed)
        n_val = sizes.capped(sizes.ADE20K[1], p.ade20k_n_val)
        canvas = sides(p.ade20k_eval_size)[0]
        out["ade20k"] = [
            Cost(f"ADE20k linear segmentation heads: {p.seeds} seeds x {p.head_epochs} epochs x {n:,} crops x "
                 f"{n_models} models", heads,
                 "per image-step: 8 float32 passes over the 150 x H x W upsampled logits (counted from the aten ops of "
                 "a step), the tokens and labels, at HBM_BYTES_S x HBM_SHARE, + 3 matmuls at FP32_FLOPS x FP32_SHARE; "
                 "features fed from the host where they do not fit on the GPU (CPU_GATHER_BYTES_S measured here, "
                 "PCIE_BYTES_S assumed); HEAD_STEP_S per optimizer step (measured here)"),
            Cost(f"ADE20k whole-image scoring: {n_val:,} images x {p.seeds} seeds x {n_models} models",
                 n_models * (c.seg_scoring_s(n_val, 150, canvas, p.seeds)
                             + c.majority_count_s(n, sides(p.ade20k_image_size))),
                 f"all seeds' heads in one pass: per image and head, 4 float32 passes over the logits on the {canvas} "
                 f"px canvas and at the label's size ({c.ADE20K_LABEL_HW[0]}x{c.ADE20K_LABEL_HW[1]} assumed) and the "
                 "IoU count on the GPU at HBM_BYTES_S x HBM_SHARE; per image the label decoded on the CPU "
                 "(LABEL_DECODE_PIXEL_S, measured here); the training labels' classes counted once per model in "
                 "uint8 chunks as they are (CPU_GATHER_BYTES_S)")]
    if "nyud" in p.tasks:
        n = sizes.capped(sizes.NYUD[0], p.nyud_n_train)
        n_test = sizes.capped(sizes.NYUD[1], p.nyud_n_test)
        total = 0.0
        for m in p.models:
            hw, grid, dim = sides(p.nyud_image_size), patch_grid(p.nyud_image_size, m), c.token_widths(m)[0]
            resident = fits_on_device(n * (2 * grid[0] * grid[1] * dim + 4 * hw[0] * hw[1]),
                                      depth_working_bytes(p.head_batch_size, 256, grid), c.GPU_MEMORY_BYTES)
            feed = 0.0 if resident else c.host_feed_bytes(grid, dim, 4 * hw[0] * hw[1])
            total += c.head_training_s(p.seeds * (p.head_epochs * n + n_test),
                                       p.seeds * p.head_epochs * math.ceil(n / p.head_batch_size),
                                       c.depth_step_bytes(256, hw, grid, dim), c.depth_step_flop(256, grid, dim), feed)
        out["nyud"] = [Cost(
            f"NYUd linear depth heads: {p.seeds} seeds x {p.head_epochs} epochs x {n:,} crops x {n_models} models, "
            f"and the {n_test} test frames", total,
            "per image-step: 29 float32 passes over the 256 x 4h x 4w bin logits (counted from the aten ops of a "
            "step), the [patch, CLS] tokens and the depth map at HBM_BYTES_S x HBM_SHARE, + 2 matmuls at "
            "FP32_FLOPS x FP32_SHARE; test frames counted as training image-steps (an upper bound); HEAD_STEP_S "
            "per optimizer step (measured here)")]
    if p.synthetic:
        hw = sides(p.synthetic_image_size)
        seconds = 0.0
        for m in p.models:
            grid, dim = patch_grid(p.synthetic_image_size, m), c.token_widths(m)[0]
            steps = (p.seeds + 1) * p.head_epochs * math.ceil(p.synthetic_n_train / p.head_batch_size)
            images = (p.seeds + 1) * p.head_epochs * p.synthetic_n_train
            seconds += c.head_training_s(images, steps, c.seg_step_bytes(4, hw, grid, dim), c.seg_step_flop(4, grid, dim))
            seconds += c.head_training_s(images, steps, c.depth_step_bytes(256, hw, grid, dim),
                                         c.depth_step_flop(256, grid, dim))
        out["synthetic"] = [Cost("synthetic planted heads (segmentation and depth, each seed and a shuffled control)",
                                 seconds, "as the ADE20k and NYUd heads, at the synthetic size")]
    return out


def costs(p: Params) -> list[Cost]:
    """What a run with ``p`` does besides forwards, for the run-time table: :func:`task_costs`' rows."""
    return [row for rows in task_costs(p).values() for row in rows]


def estimated_hours(p: Params) -> dict[str, float]:
    """Expected hours of each task of Table 2 on one H100-class GPU, both models of the pair: its forwards
    (:mod:`vitreg.experiments.timing`: GPU compute or decoding, the larger) plus its rows of :func:`task_costs`.
    The same models as the run-time table's row of 09 (without its kernel start and model loading).

    Paper: Table 2."""
    from vitreg.experiments import timing
    from vitreg.experiments.costs import total_s

    per_task = task_costs(p)
    rows = work(p)
    out = {}
    for task, needs in (("imagenet", "imagenet1k"), ("ade20k", "ade20k"), ("nyud", "nyud")):
        forwards = [w for w in rows if w.needs == needs]
        gpu = timing.flops(forwards) / (timing.PEAK_FLOPS * timing.SHARE)
        out[task] = round((max(gpu, timing.host_s(forwards)) + (total_s(per_task.get(task, [])) or 0.0)) / 3600, 2)
    return out


def models(p: Params) -> list[str]:
    """Every model a run with ``p`` loads, in load order: the pair (without registers first)."""
    return list(dict.fromkeys(p.models))


def loads(p: Params) -> list[str]:
    """Every load a run with ``p`` does, in order (:class:`vitreg.experiments.table2.Table2`): per task of ``tasks``,
    each model of the pair at that task's size (ImageNet; ADE20k twice, the training crops' size and the whole
    images' canvas; NYUd), then per model once more for the synthetic check. A load happens even when the
    features come from the cache."""
    per_task = {"imagenet": 1, "ade20k": 2, "nyud": 1}
    rows = [m for task in ("imagenet", "ade20k", "nyud") if task in p.tasks for m in p.models
            for _ in range(per_task[task])]
    return rows + (list(p.models) if p.synthetic else [])


def work(p: Params) -> list[Work]:
    """The forwards a run with ``p`` does, per model of the pair: each task of ``tasks`` (train and test
    features; skipped where its dataset is absent; cached on disk) and the synthetic check."""
    from vitreg.experiments import sizes
    from vitreg.experiments.base import px

    rows = []
    for m in p.models:
        if "imagenet" in p.tasks:
            train, val = sizes.CLASSIFICATION["imagenet1k"]
            rows += [Work(m, px(p.imagenet_image_size, m), sizes.capped(train, p.imagenet_n_train),
                          "ImageNet-1k train", "imagenet1k"),
                     Work(m, px(p.imagenet_image_size, m), sizes.capped(val, p.imagenet_n_val),
                          "ImageNet-1k val", "imagenet1k")]
        if "ade20k" in p.tasks:
            rows += [Work(m, px(p.ade20k_image_size, m), sizes.capped(sizes.ADE20K[0], p.ade20k_n_train),
                          "ADE20k train crops", "ade20k"),
                     Work(m, px(p.ade20k_eval_size, m), sizes.capped(sizes.ADE20K[1], p.ade20k_n_val),
                          "ADE20k val, whole images", "ade20k")]
        if "nyud" in p.tasks:
            rows += [Work(m, px(p.nyud_image_size, m), sizes.capped(sizes.NYUD[0], p.nyud_n_train),
                          "NYUd train crops", "nyud"),
                     Work(m, px(p.nyud_image_size, m), sizes.capped(sizes.NYUD[1], p.nyud_n_test),
                          "NYUd test", "nyud")]
        if p.synthetic:  # dense train + val + whole val, then the global set (twice as many)
            rows.append(Work(m, px(p.synthetic_image_size, m), 3 * p.synthetic_n_train + 4 * p.synthetic_n_val,
                             "synthetic planted data"))
    return rows


#: what a non-finite number of the record means.
NOT_MEASURED = "not measured (no valid pixels or images)"
#: Table 2's tasks.
TASKS = ("imagenet", "ade20k", "nyud")
#: Table 2's three columns.
METRICS = ("imagenet_top1", "ade20k_miou", "nyud_rmse")

Number = float | Skipped | None
Seeds = list[float] | None


# --- steps (the notebook calls these; the probes themselves are vitreg.experiments.table2's) ---------
def start(p: Params) -> Any:
    """The Table 2 run of a model pair with a run's parameters (its tasks run one call each:
    :meth:`vitreg.experiments.table2.Table2.run`).

    Paper: Table 2."""
    from vitreg.experiments.table2 import Table2, Table2Settings

    return Table2(p.models, Table2Settings.from_params(dataclasses.asdict(p)))


def prefill(p: Params) -> Iterator[str]:
    """Fill the feature cache a run reads, by the run's own steps (:func:`start`, then each task's data and
    features, :meth:`~vitreg.experiments.table2.Table2.extract`): both models' features of every task in
    ``tasks`` (a task whose data is not here is skipped, as in the notebook). The synthetic smoke check is
    not pre-extracted (it is small).

    Paper: Table 2 (``vitreg extract 09``).

    Yields:
        one line per (model, task), or why a task was skipped.
    """
    table2 = start(p)
    for task in TASKS:
        if task in p.tasks:
            yield from table2.extract(task)


# --- the results record ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Role:
    """One model's Table 2 numbers: each the mean over seeds, with ``_std`` and ``_per_seed`` beside it
    (a task not run holds ``{"skipped": why}`` in its headline column; the others are then absent).

    Paper: Table 2 (ImageNet top-1 of [CLS]+mean patch, ADE20k mIoU, NYUd RMSE), and what explains them:
    the [CLS]-only and patch-only ImageNet probes, pixel accuracy, AbsRel, delta1 and each task's chance level.
    """

    model: str
    imagenet_top1: Number = None
    imagenet_top1_std: Number = None
    imagenet_top1_per_seed: Seeds = None
    imagenet_top1_cls: Number = None
    imagenet_top1_cls_std: Number = None
    imagenet_top1_cls_per_seed: Seeds = None
    imagenet_top1_patch_mean: Number = None
    imagenet_top1_patch_mean_std: Number = None
    imagenet_top1_patch_mean_per_seed: Seeds = None
    imagenet_chance: Number = None
    ade20k_miou: Number = None
    ade20k_miou_std: Number = None
    ade20k_miou_per_seed: Seeds = None
    ade20k_pixel_accuracy: Number = None
    ade20k_pixel_accuracy_std: Number = None
    ade20k_pixel_accuracy_per_seed: Seeds = None
    ade20k_chance_miou: Number = None
    ade20k_n_val: int | None = None
    nyud_rmse: Number = None
    nyud_rmse_std: Number = None
    nyud_rmse_per_seed: Seeds = None
    nyud_abs_rel: Number = None
    nyud_abs_rel_std: Number = None
    nyud_abs_rel_per_seed: Seeds = None
    nyud_delta1: Number = None
    nyud_delta1_std: Number = None
    nyud_delta1_per_seed: Seeds = None
    nyud_constant_rmse: Number = None


@dataclass(frozen=True)
class Gain:
    """With minus without registers per column, paired by seed: mean, std, the differences and how many seeds
    (a column not measured holds why in its mean and std).

    Paper: Table 2 (DINOv2-L: +0.5 top-1, +1.3 mIoU, -0.012 m RMSE; [TTR]'s public pair: +0.3, +0.8, -0.006)."""

    model: str
    imagenet_top1: Number = None
    imagenet_top1_std: Number = None
    imagenet_top1_per_seed: Seeds = None
    imagenet_top1_n_seeds: int | None = None
    ade20k_miou: Number = None
    ade20k_miou_std: Number = None
    ade20k_miou_per_seed: Seeds = None
    ade20k_miou_n_seeds: int | None = None
    nyud_rmse: Number = None
    nyud_rmse_std: Number = None
    nyud_rmse_per_seed: Seeds = None
    nyud_rmse_n_seeds: int | None = None


@dataclass(frozen=True)
class Budget:
    """What a task trained on: its images against the protocol's; fewer make its rows a proxy (the verdicts read
    ``proxy``: only the register difference of a proxy says something).

    Paper: Table 2 ([TTR]'s numbers are on the full training sets)."""

    n_train: int
    protocol_n_train: int
    proxy: bool
    why: str


@dataclass(frozen=True)
class SyntheticRole:
    """One model on the planted synthetic data (smoke runs): each head against chance and shuffled targets."""

    model: str
    seg_miou: float
    seg_miou_shuffled: float
    seg_chance_miou: float
    depth_rmse: float
    depth_rmse_shuffled: float
    depth_constant_rmse: float
    cls_top1: float
    cls_chance: float
    seg_miou_per_seed: list[float]
    depth_rmse_per_seed: list[float]


@dataclass(frozen=True)
class Record:
    """What 09 measured (``results/09_downstream.json``'s ``numbers``).

    Paper: Table 2 (``no_reg``, ``reg``, ``register_gain``), with the run's budget per task (``budget``:
    proxy or full protocol), its estimated hours, the datasets' sizes and protocol; ``synthetic`` and
    ``synthetic_gain``: the planted check of smoke runs (``{"skipped": why}`` otherwise).
    """

    no_reg: Role
    reg: Role
    register_gain: Gain
    seeds: int
    budget: dict[str, Budget] = field(metadata={"keys": TASKS})
    estimated_hours: dict[str, float] = field(metadata={"keys": TASKS})
    synthetic: dict[str, SyntheticRole] | Skipped = field(metadata={"keys": ("no_reg", "reg")})
    synthetic_gain: dict[str, Any] | Skipped
    datasets: dict[str, dict[str, int]]
    protocol: dict[str, Any]
    skipped: list[str]


def _values(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: Skipped(v["skipped"]) if isinstance(v, dict) and set(v) == {"skipped"} else v for k, v in entry.items()}


def _skipped_or(value: Any, build: Any) -> Any:
    return Skipped(value["skipped"]) if isinstance(value, dict) and set(value) == {"skipped"} else build(value)


def build_record(p: Params, table2: Any, synthetic: Mapping[str, Any], synthetic_gain: Mapping[str, Any]) -> Record:
    """The results record of a run from its Table 2 run.

    Paper: Table 2.

    Args:
        p: the run's parameters.
        table2: :func:`start`'s run, its tasks done.
        synthetic: :meth:`~vitreg.experiments.table2.Table2.synthetic`'s output, or ``{"skipped": why}``.
        synthetic_gain: :meth:`~vitreg.experiments.table2.Table2.synthetic_gain`'s, or ``{"skipped": why}``.
    """
    return Record(
        no_reg=Role(**_values(table2.ours["no_reg"])), reg=Role(**_values(table2.ours["reg"])),
        register_gain=Gain(**_values(table2.register_gain())), seeds=p.seeds,
        budget={task: Budget(**b) for task, b in table2.budget.items()},
        estimated_hours=estimated_hours(p),
        synthetic=_skipped_or(synthetic, lambda s: {role: SyntheticRole(**r) for role, r in s.items()}),
        synthetic_gain=_skipped_or(synthetic_gain, lambda g: _values(g)),
        datasets=dict(table2.datasets), protocol=table2.settings.protocol(), skipped=list(table2.skipped))


def checks(numbers: dict) -> Iterator[tuple[str, Any, str | None]]:
    """``(key, value, model)`` of every number of ``data/paper_numbers.yaml`` that 09 writes, from the saved
    ``numbers``.

    Paper: Table 2 (each model's three columns and the register difference)."""
    for role in ("no_reg", "reg", "register_gain"):
        for m in METRICS:
            yield f"{role}.{m}", numbers[role][m], numbers[role]["model"]


def planted_truth(synthetic: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """What the heads must learn on the planted synthetic data, for each model (smoke runs).

    Not a paper claim: a check of the probes' code on a known ground truth."""
    from vitreg.experiments.table2 import synthetic_checks

    return [(what, ok) for r in synthetic.values() for what, ok in synthetic_checks(r).items()]


EXPERIMENT = Experiment("09_downstream", Params, models, work, PROFILES, record=Record, costs=costs,
                        loads=loads)
