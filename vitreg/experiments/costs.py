"""What a notebook does besides forwards, in seconds on one H100-class GPU: cost models for the run-time table.

Paper: all findings (goal: the whole real run under one hour on one H100-class GPU; :mod:`vitreg.experiments.timing`).

Forwards are counted by :mod:`vitreg.experiments.timing` from each experiment's ``work(p)``. Everything else a
notebook does (probe fits, dense heads, LOST sweeps, bootstraps, loading models) is a :class:`Cost` row of its
experiment's ``costs(p)``, estimated here by a model with a stated rule:

* each model counts what the work does at the real size (FLOPs, bytes moved, objective evaluations, calls)
  from the same settings the notebook reads, so a changed parameter changes the estimate;
* its constants (a rate, a fixed cost per call) are measured on the CPU at small size by
  ``benchmarks/bench_costs.py``, which prints the measured time beside the model's for the same small problem;
* the rule from that measurement to the real size on the GPU is each row's ``scaling`` text, and the GPU rates
  it divides by are the named assumptions below (``make benchmark-gpu`` measures them where a GPU is at hand).

A row whose ``seconds`` is None is not estimated, and the table says so.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

#: fp32 peak of an H100 SXM without tensor cores, FLOP/s (vendor data sheet): probes and heads run in float32,
#: and torch multiplies float32 matrices in full fp32 unless told otherwise.
FP32_FLOPS = 67e12
#: Share of :data:`FP32_FLOPS` a large float32 matrix product reaches: ASSUMED.
FP32_SHARE = 0.5
#: HBM3 bandwidth of an H100 SXM, bytes/s (vendor data sheet), and the share an elementwise kernel reaches: ASSUMED.
HBM_BYTES_S, HBM_SHARE = 3.35e12, 0.5


@dataclass(frozen=True)
class Cost:
    """One piece of work besides forwards.

    Attributes:
        what: what it is, as the table prints it (``"ImageNet-1k [CLS] probe: 7 L-BFGS fits"``).
        seconds: expected seconds on one H100-class GPU (None: not estimated).
        scaling: how the CPU measurement at small size becomes this figure (the rule and its assumptions).
    """

    what: str
    seconds: float | None
    scaling: str = ""


def total_s(costs: Iterable[Cost]) -> float | None:
    """Sum of the estimated rows; None when there is a row that is not estimated and no estimated one."""
    rows = list(costs)
    known = [c.seconds for c in rows if c.seconds is not None]
    return float(sum(known)) if known or not rows else None


def unestimated(costs: Iterable[Cost]) -> list[Cost]:
    """The rows that are not estimated."""
    return [c for c in costs if c.seconds is None]


def gpu_matmul_s(flop: float) -> float:
    """Seconds for ``flop`` float32 FLOPs of large matrix products on the GPU (:data:`FP32_FLOPS` x :data:`FP32_SHARE`)."""
    return flop / (FP32_FLOPS * FP32_SHARE)


def gpu_bytes_s(nbytes: float) -> float:
    """Seconds to stream ``nbytes`` through GPU memory in elementwise kernels (:data:`HBM_BYTES_S` x :data:`HBM_SHARE`)."""
    return nbytes / (HBM_BYTES_S * HBM_SHARE)


# ---------------------------------------------------------------------------------------------------
# Linear probes (L-BFGS logistic regression, ridge): 05, 06, 09's ImageNet, 10, 11
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# Dense heads (09: ADE20k segmentation, NYUd depth)
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# LOST sweeps and bootstraps (02, 08, 10)
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# Loading models
# ---------------------------------------------------------------------------------------------------

#: Python part of building a timm ViT, seconds per block: ``timm.create_model`` on the meta device (module construction
#: and the init calls, nothing allocated), measured with ``benchmarks/bench_costs.py --full`` (best of 5, one 2-core
#: AMD EPYC at load average 1.8): ViT-S/14 (12 blocks) 0.061 s, ViT-L/14 (24) 0.118 s, ViT-g/14 (40) 0.212 s; the
#: least-squares line through them crosses zero (-7 ms), so the build is taken as proportional to the blocks.
BUILD_S_PER_BLOCK = 5.2e-3
#: Bytes per parameter of a checkpoint file: float32, as timm's hub safetensors of the zoo (what ``make weights``
#: copies into the weights folder).
CHECKPOINT_BYTES = 4
#: Sequential read of one checkpoint file from a local NVMe SSD, bytes/s: ASSUMED (data-centre NVMe SSDs read
#: 3-7 GB/s; one file read by one thread gets less). Every load is counted as a cold read, an upper bound: a model
#: loaded again by a later notebook is usually still in the page cache. ``bench_costs.py`` measures this machine's
#: disk for comparison, ``bench_gpu.py`` the GPU node's.
DISK_BYTES_S = 2e9
#: First write to newly allocated host memory (page faults), bytes/s, on one thread: the checkpoint is read into fresh
#: host memory by one thread. Measured with ``benchmarks/bench_costs.py --full`` (a new 200 MB tensor filled once,
#: less the same fill again; best of 5 on one thread of a 2-core AMD EPYC virtual machine at load average 2.2: 3.1 GB/s,
#: 6.5 on two threads), taken for the GPU node (an upper bound: a virtual machine's page faults are slower than
#: bare metal's); ``bench_gpu.py`` measures it there.
HOST_TOUCH_BYTES_S = 3.1e9
#: Host-to-device copy from pageable host memory, bytes/s: ASSUMED (timm's strict load copies each tensor of the
#: checkpoint, read to the CPU, into the model built on the GPU; PCIe Gen5 x16 peaks at 64 GB/s, pinned copies
#: reach about 50, pageable ones far less). ``bench_gpu.py`` measures it.
H2D_BYTES_S = 10e9
#: Bytes moved per parameter byte on the GPU by timm's random init before the checkpoint overwrites it (trunc_normal_:
#: uniform, erfinv, mul, add, clamp, each reading and writing the tensor) and by the non-finite check (isfinite reads
#: each value and writes a bool, all() reads the bools): ASSUMED from the kernels' reads and writes.
INIT_PASSES, CHECK_PASSES = 10.0, 1.25
#: Jupyter kernel start, ``import vitreg, torch, timm`` and shutdown, seconds per notebook: measured with
#: ``benchmarks/bench_costs.py --full`` (the ``vitreg`` kernel started through jupyter_client as papermill starts it:
#: about 0.6 s to ready, 3 s of imports, 1.5 s to shut down; best of 3 in three runs on a 2-core AMD EPYC at load
#: average 1.7-2.5: 4.71, 4.85, 4.94 s; single starts under heavier load took up to 7 s), taken as is for the GPU
#: node (one process, mostly on one core).
KERNEL_S = 4.8
#: Parameters (millions, persistent buffers included) and blocks of every model of the real run, counted on the
#: meta device by :func:`count_arch` (a test keeps every model of the real run here).
ARCH: dict[str, tuple[float, int]] = {
    "dino_s16": (21.67, 12), "dino_b16": (85.80, 12), "dinov2_s": (22.06, 12), "dinov2_s_reg": (22.06, 12),
    "dinov2_b": (86.58, 12), "dinov2_b_reg": (86.58, 12), "dinov2_l": (304.37, 24), "dinov2_l_reg": (304.37, 24),
    "dinov2_g": (1136.48, 40), "dinov2_g_reg": (1136.48, 40), "dinov3_l": (303.08, 24), "deit3_b16": (85.82, 12),
    "clip_b16_laion": (85.80, 12), "mae_b16": (85.80, 12), "mae_l16": (303.30, 24),
    "vit_base_patch16_siglip_224.webli": (92.88, 12),
}


@dataclass(frozen=True)
class LoadRates:
    """Checkpoint bytes per second of each part of a pretrained load besides the Python build.

    Paper: every figure (the models each notebook loads; :mod:`vitreg.experiments.timing`'s fixed time).

    Attributes:
        init: timm's random init of the parameters on the device the model is built on.
        read: reading the checkpoint file from the disk (a raw read into memory already touched).
        touch: the first write to the fresh host memory it is read into (page faults).
        copy: the strict load copying it into the model (host to device on a GPU).
        check: the non-finite check of every tensor.
    """

    init: float
    read: float
    touch: float
    copy: float
    check: float


def gpu_load_rates() -> LoadRates:
    """The rates of a pretrained load on one H100-class GPU, built there (:func:`vitreg.core.weights.build_device`):
    init and check stream through HBM (:func:`gpu_bytes_s`'s rate over :data:`INIT_PASSES`, :data:`CHECK_PASSES`),
    the file comes from NVMe (:data:`DISK_BYTES_S`) into fresh host memory (:data:`HOST_TOUCH_BYTES_S`), the copy
    goes over PCIe (:data:`H2D_BYTES_S`)."""
    hbm = HBM_BYTES_S * HBM_SHARE
    return LoadRates(init=hbm / INIT_PASSES, read=DISK_BYTES_S, touch=HOST_TOUCH_BYTES_S, copy=H2D_BYTES_S,
                     check=hbm / CHECK_PASSES)


@functools.lru_cache(maxsize=None)
def count_arch(model: str) -> tuple[float, int]:
    """Parameters (millions, persistent buffers included: what a checkpoint holds) and blocks of ``model``, counted
    on the meta device at its native size (nothing is allocated)."""
    import timm
    import torch

    from vitreg.core.models import get_spec

    spec = get_spec(model)
    with torch.device("meta"):
        net = timm.create_model(spec.full_name, pretrained=False, num_classes=0, img_size=spec.native_resolution)
    return round(sum(t.numel() for t in net.state_dict().values()) / 1e6, 2), len(net.blocks)


def arch(model: str) -> tuple[float, int]:
    """Parameters (millions) and blocks of ``model``: :data:`ARCH`'s entry, else counted (:func:`count_arch`)."""
    return ARCH.get(model) or count_arch(model)


def checkpoint_bytes(model: str) -> float:
    """Bytes of ``model``'s checkpoint file: parameters x :data:`CHECKPOINT_BYTES`."""
    return arch(model)[0] * 1e6 * CHECKPOINT_BYTES


def build_python_s(model: str) -> float:
    """Seconds of Python building ``model`` (:data:`BUILD_S_PER_BLOCK` per block)."""
    return BUILD_S_PER_BLOCK * arch(model)[1]


def load_parts(model: str, rates: LoadRates | None = None) -> dict[str, float]:
    """Seconds of each part of a pretrained load of ``model`` (:func:`vitreg.core.weights.load_model`).

    Paper: every figure (the models each notebook loads).

    Args:
        model: zoo key or timm name.
        rates: the rates of the device it is built on; None: one H100-class GPU (:func:`gpu_load_rates`).

    Returns:
        ``{"build": Python part, "init": random init, "read": the file, "touch": fresh host memory, "copy": into the
        model, "check": non-finite}``.
    """
    rates = rates or gpu_load_rates()
    nbytes = checkpoint_bytes(model)
    return {"build": build_python_s(model), "init": nbytes / rates.init, "read": nbytes / rates.read,
            "touch": nbytes / rates.touch, "copy": nbytes / rates.copy, "check": nbytes / rates.check}


def load_s(model: str, rates: LoadRates | None = None) -> float:
    """Seconds of a pretrained load of ``model`` (:func:`load_parts`, summed: the parts run one after the other)."""
    return float(sum(load_parts(model, rates).values()))


def loading_s(models: Iterable[str]) -> float:
    """Seconds of loading ``models`` (a notebook's ``models(p)``: one load each) on one H100-class GPU."""
    return float(sum(load_s(m) for m in models))


def loading_rule() -> str:
    """How :func:`load_s` estimates a load, for the time table's footnote."""
    return (f"a model load = its Python build ({BUILD_S_PER_BLOCK * 1e3:.1f} ms per block, measured on the meta "
            f"device) + its float32 checkpoint read at {DISK_BYTES_S / 1e9:.0f} GB/s (NVMe, assumed) into fresh host "
            f"memory ({HOST_TOUCH_BYTES_S / 1e9:.1f} GB/s, measured) and copied to the GPU at "
            f"{H2D_BYTES_S / 1e9:.0f} GB/s (assumed) + init and check in GPU memory (ViT-L/14 "
            f"{load_s('dinov2_l'):.1f} s, ViT-g/14 {load_s('dinov2_g'):.1f} s); kernel start {KERNEL_S:.1f} s per "
            "notebook (measured)")
