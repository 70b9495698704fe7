"""How many images the datasets of the experiments hold: what ``work(p)`` counts when a parameter says "all".

Paper: Table 1 (the linear-probe datasets), Table 2 (ImageNet-1k, ADE20k, NYU-Depth v2), Table 3 (the LOST
box datasets). The sizes are the public splits as :mod:`vitreg.data.datasets`, :mod:`vitreg.data.boxes` and
:mod:`vitreg.data.dense` read them (the datasets themselves are never opened here: the run-time table and the
pre-run checks must not need them). Synthetic sets are sized by their parameters.
"""

from __future__ import annotations

#: (train, test) images of each classification dataset, our splits (``train`` may join several of the
#: dataset's own splits, as :data:`vitreg.data.datasets.DATASETS` does: DTD and Flowers train+val).
#: Folder datasets (CUB, Caltech101, Cars, ImageNet-1k, Places205, SUN, VOC) use their usual public splits.
CLASSIFICATION: dict[str, tuple[int, int]] = {
    "aircraft": (6_667, 3_333), "cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "cub": (5_994, 5_794),
    "caltech101": (3_060, 6_084), "cars": (8_144, 8_041), "dtd": (3_760, 1_880), "flowers": (2_040, 6_149),
    "food": (75_750, 25_250), "imagenet1k": (1_281_167, 50_000), "places205": (2_448_873, 20_500),
    "pets": (3_680, 3_669), "sun": (19_850, 19_850), "voc": (5_011, 4_952), "stl10": (5_000, 8_000),
    "imagenette": (9_469, 3_925),
}

#: Images of each LOST box dataset (VOC07 and VOC12 trainval, COCO20k), as :mod:`vitreg.data.boxes` reads them.
BOXES: dict[str, int] = {"VOC07": 5_011, "VOC12": 11_540, "COCO20k": 19_817}

#: The synthetic box set's size when no limit is given (:class:`vitreg.data.boxes.SyntheticBoxes`).
SYNTHETIC_BOXES = 8

#: Table 2's dense datasets: (train, test) images.
ADE20K = (20_210, 2_000)
NYUD = (24_231, 654)


def capped(total: int, cap: int | None) -> int:
    """``total`` images, at most ``cap`` (None: all)."""
    return total if cap is None else min(total, cap)


def box_images(name: str, limit: int | None) -> int:
    """Images LOST reads from box dataset ``name`` with ``limit`` (None: all)."""
    if name == "synthetic":
        return limit or SYNTHETIC_BOXES
    return capped(BOXES[name], limit)


def split_images(name: str, split: str, cap: int | None) -> int:
    """Images of ``split`` (``train`` or ``test``) of classification dataset ``name``, at most ``cap``."""
    train, test = CLASSIFICATION[name]
    return capped(train if split == "train" else test, cap)
