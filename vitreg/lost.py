"""LOST object discovery (Siméoni et al., 2021), batched, and CorLoc evaluation on box datasets.

Paper: Table 3 (LOST CorLoc on VOC07 / VOC12 / COCO20k, with and without registers), §3.3.
Used in notebook 08 (LOST).

Written from the method's description (the registers paper §3.3 and ``../shared/paper-notes.md``):

1. features ``F`` (B, N, D): keys (DINO, DINOv2) or values (DeiT-III, CLIP) of the last block, heads
   concatenated, with the ``1 + R`` prefix tokens ([CLS] and registers) dropped through the
   :class:`~vitreg.tokens.TokenLayout` (dropping only one token is the classic mistake);
2. similarity ``A = F Fᵀ + bias`` (optionally on L2-normalised features; the paper adds a hand-tuned
   bias whose value it does not give, [TTR] sweeps it in [-1, 0] on normalised features);
3. degree of a patch = number of positive entries in its row, the patch itself left out (as LOST zeroes the
   diagonal); seed = the patch of lowest degree;
4. expansion: of the ``k = 100`` lowest-degree patches, keep those with ``A[seed, ·] > 0``;
   ``M = Σ`` of their rows of ``A``;
5. box = bounding box of the 4-connected component of ``{M > 0}`` that contains the seed, mapped back to
   pixels (patch units × pixels per patch).

Everything is batched: one similarity matrix per image in one tensor, ties broken the same way for
a batch and for its images one by one (stable sort), and the connected component is a batched flood
fill in torch (checked against ``scipy.ndimage.label`` in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np
import torch

from vitreg.planting import planted_feature_maps, planted_objects
from vitreg.tokens import TokenLayout

if TYPE_CHECKING:
    from PIL import Image

    from vitreg.boxes import BoxDataset
    from vitreg.weights import LoadedModel

Which = Literal["q", "k", "v"]


@dataclass
class LostResult:
    """LOST's output for a batch of B images on an ``(h, w)`` patch grid.

    Attributes:
        boxes: ``(B, 4)`` float64 ``(x0, y0, x1, y1)`` in pixels (of the original images when scales were
            given), on the CPU; the other fields stay on the features' device.
        boxes_patch: ``(B, 4)`` long ``(x0, y0, x1, y1)`` in patch units, end exclusive.
        seed: ``(B,)`` index of the seed patch (row-major in the grid).
        component: ``(B, h, w)`` bool, the seed's connected component (the discovered object).
        degree: ``(B, N)`` number of positive correlations of each patch with the other patches.
        n_similar: ``(B,)`` number of patches used in the seed expansion.
    """

    boxes: torch.Tensor
    boxes_patch: torch.Tensor
    seed: torch.Tensor
    component: torch.Tensor
    degree: torch.Tensor
    n_similar: torch.Tensor


def similarity(feats: torch.Tensor, *, bias: float = 0.0, normalize: bool = False) -> torch.Tensor:
    """Patch-to-patch similarity ``A = F Fᵀ + bias`` per image.

    Paper: Table 3 protocol ("hand-tuned bias" added to the similarity; its value is not given).

    Args:
        feats: ``(B, N, D)`` patch features (prefix tokens already dropped).
        bias: added to every entry; with ``normalize`` a value in [-1, 0] is a cosine cut-off.
        normalize: L2-normalise the features first (cosine similarity), as [TTR]'s sweep.

    Returns:
        ``(B, N, N)`` float32 similarity.
    """
    if feats.ndim != 3:
        raise ValueError(f"expected patch features (B, N, D), got shape {tuple(feats.shape)}")
    f = feats.float()
    if normalize:
        f = torch.nn.functional.normalize(f, dim=-1)
    return f @ f.transpose(1, 2) + bias


def seed_component(mask: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """The 4-connected component of ``mask`` that contains each image's seed patch (batched flood fill).

    The seed patch itself is always part of the result, even if ``mask`` is False there (LOST raises in
    that case; it can only happen with a bias so negative that the seed is dissimilar to itself).

    Args:
        mask: ``(B, h, w)`` bool.
        seed: ``(B,)`` row-major index of the seed patch.

    Returns:
        ``(B, h, w)`` bool component.
    """
    b, h, w = mask.shape
    comp = torch.zeros_like(mask, dtype=torch.bool)
    comp.view(b, -1)[torch.arange(b, device=mask.device), seed] = True
    allowed = mask.bool() | comp
    for _ in range(h * w):
        grown = comp.clone()
        grown[:, 1:, :] |= comp[:, :-1, :]
        grown[:, :-1, :] |= comp[:, 1:, :]
        grown[:, :, 1:] |= comp[:, :, :-1]
        grown[:, :, :-1] |= comp[:, :, 1:]
        grown &= allowed
        if torch.equal(grown, comp):
            break
        comp = grown
    return comp


def mask_to_box(component: torch.Tensor) -> torch.Tensor:
    """Bounding box ``(x0, y0, x1, y1)`` of each non-empty ``(h, w)`` mask, in patch units, end exclusive."""
    b, h, w = component.shape
    if not component.flatten(1).any(1).all():
        raise ValueError("every mask must have at least one True patch")
    rows, cols = component.any(2), component.any(1)  # (B, h), (B, w)
    y0 = rows.int().argmax(1)
    y1 = h - rows.flip(1).int().argmax(1)
    x0 = cols.int().argmax(1)
    x1 = w - cols.flip(1).int().argmax(1)
    return torch.stack([x0, y0, x1, y1], dim=1).long()


def lost(
    feats: torch.Tensor,
    grid: tuple[int, int],
    *,
    k_patches: int = 100,
    bias: float = 0.0,
    normalize: bool = False,
    scale: float | Sequence[float] | torch.Tensor = 1.0,
    image_hw: torch.Tensor | Sequence[Sequence[int]] | None = None,
) -> LostResult:
    """LOST on a batch of patch-feature maps.

    Paper: Table 3 (LOST with the last block's keys/values; k = 100).

    Args:
        feats: ``(B, N, D)`` patch features, ``N = h * w`` row-major (use :func:`patch_features` to drop
            the [CLS] and register tokens).
        grid: ``(h, w)`` patch grid.
        k_patches: how many lowest-degree patches the seed expansion looks at (100 in LOST).
        bias: added to the similarity (see :func:`similarity`).
        normalize: cosine instead of dot-product similarity.
        scale: pixels per patch, to map boxes to pixels: a number, ``(sy, sx)``, or ``(B, 2)`` per image
            (for resized images: ``patch_size * original / resized``).
        image_hw: ``(B, 2)`` original image heights and widths; boxes are clipped to them.

    Returns:
        :class:`LostResult`.
    """
    h, w = grid
    b, n, _ = feats.shape
    if n != h * w:
        raise ValueError(f"{n} patch features do not fill a {h}x{w} grid: drop the prefix tokens with "
                         "vitreg.lost.patch_features (1 + R tokens for a model with R registers)")
    a = similarity(feats, bias=bias, normalize=normalize)
    # degree = positive correlations with OTHER patches (LOST zeroes the diagonal); with a negative bias a
    # patch can be dissimilar to itself, and counting itself would reorder the seeds
    degree = (a > 0).sum(-1) - (a.diagonal(dim1=1, dim2=2) > 0).long()  # (B, N)
    order = torch.sort(degree, dim=1, stable=True).indices
    seed = order[:, 0]
    potentials = order[:, : min(k_patches, n)]  # (B, k)
    rows = torch.arange(b, device=a.device)
    a_seed = a[rows, seed]  # (B, N)
    similar = torch.gather(a_seed, 1, potentials) > 0  # (B, k)
    a_pot = torch.gather(a, 1, potentials[:, :, None].expand(-1, -1, n))  # (B, k, N)
    m = (a_pot * similar[:, :, None]).sum(1)  # (B, N)
    comp = seed_component((m > 0).reshape(b, h, w), seed)
    boxes_patch = mask_to_box(comp)
    boxes = boxes_patch.cpu().double() * _scale_tensor(scale, b).repeat(1, 2)  # pixel boxes live on the CPU
    if image_hw is not None:
        hw = torch.as_tensor(np.asarray(image_hw, dtype=np.float64)).reshape(b, 2)
        boxes = torch.minimum(boxes, hw.flip(1).repeat(1, 2))
    return LostResult(boxes=boxes, boxes_patch=boxes_patch, seed=seed, component=comp, degree=degree,
                      n_similar=similar.sum(1))


def _scale_tensor(scale: float | Sequence[float] | torch.Tensor, b: int) -> torch.Tensor:
    """Pixels per patch as ``(B, 2)`` ``(sx, sy)`` (x first, like the boxes)."""
    s = torch.as_tensor(np.asarray(scale, dtype=np.float64))
    if s.ndim == 0:
        s = s.repeat(2)
    if s.ndim == 1:
        if s.numel() != 2:
            raise ValueError("scale must be a number, (sy, sx) or (B, 2)")
        s = s[None].expand(b, 2)
    return s.flip(-1).reshape(b, 2)  # (sy, sx) -> (sx, sy)


def patch_features(tokens: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """Drop the ``1 + R`` prefix tokens (and any extra tokens) of ``(B, T, D)`` features.

    Paper: Table 3 protocol ("drop 1 + R prefix tokens, not 1").
    """
    return layout.patches(tokens)


# --- LOST over a dataset (notebook 08) -----------------------------------------------------------
@dataclass
class Discovery:
    """LOST boxes and CorLoc of one model on one box dataset, for every similarity setting.

    Attributes:
        dataset: dataset name (``VOC07``...).
        model: zoo key of the model.
        settings: the ``(normalize, bias)`` settings, in order; their names are :func:`setting_name`.
        corloc: setting name -> CorLoc in percent.
        boxes: setting name -> ``(n, 4)`` predicted pixel boxes.
        hits: setting name -> ``(n,)`` bool, IoU >= 0.5 with some ground-truth box.
        names: image names, in order.
    """

    dataset: str
    model: str
    settings: list[tuple[bool, float]]
    corloc: dict[str, float]
    boxes: dict[str, np.ndarray]
    hits: dict[str, np.ndarray]
    names: list[str]


def setting_name(normalize: bool, bias: float) -> str:
    """``dot+0.00`` (LOST's own: raw dot product, no bias) or ``cos-0.20`` (normalised, bias -0.2)."""
    return f"{'cos' if normalize else 'dot'}{bias:+.2f}"


def resize_for_lost(image: "Image.Image", size: int) -> tuple["Image.Image", tuple[int, int]]:
    """Resize the WHOLE image (no crop) to ``size x size``; return it and the original ``(H, W)``.

    A centre crop (what classification preprocessing does) would cut objects out of the box labels;
    LOST itself pads each image to a multiple of the patch size at full resolution, which needs a model
    per image size. We resize to one square size so that images batch; boxes are mapped back to the
    original pixels with per-image scales (the aspect ratio changes; see the notebook's pitfalls).
    """
    from PIL import Image

    return image.resize((size, size), Image.Resampling.BICUBIC), (image.height, image.width)


class _LostImages(torch.utils.data.Dataset):
    """Images of a box dataset, resized whole and normalised, with original sizes, boxes and names."""

    def __init__(self, dataset: "BoxDataset", n: int, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.dataset, self.n, self.size, self.mean, self.std = dataset, n, size, tuple(mean), tuple(std)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, tuple[int, int], np.ndarray, str]:
        from vitreg.images import preprocess

        s = self.dataset[i]
        img, hw = resize_for_lost(s.image, self.size)
        return preprocess([img], size=self.size, mean=self.mean, std=self.std)[0], hw, s.boxes, s.name


def _collate_lost(items: list) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray], list[str]]:
    x, hw, boxes, names = zip(*items)
    return torch.stack(x), torch.tensor(hw, dtype=torch.float64), list(boxes), list(names)


def discover(
    loaded: "LoadedModel",
    dataset: "BoxDataset",
    *,
    which: Which | None = None,
    block: int = -1,
    k_patches: int = 100,
    settings: Sequence[tuple[bool, float]] = ((False, 0.0),),
    batch_size: int = 16,
    limit: int | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> Discovery:
    """Run LOST with ``loaded`` on every image of ``dataset`` and score CorLoc.

    Paper: Table 3. Runs over :func:`vitreg.stream.stream` (one capture per batch, so the keys of a whole
    dataset never pile up in memory); LOST runs batched on the model's device. Longer than 60 lines
    because most of it is this docstring and the per-setting bookkeeping of the bias sweep.

    Args:
        loaded: the model, loaded at the square ``image_size`` to use (a multiple of its patch size).
        dataset: a :mod:`vitreg.boxes` dataset.
        which: ``"q"``, ``"k"`` or ``"v"``; None takes the zoo's choice (keys for DINO/DINOv2, values for
            DeiT-III/CLIP).
        block: which block's q/k/v (-1: the last, as in the paper).
        k_patches: LOST's k (100).
        settings: ``(normalize, bias)`` pairs scored on the same features (the bias sweep).
        batch_size: images per forward pass.
        limit: first ``limit`` images only.
        num_workers: processes that read and resize images (a ``DataLoader``); 0 reads them in this one.
            On a GPU, image decoding is the bottleneck: 4-8 workers help.
        progress: show a tqdm bar.

    Returns:
        :class:`Discovery`.
    """
    from vitreg.boxes import corloc_hits
    from vitreg.stream import stream

    which = which or loaded.spec.lost_features
    if which not in ("q", "k", "v"):
        raise ValueError(f"which must be 'q', 'k' or 'v', got {which!r}")
    size = loaded.image_size[0]
    if loaded.image_size[0] != loaded.image_size[1]:
        raise ValueError(f"load the model at a square size for LOST, got {loaded.image_size}")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    names = [setting_name(nm, b) for nm, b in settings]
    boxes: dict[str, list[torch.Tensor]] = {k: [] for k in names}
    gts, img_names = [], []
    patch = loaded.spec.patch_size
    loader = torch.utils.data.DataLoader(
        _LostImages(dataset, n, size, loaded.mean, loaded.std), batch_size=batch_size, shuffle=False,
        num_workers=num_workers, collate_fn=_collate_lost)
    for batch in stream(loaded, loader, batched=True, total=n, progress=progress, qkv=[block], to=None,
                        desc=f"LOST {loaded.spec.key} on {dataset.name}"):
        _, hw, gt, batch_names = batch.items
        scale = patch * hw / size  # pixels of the original image per patch, (sy, sx)
        feats = patch_features(getattr(batch.rec, which)[block], loaded.layout)
        for name, (normalize, bias) in zip(names, settings):
            res = lost(feats, loaded.layout.grid, k_patches=k_patches, bias=bias, normalize=normalize,
                       scale=scale, image_hw=hw)
            boxes[name].append(res.boxes)
        gts.extend(gt)
        img_names.extend(batch_names)
    out_boxes = {k: torch.cat(v).numpy() if v else np.zeros((0, 4)) for k, v in boxes.items()}
    hits = {k: corloc_hits(b, gts) for k, b in out_boxes.items()}
    return Discovery(dataset=dataset.name, model=loaded.spec.key, settings=list(settings),
                     corloc={k: 100.0 * float(h.mean()) if len(h) else float("nan") for k, h in hits.items()},
                     boxes=out_boxes, hits=hits, names=img_names)


# --- the paper's Table 3, and ours beside it ------------------------------------------------------
TABLE3_DATASETS = ("voc07", "voc12", "coco20k")


def model_role(key: str, registers: int, family: str) -> str:
    """Where a model's CorLoc goes in the results file: ``no_reg``/``reg`` (DINOv2), ``dino``, ``deit3``, ``clip``."""
    if family == "dinov2":
        return "reg" if registers else "no_reg"
    return {"dino": "dino", "deit3": "deit3", "clip": "clip"}.get(family, key)


def planted_corloc(n_images: int = 32, grid: tuple[int, int] = (14, 14), *, num_reg: int = 4,
                   seed: int = 0) -> dict[str, float]:
    """CorLoc of LOST on planted feature maps: the mechanism behind Table 3, with a known answer.

    Each image has one planted object (a block of 3-7 patches a side, :func:`vitreg.planting.planted_objects`);
    the tokens carry ``1 + num_reg`` high-norm prefix tokens that must be sliced off. ``clean``: LOST should
    find every object (100). ``artifact``: one background patch per image is turned into an artifact token,
    dissimilar to all (what a high-norm outlier is to LOST): it captures the seed, and CorLoc collapses.
    Registers remove such tokens from the patches, which is why they help LOST.

    Returns:
        ``{"clean": %, "artifact": %}``.
    """
    from vitreg.boxes import corloc

    boxes, artifacts = planted_objects(n_images, grid, seed=seed)
    layout = TokenLayout(1, num_reg, grid)
    gt = np.asarray(boxes, dtype=np.float64)[:, None]
    clean = lost(patch_features(planted_feature_maps(boxes, grid, num_prefix=layout.num_prefix, seed=seed), layout), grid)
    art = lost(patch_features(planted_feature_maps(boxes, grid, num_prefix=layout.num_prefix, artifact=artifacts,
                                                   seed=seed), layout), grid)
    return {"clean": corloc(clean.boxes, gt), "artifact": corloc(art.boxes, gt)}


# --- notebook 08: datasets, settings and the Table 3 rows of a run --------------------------------
def open_datasets(names: Sequence[str], root: Any, *, image_size: int, limit: int | None,
                  seed: int = 0) -> dict[str, "BoxDataset"]:
    """The box datasets of ``names`` that are found under ``root`` (Paper: Table 3: VOC07, VOC12, COCO20k).

    A dataset that is not found is left out (the results then mark its CorLoc skipped). Images are
    read at most at ``image_size x 4/3 image_size`` (LOST then resizes them whole to ``image_size``).
    """
    from vitreg.boxes import open_box_dataset

    sets = {}
    for name in names:
        ds = open_box_dataset(name, root, limit=limit, image_size=(image_size, int(image_size * 4 / 3)), seed=seed)
        if ds is not None:
            sets[name] = ds
            print(f"{name}: {len(ds)} images")
    return sets


def sweep_settings(normalize: bool, bias: float, bias_sweep: Sequence[float]) -> list[tuple[bool, float]]:
    """The main ``(normalize, bias)`` setting first, then the bias sweep on normalised features.

    Paper: Table 3 (a hand-tuned bias, value not given); [TTR] sweeps it on normalised features.
    """
    return [(normalize, bias)] + [(True, b) for b in bias_sweep if (True, b) != (normalize, bias)]


def corloc_numbers(results: dict[tuple[str, str], Discovery], models: Sequence[str], datasets: Sequence[str], *,
                   main: str, which: Which | None, root: Any) -> dict[str, Any]:
    """Notebook 08's Table 3 rows: ``by_model`` and the rows of the roles ``no_reg``/``reg``/``dino``/...

    Paper: Table 3. Each row holds the CorLoc (%) of the ``main`` setting per dataset (``voc07``...,
    ``{"skipped": why}`` when the dataset was not run) and the number of images. A role takes the first
    model of ``models`` in it (:func:`model_role`); a Table 3 role no model took has every dataset skipped.
    """
    from vitreg.models import get_spec

    out: dict[str, Any] = {"by_model": {}}
    all_sets = list(dict.fromkeys([*datasets, "VOC07", "VOC12", "COCO20k"]))
    for key in models:
        spec = get_spec(key)
        row: dict[str, Any] = {"model": key, "features": which or spec.lost_features}
        for name in all_sets:
            d = results.get((key, name))
            why = f"{name} not found under {root}" if name in datasets else f"{name} not in `datasets`"
            row[name.lower()] = d.corloc[main] if d is not None else {"skipped": why}
            if d is not None:
                row[f"{name.lower()}_n_images"] = len(d.names)
        out["by_model"][key] = row
        out.setdefault(model_role(key, spec.registers, spec.family), row)
    for role in ("no_reg", "reg", "dino"):  # rows of Table 3 this run did not compute
        out.setdefault(role, {n: {"skipped": f"no {role} model in `models`"} for n in TABLE3_DATASETS})
    return out


def register_gain(rows: dict[str, dict[str, Any]], models: Sequence[str]) -> dict[str, Any]:
    """CorLoc with registers minus without, per Table 3 dataset, for the first model of ``models`` listed
    with its register twin (:func:`vitreg.models.register_pairs`).

    Paper: Table 3 (DINOv2-L +20.1 / +19.8 / +15.1 points; [TTR], public pair: +24.0 / +23.4 / +16.9).

    Args:
        rows: ``by_model`` of :func:`corloc_numbers`.
        models: the run's models.

    Returns:
        ``{"model": <register model>, "voc07": gain or {"skipped": why}, ...}`` (no ``model`` without a pair).
    """
    from vitreg.models import register_pairs

    pairs = register_pairs(list(models))
    if not pairs:
        return {ds: {"skipped": "no model listed with its register twin in `models`"} for ds in TABLE3_DATASETS}
    a, b = pairs[0]
    out: dict[str, Any] = {"model": b}
    for ds in TABLE3_DATASETS:
        x, y = rows[a][ds], rows[b][ds]
        if isinstance(x, dict) or isinstance(y, dict):
            out[ds] = x if isinstance(x, dict) else y
        else:
            out[ds] = y - x
    return out


def planted_corloc_checks(planted: dict[str, float]) -> dict[str, bool]:
    """What :func:`planted_corloc` must recover: every clean object, and a collapse with artifact tokens."""
    return {f"LOST finds every planted object (CorLoc {planted['clean']:.0f}%)": planted["clean"] == 100.0,
            f"one artifact token per image breaks LOST (CorLoc {planted['artifact']:.0f}% < 50%)":
                planted["artifact"] < 50.0}
