"""LOST object discovery (Siméoni et al., 2021), batched, and CorLoc evaluation on box datasets.

Paper: Table 3 (LOST CorLoc on VOC07 / VOC12 / COCO20k, with and without registers), §3.3.
Used in notebook 08 (LOST).

Written from the method's description (the registers paper §3.3 and LOST's paper, Siméoni et al. 2021):

1. features ``F`` (B, N, D): keys (DINO, DINOv2) or values (DeiT-III, CLIP) of the last block, heads
   concatenated, with the ``1 + R`` prefix tokens ([CLS] and registers) dropped through the
   :class:`~vitreg.core.tokens.TokenLayout` (dropping only one token is the classic mistake);
2. similarity ``A = F Fᵀ + bias`` (optionally on L2-normalised features; the paper adds a hand-tuned
   bias whose value it does not give, [TTR] sweeps it in [-1, 0] on normalised features);
3. degree of a patch = number of positive entries in its row, the patch itself left out (as LOST zeroes the
   diagonal); seed = the patch of lowest degree;
4. expansion: of the ``k = 100`` lowest-degree patches, keep those with ``A[seed, ·] > 0``;
   ``M = Σ`` of their rows of ``A``;
5. box = bounding box of the 4-connected component of ``{M > 0}`` that contains the seed, mapped back to
   pixels (patch units × pixels per patch). LOST's own input: each image at its own resolution, padded to
   a multiple of the patch size (:func:`discover`'s ``padded`` protocol, the default).

Two protocols give notebook 08's rows: plain LOST (the official code: the zoo's q/k/v of the last block,
dot product, bias 0) and [TTR]'s sweep (best of q/k/v x the last 4 blocks x biases, on normalised features,
chosen on the evaluation set); :class:`Setting` names one setting, :func:`discover` scores all of them
on the features of one forward pass.

Batched: ties broken the same way for a batch and for its images one by one (stable sort); the connected
component is a batched flood fill in torch (checked against ``scipy.ndimage.label`` in the tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np
import torch

from vitreg.data.planted_objects import planted_feature_maps, planted_objects
from vitreg.core.resize import resizable
from vitreg.core.tokens import TokenLayout

if TYPE_CHECKING:
    from vitreg.data.boxes import BoxDataset
    from vitreg.core.weights import LoadedModel

Which = Literal["q", "k", "v"]
LostProtocol = Literal["padded", "stretched"]


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

    Paper: Table 3 protocol ("hand-tuned bias", value not given). ``feats``: ``(B, N, D)`` patch features
    (prefix tokens dropped); ``normalize``: cosine similarity ([TTR]'s sweep), where a ``bias`` in [-1, 0] is
    a cut-off. Returns ``(B, N, N)`` float32.
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
    ``mask``: ``(B, h, w)`` bool; ``seed``: ``(B,)`` row-major index. Returns the ``(B, h, w)`` bool component.
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
        bias, normalize: see :func:`similarity`.
        scale: pixels per patch, to map boxes to pixels: a number, ``(sy, sx)``, or ``(B, 2)`` per image
            (:func:`vitreg.data.boxes.pixel_scale`).
        image_hw: ``(B, 2)`` original image heights and widths; boxes are clipped to them.
    """
    h, w = grid
    if feats.shape[1] != h * w:
        raise ValueError(f"{feats.shape[1]} patch features do not fill a {h}x{w} grid: drop the prefix tokens with "
                         "vitreg.measure.lost.patch_features (1 + R tokens for a model with R registers)")
    return lost_on_similarity(similarity(feats, bias=bias, normalize=normalize), grid, k_patches=k_patches,
                              scale=scale, image_hw=image_hw)


def lost_on_similarity(a: torch.Tensor, grid: tuple[int, int], *, k_patches: int = 100,
                       scale: float | Sequence[float] | torch.Tensor = 1.0,
                       image_hw: torch.Tensor | Sequence[Sequence[int]] | None = None) -> LostResult:
    """LOST from a ready ``(B, N, N)`` similarity (bias included): steps 3-5 of the module docstring.

    Paper: Table 3. The bias sweep (:func:`_score_batch`) computes each similarity once, scores all its biases
    together with :func:`bias_sweep_scores` and finds every setting's component in one flood fill; this function
    is the one-setting reference it is tested against.
    """
    degree, seed, similar, m = seed_scores(a, k_patches=k_patches)
    comp = seed_component((m > 0).reshape(a.shape[0], *grid), seed)
    boxes_patch = mask_to_box(comp)
    return LostResult(boxes=pixel_boxes(boxes_patch, scale, image_hw), boxes_patch=boxes_patch, seed=seed,
                      component=comp, degree=degree, n_similar=similar.sum(1))


def seed_scores(a: torch.Tensor, *, k_patches: int = 100) -> tuple[torch.Tensor, ...]:
    """Steps 3-4 of LOST on a ``(B, N, N)`` similarity (bias included): each image's seed and expansion score.

    Paper: Table 3 (LOST's seed: the patch of lowest degree; k = 100 potentials). Returns ``degree`` ``(B, N)``,
    ``seed`` ``(B,)``, ``similar`` ``(B, k)`` (the potentials kept) and the score ``m`` ``(B, N)`` whose positive
    part holds the object.
    """
    b, n, _ = a.shape
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
    return degree, seed, similar, m


def bias_sweep_scores(a: torch.Tensor, biases: Sequence[float], *, k_patches: int = 100
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 3-4 of LOST for every bias of a sweep on one ``(B, N, N)`` similarity WITHOUT bias: the seed and
    score of each bias, bit for bit those of :func:`seed_scores` on ``a + bias`` (the boxes do not change).

    Paper: Table 3, [TTR]'s bias sweep (notebooks 08 and 10). Used by the sweep's scoring (:func:`_score_batch`):
    the S biases of a (features, block, normalize) group share one pass over ``a`` and one op per step, instead
    of S copies ``a + bias`` and their passes.

    Exact because ``a + bias > 0`` iff ``a > -bias`` in IEEE float32: torch adds the bias rounded to float32
    (checked), the sum of two floats is correctly rounded and, with gradual underflow, zero only when it is
    exactly zero, so its sign is the exact sum's; negation is exact; NaN (in ``a`` or the bias) and ``inf - inf``
    compare False both ways; a bias of ``0`` or ``-0`` gives ``a > 0`` both ways. Where subnormals are flushed to
    zero (FTZ/DAZ: kernels built with fast math, ``torch.set_flush_denormal(True)``) the two could part for
    ``|a + bias| < 2^-126``, and only there. The score adds the bias to the gathered rows exactly as before
    and sums the same ``(k, N)`` block per image and bias (settings stacked along the batch).

    Args:
        a: ``(B, N, N)`` float similarity, no bias added (:func:`similarity`).
        biases: the S biases.
        k_patches: as in :func:`seed_scores`.

    Returns:
        ``seed`` ``(S, B)`` and the score ``m`` ``(S, B, N)`` whose positive part holds each bias's object.
    """
    b, n, _ = a.shape
    bias = torch.tensor(list(biases), dtype=a.dtype, device=a.device)  # rounded as `a + bias` rounds a float bias
    cut = -bias  # (S,)
    # degree: (B, N, S, N) comparisons laid out so that each row of a is read once for all biases, then counted in
    # int16 when N allows (sum copies its bool input to the result's type first: the narrower, the fewer bytes);
    # the patch itself left out as in seed_scores
    count = torch.int16 if n < 2**15 else torch.int32
    degree = ((a[:, :, None, :] > cut[:, None]).sum(-1, dtype=count)
              - (a.diagonal(dim1=1, dim2=2)[:, :, None] > cut).to(count))
    order = torch.sort(degree.permute(2, 0, 1), dim=-1, stable=True).indices  # (S, B, N)
    seed = order[..., 0]  # (S, B)
    potentials = order[..., : min(k_patches, n)]  # (S, B, k)
    rows = torch.arange(b, device=a.device)[None, :, None]
    similar = a[rows, seed[..., None], potentials] > cut[:, None, None]  # (S, B, k): A[seed, p] + bias > 0
    a_pot = a[rows, potentials]  # (S, B, k, N) rows of the potentials
    a_pot += bias[:, None, None, None]  # the same float32 sums as a + bias
    m = (a_pot * similar[..., None]).reshape(-1, *a_pot.shape[2:]).sum(1)  # (S * B, N), per image as before
    return seed, m.reshape(len(bias), b, n)


def pixel_boxes(boxes_patch: torch.Tensor, scale: float | Sequence[float] | torch.Tensor = 1.0,
                image_hw: torch.Tensor | Sequence[Sequence[int]] | None = None) -> torch.Tensor:
    """``(B, 4)`` patch boxes (end exclusive) in pixels on the CPU, clipped to ``image_hw`` when given (step 5)."""
    b = boxes_patch.shape[0]
    boxes = boxes_patch.cpu().double() * _scale_tensor(scale, b).repeat(1, 2)  # pixel boxes live on the CPU
    if image_hw is not None:
        hw = torch.as_tensor(np.asarray(image_hw, dtype=np.float64)).reshape(b, 2)
        boxes = torch.minimum(boxes, hw.flip(1).repeat(1, 2))
    return boxes


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
@dataclass(frozen=True)
class Setting:
    """One similarity setting of LOST: which features (q/k/v) of which block, dot or cosine, and a bias.

    Paper: Table 3. Plain LOST (the official code) is ``Setting(zoo's q/k/v, -1, False, 0.0)``; [TTR]'s sweep
    takes the best of q/k/v x the last 4 blocks x biases in [-1, 0] on normalised features.
    """

    which: Which
    block: int = -1
    normalize: bool = False
    bias: float = 0.0

    @property
    def name(self) -> str:
        """``k-1:dot+0.00`` (plain LOST with keys) or ``q-3:cos-0.40`` (queries of block -3, cosine, bias -0.4)."""
        return f"{self.which}{self.block}:{'cos' if self.normalize else 'dot'}{self.bias:+.2f}"


def ttr_settings(biases: Sequence[float], *, blocks: Sequence[int] = (-4, -3, -2, -1),
                 features: Sequence[Which] = ("q", "k", "v")) -> list[Setting]:
    """[TTR]'s sweep: every ``features x blocks x biases`` setting on L2-normalised features (Table 3, [TTR])."""
    return [Setting(f, int(b), True, float(bias)) for f in features for b in blocks for bias in biases]


@dataclass
class Discovery:
    """LOST boxes and CorLoc of one model on one box dataset, for every similarity setting.

    Attributes:
        dataset: dataset name (``VOC07``...).
        model: zoo key of the model.
        settings: the :class:`Setting` s scored (all on the features of ONE forward pass per image).
        corloc: setting name -> CorLoc in percent.
        boxes: setting name -> ``(n, 4)`` predicted boxes in pixels of the original images.
        hits: setting name -> ``(n,)`` bool, IoU >= 0.5 with some ground-truth box.
        names: image names, in the dataset's order.
        protocol: ``padded`` (LOST's: own resolution, padded) or ``stretched`` (one square size).
    """

    dataset: str
    model: str
    settings: list[Setting]
    corloc: dict[str, float]
    boxes: dict[str, np.ndarray]
    hits: dict[str, np.ndarray]
    names: list[str]
    protocol: str = "padded"

    def best(self, settings: Sequence[Setting]) -> tuple[str, float]:
        """The setting of ``settings`` with the highest CorLoc here (chosen ON the evaluation set) and its CorLoc."""
        name = max((s.name for s in settings), key=lambda k: self.corloc[k])
        return name, self.corloc[name]


def _score_batch(rec: Any, layout: TokenLayout, settings: Sequence[Setting], *, k_patches: int, scale: torch.Tensor,
                 hw: torch.Tensor) -> dict[str, torch.Tensor]:
    """Boxes of every setting on one batch: one similarity per (features, block, normalize), each bias's seed
    and score on it, then ONE flood fill and box extraction for all settings (their masks stacked along the
    batch; each image's component is its own, so the boxes are those of :func:`lost_on_similarity` per setting,
    in a handful of kernel launches and one copy to the CPU instead of one set per setting). The biases of a group
    share their passes (:func:`bias_sweep_scores`), bit for bit the per-setting :func:`seed_scores` on ``a + bias``."""
    groups: dict[tuple[str, int, bool], list[Setting]] = {}
    for s in settings:
        groups.setdefault((s.which, s.block, s.normalize), []).append(s)
    names, masks, seeds = [], [], []
    n = 0
    for (which, block, normalize), group in groups.items():
        a = similarity(patch_features(getattr(rec, which)[block], layout), normalize=normalize)
        seed, m = bias_sweep_scores(a, [s.bias for s in group], k_patches=k_patches)  # (S, B), (S, B, N)
        n = a.shape[0]
        names.extend(s.name for s in group)
        masks.append((m > 0).reshape(-1, *layout.grid))  # settings-major, the images of each inside
        seeds.append(seed.reshape(-1))
        del a
    if not names:
        return {}
    boxes_patch = mask_to_box(seed_component(torch.cat(masks), torch.cat(seeds)))
    boxes = pixel_boxes(boxes_patch, torch.as_tensor(scale).reshape(n, 2).repeat(len(names), 1),
                        torch.as_tensor(np.asarray(hw, dtype=np.float64)).reshape(n, 2).repeat(len(names), 1))
    return dict(zip(names, boxes.split(n)))


def discover(
    loaded: "LoadedModel",
    dataset: "BoxDataset",
    settings: Sequence[Setting],
    *,
    protocol: LostProtocol = "padded",
    k_patches: int = 100,
    batch_size: int = 16,
    limit: int | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> Discovery:
    """Run LOST with ``loaded`` on every image of ``dataset`` and score CorLoc for every setting.

    Paper: Table 3. One stream pass (:func:`vitreg.core.stream.stream`) captures q/k/v of every block the settings
    name, and every setting is scored on those features: the sweep costs no extra forward. ``padded``
    (LOST's protocol, the default): each image at its own resolution, padded to a multiple of the patch
    size, batched with images of the same padded size; the model is resized in place per size (load it at
    its native size for the exact position embeddings); boxes in original pixels, clipped to the image.
    ``stretched``: every image resized whole to the model's square size, boxes scaled back per image.
    Inside :func:`vitreg.measure.ttr.test_time_register` the extra token is dropped from the features at every size.
    ``batch_size`` is an upper bound (a size group may be smaller); ``num_workers`` reader processes
    (4-8 help on a GPU); ``limit``: the first images only.
    """
    from vitreg.data.boxes import LostImages, collate_lost, corloc_hits, pixel_scale, size_batches
    from vitreg.core.stream import stream

    if protocol == "stretched" and loaded.image_size[0] != loaded.image_size[1]:
        raise ValueError(f"load the model at a square size for the stretched protocol, got {loaded.image_size}")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    patch, size = loaded.spec.patch_size, loaded.image_size[0]
    images = LostImages(dataset, protocol=protocol, patch=patch, size=size if protocol == "stretched" else None,
                        mean=loaded.mean, std=loaded.std)
    loader = torch.utils.data.DataLoader(images, batch_sampler=size_batches(
        dataset, n, patch=patch, batch_size=batch_size, protocol=protocol), num_workers=num_workers,
        collate_fn=collate_lost)
    boxes: dict[str, list[torch.Tensor]] = {s.name: [] for s in settings}
    gts, names, order = [], [], []
    blocks = sorted({s.block for s in settings})
    extra = loaded.layout.num_extra  # a test-time register ([TTR]) stays appended at every size; dropped here
    with resizable(loaded) as resize_to:
        def sized(batches: Iterable[Any]) -> Iterator[Any]:  # resize the model before each batch is forwarded
            for batch in batches:
                resize_to(tuple(batch[0].shape[-2:]))
                yield batch

        for batch in stream(loaded, sized(loader), batched=True, total=n, progress=progress, qkv=blocks, to=None,
                            desc=f"LOST {loaded.spec.key} on {dataset.name}"):
            x, hw, gt, batch_names, idx = batch.items
            scale = pixel_scale(hw, patch=patch, protocol=protocol, size=size)
            for name, b in _score_batch(batch.rec, loaded.layout.with_extra(extra), settings, k_patches=k_patches,
                                        scale=scale, hw=hw).items():
                boxes[name].append(b)
            gts.extend(gt)
            names.extend(batch_names)
            order.extend(idx)
    perm = np.argsort(np.asarray(order, dtype=np.int64), kind="stable")  # back to the dataset's order
    out_boxes = {k: (torch.cat(v).numpy()[perm] if v else np.zeros((0, 4))) for k, v in boxes.items()}
    gts = [gts[i] for i in perm]
    hits = {k: corloc_hits(b, gts) for k, b in out_boxes.items()}
    return Discovery(dataset=dataset.name, model=loaded.spec.key, settings=list(settings),
                     corloc={k: 100.0 * float(h.mean()) if len(h) else float("nan") for k, h in hits.items()},
                     boxes=out_boxes, hits=hits, names=[names[i] for i in perm], protocol=protocol)


# --- the paper's Table 3, and ours beside it ------------------------------------------------------
TABLE3_DATASETS = ("voc07", "voc12", "coco20k")
#: The two protocols of notebook 08's rows: plain LOST (the official code) and [TTR]'s best-of-sweep.
PROTOCOLS = ("plain", "ttr_sweep")


def model_role(key: str, registers: int, family: str) -> str:
    """Where a model's CorLoc goes in the results file: ``no_reg``/``reg`` (DINOv2), ``dino``, ``deit3``, ``clip``."""
    if family == "dinov2":
        return "reg" if registers else "no_reg"
    return {"dino": "dino", "deit3": "deit3", "clip": "clip"}.get(family, key)


def offset_features(feats: torch.Tensor, offset: float = 3.0, *, seed: int = 0) -> torch.Tensor:
    """Add one shared direction of length ``offset`` to every token: every dot product turns positive.

    Paper: Table 3 protocol (why a bias is added). Plain LOST (dot, bias 0) then returns the whole image;
    a negative bias on cosine similarity still separates the object ([TTR]'s sweep).
    """
    gen = torch.Generator().manual_seed(seed)
    u = torch.nn.functional.normalize(torch.randn(feats.shape[-1], generator=gen), dim=0)
    return feats + offset * u


def planted_corloc(n_images: int = 32, grid: tuple[int, int] = (14, 14), *, num_reg: int = 4,
                   biases: Sequence[float] = (-0.9, -0.5, 0.0), seed: int = 0) -> dict[str, float]:
    """CorLoc of LOST on planted feature maps: the mechanism behind Table 3, with a known answer.

    Each image has one planted object (a block of 3-7 patches a side, :func:`vitreg.planting.planted_objects`);
    the tokens carry ``1 + num_reg`` high-norm prefix tokens that must be sliced off. ``clean``: LOST should
    find every object (100). ``artifact``: one background patch per image is turned into an artifact token,
    dissimilar to all (what a high-norm outlier is to LOST): it captures the seed, and CorLoc collapses.
    ``offset_plain`` / ``offset_sweep``: the clean maps plus a shared positive offset (:func:`offset_features`):
    plain LOST returns the whole image; the best bias of ``biases`` on normalised features finds the objects.
    Returns CorLoc in % for each of the four.
    """
    from vitreg.data.boxes import corloc

    boxes, artifacts = planted_objects(n_images, grid, seed=seed)
    layout = TokenLayout(1, num_reg, grid)
    gt = np.asarray(boxes, dtype=np.float64)[:, None]
    clean = patch_features(planted_feature_maps(boxes, grid, num_prefix=layout.num_prefix, seed=seed), layout)
    art = lost(patch_features(planted_feature_maps(boxes, grid, num_prefix=layout.num_prefix, artifact=artifacts,
                                                   seed=seed), layout), grid)
    shifted = offset_features(clean, seed=seed)
    return {"clean": corloc(lost(clean, grid).boxes, gt), "artifact": corloc(art.boxes, gt),
            "offset_plain": corloc(lost(shifted, grid).boxes, gt),
            "offset_sweep": max(corloc(lost(shifted, grid, normalize=True, bias=b).boxes, gt) for b in biases)}


# --- notebook 08: datasets, settings and the Table 3 rows of a run --------------------------------
def corloc_numbers(results: dict[tuple[str, str], Discovery], models: Sequence[str], datasets: Sequence[str], *,
                   plain: dict[str, Setting], sweep: Sequence[Setting], root: Any) -> dict[str, Any]:
    """Notebook 08's Table 3 rows, one block per protocol: ``{"plain": rows, "ttr_sweep": rows}``.

    Paper: Table 3 (plain LOST: the official code's setting) and [TTR] (best of ``sweep`` per model and
    dataset, chosen on the evaluation set). Each block holds ``by_model`` and the rows of the roles
    ``no_reg``/``reg``/``dino``/... (:func:`model_role`, the first model of ``models`` in a role): the CorLoc
    (%) per dataset (``{"skipped": why}`` when not run), the number of images, and for the sweep the
    winning setting (``voc07_setting``...). A Table 3 role no model took has every dataset skipped.
    ``plain``: model key -> its plain LOST :class:`Setting` (the zoo's q/k/v of the last block, dot, bias 0).
    """
    from vitreg.core.models import get_spec

    all_sets = list(dict.fromkeys([*datasets, "VOC07", "VOC12", "COCO20k"]))
    out: dict[str, Any] = {}
    for protocol in PROTOCOLS:
        block: dict[str, Any] = {"by_model": {}}
        for key in models:
            spec = get_spec(key)
            row: dict[str, Any] = {"model": key, "features": plain[key].which if protocol == "plain" else "best of q/k/v"}
            for name in all_sets:
                d, ds = results.get((key, name)), name.lower()
                if d is None:
                    why = f"{name} not found under {root}" if name in datasets else f"{name} not in `datasets`"
                    row[ds] = {"skipped": why}
                    continue
                if protocol == "plain":
                    row[ds] = d.corloc[plain[key].name]
                elif not sweep:
                    row[ds] = {"skipped": "no sweep settings (bias_sweep, sweep_blocks or sweep_features empty)"}
                else:
                    row[f"{ds}_setting"], row[ds] = d.best(sweep)
                row[f"{ds}_n_images"] = len(d.names)
            block["by_model"][key] = row
            block.setdefault(model_role(key, spec.registers, spec.family), row)
        for role in ("no_reg", "reg", "dino"):  # rows of Table 3 this run did not compute
            block.setdefault(role, {n: {"skipped": f"no {role} model in `models`"} for n in TABLE3_DATASETS})
        block["register_gain"] = register_gain(block["by_model"], models)
        out[protocol] = block
    return out


def bias_curves(d: Discovery, sweep: Sequence[Setting]) -> dict[str, dict[str, float]]:
    """CorLoc against the bias (``"-0.50"``: text keys, as in the results file), one curve per features and
    block (``k-1``...) of the sweep (Table 3, [TTR]; the bias-sweep figure of notebook 08)."""
    curves: dict[str, dict[str, float]] = {}
    for s in sweep:
        curves.setdefault(f"{s.which}{s.block}", {})[f"{s.bias:+.2f}"] = d.corloc[s.name]
    return curves


def register_gain(rows: dict[str, dict[str, Any]], models: Sequence[str]) -> dict[str, Any]:
    """CorLoc with registers minus without, per Table 3 dataset, for the first model of ``models`` listed
    with its register twin (:func:`vitreg.core.models.register_pairs`).

    Paper: Table 3 (DINOv2-L +20.1 / +19.8 / +15.1 points; [TTR], public pair: +24.0 / +23.4 / +16.9).

    ``rows``: a ``by_model`` block of :func:`corloc_numbers`. Returns ``{"model": <register model>, "voc07":
    gain or {"skipped": why}, ...}`` (no ``model`` without a pair).
    """
    from vitreg.core.models import register_pairs

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
    """What :func:`planted_corloc` must recover: every clean object, a collapse with artifact tokens, and on
    offset features plain LOST's miss and the sweep's hit (the two protocols of Table 3's rows)."""
    return {f"LOST finds every planted object (CorLoc {planted['clean']:.0f}%)": planted["clean"] == 100.0,
            f"one artifact token per image breaks LOST (CorLoc {planted['artifact']:.0f}% < 50%)":
                planted["artifact"] < 50.0,
            f"a shared offset makes plain LOST return the whole image (CorLoc {planted['offset_plain']:.0f}% < 50%)":
                planted["offset_plain"] < 50.0,
            f"a negative bias on normalised features finds the objects again (CorLoc {planted['offset_sweep']:.0f}%)":
                planted["offset_sweep"] == 100.0}


def lost_steps(feats: torch.Tensor, grid: tuple[int, int], *, k_patches: int = 100, bias: float = 0.0,
               normalize: bool = False) -> dict[str, Any]:
    """LOST's intermediate quantities for ONE image (notebook 08's three-step diagram). Paper: Table 3, §3.3.

    ``feats``: ``(N, D)`` or ``(1, N, D)`` patch features; the rest as for :func:`lost` (same seed and box). Returns
    a dict on the CPU: ``similarity`` ``(N, N)`` (step 1); ``degree`` ``(N,)``, ``seed`` (step 2); ``potentials`` (k
    lowest-degree patches), ``expanded`` (those similar to the seed), ``score`` (sum of their rows), ``component``
    ``(h, w)`` (seed's part of ``score > 0``), ``box_patch`` ``(x0, y0, x1, y1)`` patches, end exclusive; ``grid``.
    """
    if (f := feats if feats.ndim == 3 else feats[None]).shape[0] != 1:
        raise ValueError(f"lost_steps takes one image, got a batch of {f.shape[0]}")
    a = similarity(f, bias=bias, normalize=normalize)
    res, a0 = lost_on_similarity(a, grid, k_patches=k_patches), a[0].cpu()
    seed, potentials = int(res.seed[0]), torch.sort(res.degree[0].cpu(), stable=True).indices[:k_patches]
    expanded = potentials[a0[seed, potentials] > 0]
    return {"similarity": a0, "degree": res.degree[0].cpu(), "seed": seed, "potentials": potentials,
            "expanded": expanded, "score": a0[expanded].sum(0), "component": res.component[0].cpu(),
            "box_patch": res.boxes_patch[0].cpu(), "grid": tuple(grid)}
