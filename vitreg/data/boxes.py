"""Datasets of images with ground-truth boxes, and box geometry (IoU, CorLoc).

Paper: Table 3 (LOST object discovery, CorLoc on VOC07 / VOC12 trainval and COCO20k).
Used in notebook 08 (LOST).

Datasets live under one local root: the ``root`` argument, else the environment variable
``VITREG_DATA``, else ``data/datasets`` in the repository. Nothing is ever downloaded. A dataset
that is missing is *skipped* by :func:`open_box_dataset` with one clear line saying where it was
looked for and how to get it; it never crashes a notebook. Layouts (any one works)::

    <root>/VOCdevkit/VOC2007/{Annotations,JPEGImages,ImageSets/Main/trainval.txt}
    <root>/VOC2007/...            (or <root>/VOC2007/VOCdevkit/VOC2007/..., as torchvision extracts it)
    <root>/VOCdevkit/VOC2012/...  (idem for 2012)
    <root>/COCO/images/train2014/COCO_train2014_000000xxxxxx.jpg   (or <root>/COCO/train2014/...)
    <root>/COCO/annotations/instances_train2014.json
    <root>/coco_20k_filenames.txt  (or <root>/COCO/coco_20k_filenames.txt)

COCO20k is the 19,817-image subset of COCO 2014 *train* that LOST (Siméoni et al., 2021) and
the registers paper use; the list of file names is ``datasets/coco_20k_filenames.txt`` of the
public valeoai/LOST repository (one ``COCO_train2014_000000xxxxxx.jpg`` per line). If LOST's
pre-selected annotation file ``instances_train2014_sel20k.json`` is found beside it, it is used
instead of the full ``instances_train2014.json``.

Box convention everywhere: ``(x_min, y_min, x_max, y_max)`` in pixels of the *original* image,
continuous coordinates with 0 at the top-left corner of the first pixel. VOC's 1-based inclusive
integers are converted as LOST does (``xmin - 1, ymin - 1, xmax, ymax``); COCO's ``[x, y, w, h]``
becomes ``[x, y, x + w, y + h]`` rounded to integers, with ``iscrowd`` boxes dropped (LOST).
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, Sequence

import numpy as np
import torch
import torchvision
from PIL import Image

from vitreg.core.images import load_image
from vitreg.utils.paths import data_root

BoxDatasetName = Literal["VOC07", "VOC12", "COCO20k", "synthetic"]

#: Sizes of the evaluation sets of Table 3, to check that a local copy is complete.
EXPECTED_SIZES = {"VOC07": 5011, "VOC12": 11540, "COCO20k": 19817}

#: Where to get each dataset (printed when it is missing).
HOW_TO_GET = {
    "VOC07": "PASCAL VOC 2007 trainval (VOCtrainval_06-Nov-2007.tar) from host.robots.ox.ac.uk/pascal/VOC",
    "VOC12": "PASCAL VOC 2012 trainval (VOCtrainval_11-May-2012.tar) from host.robots.ox.ac.uk/pascal/VOC",
    "COCO20k": "COCO 2014 train images + annotations/instances_train2014.json from cocodataset.org, and "
               "datasets/coco_20k_filenames.txt from github.com/valeoai/LOST",
}


@dataclass
class BoxSample:
    """One image with its ground-truth boxes.

    Args:
        image: RGB PIL image at its original size.
        boxes: ``(n, 4)`` float array of ``(x0, y0, x1, y1)`` pixel boxes (``n`` may be 0).
        name: file name or id, for figures and for matching predictions.
    """

    image: Image.Image
    boxes: np.ndarray
    name: str


class BoxDataset(Protocol):
    """What notebook 08 needs of a dataset: a name, a length, indexable :class:`BoxSample` s and the
    ``(height, width)`` of image ``i`` read without decoding it (to group images of one size in a batch)."""

    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> BoxSample: ...

    def image_hw(self, i: int) -> tuple[int, int]: ...


# --- geometry ------------------------------------------------------------------------------------
def box_iou(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Pairwise intersection over union of two sets of ``(x0, y0, x1, y1)`` boxes.

    Paper: Table 3 (CorLoc counts a box as correct when IoU >= 0.5).

    Args:
        a: ``(N, 4)`` boxes (or a single ``(4,)`` box).
        b: ``(M, 4)`` boxes (or a single ``(4,)`` box).

    Returns:
        ``(N, M)`` float64 tensor of IoU values in [0, 1]; 0 where the union is empty.
    """
    a_t = torch.as_tensor(np.asarray(a, dtype=np.float64)).reshape(-1, 4)
    b_t = torch.as_tensor(np.asarray(b, dtype=np.float64)).reshape(-1, 4)
    if ((a_t[:, 2:] < a_t[:, :2]).any()) or ((b_t[:, 2:] < b_t[:, :2]).any()):
        raise ValueError("boxes must be (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0")
    # torchvision divides by the union in float64 here (IoU exactly 0.5 stays 0.5); 0/0 for empty boxes -> 0
    return torch.nan_to_num(torchvision.ops.box_iou(a_t, b_t), nan=0.0)


def corloc_hits(pred: torch.Tensor | np.ndarray, gt: Sequence[np.ndarray | torch.Tensor],
                threshold: float = 0.5) -> np.ndarray:
    """Per image: does the predicted box overlap *some* ground-truth box with IoU >= threshold?

    Paper: Table 3 (CorLoc). An image without ground-truth boxes counts as a miss, as in LOST.

    Args:
        pred: ``(B, 4)`` one predicted box per image.
        gt: B arrays of shape ``(n_i, 4)``.
        threshold: IoU cut-off (0.5 in the paper).

    Returns:
        ``(B,)`` bool array.
    """
    pred_np = np.asarray(pred, dtype=np.float64).reshape(-1, 4)
    if len(gt) != len(pred_np):
        raise ValueError(f"{len(pred_np)} predicted boxes but {len(gt)} ground-truth lists")
    gts = [np.asarray(g, dtype=np.float64).reshape(-1, 4) for g in gt]
    hits = np.zeros(len(pred_np), dtype=bool)
    if not any(len(g) for g in gts):
        return hits
    owner = np.repeat(np.arange(len(gts)), [len(g) for g in gts])  # vectorised: one IoU per (image, its gt box)
    g, p = np.concatenate(gts), pred_np[owner]
    if (g[:, 2:] < g[:, :2]).any() or (pred_np[:, 2:] < pred_np[:, :2]).any():
        raise ValueError("boxes must be (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0")
    wh = np.clip(np.minimum(p[:, 2:], g[:, 2:]) - np.maximum(p[:, :2], g[:, :2]), 0, None)
    inter = wh[:, 0] * wh[:, 1]
    union = np.prod(p[:, 2:] - p[:, :2], 1) + np.prod(g[:, 2:] - g[:, :2], 1) - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)  # float64, as box_iou
    np.logical_or.at(hits, owner, iou >= threshold)
    return hits


def corloc(pred: torch.Tensor | np.ndarray, gt: Sequence[np.ndarray | torch.Tensor], threshold: float = 0.5) -> float:
    """CorLoc in percent: the share of images whose box hits a ground-truth box (IoU >= 0.5).

    Paper: Table 3.
    """
    hits = corloc_hits(pred, gt, threshold)
    if len(hits) == 0:
        raise ValueError("CorLoc of zero images is undefined")
    return 100.0 * float(hits.mean())


# --- where the data is ---------------------------------------------------------------------------
def _first_existing(candidates: Sequence[Path]) -> Path | None:
    return next((c for c in candidates if c.exists()), None)


def find_voc(year: Literal["2007", "2012"], root: str | os.PathLike | None = None) -> Path | None:
    """The ``VOC{year}`` folder holding ``Annotations`` and ``JPEGImages``, or None if absent."""
    r = data_root(root)
    cands = [r / "VOCdevkit" / f"VOC{year}", r / f"VOC{year}" / "VOCdevkit" / f"VOC{year}", r / f"VOC{year}",
             r / "VOC" / "VOCdevkit" / f"VOC{year}", r / "voc" / "VOCdevkit" / f"VOC{year}"]
    return _first_existing([c for c in cands if (c / "Annotations").is_dir() and (c / "JPEGImages").is_dir()])


def parse_voc_xml(path: str | os.PathLike) -> tuple[np.ndarray, list[str], tuple[int, int]]:
    """Read one VOC annotation file.

    Args:
        path: ``Annotations/<id>.xml``.

    Returns:
        boxes ``(n, 4)`` float (``xmin - 1, ymin - 1, xmax, ymax``, as LOST), class names, and the image
        size ``(height, width)`` written in the file. Every object counts, including ``difficult`` and
        ``truncated`` ones (LOST's default, without ``--no_hard``).
    """
    root = ET.parse(path).getroot()
    boxes, names = [], []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        x0, y0, x1, y1 = (float(bb.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append([int(x0) - 1, int(y0) - 1, int(x1), int(y1)])
        names.append(obj.findtext("name", ""))
    size = root.find("size")
    hw = (int(size.findtext("height", "0")), int(size.findtext("width", "0"))) if size is not None else (0, 0)
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), names, hw


class VOCBoxes:
    """PASCAL VOC 2007 or 2012 detection boxes (Table 3 uses ``trainval``: 5,011 / 11,540 images).

    The XML files are parsed directly (the same fields torchvision's ``VOCDetection`` returns), so any
    of the folder layouts listed in the module docstring works.

    Args:
        folder: the ``VOC2007``/``VOC2012`` folder (see :func:`find_voc`).
        image_set: ``trainval`` (paper), ``train``, ``val`` or ``test``.
        limit: keep only the first ``limit`` images (for quick runs); None for all.
    """

    def __init__(self, folder: str | os.PathLike, image_set: str = "trainval", limit: int | None = None) -> None:
        self.folder = Path(folder)
        split = self.folder / "ImageSets" / "Main" / f"{image_set}.txt"
        if not split.exists():
            raise FileNotFoundError(f"{split} is missing: is {self.folder} a complete VOC folder?")
        self.ids = [line.strip() for line in split.read_text().splitlines() if line.strip()]
        if limit is not None:
            self.ids = self.ids[:limit]
        year = self.folder.name.replace("VOC", "")[-2:]
        self.name = f"VOC{year}"

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> BoxSample:
        img_id = self.ids[i]
        boxes, _, _ = parse_voc_xml(self.folder / "Annotations" / f"{img_id}.xml")
        image = load_image(self.folder / "JPEGImages" / f"{img_id}.jpg", exif=False)
        return BoxSample(image=image, boxes=boxes, name=img_id)

    def image_hw(self, i: int) -> tuple[int, int]:
        """``(height, width)`` written in the annotation file (the image header when the file has none)."""
        _, _, hw = parse_voc_xml(self.folder / "Annotations" / f"{self.ids[i]}.xml")
        if min(hw) > 0:
            return hw
        with Image.open(self.folder / "JPEGImages" / f"{self.ids[i]}.jpg") as im:  # header only
            return im.height, im.width


def coco_boxes_from_annotations(anns: Sequence[dict]) -> np.ndarray:
    """COCO ``[x, y, w, h]`` annotations to ``(n, 4)`` xyxy boxes, rounded, crowd boxes dropped (LOST)."""
    out = [[int(round(v)) for v in (a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                     a["bbox"][1] + a["bbox"][3])]
           for a in anns if not a.get("iscrowd", 0)]
    return np.asarray(out, dtype=np.float64).reshape(-1, 4)


class COCO20kBoxes:
    """COCO20k: 19,817 COCO 2014 train images (the list of LOST), boxes from ``instances_train2014.json``.

    Args:
        image_dir: folder of ``COCO_train2014_*.jpg``.
        annotation_file: ``instances_train2014.json`` (or LOST's ``instances_train2014_sel20k.json``).
        list_file: ``coco_20k_filenames.txt``.
        limit: keep only the first ``limit`` images of the list; None for all.
    """

    def __init__(self, image_dir: str | os.PathLike, annotation_file: str | os.PathLike,
                 list_file: str | os.PathLike, limit: int | None = None) -> None:
        self.image_dir = Path(image_dir)
        self.files = [s.strip() for s in Path(list_file).read_text().splitlines() if s.strip()]
        if limit is not None:
            self.files = self.files[:limit]
        ids = {int(Path(f).stem.split("_")[-1]) for f in self.files}
        data = json.loads(Path(annotation_file).read_text())
        self.anns: dict[int, list[dict]] = {i: [] for i in ids}
        self.sizes = {im["id"]: (int(im["height"]), int(im["width"])) for im in data.get("images", [])
                      if im["id"] in self.anns and "height" in im}
        for a in data["annotations"]:
            if a["image_id"] in self.anns:
                self.anns[a["image_id"]].append(a)
        self.name = "COCO20k"

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> BoxSample:
        f = self.files[i]
        img_id = int(Path(f).stem.split("_")[-1])
        image = load_image(self.image_dir / Path(f).name, exif=False)
        return BoxSample(image=image, boxes=coco_boxes_from_annotations(self.anns[img_id]), name=Path(f).stem)

    def image_hw(self, i: int) -> tuple[int, int]:
        """``(height, width)`` from the annotation file's ``images`` (the image header when it has none)."""
        f = self.files[i]
        hw = self.sizes.get(int(Path(f).stem.split("_")[-1]))
        if hw is not None:
            return hw
        with Image.open(self.image_dir / Path(f).name) as im:
            return im.height, im.width


def find_coco20k(root: str | os.PathLike | None = None) -> tuple[Path, Path, Path] | None:
    """``(image_dir, annotation_file, list_file)`` of a local COCO20k, or None if any part is missing."""
    r = data_root(root)
    image_dir = _first_existing([r / "COCO" / "images" / "train2014", r / "COCO" / "train2014",
                                 r / "coco" / "images" / "train2014", r / "coco" / "train2014"])
    list_file = _first_existing([r / "coco_20k_filenames.txt", r / "COCO" / "coco_20k_filenames.txt",
                                 r / "coco" / "coco_20k_filenames.txt"])
    ann = _first_existing([r / "instances_train2014_sel20k.json", r / "COCO" / "instances_train2014_sel20k.json",
                           r / "COCO" / "annotations" / "instances_train2014.json",
                           r / "coco" / "annotations" / "instances_train2014.json"])
    if image_dir is None or list_file is None or ann is None:
        return None
    return image_dir, ann, list_file


# --- synthetic data for the smoke profile ---------------------------------------------------------
class SyntheticBoxes:
    """Images with one planted object on a textured background, and the object's box.

    For the smoke profile and the tests: the object is a rectangle of a different colour and texture,
    at a random place, covering 10-40% of the image. Random-weight models will not find it; the box
    format, the data path and CorLoc are what it exercises.

    Args:
        n: number of images.
        image_size: ``(height, width)`` in pixels.
        seed: random seed (the same seed gives the same images and boxes).
    """

    def __init__(self, n: int = 8, image_size: tuple[int, int] = (224, 224), seed: int = 0) -> None:
        if n <= 0:
            raise ValueError("n must be positive")
        self.n, self.image_size, self.seed = n, tuple(image_size), seed
        self.name = "synthetic"

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> BoxSample:
        if not 0 <= i < self.n:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, i])
        h, w = self.image_size
        bg = rng.uniform(40, 200, size=3)
        img = bg + rng.normal(0, 12, size=(h, w, 3))
        frac = rng.uniform(0.3, 0.65, size=2)
        bh, bw = max(2, int(frac[0] * h)), max(2, int(frac[1] * w))
        y0, x0 = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        fg = (bg + 128) % 256
        yy, xx = np.mgrid[0:bh, 0:bw]
        stripes = 25 * np.sin(2 * np.pi * (xx + yy) / 8.0)[..., None]
        img[y0:y0 + bh, x0:x0 + bw] = fg + stripes + rng.normal(0, 6, size=(bh, bw, 3))
        image = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        box = np.array([[x0, y0, x0 + bw, y0 + bh]], dtype=np.float64)
        return BoxSample(image=image, boxes=box, name=f"synthetic_{i:03d}")

    def image_hw(self, i: int) -> tuple[int, int]:
        return int(self.image_size[0]), int(self.image_size[1])


def open_box_datasets(names: Sequence[str], root: str | os.PathLike | None, *, synthetic_hw: tuple[int, int],
                      limit: int | None, seed: int = 0) -> dict[str, BoxDataset]:
    """The datasets of ``names`` found under ``root`` (Paper: Table 3); a missing one is left out (skipped)."""
    sets = {}
    for name in names:
        ds = open_box_dataset(name, root, limit=limit, image_size=synthetic_hw, seed=seed)
        if ds is not None:
            sets[name] = ds
            print(f"{name}: {len(ds)} images")
    return sets


def open_box_dataset(name: BoxDatasetName, root: str | os.PathLike | None = None, *, limit: int | None = None,
                     image_size: tuple[int, int] = (224, 224), seed: int = 0) -> BoxDataset | None:
    """Open a dataset of Table 3 from the local root, or say clearly that it is skipped.

    Paper: Table 3 (VOC07 trainval, VOC12 trainval, COCO20k).

    Args:
        name: ``VOC07``, ``VOC12``, ``COCO20k`` or ``synthetic`` (smoke profile).
        root: dataset root; None uses ``$VITREG_DATA`` or ``data/datasets``.
        limit: first ``limit`` images only (None: all, as in the paper).
        image_size, seed: for ``synthetic`` only.

    Returns:
        the dataset, or None after printing one ``SKIPPED`` line naming the folder looked in and the source.
    """
    if name == "synthetic":
        return SyntheticBoxes(limit or 8, image_size, seed)
    r = data_root(root)
    if name in ("VOC07", "VOC12"):
        folder = find_voc("2007" if name == "VOC07" else "2012", r)
        if folder is not None and (folder / "ImageSets" / "Main" / "trainval.txt").exists():
            ds: BoxDataset = VOCBoxes(folder, "trainval", limit)
            _warn_size(ds, name, limit)
            return ds
    elif name == "COCO20k":
        found = find_coco20k(r)
        if found is not None:
            ds = COCO20kBoxes(*found, limit=limit)
            _warn_size(ds, name, limit)
            return ds
    else:
        raise ValueError(f"unknown box dataset {name!r}; use VOC07, VOC12, COCO20k or synthetic")
    print(f"SKIPPED {name}: not found under {r} (set VITREG_DATA or pass root). Get: {HOW_TO_GET[name]}")
    return None


def _warn_size(ds: BoxDataset, name: str, limit: int | None) -> None:
    expected = EXPECTED_SIZES[name]
    if limit is None and len(ds) != expected:
        print(f"WARNING {name}: {len(ds)} images, the paper's set has {expected}; CorLoc is not comparable")


# --- images as LOST reads them (Table 3) ---------------------------------------------------------
LostProtocol = Literal["padded", "stretched"]


def padded_hw(hw: tuple[int, int], patch: int) -> tuple[int, int]:
    """``(H, W)`` rounded UP to a multiple of ``patch``: the input LOST builds for an ``hw`` image."""
    return -(-int(hw[0]) // patch) * patch, -(-int(hw[1]) // patch) * patch


def lost_input(image: Image.Image, *, protocol: LostProtocol, patch: int, size: int | None,
               mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """One image as LOST's input ``(3, H, W)``, normalised.

    Paper: Table 3 protocol. ``padded`` is LOST's own (valeoai/LOST): the image at its own resolution,
    normalised, then padded with zeros at the bottom and right to a multiple of the patch size (boxes then
    need no rescaling, only clipping to the image). ``stretched`` resizes the whole image to a
    ``size x size`` square (bicubic; the aspect ratio changes), so every image fits one batch.
    """
    import torchvision.transforms.functional as TF

    if protocol == "stretched":
        if size is None:
            raise ValueError("the stretched protocol needs a size")
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    x = TF.normalize(TF.to_tensor(image.convert("RGB")), list(mean), list(std))
    if protocol == "stretched":
        return x
    if protocol != "padded":
        raise ValueError(f"protocol must be 'padded' or 'stretched', got {protocol!r}")
    h, w = padded_hw(tuple(x.shape[-2:]), patch)
    out = x.new_zeros(3, h, w)
    out[:, : x.shape[1], : x.shape[2]] = x
    return out


def pixel_scale(hw: torch.Tensor, *, patch: int, protocol: LostProtocol, size: int | None = None) -> torch.Tensor:
    """Pixels of the original images per patch, ``(B, 2)`` ``(sy, sx)``, for :func:`lost`'s ``scale``.

    Paper: Table 3 protocol. ``padded``: the patch size (the image sits unscaled at the top-left of its
    padded input; boxes are then clipped to the image). ``stretched``: ``patch * original / size``.
    """
    hw = torch.as_tensor(hw, dtype=torch.float64).reshape(-1, 2)
    return patch * hw / size if protocol == "stretched" else torch.full_like(hw, float(patch))


class LostImages(torch.utils.data.Dataset):
    """The images of a box dataset as LOST reads them (:func:`lost_input`), with original sizes, boxes, names."""

    def __init__(self, dataset: BoxDataset, *, protocol: LostProtocol, patch: int, size: int | None,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        self.dataset, self.protocol, self.patch, self.size = dataset, protocol, patch, size
        self.mean, self.std = tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, tuple[int, int], np.ndarray, str, int]:
        s = self.dataset[i]
        x = lost_input(s.image, protocol=self.protocol, patch=self.patch, size=self.size, mean=self.mean, std=self.std)
        return x, (s.image.height, s.image.width), s.boxes, s.name, i


def collate_lost(items: list) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray], list[str], list[int]]:
    """Stack a batch of :class:`LostImages` items (grouped by :func:`size_batches`, so of one input size; an image
    whose real size differs from the one its dataset declares is zero-padded further, at the bottom/right)."""
    x, hw, boxes, names, idx = zip(*items)
    h, w = max(t.shape[1] for t in x), max(t.shape[2] for t in x)
    x = [torch.nn.functional.pad(t, (0, w - t.shape[2], 0, h - t.shape[1])) for t in x]
    return torch.stack(x), torch.tensor(hw, dtype=torch.float64), list(boxes), list(names), list(idx)


def size_batches(dataset: BoxDataset, n: int, *, patch: int, batch_size: int, protocol: LostProtocol) -> list[list[int]]:
    """Indices of the first ``n`` images in batches of one input size each (the padded protocol groups
    by padded size, in order of first appearance; the stretched one only cuts ``range(n)``)."""
    if protocol == "stretched":
        return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    groups: dict[tuple[int, int], list[int]] = {}
    for i in range(n):
        groups.setdefault(padded_hw(dataset.image_hw(i), patch), []).append(i)
    return [g[j: j + batch_size] for g in groups.values() for j in range(0, len(g), batch_size)]
