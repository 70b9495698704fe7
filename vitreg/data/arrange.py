"""Unpack downloaded archives into the layouts the loaders read (one recipe per source), and check them.

Paper: Tables 1-3 (the datasets of notebooks 06, 08, 09). Used by :mod:`vitreg.data.fetch`.

Every recipe writes into a staging folder ``out`` (its final relative path under ``$VITREG_DATA`` is the
manifest's ``where``); :mod:`vitreg.data.fetch` checks the counts there and only then moves it into place,
so a loader never sees half a dataset. The layouts are the ones :mod:`vitreg.data.datasets`,
:mod:`vitreg.data.boxes` and :mod:`vitreg.data.dense` already read:

* ``voc``: torchvision's ``VOCdevkit/VOC{year}`` (Annotations, JPEGImages, ImageSets), as the tar holds it.
* ``voc_classification``: an ImageFolder ``voc/{train,test}/<class>/<id>.jpg`` derived from VOC2007's
  detection annotations: train from trainval, test from the test set; each image takes the class of its
  largest non-difficult object (largest object when all are difficult). The paper's suite scores VOC2007
  multi-label (11-point mAP): this is a single-label proxy.
* ``caltech101``, ``sun397``: ImageFolders with a seeded split (:func:`seeded_split`, recipe in the manifest).
* ``cub``: ImageFolder from CUB's own ``train_test_split.txt``.
* ``ade20k``: ``ADEChallengeData2016/{images,annotations}/{training,validation}`` as the archive holds it.
* ``coco20k``: ``COCO/images/train2014`` (only the images of LOST's list), ``COCO/annotations/
  instances_train2014.json`` and ``COCO/coco_20k_filenames.txt``.
* ``nyud``: the labelled set's frames as ``{train,test}/rgb_XXXXX.jpg`` + ``sync_depth_XXXXX.png`` (uint16
  millimetres; BTS's file names, numbered by their 1-based index in the labelled set).
"""

from __future__ import annotations

import os
import random
import shutil
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vitreg.data.catalog import Entry

_IMAGE_EXT = (".jpg", ".jpeg", ".png")


class ArrangeError(RuntimeError):
    """An archive is broken or not in its source's layout (the message names the file)."""


# --- unpacking -----------------------------------------------------------------------------------
def unpack(archive: Path, dest: Path) -> None:
    """Extract a tar (any compression) or zip into ``dest``, refusing members that leave it.

    Raises:
        ArrangeError: the archive is corrupt or truncated (named).
        OSError: the disk is full or not writable.
    """
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if not (dest / member).resolve().is_relative_to(dest.resolve()):
                        raise ArrangeError(f"{archive.name}: member {member!r} would leave the folder; refused")
                if (bad := zf.testzip()) is not None:
                    raise ArrangeError(f"{archive.name} is corrupt (member {bad} fails its CRC); delete it and "
                                       "download it again")
                zf.extractall(dest)
            return
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
        raise ArrangeError(f"{archive.name} is corrupt or truncated ({type(err).__name__}: {err}); delete it and "
                           "download it again") from err
    except OSError as err:
        if err.errno is None:  # zlib/gzip errors of a damaged stream
            raise ArrangeError(f"{archive.name} is corrupt or truncated ({err}); delete it and download it "
                               "again") from err
        raise


def find_dir(top: Path, name: str, *, containing: str = "") -> Path:
    """The first folder called ``name`` under ``top`` (breadth-first) that holds ``containing``.

    Raises:
        ArrangeError: none is there (the archive is not in its source's layout).
    """
    for path in sorted(top.rglob(name), key=lambda p: len(p.parts)):
        if path.is_dir() and (not containing or (path / containing).exists()):
            return path
    raise ArrangeError(f"no folder {name!r}{' with ' + containing if containing else ''} in the unpacked files "
                       f"under {top}: the archive is not in its source's layout")


def place(src: Path, dest: Path, *, move: bool = True) -> None:
    """Put a file at ``dest``: moved (inside staging), else hard-linked, else copied."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if move:
        os.replace(src, dest)
        return
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def images_in(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_EXT)


# --- checks ----------------------------------------------------------------------------------------
def count_files(folder: Path) -> int:
    """Regular files under ``folder`` (recursive), hidden ones left out."""
    return sum(1 for p in folder.rglob("*") if p.is_file() and not any(s.startswith(".") for s in
                                                                      p.relative_to(folder).parts))


def check_counts(entry: Entry, folder: Path) -> list[str]:
    """What differs between ``folder`` and the manifest's ``counts`` and ``classes``; empty when all match."""
    problems = []
    for sub, want in entry.counts.items():
        got = count_files(folder / sub) if (folder / sub).is_dir() else 0
        if got != want:
            problems.append(f"{entry.where}/{sub}: {got} files, expected {want}")
    for sub, want in entry.classes.items():
        got = sum(1 for p in (folder / sub).iterdir() if p.is_dir()) if (folder / sub).is_dir() else 0
        if got != want:
            problems.append(f"{entry.where}/{sub}: {got} class folders, expected {want}")
    return problems


# --- splits ----------------------------------------------------------------------------------------
def seeded_split(files: list[Path], cls: str, *, seed: int, train_per_class: int,
                 test_per_class: int | None) -> tuple[list[Path], list[Path]]:
    """One class's files split into train and test: a seeded draw, the same on every machine.

    The files are sorted by name and shuffled with ``random.Random(f"{seed}/{cls}")`` (string seeds hash
    the same everywhere); the first ``train_per_class`` go to train, the next ``test_per_class`` (None:
    all the rest) to test.

    Raises:
        ArrangeError: the class has too few images for the recipe.
    """
    need = train_per_class + (test_per_class or 1)
    if len(files) < need:
        raise ArrangeError(f"class {cls!r} has {len(files)} images, the split needs {need}")
    order = sorted(files, key=lambda p: p.name)
    random.Random(f"{seed}/{cls}").shuffle(order)
    end = None if test_per_class is None else train_per_class + test_per_class
    return order[:train_per_class], order[train_per_class:end]


def _split_classes(classes: dict[str, list[Path]], out: Path, split: dict[str, Any]) -> None:
    """Move each class's images into ``out/{train,test}/<class>/`` by :func:`seeded_split`."""
    for cls, files in sorted(classes.items()):
        train, test = seeded_split(files, cls, seed=int(split.get("seed", 0)),
                                   train_per_class=int(split["train_per_class"]),
                                   test_per_class=split.get("test_per_class"))
        for name, part in (("train", train), ("test", test)):
            for f in part:
                place(f, out / name / cls / f.name)


# --- recipes ---------------------------------------------------------------------------------------
def arrange_voc(entry: Entry, files: dict[str, Path], raw: Path, out: Path, root: Path) -> None:
    """VOC detection tar -> ``VOCdevkit/VOC{year}`` (torchvision's layout)."""
    for f in files.values():
        unpack(f, raw)
    found = find_dir(raw, Path(entry.where).name, containing="Annotations")
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(found, out)


def voc_label(xml: Path) -> str:
    """The class of the largest non-difficult object of a VOC annotation (largest object if all are difficult)."""
    objects = []
    for obj in ET.parse(xml).getroot().iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        x0, y0, x1, y1 = (float(bb.findtext(k, "0")) for k in ("xmin", "ymin", "xmax", "ymax"))
        objects.append((obj.findtext("difficult", "0").strip() == "1", -(x1 - x0 + 1) * (y1 - y0 + 1),
                        obj.findtext("name", "").strip()))
    if not objects:
        raise ArrangeError(f"{xml} has no object: not a VOC detection annotation")
    return min(objects)[2]


def arrange_voc_classification(entry: Entry, files: dict[str, Path], raw: Path, out: Path, root: Path) -> None:
    """VOC2007 test tar + the voc07 folder -> single-label ImageFolder ``voc/{train,test}/<class>/``."""
    for f in files.values():
        unpack(f, raw)
    test_dir = find_dir(raw, "VOC2007", containing="ImageSets/Main/test.txt")
    train_dir = root / "VOCdevkit" / "VOC2007"
    if not (train_dir / "ImageSets" / "Main" / "trainval.txt").exists():
        raise ArrangeError(f"{train_dir} has no trainval list: run `vitreg data download voc07` first")
    for split, folder, ids_file, move in (("train", train_dir, "trainval.txt", False), ("test", test_dir, "test.txt", True)):
        ids = [s.strip() for s in (folder / "ImageSets" / "Main" / ids_file).read_text().split() if s.strip()]
        for img_id in ids:
            label = voc_label(folder / "Annotations" / f"{img_id}.xml")
            place(folder / "JPEGImages" / f"{img_id}.jpg", out / split / label / f"{img_id}.jpg", move=move)


def arrange_caltech101(entry: Entry, files: dict[str, Path], raw: Path, out: Path, root: Path) -> None:
    """caltech-101.zip (holding 101_ObjectCategories.tar.gz) -> seeded ImageFolder split."""
    for f in files.values():
        unpack(f, raw)
    inner = next(iter(sorted(raw.rglob("101_ObjectCategories.tar.gz"))), None)
    if inner is not None:
        unpack(inner, raw / "categories")
    top = find_dir(raw, "101_ObjectCategories")
    drop = set(entry.split.get("drop") or ())
    classes = {d.name: images_in(d) for d in sorted(top.iterdir()) if d.is_dir() and d.name not in drop}
    _split_classes(classes, out, entry.split)


def arrange_sun397(entry: Entry, files: dict[str, Path], raw: Path, out: Path, root: Path) -> None:
    """SUN397.tar.gz -> seeded ImageFolder split; a class is its path below the letter folder, joined by ``_``."""
    for f in files.values():
        unpack(f, raw)
    top = find_dir(raw, "SUN397", containing="ClassName.txt")
    classes = {}
    for d in sorted(p for p in top.rglob("*") if p.is_dir()):
        if imgs := images_in(d):
            classes["_".join(d.relative_to(top).parts[1:])] = imgs
    _split_classes(classes, out, entry.split)


def arrange_cub(entry: Entry, files: dict[str, Path], raw: Path, out: Path, root: Path) -> None:
    """CUB_200_2011.tgz -> ImageFolder from its ``images.txt`` and ``train_test_split.txt``."""
    for f in files.values():
        unpack(f, raw)
    top = find_dir(raw, "CUB_200_2011", containing="train_test_split.txt")
    paths = dict(line.split() for line in (top / "images.txt").read_text().splitlines() if line.strip())
    for line in (top / "train_test_split.txt").read_text().splitlines():
        if not line.strip():
            continue
        img_id, is_train = line.split()
        rel = Path(paths[img_id])
        place(top / "images" / rel, out / ("train" if is_train == "1" else "test") / rel)


def arrange_ade20k(entry: Entry, files: dict[str, Path], raw: Path, out: Path, root: Path) -> None:
    """ADEChallengeData2016.zip -> ``ade20k/ADEChallengeData2016`` as the archive holds it."""
    for f in files.values():
        unpack(f, raw)
    found = find_dir(raw, "ADEChallengeData2016", containing="annotations")
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(found, out)


def arrange_coco20k(entry: Entry, files: dict[str, Path], raw: Path, out: Path, root: Path) -> None:
    """COCO train2014 + annotations + LOST's list -> ``COCO/`` with only the listed images."""
    listed = [s.strip() for s in files["coco_20k_filenames.txt"].read_text().splitlines() if s.strip()]
    wanted = {Path(s).name for s in listed}
    ann = "instances_train2014.json"
    try:
        with zipfile.ZipFile(files["annotations_trainval2014.zip"]) as zf:
            member = next((m for m in zf.namelist() if Path(m).name == ann), None)
            if member is None:
                raise ArrangeError(f"annotations_trainval2014.zip holds no {ann}")
            (out / "annotations").mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(out / "annotations" / ann, "wb") as dst:
                shutil.copyfileobj(src, dst)
        found = set()
        with zipfile.ZipFile(files["train2014.zip"]) as zf:
            for member in zf.namelist():
                name = Path(member).name
                if name in wanted:
                    with zf.open(member) as src, open(_mkparent(out / "images" / "train2014" / name), "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    found.add(name)
    except (zipfile.BadZipFile, EOFError) as err:
        raise ArrangeError(f"a COCO archive is corrupt or truncated ({err}); delete it and download it again") from err
    if missing := sorted(wanted - found):
        raise ArrangeError(f"train2014.zip lacks {len(missing)} images of LOST's list (first: {missing[0]})")
    shutil.copy2(files["coco_20k_filenames.txt"], out / "coco_20k_filenames.txt")


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def arrange_nyud(entry: Entry, files: dict[str, Path], raw: Path, out: Path, root: Path) -> None:
    """NYU-Depth v2 labelled ``.mat`` (MATLAB v7.3, HDF5) + ``splits.mat`` -> BTS-named frames per split."""
    try:
        import h5py
    except ImportError as err:
        raise ArrangeError("reading nyu_depth_v2_labeled.mat (MATLAB v7.3) needs h5py: `pip install h5py`, then "
                           "run the command again (the downloaded files are kept)") from err
    import numpy as np
    from PIL import Image
    from scipy.io import loadmat

    splits = loadmat(files["splits.mat"])
    try:
        mat = h5py.File(files["nyu_depth_v2_labeled.mat"], "r")
    except OSError as err:
        raise ArrangeError(f"nyu_depth_v2_labeled.mat is corrupt or truncated ({err}); delete it and download it "
                           "again") from err
    with mat:
        images, depths = mat["images"], mat["depths"]  # (N, 3, W, H) uint8, (N, W, H) metres: MATLAB's order
        for split, key in (("train", "trainNdxs"), ("test", "testNdxs")):
            for idx in np.asarray(splits[key]).ravel().astype(int):  # 1-based, as MATLAB numbers the frames
                rgb = np.asarray(images[idx - 1]).transpose(2, 1, 0)
                depth = np.round(np.asarray(depths[idx - 1]).T * 1000.0).clip(0, 65535).astype(np.uint16)
                folder = out / split
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.ascontiguousarray(rgb)).save(folder / f"rgb_{idx:05d}.jpg", quality=95)
                Image.fromarray(np.ascontiguousarray(depth)).save(folder / f"sync_depth_{idx:05d}.png")


Recipe = Callable[[Entry, dict[str, Path], Path, Path, Path], None]
#: The manifest's ``arrange`` names.
RECIPES: dict[str, Recipe] = {
    "voc": arrange_voc, "voc_classification": arrange_voc_classification, "caltech101": arrange_caltech101,
    "sun397": arrange_sun397, "cub": arrange_cub, "ade20k": arrange_ade20k, "coco20k": arrange_coco20k,
    "nyud": arrange_nyud,
}
