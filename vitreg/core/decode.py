"""JPEG files decoded in batches on the device (nvJPEG on a CUDA GPU), resized and normalised as tensors, so a
GPU run is not bound by preparing images on the CPU.

Paper: every finding measured on image datasets (the real run's cost: 06's and 09's ImageNet forwards).

:func:`prepare_files` gives the batch :func:`vitreg.core.images.preprocess` gives for the same files within
:data:`TOLERANCE`: both resize with :func:`vitreg.core.images.resize_crop`, but decode JPEG with different
libraries (libjpeg-turbo in PIL; torchvision's decoder, nvJPEG on a GPU), so they agree to about one grey level,
not bit for bit. Files this path cannot read — PNG and other formats, CMYK JPEGs, a JPEG torchvision refuses,
a file over the pixel limit — go through the PIL path, chosen file by file (which names a bad file as usual).

:func:`vitreg.core.stream.stream` takes this path on a CUDA device when every image of a batch is a file
(``VITREG_DECODE=cpu`` keeps the PIL path in loader workers). The decoder is torchvision's ``decode_jpeg`` of the
pinned torchvision (deprecated there since 0.29 in favour of TorchCodec's, which has the same call; the
warning is silenced here, and the switch is one import).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from vitreg.core.images import ImageError, load_image, max_pixels, resize_crop, to_uint8

#: Largest difference allowed between this path and the PIL path, per pixel value in [0, 1] before
#: normalisation: (mean absolute difference, 99.9th percentile of the absolute difference). Measured on the
#: JPEGs bundled with scikit-image, scikit-learn and matplotlib on the CPU: 0.14 and 1 grey levels.
TOLERANCE = (1.0 / 255, 3.0 / 255)


def fast_path_ok(path: str | os.PathLike) -> bool:
    """True for a JPEG with 1 or 3 colour components within the pixel limit (read from its header only);
    False for other formats, CMYK/YCCK JPEGs and files too large, which go through PIL."""
    try:
        with Image.open(path) as im:
            return im.format == "JPEG" and im.mode in ("L", "RGB") and im.size[0] * im.size[1] <= max_pixels()
    except (OSError, SyntaxError, Image.DecompressionBombError):
        return False


def decode_jpegs(paths: Sequence[str | os.PathLike], device: torch.device) -> list[torch.Tensor | None]:
    """``(3, H, W)`` uint8 tensors on ``device``, EXIF orientation applied: one batched torchvision call, file by
    file when the batch fails; ``None`` where torchvision cannot decode a file."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    kw = dict(mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        data = [read_file(str(p)) for p in paths]
        try:
            return list(decode_jpeg(data, **kw))
        except RuntimeError:
            out: list[torch.Tensor | None] = []
            for d in data:
                try:
                    out.append(decode_jpeg(d, **kw))
                except RuntimeError:
                    out.append(None)
            return out


#: ``cpu`` keeps image preparation in the PIL path (loader workers) on a GPU too.
DECODE_ENV = "VITREG_DECODE"


def decodes_on_device(device: torch.device, items: Sequence[object]) -> bool:
    """Whether a batch takes this path: on a CUDA device, every item a file path, ``$VITREG_DECODE`` not ``cpu``."""
    return (device.type == "cuda" and os.environ.get(DECODE_ENV, "").strip().lower() != "cpu" and len(items) > 0
            and all(isinstance(i, (str, os.PathLike)) for i in items))


def prepare_files(paths: Sequence[str | os.PathLike], size: int | tuple[int, int], mean: Sequence[float],
                  std: Sequence[float], device: str | torch.device = "cpu") -> torch.Tensor:
    """Image files to a normalised ``(B, 3, H, W)`` float batch on ``device`` (the GPU image path).

    Args:
        paths: image files (JPEGs go through torchvision's decoder; anything else through PIL, file by file).
        size: target ``H`` or ``(H, W)``.
        mean, std: the model's normalisation.
        device: where decoding, resizing and normalising run (``cuda``: nvJPEG; ``cpu``: the same code on the
            CPU, which is how the tests check it against the PIL path).

    Returns:
        The batch, equal to :func:`vitreg.core.images.preprocess` of the same files within :data:`TOLERANCE`.

    Raises:
        ImageError: files that neither path can read, all named at once.
    """
    device = torch.device(device)
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    files = [Path(p) for p in paths]
    fast = [fast_path_ok(p) for p in files]
    decoded = iter(decode_jpegs([p for p, f in zip(files, fast) if f], device) if any(fast) else [])
    out, problems = [], []
    for p, f in zip(files, fast):
        x = next(decoded) if f else None
        try:
            if x is None:
                x = to_uint8(load_image(p)).to(device)
            out.append(resize_crop(x, h, w))
        except ImageError as err:
            problems.append(str(err))
    if problems:
        raise ImageError(problems[0] if len(problems) == 1 else f"{len(problems)} of {len(files)} images cannot "
                         "be used:\n" + "\n".join(f"  - {q}" for q in problems))
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (torch.stack(out) - m) / s
