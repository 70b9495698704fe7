"""Classification datasets for the global-information probes, and a synthetic one for smoke runs.

Paper: Table 1 / App. G Table 6 (F6: 14 classification sets, one token per image).
Used in notebooks 05 (images for the local probes) and 06 (classification).

Where data comes from:

* torchvision sets that download freely (CIFAR-10/100, DTD, Flowers102, Oxford-IIIT Pets, Food-101,
  FGVC-Aircraft, STL-10, ...): stored under ``$VITREG_DATA/<name>`` (default ``<repo>/data/datasets``).
  They are downloaded ONLY when ``download=True`` and the machine is not offline (``HF_HUB_OFFLINE=1``
  or ``VITREG_OFFLINE=1``): an offline run never tries the network.
* ImageFolder sets you prepare yourself (ImageNet-1k, Places205, SUN397, VOC07, CUB-200, Stanford Cars,
  Caltech-101): ``$VITREG_DATA/<name>/<split>/<class>/<image>`` (split folders ``train`` and ``test``,
  or ``val`` for ImageNet's validation set). VOC07 classification is multi-label in the original; as an
  ImageFolder give each image one label (e.g. its largest object).
* ``synthetic``: a labelled image set made on the fly whose classes differ ONLY in a global property
  (see :class:`SyntheticGlobalDataset`), for the smoke profile.

A missing set raises :class:`DatasetUnavailable` with the reason and what to do;
:func:`try_load_dataset` turns it into ``(None, reason)`` so a notebook skips the set and says so.

Splits: ``"train"`` is the official training set (train + val where the set has a separate val split:
DTD, Flowers102, FGVC-Aircraft; the probes carve their own validation split from it) and ``"test"`` the
official test set.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image

from vitreg.utils.paths import DATA_ENV, data_root, is_offline  # noqa: F401  (re-exported)
Split = Literal["train", "test"]


class DatasetUnavailable(RuntimeError):
    """A dataset is not on this machine and cannot (or may not) be downloaded now.

    Attributes:
        name: the dataset.
        reason: one line saying why and what to do.
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"dataset {name!r} unavailable: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True)
class DatasetInfo:
    """How to get one dataset.

    Attributes:
        name: short name used in parameters and cache keys.
        paper_name: the row name in the paper's Table 1.
        source: ``"torchvision"`` (downloadable), ``"folder"`` (ImageFolder you prepare) or ``"synthetic"``.
        tv_class: torchvision class name (torchvision sources).
        splits: our split -> list of torchvision split arguments concatenated (torchvision sources).
        num_classes: number of classes.
        note: how to prepare it (folder sources) or caveats.
    """

    name: str
    paper_name: str
    source: Literal["torchvision", "folder", "synthetic"]
    tv_class: str = ""
    splits: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    num_classes: int = 0
    note: str = ""


def _tv(name: str, paper: str, cls: str, train: tuple, test: tuple, n: int, note: str = "") -> DatasetInfo:
    return DatasetInfo(name, paper, "torchvision", cls, (("train", train), ("test", test)), n, note)


def _folder(name: str, paper: str, n: int, note: str) -> DatasetInfo:
    return DatasetInfo(name, paper, "folder", num_classes=n, note=note)


#: Every dataset vitreg knows, by short name. Paper rows of Table 1 first.
DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        _tv("aircraft", "Aircraft", "FGVCAircraft", ({"split": "trainval"},), ({"split": "test"},), 100,
            "FGVC-Aircraft, 100 variants, ~2.6 GB download"),
        _tv("cifar10", "CIFAR-10", "CIFAR10", ({"train": True},), ({"train": False},), 10, "32x32 px, 170 MB"),
        _tv("cifar100", "CIFAR-100", "CIFAR100", ({"train": True},), ({"train": False},), 100, "32x32 px, 170 MB"),
        _folder("cub", "CUB", 200, "CUB-200-2011 as ImageFolder: cub/train/<class>/*.jpg, cub/test/<class>/*.jpg"),
        _folder("caltech101", "Caltech101", 101,
                "Caltech-101 as ImageFolder (torchvision's download is a flaky Google Drive link): "
                "caltech101/train/<class>/..., caltech101/test/<class>/..."),
        _folder("cars", "Cars", 196, "Stanford Cars as ImageFolder (the original download is gone): cars/train, cars/test"),
        _tv("dtd", "DTD", "DTD", ({"split": "train"}, {"split": "val"}), ({"split": "test"},), 47,
            "Describable Textures, partition 1, ~600 MB"),
        _tv("flowers", "Flowers", "Flowers102", ({"split": "train"}, {"split": "val"}), ({"split": "test"},), 102,
            "Oxford Flowers-102, ~330 MB"),
        _tv("food", "Food", "Food101", ({"split": "train"},), ({"split": "test"},), 101, "Food-101, ~5 GB"),
        _folder("imagenet1k", "ImageNet-1k", 1000, "ImageNet-1k as ImageFolder: imagenet1k/train/<wnid>/..., "
                "imagenet1k/val/<wnid>/... (split 'test' reads 'val')"),
        _folder("places205", "Places205", 205, "Places205 as ImageFolder: places205/train, places205/test"),
        _tv("pets", "Pets", "OxfordIIITPet", ({"split": "trainval"},), ({"split": "test"},), 37,
            "Oxford-IIIT Pets, 37 breeds, ~800 MB"),
        _folder("sun", "SUN", 397, "SUN397 as ImageFolder: sun/train, sun/test (torchvision's "
                "SUN397 has no official split)"),
        _folder("voc", "VOC", 20, "VOC2007 classification as single-label ImageFolder: voc/train, voc/test"),
        # Beyond Table 1: more sets that download freely.
        _tv("stl10", "", "STL10", ({"split": "train"},), ({"split": "test"},), 10, "STL-10, 96x96 px, 2.6 GB"),
        _tv("eurosat", "", "EuroSAT", (), (), 10, "EuroSAT has no official split: not supported yet"),
        _tv("imagenette", "", "Imagenette", ({"split": "train"},), ({"split": "val"},), 10,
            "10 ImageNet classes at full size, ~1.5 GB download; our 'test' split reads its 'val'"),
        DatasetInfo("synthetic", "", "synthetic", num_classes=4,
                    note="made on the fly; classes differ only in a global property (smoke profile)"),
    ]
}
#: The Table 1 rows, in the paper's order.
PAPER_DATASETS = ["aircraft", "cifar10", "cifar100", "cub", "caltech101", "cars", "dtd", "flowers", "food",
                  "imagenet1k", "places205", "pets", "sun", "voc"]


def get_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``, with a clear error listing the known names."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)} (or pass a folder path)")
    return DATASETS[name]


class LabelledImages(torch.utils.data.Dataset):
    """A dataset of ``(RGB PIL image, int label)`` over one or more underlying datasets.

    Attributes:
        name: dataset name.
        split: split name.
        labels: ``(n,)`` long tensor of all labels (known without opening images).
        classes: class names when known.
    """

    def __init__(self, name: str, split: str, parts: Sequence[Any], labels: torch.Tensor,
                 classes: Sequence[str] | None = None) -> None:
        self.name, self.split, self.parts = name, split, list(parts)
        self.labels = labels.long()
        self.classes = list(classes) if classes is not None else None
        self._offsets = torch.tensor([0] + [len(p) for p in self.parts]).cumsum(0)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, i: int):
        from vitreg.core.images import ImageError

        if i < 0:
            i += len(self)
        part = int(torch.searchsorted(self._offsets, torch.tensor(i), right=True)) - 1
        try:
            img, _ = self.parts[part][i - int(self._offsets[part])]
        except ImageError as err:  # one bad file: name every bad file of the set at once
            raise ImageError(self.problems_message() or str(err)) from err
        except (OSError, Image.DecompressionBombError) as err:  # torchvision's own loaders (Imagenette, Pets)
            raise ImageError(self.problems_message() or f"cannot read image {i} of {self.name}/{self.split}: "
                             f"{err}") from err
        return img.convert("RGB"), int(self.labels[i])

    def problems_message(self, shown: int = 20) -> str:
        """Every unusable image file of the set (:func:`vitreg.core.images.check_image_files`: unreadable,
        truncated, over the pixel limit), as one message listing up to ``shown``; empty when all are fine or
        the set keeps no files. Reads each file's header and end (a full decode only for doubtful ones)."""
        from vitreg.core.images import check_image_files

        files = [file for p in self.parts for file in _files_of(p)]
        problems = check_image_files(files)
        if not problems:
            return ""
        more = f"\n  ... and {len(problems) - shown} more" if len(problems) > shown else ""
        return (f"{len(problems)} of the {len(files)} images of {self.name}/{self.split} cannot be used (remove or "
                "replace them):\n" + "\n".join(f"  - {p}" for p in problems[:shown]) + more)


def _files_of(part: Any) -> list[Path]:
    """The image files of one dataset part, in item order (ImageFolder's ``samples``, Imagenette's ``_samples``,
    Pets' ``_images``); empty for sets that keep no files."""
    for attr in ("samples", "_samples"):
        if isinstance(getattr(part, attr, None), list):
            return [Path(s[0]) for s in getattr(part, attr)]
    return [Path(f) for f in getattr(part, "_images", None) or []]


def labels_of(ds: Any) -> torch.Tensor:
    """All labels of a torchvision-style dataset, read from its attributes (iterates as a last resort)."""
    samples = getattr(ds, "_samples", None)  # torchvision's Imagenette: (path, label) pairs
    if isinstance(samples, list) and len(samples) == len(ds) and all(isinstance(s, tuple) for s in samples[:1]):
        return torch.tensor([int(label) for _, label in samples])
    for attr in ("targets", "_labels", "labels", "y"):
        val = getattr(ds, attr, None)
        if val is not None and not callable(val) and len(val) == len(ds):
            return torch.as_tensor(list(val) if not isinstance(val, torch.Tensor) else val).long()
    return torch.tensor([int(ds[i][1]) for i in range(len(ds))])


def load_dataset(name: str, split: Split = "train", *, root: str | os.PathLike | None = None,
                 download: bool = False, n: int = 256, num_classes: int = 4, image_size: int = 64,
                 seed: int = 0) -> LabelledImages | SyntheticGlobalDataset:
    """Open one split of a classification dataset.

    Paper: Table 1 / Table 6 (the datasets of the single-token probes).

    Args:
        name: a key of :data:`DATASETS`, or a path to an ImageFolder root with ``train``/``test`` folders.
        split: ``"train"`` or ``"test"``.
        root: datasets folder (default :func:`data_root`).
        download: allow a torchvision download (never done when offline).
        n, num_classes, image_size, seed: size of the ``synthetic`` set (ignored otherwise; the test split
            uses another seed).

    Returns:
        a dataset of ``(RGB PIL image, label)`` with a ``labels`` tensor.

    Raises:
        DatasetUnavailable: the data is not here and may not be downloaded (the message says what to do).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == "synthetic":
        return SyntheticGlobalDataset(n=n, num_classes=num_classes, image_size=image_size,
                                      seed=seed if split == "train" else seed + 10_000, split=split)
    if name not in DATASETS and (os.sep in name or Path(name).expanduser().is_dir()):
        return _load_folder(Path(name).name, Path(name).expanduser(), split)
    info = get_info(name)
    base = data_root(root)
    if info.source == "folder":
        return _load_folder(name, base / name, split, info.note)
    return _load_torchvision(info, split, base / name, download)


def try_load_dataset(name: str, split: Split = "train", **kwargs) -> tuple[Any | None, str]:
    """:func:`load_dataset` that returns ``(None, reason)`` instead of raising for a missing set."""
    try:
        return load_dataset(name, split, **kwargs), ""
    except DatasetUnavailable as err:
        return None, err.reason


def _load_folder(name: str, folder: Path, split: str, note: str = "") -> LabelledImages:
    from torchvision.datasets import ImageFolder

    sub = folder / split
    if split == "test" and not sub.is_dir() and (folder / "val").is_dir():
        sub = folder / "val"
    if not sub.is_dir():
        raise DatasetUnavailable(name, f"no folder {sub}; prepare it as an ImageFolder "
                                       f"({note or '<split>/<class>/<image>'}) or set ${DATA_ENV}")
    try:
        ds = ImageFolder(str(sub), loader=_load_named)
    except (FileNotFoundError, RuntimeError) as err:  # class folders without images
        raise DatasetUnavailable(name, f"{sub} is not a usable ImageFolder: {err}") from err
    return LabelledImages(name, split, [ds], torch.tensor(ds.targets), ds.classes)


def _load_torchvision(info: DatasetInfo, split: str, folder: Path, download: bool) -> LabelledImages:
    import torchvision.datasets as tvd

    args = dict(info.splits).get(split, ())
    if not args:
        raise DatasetUnavailable(info.name, f"no official {split!r} split in torchvision's {info.tv_class}")
    cls = getattr(tvd, info.tv_class)
    extra = {"annotation_level": "variant"} if info.tv_class == "FGVCAircraft" else {}
    if info.tv_class == "OxfordIIITPet":
        extra = {"target_types": "category"}
    if info.tv_class == "Imagenette":
        extra = {"size": "full"}  # the photos as ImageNet has them (320px ones would be upsampled at 518 px)
    offline = is_offline()
    parts = []
    for a in args:
        try:
            parts.append(cls(str(folder), download=False, **a, **extra))
            continue
        except (RuntimeError, FileNotFoundError, OSError) as err:
            missing = err
        if not download or offline:
            why = "offline (HF_HUB_OFFLINE/VITREG_OFFLINE set)" if download else "download=False"
            raise DatasetUnavailable(info.name, f"not found under {folder} and {why}; run once with download=True "
                                                f"on a connected machine, or set ${DATA_ENV} ({missing})")
        try:
            parts.append(cls(str(folder), download=True, **a, **extra))
        except Exception as err:  # noqa: BLE001 - any download failure means the same to the notebook
            raise DatasetUnavailable(info.name, f"download of torchvision {info.tv_class} failed: {err}") from err
    labels = torch.cat([labels_of(p) for p in parts])
    classes = getattr(parts[0], "classes", None)
    return LabelledImages(info.name, split, parts, labels, classes)


def subset_indices(labels: torch.Tensor | int, n: int | None, *, seed: int = 0) -> torch.Tensor:
    """Indices of ``n`` items drawn class-balanced, in a seeded random order that stays balanced when sliced.

    The one seeded subset of vitreg: image sets of notebooks 05, 06, 09 and 10 and the dense pairs of Table 2.
    The order is round-robin over the classes: round r holds the r-th item (in seeded random order) of each
    class that still has one, its classes in seeded random order; so the first ``k`` indices of the result
    cover ``min(k, classes)`` classes, never the first few classes of a folder in class order. Without labels
    (an item count) it is a plain seeded random draw of ``n`` items, in random order.

    Args:
        labels: ``(N,)`` labels of the full split, or ``N`` for unlabelled items.
        n: how many to keep; ``>= N`` keeps all, in the same balanced random order; None keeps all in the
            split's own order (no subset asked for).
        seed: random seed.

    Returns:
        long tensor of ``min(n, N)`` distinct indices, in the order to use them.
    """
    if isinstance(labels, int):
        labels = torch.zeros(labels, dtype=torch.long)
    total = len(labels)
    if n is None:
        return torch.arange(total)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(total, generator=gen)
    lab = torch.as_tensor(labels)[perm]
    _, lab = torch.unique(lab, return_inverse=True)
    shuffled_classes = torch.randperm(int(lab.max()) + 1 if total else 0, generator=gen)
    lab = shuffled_classes[lab]
    # rank of each item within its class (in random order): round r takes the items of rank r
    order = torch.argsort(lab, stable=True)
    rank = torch.empty(total, dtype=torch.long)
    sorted_lab = lab[order]
    starts = torch.searchsorted(sorted_lab, sorted_lab)
    rank[order] = torch.arange(total) - starts
    keep = torch.argsort(rank * total + lab, stable=True)[:min(n, total)]
    return perm[keep]


class SyntheticGlobalDataset(torch.utils.data.Dataset):
    """Labelled images whose class is a GLOBAL property: the share of red tiles over the whole image.

    Used in the smoke profile of notebooks 05/06 (so the global probes have something to find offline).
    Each image is a grid of ``tiles x tiles`` tiles; each tile is red or blue (with noise texture and
    random brightness). Class ``c`` of ``C`` sets the share of red tiles to about ``(c + 0.5) / C``; the
    red tiles sit at random places. One tile is only weak evidence of the class; counting over the
    whole image (what [CLS], and per the paper the outlier tokens, can do) separates the classes.

    Args:
        n: number of images.
        num_classes: number of classes.
        image_size: side in pixels.
        tiles: tiles per side.
        seed: random seed (images are generated from ``seed`` and their index: identical on every call).
        split: a name only.
    """

    def __init__(self, n: int = 256, num_classes: int = 4, image_size: int = 64, tiles: int = 8, seed: int = 0,
                 split: str = "train") -> None:
        if n <= 0 or num_classes < 2 or tiles <= 0 or image_size < tiles:
            raise ValueError(f"invalid synthetic dataset: n={n}, num_classes={num_classes}, tiles={tiles}, "
                             f"image_size={image_size}")
        self.name, self.split = "synthetic", split
        self.n, self.num_classes, self.image_size, self.tiles, self.seed = n, num_classes, image_size, tiles, seed
        self.labels = torch.arange(n) % num_classes
        self.classes = [f"red share ~{(c + 0.5) / num_classes:.2f}" for c in range(num_classes)]

    def __len__(self) -> int:
        return self.n

    def red_share(self, label: int) -> float:
        """The class's target share of red tiles."""
        return (label + 0.5) / self.num_classes

    def image_tensor(self, i: int) -> torch.Tensor:
        """Image ``i`` as a ``(3, S, S)`` float tensor in [0, 1]."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        t, s = self.tiles, self.image_size
        label = int(self.labels[i])
        n_red = int(round(self.red_share(label) * t * t))
        red = torch.zeros(t * t, dtype=torch.bool)
        red[torch.randperm(t * t, generator=gen)[:n_red]] = True
        red = red.reshape(t, t)
        colour = torch.where(red.unsqueeze(0), torch.tensor([0.85, 0.2, 0.15]).view(3, 1, 1),
                             torch.tensor([0.15, 0.3, 0.85]).view(3, 1, 1))  # (3, t, t)
        bright = 0.7 + 0.3 * torch.rand(1, t, t, generator=gen)
        img = torch.nn.functional.interpolate((colour * bright).unsqueeze(0), size=(s, s), mode="nearest")[0]
        img = img + 0.08 * torch.randn(3, s, s, generator=gen)
        return img.clamp(0, 1)

    def __getitem__(self, i: int):
        from PIL import Image

        if not 0 <= i < self.n:
            raise IndexError(i)
        arr = (self.image_tensor(i).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        return Image.fromarray(arr), int(self.labels[i])


def describe(ds: Any) -> dict:
    """What a result records about a dataset split: name, split, size, classes, source."""
    name = getattr(ds, "name", type(ds).__name__)
    info = DATASETS.get(name)
    labels = getattr(ds, "labels", None)
    return {
        "name": name,
        "split": getattr(ds, "split", ""),
        "n": len(ds),
        "num_classes": int(len(torch.unique(labels))) if labels is not None else None,
        "source": info.source if info else "folder",
        "synthetic": name == "synthetic",
    }


def chance_accuracy(labels: torch.Tensor) -> float:
    """Accuracy (%) of always predicting the most frequent class: the floor of a probe."""
    counts = torch.bincount(labels.long())
    return float(counts.max() / counts.sum() * 100) if len(labels) else math.nan


def probe_images(dataset: str, split: str, n: int, *, image_dir: str | os.PathLike | None = None,
                 root: str | os.PathLike | None = None, download: bool = False, image_size: int = 224,
                 seed: int = 0) -> tuple[list[Any], str, str | None]:
    """The images of the local probes: a folder, the bundled photos, or a class-balanced dataset subset.

    Paper: Fig. 5b ("a few hundred natural images"; notebook 05). ``image_dir`` wins over ``dataset``;
    ``dataset="photos"`` takes the bundled photos; a dataset that is not on this machine (and may not be
    downloaded) falls back to the bundled photos, and the third element says why.

    Returns:
        ``(PIL images, source, why the dataset was not used or None)``; the source names the images for
        the results and the feature cache (``"folder:<dir>"``, ``"bundled photos"``, ``"<dataset>-<split>"``).
    """
    from vitreg.core.images import image_folder, load_image, sample_photos

    if image_dir:
        return [load_image(p) for p in image_folder(image_dir, limit=n)], f"folder:{image_dir}", None
    reason = None
    if dataset != "photos":
        ds, reason = try_load_dataset(dataset, split, root=root, download=download, n=n, image_size=image_size,
                                      seed=seed)
        if ds is not None:
            return [ds[int(i)][0] for i in subset_indices(ds.labels, n, seed=seed)], f"{dataset}-{split}", None
    return [img for _, img in sample_photos()][:n], "bundled photos", reason


#: What the ``images`` parameter of notebooks 00-04 and 07 may name (F1-F4, F7): ``auto`` is ImageNet's
#: val split when ``$VITREG_DATA/imagenet1k/val`` is there, else Imagenette's val split (downloaded once);
#: ``photos`` the bundled photos (smoke and lecture profiles only: 14 images, several not natural scenes).
NATURAL_SETS: dict[str, str] = {"imagenet": "imagenet1k", "imagenette": "imagenette", "pets": "pets"}
IMAGE_SOURCES = ("auto", *NATURAL_SETS, "photos")


def resolve_image_source(images: str, root: str | os.PathLike | None = None) -> str:
    """The dataset ``images`` stands for here: ``auto`` -> ``imagenet1k`` when its val folder exists,
    else ``imagenette``; the other names map through :data:`NATURAL_SETS` (``photos`` stays)."""
    if images not in IMAGE_SOURCES:
        raise ValueError(f"images={images!r}: use one of {', '.join(IMAGE_SOURCES)} (or image_dir= a folder)")
    if images == "auto":
        return "imagenet1k" if (data_root(root) / "imagenet1k" / "val").is_dir() else "imagenette"
    return NATURAL_SETS.get(images, images)


def natural_images_status(images: str, root: str | os.PathLike | None = None) -> tuple[bool, str | None]:
    """Whether the natural-image set ``images`` can be used now, and a message: what to do when it cannot,
    a note when it will be downloaded first, None when it is here. Nothing is downloaded.

    Paper: Fig. 1-7 (the real run's images). The runner's preflight calls it, so an offline run without
    the set stops before any notebook runs.
    """
    name = resolve_image_source(images, root)
    if name == "photos":
        return True, None
    ds, why = try_load_dataset(name, "test", root=root, download=False)
    if ds is not None:
        return True, None
    if get_info(name).source == "torchvision" and not is_offline():
        return True, f"note: {name} is not in {data_root(root)} yet; the first notebook that needs it downloads it once"
    why = (f"which is not under {data_root(root) / name} and this machine is offline (HF_HUB_OFFLINE/VITREG_OFFLINE)"
           if get_info(name).source == "torchvision" else f"which is not usable here (it cannot be downloaded): {why}")
    return False, (f"images={images!r} needs {name} ({get_info(name).note}), {why}.\n"
                   f"  Ways out: connect this machine once (it downloads into {data_root(root) / name}), or put "
                   f"ImageNet's val split at {data_root(root) / 'imagenet1k' / 'val'}/<wnid>/*.JPEG, or pass "
                   "image_dir= a folder of natural images (e.g. --set common.image_dir=/data/photos).")


def _load_named(path: str) -> Any:
    """ImageFolder's loader: vitreg's :func:`vitreg.core.images.load_image`, so a bad file raises an ``ImageError``
    naming it and the pixel limit holds (torchvision's own loader names no file and knows no limit)."""
    from vitreg.core.images import load_image

    return load_image(Path(path))


def natural_images(images: str = "auto", n: int = 256, *, seed: int = 0, root: str | os.PathLike | None = None,
                   download: bool = True) -> tuple[list[Any], dict[str, Any]]:
    """A seeded, class-balanced subset of a natural-image set, and what the results record about it.

    Paper: Fig. 1-7 ("a few hundred natural images"; notebooks 00-04 and 07). ImageNet val (read from
    ``$VITREG_DATA/imagenet1k/val``) or Imagenette/Pets (torchvision; downloaded once into ``$VITREG_DATA``
    unless offline). The subset is :func:`subset_indices` of the split's labels with ``seed``.

    Returns:
        (image file paths, ``{"source", "dataset", "split", "n", "n_available", "seed", "folder"}``).

    Raises:
        DatasetUnavailable: the set is not here and may not be downloaded (the message says what to do).
        vitreg.core.images.ImageError: some chosen files are unreadable (all named).
    """
    from vitreg.core.images import ImageError, check_image_files

    name = resolve_image_source(images, root)
    if name == "photos":
        raise ValueError("images='photos' are the bundled photos: vitreg.core.images.pick_images serves them")
    ds, why = try_load_dataset(name, "test", root=root, download=download and not is_offline())
    if ds is None:
        usable, what = natural_images_status(images, root)
        raise DatasetUnavailable(name, why if usable else str(what))
    idx = [int(i) for i in subset_indices(ds.labels, n, seed=seed)]
    files = [_file_of(ds, i) for i in idx]
    if problems := check_image_files([f for f in files if isinstance(f, Path)]):
        raise ImageError(f"{len(problems)} of the {len(files)} {name} images cannot be used:\n"
                         + "\n".join(f"  - {p}" for p in problems))
    split = "val" if name in ("imagenet1k", "imagenette") else "test"
    paper = {"imagenet1k": "ImageNet-1k", "imagenette": "Imagenette", "pets": "Oxford-IIIT Pets"}[name]
    record = {"source": f"{paper} {split} split: {len(files)} of {len(ds)} images, class-balanced, seed {seed}",
              "dataset": name, "split": split, "n": len(files), "n_available": len(ds), "seed": seed,
              "folder": str(data_root(root) / name)}
    return files, record


def _file_of(ds: LabelledImages, i: int) -> Any:
    """Item ``i``'s image file (ImageFolder, Imagenette and Pets keep paths), else the decoded image."""
    part = int(torch.searchsorted(ds._offsets, torch.tensor(i), right=True)) - 1
    inner, j = ds.parts[part], i - int(ds._offsets[part])
    for attr in ("samples", "_samples"):
        if isinstance(getattr(inner, attr, None), list):
            return Path(getattr(inner, attr)[j][0])
    if isinstance(getattr(inner, "_images", None), list):
        return Path(inner._images[j])
    return ds[i][0]
