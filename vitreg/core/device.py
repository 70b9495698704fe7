"""Which device to compute on: ``"auto"`` picks a GPU when there is one."""

from __future__ import annotations

import os

import torch


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve ``"auto"`` to ``cuda`` (then ``mps``) when available, else ``cpu``.

    Raises:
        ValueError: an explicit ``cuda`` device was asked for on a machine without one.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use device='auto' or 'cpu'")
    return dev


#: Environment switch of the GPU precision: ``bf16`` (default on CUDA), ``fp16``, or ``0`` / ``off`` / ``fp32``
#: (float32 everywhere, as on the CPU). Read by :func:`autocast_dtype`; the feature cache keys on the result.
AUTOCAST_ENV = "VITREG_AUTOCAST"


def autocast_dtype(device: str | torch.device, setting: str | None = None) -> torch.dtype | None:
    """The autocast dtype of forwards on ``device``: bf16 on CUDA by default, None (float32) elsewhere.

    Paper: every measurement (bf16 on GPU, the dtype recorded with the results). The CPU and MPS
    always run in float32, so smoke runs and their results do not depend on this switch.

    Args:
        device: where the model is.
        setting: ``"bf16"``, ``"fp16"``, ``"off"`` (or ``"0"``, ``"fp32"``); default ``$VITREG_AUTOCAST`` or bf16.
    """
    if torch.device(device).type != "cuda":
        return None
    value = (setting if setting is not None else os.environ.get(AUTOCAST_ENV, "bf16")).strip().lower()
    if value in ("0", "off", "no", "false", "fp32", "float32", "none"):
        return None
    if value in ("fp16", "float16", "half"):
        return torch.float16
    if value in ("bf16", "bfloat16", "1", "on", "yes", "true", ""):
        return torch.bfloat16
    raise ValueError(f"{AUTOCAST_ENV}={value!r}: use bf16, fp16 or off")


def batch_size_for(free_bytes: float, bytes_per_image: float, *, share: float = 0.5, cap: int = 256) -> int:
    """Images per forward that fit ``share`` of ``free_bytes`` at ``bytes_per_image`` each, in ``[1, cap]``,
    rounded down to a power of two (kernels like round sizes; the estimate is rough). Pure: tested on fake numbers."""
    if bytes_per_image <= 0:
        raise ValueError(f"bytes_per_image must be positive, got {bytes_per_image}")
    fits = int(free_bytes * share // bytes_per_image)
    if fits < 1:
        return 1
    return min(cap, 1 << (fits.bit_length() - 1))


def activation_bytes(tokens: int, width: int, heads: int, *, element_bytes: int = 2, recorded_per_token: int = 0) -> float:
    """Rough peak memory of one image's forward in inference mode: the widest block intermediates (the MLP's
    4x hidden, q/k/v, the residual) ``~12 * tokens * width`` elements, plus one attention map ``heads * tokens^2``
    (the unfused path of a recorded block), plus ``recorded_per_token`` float32 values kept per token on the GPU
    until the batch is copied out."""
    return float(element_bytes * tokens * (12 * width + heads * tokens) + 4 * tokens * recorded_per_token)


def loader_workers(device: str | torch.device, n_cpus: int | None, n_batches: int, *, most: int = 8) -> int:
    """Data-loader worker processes that decode and resize images while the GPU computes: none on the CPU
    (the cores compute the forward; smoke runs stay in one process), else up to ``most``, one core kept free,
    never more than there are batches."""
    if torch.device(device).type != "cuda" or not n_cpus or n_batches < 2:
        return 0
    return max(0, min(most, n_cpus - 1, n_batches))
