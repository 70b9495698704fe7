"""Images in, model-ready batches out; and the real photos that ship inside installed packages.

Paper: every figure is computed on images; resolution is an experimental variable (224 vs 518 px
changes results), so it is always a parameter and recorded.

Any path, PIL image, array or torch tensor becomes an RGB PIL image (grayscale, RGBA, 16-bit, palette and
EXIF-rotated inputs included). Bad input is refused with its name: unreadable or truncated files, images
over :func:`max_pixels` (a 20000x20000 PNG would otherwise decode into gigabytes), arrays with NaN/Inf or
no pixels; a folder's bad files are listed all at once. :func:`preprocess` resizes the shorter side and centre-crops to the
size the model was loaded for (or an explicit ``size``), then normalises with the model's mean and std.
It does not choose or round the size: ``load_model(..., image_size=...)`` checks that the size is a
multiple of the patch size. :func:`pick_images` is the image source of notebooks 01-04 (a folder, or
the bundled photos standing in).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

if TYPE_CHECKING:
    from vitreg.core.weights import LoadedModel

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

#: The largest image file :func:`load_image` decodes, in pixels, unless ``$VITREG_MAX_PIXELS`` says otherwise:
#: 100 megapixels (300 MB as RGB). The models see 224-518 px, so a larger photo only costs time and memory.
DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "VITREG_MAX_PIXELS"

#: The sample photos: (name, package, path inside the package). Real photographs, no download.
_SAMPLES = [
    ("astronaut", "skimage", "data/astronaut.png"),
    ("camera", "skimage", "data/camera.png"),
    ("chelsea", "skimage", "data/chelsea.png"),
    ("coffee", "skimage", "data/coffee.png"),
    ("coins", "skimage", "data/coins.png"),
    ("hubble_deep_field", "skimage", "data/hubble_deep_field.jpg"),
    ("immunohistochemistry", "skimage", "data/ihc.png"),
    ("moon", "skimage", "data/moon.png"),
    ("motorcycle", "skimage", "data/motorcycle_left.png"),
    ("retina", "skimage", "data/retina.jpg"),
    ("rocket", "skimage", "data/rocket.jpg"),
    ("china", "sklearn", "datasets/images/china.jpg"),
    ("flower", "sklearn", "datasets/images/flower.jpg"),
    ("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
]


class ImageError(ValueError):
    """An image that cannot be read; the message names it."""


def max_pixels() -> int:
    """The pixel limit of image files: ``$VITREG_MAX_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`."""
    value = os.environ.get(MAX_PIXELS_ENV, "")
    try:
        return int(float(value)) if value.strip() else DEFAULT_MAX_PIXELS
    except ValueError:
        raise ImageError(f"${MAX_PIXELS_ENV}={value!r} is not a number of pixels (e.g. 200000000)") from None


def load_image(src: ImageLike, *, exif: bool = True) -> Image.Image:
    """Open ``src`` as an 8-bit RGB PIL image, applying the EXIF orientation (``exif=False``: the stored
    pixel grid, for datasets whose boxes or masks refer to it).

    Grayscale, 16-bit, palette and alpha images are converted (alpha composited on white). Arrays and
    tensors: ``HWC`` or ``CHW`` (1, 3 or 4 channels) or ``HW``; ``uint8`` in 0-255 or floats in 0-1
    (floats whose maximum is above 1 are read as 0-255); see :func:`_from_array`.

    Raises:
        ImageError: missing, corrupt, truncated or too large file (over :func:`max_pixels`), naming it;
            an array or tensor that is not an image (NaN/Inf, no pixels, a batch).
    """
    if isinstance(src, torch.Tensor):
        img = _from_array(src.detach().cpu().float().numpy() if src.dtype == torch.bfloat16 else
                          src.detach().cpu().numpy(), what="tensor")
    elif isinstance(src, np.ndarray):
        img = _from_array(src)
    elif isinstance(src, Image.Image):
        img = src
    else:
        img = _open_file(Path(src), exif=exif)
    return _to_rgb(img)


def _open_file(path: Path, *, exif: bool = True) -> Image.Image:
    """Decode an image file (EXIF orientation applied), refusing it before decoding when it is too large."""
    if not path.is_file():
        raise ImageError(f"image file {path} does not exist")
    limit = max_pixels()
    try:
        with _pil_pixel_limit(limit), Image.open(path) as opened:
            _check_pixels(path, opened.size, limit)
            opened.load()
            img = opened.copy()
            img.info.update(opened.info)
            tags = opened.getexif() if exif else None
    except Image.DecompressionBombError as err:  # PIL's own stop, at twice the limit
        raise ImageError(f"image {path} is over vitreg's limit of {limit / 1e6:g} megapixels ({err}); shrink it, "
                         f"remove it, or raise the limit with ${MAX_PIXELS_ENV}=<pixels>") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageError(f"cannot read image {path}: {err} (corrupt, truncated or not an image? remove it or "
                         "replace it)") from err
    if tags:
        img.info["exif"] = tags.tobytes()
        img = ImageOps.exif_transpose(img)
    return img


@contextmanager
def _pil_pixel_limit(limit: int) -> Iterator[None]:
    """Make PIL's decompression-bomb guard follow ``limit`` for one open (and keep its warning quiet:
    :func:`_check_pixels` gives the error). Restored afterwards."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _check_pixels(path: Path, size: tuple[int, int], limit: int) -> None:
    w, h = size
    if w * h > limit:
        raise ImageError(f"image {path} is {w}x{h} = {w * h / 1e6:.0f} megapixels, over vitreg's limit of "
                         f"{limit / 1e6:g} (decoding it would take {w * h * 3 / 1e9:.1f} GB); shrink it, remove it, "
                         f"or raise the limit with ${MAX_PIXELS_ENV}=<pixels>")


def check_image_files(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Every problem among image files, one line each (``path: what is wrong``); empty when all are fine.

    Cheap for good files: the header is read and the end checked (a JPEG ends with its EOI marker, a PNG
    with IEND); only a file whose end looks wrong, or of another format, is decoded in full to decide.
    """
    problems = []
    limit = max_pixels()
    for p in map(Path, paths):
        try:
            with _pil_pixel_limit(limit), Image.open(p) as opened:
                _check_pixels(p, opened.size, limit)
                fmt = opened.format
            if not _ends_well(p, fmt):
                _open_file(p)
        except ImageError as err:
            problems.append(str(err))
        except Image.DecompressionBombError as err:
            problems.append(f"image {p} is over vitreg's limit of {limit / 1e6:g} megapixels ({err})")
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            problems.append(f"cannot read image {p}: {err}")
    return problems


def _ends_well(path: Path, fmt: str | None) -> bool:
    """Whether a JPEG/PNG file ends as a complete one does (False: decode it to be sure)."""
    tail = {"JPEG": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}.get(fmt or "")
    if tail is None:
        return False
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - len(tail)))
        return f.read() == tail


def _from_array(arr: np.ndarray, what: str = "array") -> Image.Image:
    """An array (or a tensor's values) as a PIL image: HWC, CHW or HW; uint8 0-255, floats 0-1 (0-255 when
    the maximum is above 1), bool, uint16 (top 8 bits) or other integers (clipped to 0-255)."""
    if arr.size == 0 or 0 in arr.shape:
        raise ImageError(f"cannot make an image of an empty {what} of shape {tuple(arr.shape)}")
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]  # a batch of one
    if arr.ndim not in (2, 3):
        raise ImageError(f"cannot make an image of a {what} of shape {tuple(arr.shape)}: pass one image, HWC or CHW "
                         "(or HW for grayscale); a batch as a list of images")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ImageError(f"the image {what} of shape {tuple(arr.shape)} holds {bad} NaN/Inf values: an image needs "
                         "finite pixels (0-1 floats or 0-255 uint8)")
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    elif arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4):
        raise ImageError(f"cannot make an image of a {what} of shape {tuple(arr.shape)}: 1, 3 or 4 channels, "
                         "first (CHW) or last (HWC)")
    return Image.fromarray(np.ascontiguousarray(arr))


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8))
    elif img.mode == "F":
        img = _from_array(np.asarray(img))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def sample_photos(names: Sequence[str] | None = None) -> list[tuple[str, Image.Image]]:
    """The real photos shipped inside scikit-image, scikit-learn and matplotlib (14), offline.

    Used by the smoke profile and for first looks without a dataset. Photos of a package that is not
    installed are left out with no error.
    """
    import importlib.util

    out = []
    for name, package, rel in _SAMPLES:
        if names is not None and name not in names:
            continue
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        path = Path(spec.origin).parent / rel
        if path.is_file():
            out.append((name, load_image(path)))
    if names is not None and len(out) != len(names):
        missing = set(names) - {n for n, _ in out}
        raise ImageError(f"sample photos not available here: {sorted(missing)} (known: {[n for n, *_ in _SAMPLES]})")
    return out


def image_folder(root: str | os.PathLike, limit: int | None = None, *, check: bool = True) -> list[Path]:
    """Image files under ``root`` (recursively, sorted), at most ``limit``.

    Args:
        check: check the files returned (:func:`check_image_files`: cheap for good files) so that every
            bad one is named at once, before any model runs.

    Raises:
        ImageError: the folder does not exist or holds no image, or some files are bad (all listed).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ImageError(f"image folder {root} does not exist: pass image_dir= a folder of images")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ImageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    files = files[:limit] if limit else files
    if check and (problems := check_image_files(files)):
        raise ImageError(f"{len(problems)} of the {len(files)} images under {root} cannot be used (remove or replace "
                         "them):\n" + "\n".join(f"  - {p}" for p in problems))
    return files


#: How results describe the bundled photos as an image source.
SAMPLE_SOURCE = "bundled sample photos (scikit-image, scikit-learn, matplotlib)"


def pick_images(image_dir: str | os.PathLike | None, n_images: int, *, profile: str = "real"
                ) -> tuple[list[Path] | list[Image.Image], str]:
    """The images a notebook scores, and a description of where they come from (for its results).

    Paper: Fig. 2-5 (notebooks 01-04 score natural images). ``image_dir`` given: its first ``n_images``
    files (sorted, recursive). Otherwise the bundled photos (at most ``n_images``) stand in, with a
    warning in the real profile that they are only a handful of images.

    Args:
        image_dir: a folder of natural images, or None for the bundled photos.
        n_images: how many images to use at most.
        profile: the run profile; ``"real"`` warns when the bundled photos stand in.

    Returns:
        (image paths or PIL images, the source: the folder or :data:`SAMPLE_SOURCE`).
    """
    if image_dir is not None:
        return image_folder(image_dir, limit=n_images), str(image_dir)
    images = [im for _, im in sample_photos()][:n_images]
    if profile == "real":
        warnings.warn(f"no image_dir given: only the {len(images)} bundled photos stand in for {n_images} images, "
                      "so confidence intervals are wide; pass image_dir= a folder of natural images.", stacklevel=2)
    return images, SAMPLE_SOURCE


def preprocess(
    images: Sequence[ImageLike] | ImageLike,
    model: "LoadedModel | None" = None,
    *,
    size: int | tuple[int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """Images to a normalised ``(B, 3, H, W)`` float batch for ``model``.

    The shorter side is resized (bicubic, antialiased) to the target and the centre is cropped, as the
    models' evaluation transforms do (crop fraction 1.0, so the crop keeps the whole shorter side).

    Args:
        images: one image or a sequence (paths, PIL images, arrays, tensors; a 4-D tensor is a batch of CHW).
        model: a :class:`~vitreg.core.weights.LoadedModel`: its image size, mean and std are used.
        size: override of the target size ``H`` or ``(H, W)`` (else the model's).
        mean, std: normalisation (else the model's; ImageNet's without a model).

    The size is used as given (no rounding to the patch grid): it must match the size the model was
    loaded for, which :func:`~vitreg.core.weights.load_model` checks is a multiple of the patch size.
    """
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)) or (
            isinstance(images, torch.Tensor) and images.ndim < 4):
        images = [images]
    if size is None:
        if model is None:
            raise ValueError("preprocess needs a model or a size")
        size = model.image_size
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    mean, std = _mean_std(model, mean, std)
    batch = torch.stack(_load_all(images, h, w))
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (batch - m) / s


def _load_all(images: Sequence[ImageLike], h: int, w: int) -> list[torch.Tensor]:
    """Every image resized and cropped; the errors of all bad ones raised together."""
    out, problems = [], []
    for im in images:
        try:
            out.append(resize_crop(to_uint8(load_image(im)), h, w))
        except ImageError as err:
            problems.append(str(err))
    if len(problems) == 1:
        raise ImageError(problems[0])
    if problems:
        raise ImageError(f"{len(problems)} of {len(images)} images cannot be used:\n"
                         + "\n".join(f"  - {p}" for p in problems))
    return out


def resize_crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(3, H0, W0)`` uint8 -> ``(3, h, w)`` float in [0, 1]: the shorter side resized to the target with an
    antialiased bicubic filter, then the centre cropped, as the models' evaluation transforms do (crop
    fraction 1.0: the crop keeps the whole shorter side).

    On the CPU torch's 8-bit antialiased kernel runs (it matches PIL's bicubic resize within 2 grey levels, mean
    0.01, and takes a fifth of its time); on a GPU the same filter runs in float and is rounded to 8 bits.
    """
    h0, w0 = x.shape[-2:]
    scale = max(h / h0, w / w0)
    nh, nw = max(h, round(h0 * scale)), max(w, round(w0 * scale))
    top, left = (nh - h) // 2, (nw - w) // 2
    y = x.unsqueeze(0)
    if (nh, nw) != (h0, w0):
        if y.device.type == "cpu":
            y = F.interpolate(y.contiguous(), size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
        else:
            y = F.interpolate(y.float(), size=(nh, nw), mode="bicubic", antialias=True,
                              align_corners=False).round_().clamp_(0, 255)
    return y[0, :, top:top + h, left:left + w].float() / 255.0


def to_uint8(img: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a ``(3, H, W)`` uint8 tensor."""
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


def to_display(batch: torch.Tensor, model: "LoadedModel | None" = None, *, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None) -> np.ndarray:
    """Undo the normalisation: ``(B, 3, H, W)`` -> ``(B, H, W, 3)`` floats in [0, 1] for ``imshow``."""
    mean, std = _mean_std(model, mean, std)
    x = batch.detach().float().cpu() * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    return x.clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _mean_std(model: "LoadedModel | None", mean: Sequence[float] | None, std: Sequence[float] | None
              ) -> tuple[Sequence[float], Sequence[float]]:
    """Given ``mean``/``std``, else the model's, else timm's ImageNet defaults."""
    mean = mean or (model.mean if model is not None else IMAGENET_DEFAULT_MEAN)
    std = std or (model.std if model is not None else IMAGENET_DEFAULT_STD)
    return mean, std
