"""Where weights come from, and loading a model at the resolution an experiment asks for.

Paper: every figure (which weights, at which resolution). This module exists to prevent three mistakes
of companion code: ``strict=False`` (silently random layers), official DINOv2 ``.pth`` files loaded
through ``checkpoint_path=`` instead of timm's checkpoint filter, and position embeddings resized
differently from the official DINOv2 code.

Weights are looked up, in order, in:

1. an explicit file (``weights=...``): timm safetensors/``.bin``/``.pth``, or an official DINOv2 or DINOv3 ``.pth``
   (DINOv3: loaded exactly by :func:`vitreg.core.weight_files.load_official_dinov3`: masked q/v biases, the file's
   bf16 RoPE periods kept after any dtype cast, a surviving k bias refused);
2. the project weights folder, ``$VITREG_WEIGHTS`` (default ``<repo>/data/weights``), holding files named
   ``<timm name>.<tag>.safetensors`` (or ``.pth``/``.bin``) or the official DINOv2/DINOv3 names
   (``dinov2_vitl14_reg4_pretrain.pth``, ``dinov3_vits16_pretrain_lvd1689m-08c60483.pth``); ``make weights``
   (``vitreg weights download``) fills it on a connected machine;
3. timm's Hugging Face hub cache (``$HF_HOME/hub``, default ``~/.cache/huggingface/hub``);
4. a download through timm, unless offline (``HF_HUB_OFFLINE=1``), where loading fails at once with a
   message naming the model, every place looked and the two ways out.

All of them go through timm's checkpoint filter and a strict ``load_state_dict`` (``timm.create_model(...,
pretrained_cfg_overlay=dict(file=...))``; official DINOv3 files through the same Eva filter, called directly).
Before that, a file's header is checked (:func:`check_weights_file`: an empty, truncated or text file is named
with the fix, not reported as "do not match the model"), and after it every tensor must be finite.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import shutil
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from vitreg.utils.io import atomic_path
from vitreg.core.models import ModelSpec, get_spec
from vitreg.utils.paths import WEIGHTS_ENV, is_offline, weights_dir
from vitreg.core import trace
from vitreg.core.resize import resize_in_place
from vitreg.core.tokens import TokenLayout
from vitreg.core.weight_files import (OfficialLayoutError, check_weights_file, first_non_finite, is_official_dinov3,
                                 keep_rope_periods, load_official_dinov3, read_state_dict)

_SUFFIXES = (".safetensors", ".pth", ".bin")


class WeightsNotFound(FileNotFoundError):
    """Pretrained weights are not on this machine and cannot be downloaded now."""


class BrokenWeights(RuntimeError):
    """A weights file that cannot be used: empty, truncated, not a checkpoint, or holding NaN/Inf."""


class WeightsMismatch(RuntimeError):
    """A whole checkpoint of another architecture (strict loading: missing/unexpected keys, wrong shapes)."""


@dataclass
class LoadedModel:
    """A timm ViT in eval mode plus everything a result must record about it.

    Attributes:
        model: the timm ``VisionTransformer``.
        spec: the zoo entry (or one derived from timm for other names).
        image_size: ``(H, W)`` the model is built for (position embeddings resized to it).
        pretrained: False for random initialisation (smoke runs): figures and reports must say so.
        source: where the weights came from (file path, hub cache, "random init").
    """

    model: nn.Module
    spec: ModelSpec
    image_size: tuple[int, int]
    pretrained: bool
    source: str
    layout: TokenLayout = field(init=False)

    def __post_init__(self) -> None:
        self.layout = TokenLayout.from_model(self.model, self.image_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(self.model.pretrained_cfg.get("mean", IMAGENET_DEFAULT_MEAN))  # type: ignore[return-value]

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(self.model.pretrained_cfg.get("std", IMAGENET_DEFAULT_STD))  # type: ignore[return-value]

    @property
    def num_blocks(self) -> int:
        return len(self.model.blocks)

    @property
    def label(self) -> str:
        """Display name; random-weight models say so."""
        return self.spec.paper_name + ("" if self.pretrained else " [random weights]")

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for an input this fixed-size model cannot take."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) image batch, got shape {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(
                f"{self.spec.key} was loaded for {self.image_size[0]}x{self.image_size[1]} px, got "
                f"{x.shape[-2]}x{x.shape[-1]}: preprocess with vitreg.core.images.preprocess(images, loaded), or "
                f"load the model with load_model(..., image_size={x.shape[-2]}) (a multiple of {self.spec.patch_size})"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens after the final norm, ``(B, T, D)``. Use :mod:`vitreg.core.capture` for the rest."""
        self.check_input(x)
        trace.forwarded(self.spec.key, x.shape[-2:], x.shape[0])  # VITREG_TRACE set: one line per forward
        param = next(self.model.parameters())
        return self.model.forward_features(x.to(device=param.device, dtype=param.dtype))

    def describe(self) -> dict:
        """What every result records about the model (name, tag, resolution, weights)."""
        return {
            "name": self.spec.key,
            "paper_name": self.spec.paper_name,
            "timm_name": self.spec.timm_name,
            "tag": self.spec.tag,
            "family": self.spec.family,
            "registers": self.spec.registers,
            "patch_size": self.spec.patch_size,
            "image_size": list(self.image_size),
            "pretrained": self.pretrained,
            "weights_source": self.source,
            "pos_embed_resize": self.spec.pos_interp,
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            **self._autocast(),
        }

    def _autocast(self) -> dict:
        """``{"autocast": "bfloat16"}`` when :mod:`vitreg.core.stream` forwards under autocast (CUDA), else ``{}``."""
        from vitreg.core.device import autocast_dtype

        amp = autocast_dtype(self.device)
        return {"autocast": str(amp).replace("torch.", "")} if amp is not None else {}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (or ``$HF_ENDPOINT``) answers a TCP connection within ``timeout`` s.

    Checked once before a download, so that a machine without internet fails at once instead of after
    a minute of retries. Returns False without any traffic when ``HF_HUB_OFFLINE=1``.
    """
    import socket
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as FutureTimeout
    from urllib.parse import urlparse

    if is_offline():
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)

    def connect() -> bool:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False

    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(connect).result(timeout=timeout + 1.0)
    except FutureTimeout:
        return False
    finally:
        pool.shutdown(wait=False)


def local_candidates(spec: ModelSpec, folder: Path | None = None) -> list[Path]:
    """Every file name the weights folder may hold for ``spec``, in the order they are tried."""
    folder = folder or weights_dir()
    names = [spec.full_name + s for s in _SUFFIXES] + list(spec.official_files)
    return [folder / n for n in names]


def hub_cache_file(spec: ModelSpec) -> Path | None:
    """The cached hub file timm would load for ``spec``, or None when nothing is cached."""
    cfg = _pretrained_cfg(spec)
    if cfg is None:
        return None
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            found = try_to_load_from_cache(hub_id, fname)
            if isinstance(found, str):
                return Path(found)
    url = cfg.get("url")
    if url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if cached.exists():
            return cached
    return None


def hub_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def find_weights(spec: ModelSpec, weights: str | os.PathLike | None = None) -> tuple[Path | None, list[str]]:
    """Locate pretrained weights without touching the network.

    Returns:
        (file or None, the places looked, for error messages).
    """
    looked: list[str] = []
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsNotFound(f"weights file {path} for {spec.key} does not exist")
        return path, [str(path)]
    for cand in local_candidates(spec):
        looked.append(str(cand))
        if cand.is_file():
            return cand, looked
    cached = hub_cache_file(spec)
    cfg = _pretrained_cfg(spec) or {}
    looked.append(f"Hugging Face hub cache {hub_cache_dir()} (repo {cfg.get('hf_hub_id') or cfg.get('url') or '?'})")
    return cached, looked


def missing_weights_message(missing: Sequence[ModelSpec], *, needed_by: Mapping[str, Sequence[str]] | None = None,
                            looked: Sequence[str] | None = None, before_run: bool = False) -> str:
    """The one message for pretrained weights that are nowhere on this machine while the hub is out of reach.

    Used by :func:`load_model` (one model, the places looked) and by the runner's real-profile preflight
    (``before_run=True``: every missing model with the notebooks that need it), so both say the same.

    Args:
        missing: the models without weights.
        needed_by: model key -> notebooks that use it (printed after each model).
        looked: the places looked; None describes the weights folder and the hub cache.
        before_run: word it as the runner's stop before any notebook runs.
    """
    reason = "HF_HUB_OFFLINE=1" if is_offline() else "no connection"
    if before_run:
        head = f"Stopping before any notebook runs: pretrained weights are missing and the hub cannot be reached ({reason})."
    else:
        names = ", ".join(f"{s.key} ({s.full_name})" for s in missing)
        head = f"No pretrained weights for {names} on this machine, and the hub cannot be reached ({reason})."
    lines = [head, "Missing (needed by):" if needed_by else "Missing:"]
    for spec in missing:
        users = f": {', '.join(needed_by.get(spec.key, ()))}" if needed_by else ""
        files = " or ".join([f"{spec.full_name}.safetensors", *spec.official_files[:1]])
        lines.append(f"  - {spec.key} = {spec.full_name}{users} (file {files})")
    if looked is None:
        lines.append(f"Looked in: the weights folder {weights_dir()} (files <timm name>.<tag>.safetensors/.pth/.bin, or "
                     f"the official DINOv2 names such as dinov2_vitl14_pretrain.pth) and the Hugging Face cache "
                     f"{hub_cache_dir()}.")
    else:
        lines += ["Looked in:", *(f"  - {place}" for place in looked)]
    lines += ["Two ways out:",
              f"  1. connect to the internet once and run `vitreg weights download {' '.join(s.key for s in missing)}` "
              "(`make weights` fetches every model of the real run); it fills the weights folder; timm's cache also "
              "works;",
              f"  2. put the files in {weights_dir()} (or point ${WEIGHTS_ENV} at a folder that has them)"
              + ("." if before_run else ", or pass load_model(..., weights='/path/to/file').")]
    lines.append("Or run `make smoke` for the offline, random-weight profile." if before_run else
                 "For a run without weights use pretrained=False (random weights; results are then labelled so).")
    return "\n".join(lines)


def load_model(
    name: str,
    *,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    image_size: int | str | tuple[int, int] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> LoadedModel:
    """Load a zoo model (``dinov2_l_reg``) or any timm ViT, strictly, at ``image_size``.

    Paper: all figures; resolution is an experimental variable (224 vs 518 px changes numbers).

    Args:
        name: zoo key or timm name (``vit_large_patch14_dinov2.lvd142m``).
        pretrained: False builds the same architecture randomly initialised (tests, smoke runs).
        weights: explicit checkpoint file (timm format or official DINOv2 ``.pth``).
        image_size: side (or ``(H, W)``) in pixels, a multiple of the patch size; None = native.
        device: where to put the model (``"auto"`` picks a GPU when present).
        dtype: optional parameter dtype (e.g. ``torch.float16`` on a GPU).

    Raises:
        KeyError: unknown model name (with close names).
        WeightsNotFound: pretrained weights missing offline, or the download failed.
        WeightsMismatch: a checkpoint that does not match the architecture (strict loading).
        ValueError: an ``image_size`` that is not an int, ``(h, w)`` or a numeric string, or not a multiple of
            the patch size.
    """
    import timm

    from vitreg.core.device import pick_device

    spec = get_spec(name)
    size = _resolve_size(spec, image_size)
    target = pick_device(device)
    periods = None
    if not pretrained:
        model = timm.create_model(spec.full_name, pretrained=False, img_size=size, num_classes=0)
        source = "random init (no pretrained weights)"
    else:
        model, source, periods = _load_pretrained(spec, weights, size, build_on=build_device(target, pretrained))
    model.eval().requires_grad_(False)
    model.to(device=target, dtype=dtype)
    if periods is not None:  # after the cast, which makes timm recompute its own periods
        keep_rope_periods(model, periods)
    trace.loaded(spec.key, size, pretrained)  # VITREG_TRACE set: one line per load
    return LoadedModel(model=model, spec=spec, image_size=size, pretrained=pretrained, source=source)


def build_device(target: torch.device, pretrained: bool) -> torch.device:
    """Where :func:`load_model` builds the timm model before it goes to ``target``: on a CUDA ``target`` for
    pretrained weights, else on the CPU.

    Paper: none (the cost of loading the models of every figure). timm initialises every parameter at random
    before the checkpoint overwrites it; on a CPU that takes 2.6 s for ViT-L/14 and 15 s for ViT-g/14 (2-core
    AMD EPYC), on a GPU milliseconds. Building there changes no number: the strict load overwrites every
    parameter and persistent buffer, the zoo's only non-persistent buffer (DINOv3's RoPE periods) timm computes
    on the CPU and copies, and :func:`_resize_on_cpu` resizes position embeddings on the CPU as before. Random
    weights (``pretrained=False``) are always initialised on the CPU, so a seeded run draws the same values on
    every machine.
    """
    return target if pretrained and target.type == "cuda" else torch.device("cpu")


def _load_pretrained(spec: ModelSpec, weights: str | os.PathLike | None, size: tuple[int, int],
                     build_on: torch.device = torch.device("cpu")) -> tuple[nn.Module, str, torch.Tensor | None]:
    """Build the model at its native size on ``build_on`` with checked weights, then resize to ``size``.

    The checkpoint is read to the CPU and copied into the model by timm's strict ``load_state_dict``;
    ``build_on`` (:func:`build_device`) is the default device only while timm builds the model.

    Returns the model, where its weights came from, and the RoPE periods of an official DINOv3 file (None for
    every other file: the model's own are right).
    """
    import timm

    file, looked = find_weights(spec, weights)
    if file is None and (is_offline() or not hub_reachable()):
        raise WeightsNotFound(missing_weights_message([spec], looked=looked))
    if file is not None and (problem := check_weights_file(file)):
        raise BrokenWeights(broken_weights_message({spec.key: (file, problem)}))
    overlay = {"file": str(file)} if file is not None else {}
    native = (spec.native_resolution, spec.native_resolution)
    model, periods = None, None
    try:
        if file is not None and spec.family == "dinov3" and file.suffix.lower() in (".pth", ".pt", ".bin"):
            if is_official_dinov3(state := read_state_dict(file)):  # memory-mapped: cheap when it is not
                with _default_device(build_on):
                    model = timm.create_model(spec.full_name, pretrained=False, num_classes=0, img_size=native)
                periods = load_official_dinov3(model, state, source=f"{file} for {spec.key} ({spec.full_name})")
        if model is None:
            with _default_device(build_on):
                model = timm.create_model(spec.full_name, pretrained=True, pretrained_cfg_overlay=overlay,
                                          num_classes=0, img_size=native)
    except OfficialLayoutError:
        raise
    except Exception as err:
        raise _load_error(spec, file, looked, err) from err
    source = str(file) if file is not None else f"downloaded from the hub ({(_pretrained_cfg(spec) or {}).get('hf_hub_id')})"
    if (bad := first_non_finite(model)) is not None:
        name, count, total = bad
        raise BrokenWeights(broken_weights_message({spec.key: (file or hub_cache_file(spec) or Path(source), (
            f"tensor {name} holds {count} NaN/Inf of {total} values (the first non-finite tensor); a damaged file or "
            "a diverged checkpoint"))}))
    if size != native:
        _resize_on_cpu(model, spec, size)
    return model, source, periods


def _default_device(device: torch.device) -> contextlib.AbstractContextManager:
    """``device`` as torch's default device while the block runs; nothing at all for the CPU (the path of every
    CPU load stays as it was)."""
    return contextlib.nullcontext() if device.type == "cpu" else device


def _resize_on_cpu(model: nn.Module, spec: ModelSpec, size: tuple[int, int]) -> None:
    """:func:`resize_in_place` with the position embedding on the CPU, where a CPU-built model has it: the same
    bicubic numbers wherever the model was built (a GPU's interpolation may differ in the last bits).
    :func:`load_model` then moves it to the model's device with the rest."""
    pos = getattr(model, "pos_embed", None)
    if pos is not None and pos.device.type != "cpu":
        model.pos_embed = nn.Parameter(pos.detach().cpu(), requires_grad=pos.requires_grad)
    resize_in_place(model, spec, size)


def _load_error(spec: ModelSpec, file: Path | None, looked: Sequence[str], err: Exception) -> Exception:
    """The error to raise when timm fails to build ``spec`` with weights ``file`` (None: from the hub)."""
    text = f"{type(err).__name__}: {err}"
    unreadable = (type(err).__module__.startswith("safetensors") or isinstance(err, (EOFError, zipfile.BadZipFile))
                  or "PytorchStreamReader" in text or "unexpected pos" in text or "pickle" in text.lower())
    if file is not None and (unreadable or isinstance(err, (OSError, ValueError))):
        return BrokenWeights(broken_weights_message({spec.key: (file, text)}))
    if isinstance(err, RuntimeError):  # strict load_state_dict: missing/unexpected keys, wrong shapes
        return WeightsMismatch(f"weights {file or 'from the hub'} do not match {spec.key} ({spec.full_name}): {err}")
    if file is None and isinstance(err, (OSError, ValueError)):
        return WeightsNotFound(missing_weights_message([spec], looked=looked) + f"\n(download failed: {err})")
    return err


def broken_weights(keys: Sequence[str]) -> dict[str, tuple[Path, str]]:
    """The models among ``keys`` whose weights file is found but unusable: key -> (file, what is wrong).

    For the runner's real-profile preflight: headers only (:func:`check_weights_file`), so the whole run
    order is checked in well under a second.
    """
    broken = {}
    for key in keys:
        file, _ = find_weights(get_spec(key))
        if file is not None and (problem := check_weights_file(file)):
            broken[key] = (file, problem)
    return broken


def broken_weights_message(broken: Mapping[str, tuple[Path, str]], *,
                           needed_by: Mapping[str, Sequence[str]] | None = None) -> str:
    """The one message for unusable weights files (:func:`load_model` and the runner's preflight).

    Args:
        broken: model key -> (file, what is wrong with it).
        needed_by: model key -> notebooks that use it (the preflight, which then says it stops).
    """
    lines = ["Stopping before any notebook runs: weights files are broken." if needed_by else
             "A weights file cannot be used."]
    for key, (file, problem) in broken.items():
        spec = get_spec(key)
        users = f", needed by {', '.join(needed_by.get(key, ()))}" if needed_by else ""
        lines.append(f"  - {file} for {key} ({spec.full_name}{users}): {problem}")
    files = " ".join(str(Path(f).resolve()) for f, _ in broken.values())
    keys = " ".join(broken)
    lines += [f"Truncated download or not a weights file? Delete it (rm {files}) and run `vitreg weights download "
              f"{keys}` (`make weights`) on a connected machine, or put a good copy in {weights_dir()}."]
    return "\n".join(lines)


def _resolve_size(spec: ModelSpec, image_size: Any) -> tuple[int, int]:
    """``image_size`` as ``(H, W)``: an int, a pair of ints or a numeric string ("224"); None is native.

    Raises:
        ValueError: anything else (a float, a list of one, "224px"), or a side that is not a positive
            multiple of the patch size; the message names ``image_size`` and the value.
    """
    if image_size is None:
        return (spec.native_resolution, spec.native_resolution)
    side = _side(image_size)
    if side is not None:
        h = w = side
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2 and None not in map(_side, image_size):
        h, w = (_side(v) for v in image_size)
    else:
        raise ValueError(f"image_size={image_size!r} ({type(image_size).__name__}): give one side in pixels (224, "
                         "or the string '224') or a pair (height, width) of ints")
    p = spec.patch_size
    if h % p or w % p or h <= 0 or w <= 0:
        raise ValueError(
            f"image_size {h}x{w} is not a positive multiple of {spec.key}'s patch size {p}; "
            f"use e.g. {max(p, round(h / p) * p)}"
        )
    return (h, w)


def _side(value: Any) -> int | None:
    """One image side as an int: an integer (numpy's too, not a bool) or a string of digits; else None."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return None


def _pretrained_cfg(spec: ModelSpec) -> dict | None:
    import timm

    if not spec.tag:
        return None
    cfg = timm.models.get_pretrained_cfg(spec.full_name)
    return cfg.to_dict() if cfg is not None else None


# --- `vitreg weights download` (`make weights`) ------------------------------------------------------
def download(keys: Sequence[str], folder: Path | None = None) -> list[Path]:
    """Fetch hub weights of ``keys`` and copy them into the weights folder (``make weights``).

    Needs internet once; afterwards the folder can be copied to offline machines (a classroom).
    """
    from huggingface_hub import hf_hub_download

    folder = folder or weights_dir()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key in keys:
        spec = get_spec(key)
        target = folder / f"{spec.full_name}.safetensors"
        if target.exists() and not (problem := check_weights_file(target)):
            print(f"{key}: already in {target}")
            written.append(target)
            continue
        if target.exists():
            print(f"{key}: {target} is broken ({problem}); downloading it again")
        cfg = _pretrained_cfg(spec) or {}
        if not cfg.get("hf_hub_id"):
            raise WeightsNotFound(f"{key}: timm has no hub file for {spec.full_name}")
        path = hf_hub_download(cfg["hf_hub_id"], "model.safetensors")
        with atomic_path(target) as tmp:
            shutil.copyfile(path, tmp)
        print(f"{key}: {target}")
        written.append(target)
    return written


if __name__ == "__main__":  # the old entry point: say where it went instead of silently doing nothing
    raise SystemExit("`python -m vitreg.core.weights` is now `vitreg weights` (or `python -m vitreg weights`)")
