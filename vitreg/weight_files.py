"""What is inside a weights file: a cheap header check, and finiteness of loaded tensors.

Paper: every figure rests on the right weights. A truncated download, a Git LFS pointer or an HTML error
page saved as ``.safetensors`` must be named as such (not reported as "do not match the model" or as a
bare ``SafetensorError``), and the runner's preflight must see it without loading gigabytes; weights with
NaN would turn every norm into NaN with no error. :mod:`vitreg.weights` calls these before and after loading.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path

import torch
from torch import nn


def first_non_finite(model: nn.Module) -> tuple[str, int, int] | None:
    """The first floating-point tensor of ``model``'s state dict with NaN or Inf: (name, how many, numel).

    Loaded weights with NaN would make every norm and attention map NaN (or a black image) with no error.
    One pass over the weights (about a second for ViT-g on a CPU).
    """
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and tensor.device.type != "meta":
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                return name, int((~finite).sum()), tensor.numel()
    return None


def check_weights_file(path: str | os.PathLike) -> str | None:
    """What is wrong with a weights file, judged from its header (cheap: no tensor is read), or None.

    ``.safetensors``: the 8-byte header length, the JSON header, and a file as long as its tensors need.
    ``.pth``/``.bin``/``.pt``: PyTorch's zip archive must have its central directory (a truncated download
    loses it); a pre-1.6 pickle checkpoint is only checked for its first byte. Other suffixes: None.
    Used by :func:`vitreg.weights.load_model` and the runner's preflight
    (:func:`vitreg.weights.broken_weights`), so a truncated file is reported as broken, not found.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            return "the file is empty (0 bytes)"
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            return _safetensors_problem(path, size)
        if suffix in (".pth", ".bin", ".pt"):
            return _torch_file_problem(path, size)
    except OSError as err:
        return f"cannot read it ({err})"
    return None


def _safetensors_problem(path: Path, size: int) -> str | None:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"only {size} bytes, shorter than a safetensors header"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return (f"its header announces {n} bytes but the file has {size}: truncated, or not a safetensors "
                    f"file (it starts with {head!r})")
        try:
            header = json.loads(f.read(n))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
            return f"its header is not valid safetensors JSON ({err})"
    if 8 + n + end > size:
        return f"truncated: its tensors need {8 + n + end} bytes, the file has {size}"
    if 8 + n + end < size:
        return f"{size - 8 - n - end} unexpected bytes after the last tensor"
    return None


def _torch_file_problem(path: Path, size: int) -> str | None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(b"\x80"):
        return None  # a legacy (pre-zip) torch.save pickle: only a full load can tell
    if magic != b"PK\x03\x04":
        return f"not a PyTorch checkpoint (it starts with {magic!r}, not a zip archive)"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            last = max(archive.infolist(), key=lambda i: i.header_offset, default=None)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        return f"truncated or damaged: its zip directory cannot be read ({err})"
    if not any(n.endswith("data.pkl") for n in names):
        return "a zip archive without data.pkl: not a torch.save checkpoint"
    if last is not None and last.header_offset + last.compress_size > size:
        return "truncated: its last tensor ends past the end of the file"
    return None
