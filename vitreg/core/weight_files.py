"""What is inside a weights file: a cheap header check, and finiteness of loaded tensors.

Paper: every figure rests on the right weights. A truncated download, a Git LFS pointer or an HTML error
page saved as ``.safetensors`` must be named as such (not reported as "do not match the model" or as a
bare ``SafetensorError``), and the runner's preflight must see it without loading gigabytes; weights with
NaN would turn every norm into NaN with no error. :mod:`vitreg.core.weights` calls these before and after loading.

Official DINOv3 ``.pth`` files (facebookresearch/dinov3 layout) are loaded here exactly
(:func:`load_official_dinov3`): the masked q/v biases, the file's own RoPE periods (:func:`keep_rope_periods`),
and a refusal for what timm's filter would otherwise drop or change silently.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import struct
import zipfile
from pathlib import Path

import torch
from torch import nn


def first_non_finite(model: nn.Module) -> tuple[str, int, int] | None:
    """The first floating-point tensor of ``model``'s state dict with NaN or Inf: (name, how many, numel).

    Non-persistent buffers count too: some come from the file (the RoPE periods of an official DINOv3 file).

    Loaded weights with NaN would make every norm and attention map NaN (or a black image) with no error.
    One pass over the weights (about a second for ViT-g on a CPU).
    """
    tensors = itertools.chain(model.state_dict().items(), model.named_buffers())  # non-persistent buffers too
    for name, tensor in tensors:
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
    Used by :func:`vitreg.core.weights.load_model` and the runner's preflight
    (:func:`vitreg.core.weights.broken_weights`), so a truncated file is reported as broken, not found.
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


# --- official DINOv3 .pth files (facebookresearch/dinov3 layout) ----------------------------------------------
#: Keys of the official layout that timm's Eva filter drops without a word; each is accepted only as listed here:
#: the RoPE periods (kept by :func:`load_official_dinov3`), the q/k/v bias masks (applied first), the pretraining
#: mask token, and the local-crop [CLS] norm of the satellite ViT-L (training only).
_DROPPED_BY_TIMM = ("rope", ".periods", ".bias_mask", "mask_token", "projectors.", "local_cls_norm")
_ALLOWED_DROPPED = ("rope_embed.periods", "mask_token", "local_cls_norm.weight", "local_cls_norm.bias")
PERIODS_KEY = "rope_embed.periods"


class OfficialLayoutError(ValueError):
    """An official DINOv3 file that this timm model cannot reproduce exactly: a key missing or left over, a k bias
    that survives its mask (RoPE models have none), or q/v biases for a model built without them."""


def is_official_dinov3(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` is in the facebookresearch/dinov3 layout (``storage_tokens``, ``rope_embed.periods``)."""
    return "storage_tokens" in state_dict or PERIODS_KEY in state_dict


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a ``torch.save`` checkpoint, memory-mapped (nothing is read until used), unwrapped from a
    ``{"model": ...}``/``{"state_dict": ...}`` container, or from the ``teacher`` of a DINOv2/v3 training
    checkpoint (``teacher``/``student``/``optimizer``/``iteration``; its ``backbone.`` keys, the heads left
    out), which is said on stderr.

    Raises:
        OfficialLayoutError: a checkpoint with no tensors at its top level and no such entry, naming its keys.
    """
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a legacy (pre-zip) torch.save file cannot be memory-mapped
        sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict) and len(sd) <= 3:
            sd = sd[key]
    if isinstance(sd, dict) and isinstance(sd.get("teacher"), dict):
        sd = _backbone(sd["teacher"])
        print(f"note: {path} is a training checkpoint ({TRAINING_KEYS}): loading the backbone of its 'teacher' "
              "entry", file=sys.stderr)
    if not isinstance(sd, dict) or not any(isinstance(v, torch.Tensor) for v in sd.values()):
        keys = ", ".join(repr(k) for k in list(sd)[:8]) if isinstance(sd, dict) else type(sd).__name__
        raise OfficialLayoutError(f"{path} holds {keys} and no model weights: give the backbone's state dict, or a "
                                  "training checkpoint with a 'teacher' entry")
    return sd


TRAINING_KEYS = "teacher/student/optimizer/iteration"


def _backbone(teacher: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone's tensors of a training checkpoint's ``teacher`` (keys ``backbone.*``, prefix removed; the
    DINO/iBOT heads left out), or the teacher itself when it has no such prefix."""
    prefix = "backbone."
    if not any(str(k).startswith(prefix) for k in teacher):
        return teacher
    return {k[len(prefix):]: v for k, v in teacher.items() if str(k).startswith(prefix)}


def load_official_dinov3(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "the file"
                         ) -> torch.Tensor:
    """Load an official DINOv3 state dict into a timm ``Eva`` DINOv3 model exactly, RoPE periods included; return them.

    Paper: the zoo's DINOv3. Official semantics (``dinov3/layers``): ``LinearKMaskedBias`` uses
    ``bias * bias_mask``, so the masked bias is what is loaded; a k bias that survives its mask cannot be
    represented (timm's DINOv3 attention has a fixed zero k bias) and is refused, as are q/v biases for a model
    built without them (load it as the ``*_qkvb`` variant). The rest goes through timm's own Eva checkpoint
    filter and a strict ``load_state_dict``; a key the filter would drop silently is refused unless it is one
    of the few the official layout carries for training only. The periods (stored in bf16 by the official code)
    are set as float32 and returned for :func:`keep_rope_periods` (a later dtype cast makes timm recompute its
    own in float32, which differ by the bf16 rounding: up to 1e-2 in attention).

    A little over 60 lines: each refusal sits beside the step it guards, in the order the file is read.

    Raises:
        OfficialLayoutError: as above, naming the key (or block) and ``source``.
    """
    from timm.models.eva import checkpoint_filter_fn

    sd = dict(state_dict)
    if PERIODS_KEY not in sd:
        raise OfficialLayoutError(f"{source}: official DINOv3 layout without {PERIODS_KEY!r} (missing key)")
    periods = sd.pop(PERIODS_KEY).float()
    if not bool((torch.isfinite(periods) & (periods > 0)).all()):
        bad = int((~(torch.isfinite(periods) & (periods > 0))).sum())
        raise OfficialLayoutError(f"{source}: {PERIODS_KEY} holds {bad} NaN, Inf or non-positive values of "
                                  f"{periods.numel()} (a damaged file): download it again")
    rope = getattr(model, "rope", None)
    if rope is None or tuple(getattr(rope, "periods", torch.empty(0)).shape) != tuple(periods.shape):
        want = None if rope is None else tuple(rope.periods.shape)
        raise OfficialLayoutError(f"{source}: {PERIODS_KEY} has shape {tuple(periods.shape)}, the model's RoPE {want}")
    for key in [k for k in sd if any(p in k for p in _DROPPED_BY_TIMM)]:
        if key not in _ALLOWED_DROPPED and not (key.endswith(".qkv.bias_mask") and key[:-5] in sd):
            raise OfficialLayoutError(f"{source}: unexpected key {key!r} (timm's filter would drop it silently)")
    has_qv_bias = any(name.endswith("attn.q_bias") for name, _ in model.named_parameters())
    for key in [k for k in sd if k.endswith(".qkv.bias")]:
        bias = sd[key].float()
        if (mask := sd.pop(key + "_mask", None)) is not None:
            if mask.shape != bias.shape or not bool(torch.isfinite(mask).all()):
                raise OfficialLayoutError(f"{source}: {key}_mask is not a finite mask of the bias's shape")
            bias = bias * mask.to(bias.dtype)
        q, k, v = bias.chunk(3)
        if bool(k.ne(0).any()):
            raise OfficialLayoutError(
                f"{source}: {key} has a k bias that survives its mask (max |k| {k.abs().max():.3g}): timm's DINOv3 "
                "attention has none (a constant k bias under RoPE is not a constant), so this file cannot be loaded "
                "exactly")
        if not has_qv_bias and bool(torch.cat([q, v]).ne(0).any()):
            raise OfficialLayoutError(
                f"{source}: {key} holds non-zero q/v biases but the model has none: load it as the *_qkvb variant "
                "(for example vit_small_patch16_dinov3_qkvb.lvd1689m)")
        if has_qv_bias:
            sd[key] = bias.to(state_dict[key].dtype)
        else:
            del sd[key]  # all zero: nothing to load (timm's filter would print an error and skip it)
    filtered = checkpoint_filter_fn(sd, model)
    try:
        model.load_state_dict(filtered, strict=True)
    except RuntimeError as err:
        raise OfficialLayoutError(f"{source} does not match the model (names after timm's filter): {err}") from None
    rope.periods = periods.to(rope.periods.device)
    return periods


def keep_rope_periods(model: nn.Module, periods: torch.Tensor) -> None:
    """Make ``model``'s RoPE use ``periods`` (the file's) on every forward, also after a later dtype cast.

    timm keeps RoPE periods as a non-persistent buffer and recomputes them in float32 when the model is cast to
    a lower precision; a forward pre-hook on the patch embedding (the first step of every forward) puts the
    file's periods back, as float32 on the model's device, whenever they differ. The hook lives as long as the
    model (16-64 numbers compared per forward).
    """
    rope = model.rope
    kept = periods.detach().float().clone()

    def restore(_m: nn.Module, _args: tuple) -> None:
        current = rope.periods
        if current.dtype != torch.float32 or not torch.equal(current, kept.to(current.device)):
            rope.periods = kept.to(current.device)

    rope.periods = kept.to(rope.periods.device)
    model.patch_embed.register_forward_pre_hook(restore)
