"""Which device to compute on: ``"auto"`` picks a GPU when there is one."""

from __future__ import annotations

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
