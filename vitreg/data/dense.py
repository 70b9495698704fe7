"""Dense datasets for Table 2: ADE20k segmentation and NYU-Depth v2, and a synthetic stand-in.

Paper: Table 2 (F8 downstream: ADE20k mIoU, NYUd RMSE). Used in notebook 09.

Datasets (root ``$VITREG_DATA``, default ``<repo>/data/datasets``; a missing one raises
:class:`vitreg.data.datasets.DatasetUnavailable`, which the notebook turns into a skipped line):

* ADE20k (SceneParsing, ADEChallengeData2016): ``ade20k/ADEChallengeData2016/images/{training,validation}/*.jpg``
  and ``.../annotations/{training,validation}/*.png`` (or the same two folders directly under ``ade20k/``).
* NYU-Depth v2 in the BTS layout used by DINOv2: ``nyud/<split>/**/rgb_XXXXX.jpg`` beside
  ``sync_depth_XXXXX.png`` (16-bit PNG, millimetres); split folders ``train`` (or ``sync``) and ``test``
  (or ``official_splits/test``).

For smoke runs and tests: :class:`SyntheticDenseDataset` (images whose tiles carry a planted class and a
planted depth).

Geometry goes through torchvision's ``transforms.v2`` with the target wrapped as a ``tv_tensors.Mask``, so
the image and its label (or depth) map are resized and cropped by ONE transform and cannot drift apart
(:func:`cover_crop`; nearest neighbour for the mask, so no class ids or missing depths are blended).
Whole validation images are scored at the label's ORIGINAL resolution: :func:`fit_in_canvas` gives the
resize-and-pad geometry of the image, and the logits of its valid region are upsampled to the label map.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vitreg.data.datasets import DatasetUnavailable, data_root

IGNORE_INDEX = 255
ADE20K_CLASSES = 150
#: NYU-Depth v2 evaluation: depth range (m) and the Eigen crop as fractions of the 480x640 frame.
NYUD_MIN_DEPTH, NYUD_MAX_DEPTH = 1e-3, 10.0
EIGEN_CROP = (45 / 480, 471 / 480, 41 / 640, 601 / 640)
_IMAGE_EXT = (".jpg", ".jpeg", ".png")


def ade20k_pairs(split: Literal["train", "val"] = "train", *, root: str | os.PathLike | None = None,
                 data_dir: str | os.PathLike | None = None) -> list[tuple[Path, Path]]:
    """``(image, annotation)`` paths of one ADE20k split.

    Paper: Table 2 (ADE20k linear segmentation, 150 classes).

    Args:
        split: ``"train"`` or ``"val"``.
        root: the ADE20k folder itself (default ``<data_dir>/ade20k``).
        data_dir: the datasets folder (default ``$VITREG_DATA`` or ``data/datasets``).

    Raises:
        DatasetUnavailable: the folders are missing (the message gives the expected layout).
    """
    base = Path(root).expanduser() if root is not None else data_root(data_dir) / "ade20k"
    if (base / "ADEChallengeData2016").is_dir():
        base = base / "ADEChallengeData2016"
    sub = {"train": "training", "val": "validation"}[split]
    img_dir, ann_dir = base / "images" / sub, base / "annotations" / sub
    if not img_dir.is_dir() or not ann_dir.is_dir():
        raise DatasetUnavailable("ade20k", f"no {img_dir} and {ann_dir}; unpack ADEChallengeData2016 under "
                                           f"$VITREG_DATA/ade20k (images/ and annotations/ with training/ and "
                                           f"validation/)")
    pairs = [(p, ann_dir / f"{p.stem}.png") for p in sorted(img_dir.iterdir()) if p.suffix.lower() in _IMAGE_EXT]
    pairs = [(i, a) for i, a in pairs if a.exists()]
    if not pairs:
        raise DatasetUnavailable("ade20k", f"no image with a matching annotation PNG in {img_dir}")
    return pairs


def nyud_pairs(split: Literal["train", "test"] = "test", *, root: str | os.PathLike | None = None,
               data_dir: str | os.PathLike | None = None) -> list[tuple[Path, Path]]:
    """``(rgb, depth)`` paths of one NYU-Depth v2 split (BTS layout: ``rgb_*.jpg`` + ``sync_depth_*.png``).

    Paper: Table 2 (NYUd linear depth, RMSE in metres).

    Args:
        split: ``"train"`` or ``"test"``.
        root: the NYUd folder itself (default ``<data_dir>/nyud``).
        data_dir: the datasets folder (default ``$VITREG_DATA`` or ``data/datasets``).

    Raises:
        DatasetUnavailable: the folders are missing (the message gives the expected layout).
    """
    base = Path(root).expanduser() if root is not None else data_root(data_dir) / "nyud"
    candidates = {"train": ["train", "sync"], "test": ["test", "official_splits/test"]}[split]
    folder = next((base / c for c in candidates if (base / c).is_dir()), None)
    if folder is None:
        raise DatasetUnavailable("nyud", f"none of {[str(base / c) for c in candidates]} exists; put the BTS-style "
                                         f"NYU-Depth v2 split there (rgb_XXXXX.jpg beside sync_depth_XXXXX.png)")
    pairs = []
    for rgb in sorted(folder.rglob("rgb_*")):
        depth = rgb.with_name("sync_depth_" + rgb.stem[len("rgb_"):] + ".png")
        if rgb.suffix.lower() in _IMAGE_EXT and depth.exists():
            pairs.append((rgb, depth))
    if not pairs:
        raise DatasetUnavailable("nyud", f"no rgb_*.jpg with a sync_depth_*.png beside it under {folder}")
    return pairs



def _read_map(path: str | os.PathLike, dtype: type) -> np.ndarray:
    """A label or depth PNG as an array of its stored values; a broken file is named (ImageError)."""
    from PIL import Image

    from vitreg.core.images import ImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im, dtype=dtype)
    except (OSError, ValueError) as err:
        raise ImageError(f"cannot read the annotation {path}: {err}; re-extract the dataset or remove the file") from err


def read_ade20k_label(path: str | os.PathLike) -> np.ndarray:
    """ADE20k annotation -> ``(H, W)`` uint8 class map 0..149, ``255`` where the label was 0 ("other")."""
    lab = _read_map(path, np.int64)
    return np.where(lab == 0, IGNORE_INDEX, lab - 1).astype(np.uint8)


def read_nyud_depth(path: str | os.PathLike) -> np.ndarray:
    """NYUd BTS depth PNG (uint16, millimetres) -> ``(H, W)`` float32 metres (0 = no measurement)."""
    return _read_map(path, np.float32) / 1000.0


def cover_crop(size: int | Sequence[int]) -> Any:
    """A ``transforms.v2`` transform: shorter side resized to cover ``size`` ``(H, W)``, then centre-cropped.

    Paper: Table 2 (training images and labels of the dense probes). Applied to ``(image, Mask(target))``
    together (a dict of masks works too), the image bicubic with antialiasing (as
    :func:`vitreg.core.images.preprocess`), the mask nearest: the same pixels stay under the same labels.
    """
    from torchvision.transforms import v2

    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def resize(*inputs: Any) -> Any:
        image = next(x for x in inputs if not isinstance(x, dict))
        ih, iw = v2.functional.get_size(image)
        scale = max(h / ih, w / iw)
        new = [max(h, round(ih * scale)), max(w, round(iw * scale))]
        return v2.Resize(new, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)(*inputs)

    return v2.Compose([resize, v2.CenterCrop([h, w])])  # Compose calls resize on the whole sample


def as_masks(target: np.ndarray | dict[str, np.ndarray]) -> Any:
    """A target array (or a dict of them) as ``tv_tensors.Mask`` so ``transforms.v2`` moves it with the image."""
    from torchvision import tv_tensors

    if isinstance(target, dict):
        return {k: tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(v))) for k, v in target.items()}
    return tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(target)))


def from_masks(target: Any) -> np.ndarray | dict[str, np.ndarray]:
    """Back from :func:`as_masks` to arrays."""
    if isinstance(target, dict):
        return {k: v.as_subclass(torch.Tensor).numpy() for k, v in target.items()}
    return target.as_subclass(torch.Tensor).numpy()


def transform_pair(image: Any, target: np.ndarray | dict[str, np.ndarray], transform: Any) -> tuple[Any, Any]:
    """``transform`` applied to the image and its target(s) together (``transforms.v2`` + ``tv_tensors.Mask``)."""
    out_image, out_target = transform(image, as_masks(target))
    return out_image, from_masks(out_target)


def resize_image_only(size: Sequence[int]) -> Any:
    """A transform of ``(image, target)`` that resizes the image to ``(H, W)`` (bicubic, no crop) and leaves
    the target at its original resolution: the whole image is seen and scored against the whole label map.

    Paper: Table 2 (NYUd test frames: 480x640 labels, the image fed at a patch multiple such as 476x630).
    """
    from torchvision.transforms import v2

    resize = v2.Resize([int(size[0]), int(size[1])], interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
    return lambda image, target: (resize(image), target)


def fit_in_canvas(size: tuple[int, int], canvas: int) -> tuple[int, int]:
    """``(h, w)`` of an ``size`` image resized (aspect kept) so its longer side is ``canvas``: resize-and-pad.

    Paper: Table 2 (whole validation images; the rest of the square canvas is padding, its tokens dropped).
    """
    h, w = size
    scale = canvas / max(h, w)
    return max(1, min(canvas, round(h * scale))), max(1, min(canvas, round(w * scale)))


def resize_and_pad(image: Any, canvas: int) -> Any:
    """A PIL image resized (aspect kept, bicubic) to fit a ``canvas`` square and padded at the bottom/right
    with the ImageNet mean colour (0 after normalisation), as mmsegmentation pads a test crop."""
    from PIL import Image
    from timm.data import IMAGENET_DEFAULT_MEAN

    h, w = fit_in_canvas((image.height, image.width), canvas)
    fill = tuple(round(255 * m) for m in IMAGENET_DEFAULT_MEAN)
    out = Image.new("RGB", (canvas, canvas), fill)
    out.paste(image.convert("RGB").resize((w, h), Image.BICUBIC), (0, 0))
    return out


def resize_crop_target(target: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (nearest) and centre-crop a dense target exactly as ``vitreg.core.images.preprocess`` does the image.

    The shorter side is scaled to cover ``size`` and the centre is cropped, so pixels stay aligned with
    the model's input. Nearest neighbour keeps class ids and never mixes a missing depth (0) in.
    """
    h, w = size
    scale = max(h / target.shape[0], w / target.shape[1])
    nh, nw = max(h, round(target.shape[0] * scale)), max(w, round(target.shape[1] * scale))
    rows = np.minimum((np.arange(nh) + 0.5) * target.shape[0] / nh, target.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(nw) + 0.5) * target.shape[1] / nw, target.shape[1] - 1).astype(int)
    top, left = (nh - h) // 2, (nw - w) // 2
    return target[rows[top:top + h]][:, cols[left:left + w]]


class DenseDataset(torch.utils.data.Dataset):
    """``(RGB PIL image, target array)`` pairs read from disk.

    Args:
        pairs: ``(image path, target path)``.
        read_target: e.g. :func:`read_ade20k_label` or :func:`read_nyud_depth`.
        name: dataset name (for results and cache keys).
        transform: a ``transforms.v2`` transform applied to the image and its target together
            (e.g. :func:`cover_crop`); None keeps both as read.
    """

    def __init__(self, pairs: Sequence[tuple[Path, Path]], read_target: Callable[[Path], np.ndarray], name: str,
                 transform: Any = None) -> None:
        self.pairs, self.read_target, self.name, self.transform = list(pairs), read_target, name, transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Any, np.ndarray]:
        from vitreg.core.images import load_image

        img, tgt = self.pairs[i]
        image, target = load_image(img, exif=False), self.read_target(tgt)
        return transform_pair(image, target, self.transform) if self.transform is not None else (image, target)


class SyntheticDenseDataset(torch.utils.data.Dataset):
    """Images whose square tiles carry a planted class (its colour) and a planted depth (its brightness).

    For smoke runs: a linear head on patch tokens has something to learn even from a random ViT, since
    colour and brightness survive a random patch embedding linearly. Class ``c`` colours a tile with
    ``palette[c]``; the depth ``d`` in [1, 9] m sets its brightness. Tiles are ``tile`` pixels wide
    (use a multiple of the patch size). Targets are ``{"seg": (H, W) uint8, "depth": (H, W) float32}``.

    Args:
        n: number of images.
        image_size: side in pixels.
        tile: tile side in pixels.
        n_classes: number of classes (at most 8).
        seed: images are a function of ``seed`` and their index.
        name: a name for results and cache keys.
        transform: a ``transforms.v2`` transform applied to the image and both targets together.
    """

    PALETTE = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, .5, 0], [.5, 0, 1]],
                       dtype=np.float32)

    def __init__(self, n: int = 32, image_size: int = 112, tile: int = 28, n_classes: int = 4, seed: int = 0,
                 name: str = "synthetic_dense", transform: Any = None) -> None:
        if image_size % tile or not 1 < n_classes <= len(self.PALETTE):
            raise ValueError(f"need image_size % tile == 0 and 2 <= n_classes <= {len(self.PALETTE)}")
        self.n, self.image_size, self.tile, self.n_classes, self.seed, self.name = n, image_size, tile, n_classes, seed, name
        self.transform = transform

    def __len__(self) -> int:
        return self.n

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image float HxWx3 in [0, 1], seg uint8 HxW, depth float32 HxW)`` of item ``i``."""
        rng = np.random.default_rng([self.seed, i])
        g = self.image_size // self.tile
        cls = rng.integers(0, self.n_classes, size=(g, g))
        depth = rng.uniform(1.0, 9.0, size=(g, g)).astype(np.float32)
        up = np.ones((self.tile, self.tile), dtype=np.float32)
        seg = np.kron(cls, up).astype(np.uint8)
        dmap = np.kron(depth, up).astype(np.float32)
        bright = 1.0 - 0.8 * (dmap - 1.0) / 8.0  # near = bright
        img = self.PALETTE[seg] * (0.25 + 0.75 * bright[..., None])
        img = np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1)
        return img.astype(np.float32), seg, dmap

    def __getitem__(self, i: int) -> tuple[Any, dict[str, np.ndarray]]:
        from PIL import Image

        if not 0 <= i < self.n:
            raise IndexError(i)
        img, seg, depth = self.sample(i)
        image, target = Image.fromarray((img * 255).round().astype(np.uint8)), {"seg": seg, "depth": depth}
        return transform_pair(image, target, self.transform) if self.transform is not None else (image, target)


