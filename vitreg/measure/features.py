"""Frozen features for the probes, one forward pass per batch, cached on disk (:mod:`vitreg.utils.cache`).

Paper: Fig. 5b (F5 patch tokens, pixels and pre-LN norms), Table 1 / App. G Table 6 (F6 single tokens),
Table 2 (dense and image-level features). Used in notebooks 05, 06 and 09.

Planted outliers (smoke runs) are not a parameter here: a caller wraps a call in a planting context
(``vitreg.planting.planted_outlier_share``), supplied from outside; the functions here read the model's
experiment context (:mod:`vitreg.core.context`) and pass its fingerprint to the cache key explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from vitreg.core import context
from vitreg.utils.cache import feature_key, hash_indices, model_fields
from vitreg.core.capture import Recording
from vitreg.data.dense import resize_crop_target
from vitreg.utils.distributed import cached_features  # torchrun: the ranks share the missing chunks
from vitreg.core.extract import extract
from vitreg.measure.norms import outlier_threshold
from vitreg.core.stream import stream

# ---------------------------------------------------------------------------------------------------
# Features for the probes: one forward pass per batch, cached on disk (vitreg.utils.cache)
# ---------------------------------------------------------------------------------------------------
def outlier_cut(loaded, threshold: float | None = None) -> float | None:
    """The absolute outlier cut-off for ``loaded``: ``threshold`` if given, else the model's own (150 for
    DINOv2, Fig. 3), else None (the relative rule mean + 3 std, applied per extraction chunk)."""
    return threshold if threshold is not None else loaded.spec.threshold


#: Block whose output norms (pre-LN) mark the outliers, per zoo key; -1 (the last block) for the others.
#: [TTR] detects DINOv2-L's outliers at the second-to-last block (22 of 24): its maximum norm drops at the
#: last block's output, so the last block would miss outliers there.
DETECTION_BLOCKS: dict[str, int] = {"dinov2_l": -2}


def detection_block(loaded, block: int | None = None) -> int:
    """The block whose pre-LN output norms mark ``loaded``'s outliers: ``block`` if given, else
    :data:`DETECTION_BLOCKS` (``-2`` for DINOv2-L, [TTR]), else ``-1``.

    Paper: Table 1 (outlier tokens), [TTR] §3 (detection block of DINOv2-L).
    """
    key = getattr(getattr(loaded, "spec", None), "key", None)
    return int(block) if block is not None else DETECTION_BLOCKS.get(key, -1)



def patch_pixels(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The pixels under every patch token: the reconstruction probe's target.

    Paper: Fig. 5b ("reconstruct the input patch").

    Args:
        images: ``(B, 3, H, W)`` images as fed to the model (normalised with its mean/std).
        patch_size: patch side ``p``; ``H`` and ``W`` must be multiples of it.

    Returns:
        ``(B, N, 3*p*p)`` in the patch embedding's row-major order, channels first within a patch.
    """
    if images.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) images, got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"image {h}x{w} is not a multiple of the patch size {patch_size}")
    cols = F.unfold(images.float(), kernel_size=patch_size, stride=patch_size)  # (B, C*p*p, N)
    return cols.transpose(1, 2).contiguous()



def sample_tokens(patches: torch.Tensor, outlier: torch.Tensor, k: int, *, seed: int = 0,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Draw ``k`` random normal and ``k`` random outlier patch tokens per image (with replacement).

    Paper: Table 1 / Table 6 ("a random normal patch", "a random outlier patch").

    Args:
        patches: ``(B, N, D)`` patch tokens (no prefix tokens).
        outlier: ``(B, N)`` bool outlier mask (from pre-LayerNorm norms).
        k: draws per image.
        seed: seed (ignored when ``generator`` is given; pass one generator across batches).
        generator: a CPU generator, for a stream of batches.

    Returns:
        ``{"normal": (B, k, D), "outlier": (B, k, D), "has_normal": (B,), "has_outlier": (B,),
        "n_outliers": (B,)}``; rows without a token of a kind hold zeros and ``has_* = False``.
    """
    if patches.ndim != 3 or outlier.shape != patches.shape[:2]:
        raise ValueError(f"expected patches (B, N, D) and mask (B, N), got {tuple(patches.shape)} and "
                         f"{tuple(outlier.shape)}")
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    outlier = outlier.bool().cpu()
    out: dict[str, torch.Tensor] = {"n_outliers": outlier.sum(1)}
    for name, mask in (("normal", ~outlier), ("outlier", outlier)):
        has = mask.any(1)
        weights = torch.where(has.unsqueeze(1), mask.float(), torch.ones_like(mask, dtype=torch.float))
        idx = torch.multinomial(weights, k, replacement=True, generator=gen)  # (B, k)
        tok = torch.gather(patches, 1, idx.to(patches.device).unsqueeze(-1).expand(-1, -1, patches.shape[2]))
        out[name] = torch.where(has.to(patches.device).view(-1, 1, 1), tok, torch.zeros_like(tok))
        out[f"has_{name}"] = has
    return out



def _draws_per_image(patches: torch.Tensor, outlier: torch.Tensor, k: int, *, seed: int,
                     first_index: int) -> dict[str, torch.Tensor]:
    """:func:`sample_tokens` with one generator per image, seeded by ``seed`` and the image's index in the
    extraction: the draws of an image do not depend on the chunk (or batch) it was extracted in.

    Paper: Table 1 / Table 6 (the random normal and outlier patches of notebook 06).
    """
    rows = [sample_tokens(patches[j:j + 1], outlier[j:j + 1], k, seed=seed * 1_000_003 + first_index + j)
            for j in range(patches.shape[0])]
    return {name: torch.cat([r[name] for r in rows]) for name in rows[0]}


def forward_tokens(loaded, images: Sequence, *, layer: str | int = "final_norm", batch_size: int = 8,
                   with_pixels: bool = False, first_index: int = 0, total: int | None = None,
                   detect_block: int = -1) -> dict[str, torch.Tensor]:
    """Forward ``images`` in batches; keep the probed tokens, the pre-LayerNorm norms and (optionally) pixels.

    Paper: Fig. 5b, Table 1 (probes read the model's output tokens; outliers are found on the norms of
    the last block's output BEFORE the final LayerNorm, Fig. 3). Runs on :func:`vitreg.core.stream.stream`;
    the call holding image 0 of an extraction prints the run-time estimate from its first real batch.

    Args:
        loaded: a :class:`vitreg.core.weights.LoadedModel`.
        images: PIL images (or paths/arrays).
        layer: ``"final_norm"`` (the output features downstream tasks use) or a block index (its output,
            before the final LayerNorm).
        batch_size: images per forward pass.
        with_pixels: also return each patch's input pixels (normalised as the model sees them).
        first_index: index of ``images[0]`` in the whole extraction (a
            :mod:`vitreg.core.context` (a planting context seeds its masks per image index).
        total: images in the whole extraction, for the estimate (default: ``len(images)``).
        detect_block: the block whose pre-LN output norms are returned (:func:`detection_block`).

    Returns:
        ``{"tokens": (B, T, D), "norms": (B, T) pre-LN norms at ``detect_block``, "pixels": (B, N, 3p^2)}``,
        on the CPU.
    """
    want = dict(norms=[detect_block], final_norm=layer == "final_norm", outputs=None if layer == "final_norm" else [int(layer)])
    recs, pixels = [], []
    for b in stream(loaded, images, batch_size=batch_size, progress=False, estimate=first_index == 0,
                    total=total or len(images), before_batch=lambda i: _at_image(loaded, first_index + i),
                    **want):
        recs.append(b.rec)
        if with_pixels:
            pixels.append(patch_pixels(b.x, loaded.spec.patch_size))
    rec = Recording.concat(recs)
    tokens = rec.final_norm if layer == "final_norm" else rec.outputs[int(layer)]
    out = {"tokens": tokens, "norms": rec.norms[detect_block]}
    if with_pixels:
        out["pixels"] = torch.cat(pixels)
    return out


def _at_image(loaded, index: int) -> None:
    """Tell the model's experiment context (if any) that image ``index`` of the extraction comes next."""
    ctx = context.current(loaded.model)
    if ctx is not None:
        ctx.at_image(index)


def _planted_mask(loaded, start: int, n_images: int) -> torch.Tensor:
    """``(n_images, N)`` bool: the patches the model's experiment context planted (all False without one)."""
    ctx = context.current(loaded.model)
    if ctx is None:
        return torch.zeros(n_images, loaded.layout.num_patches, dtype=torch.bool)
    return ctx.mask(start, n_images, loaded.layout.grid)


def _fields(loaded) -> dict:
    """The model's cache-key fields, with its experiment context's fingerprint passed explicitly."""
    return model_fields(loaded, context.fingerprint(context.current(loaded.model)))


def _model_key(loaded, layer: str | int) -> dict:
    return dict(**_fields(loaded), layer=layer)


def patch_token_features(loaded, images: Sequence, *, dataset: str, layer: str | int = "final_norm",
                         batch_size: int = 8, cache: bool = True, cache_root: str | None = None,
                         chunk_size: int = 64, progress: bool = True) -> dict[str, torch.Tensor]:
    """Patch tokens, their pre-LN norms and their input pixels for the local probes (notebook 05).

    Paper: Fig. 5b. Cached on disk keyed by model, weights, resolution, ``dataset`` (a name for the image
    list: include anything that identifies it), layer and the experiment context (:mod:`vitreg.core.context`).

    Args:
        loaded: the model.
        images: PIL images.
        dataset: identifier of ``images`` for the cache key (e.g. ``"pets-test-300-seed0"``).
        layer: ``"final_norm"`` or a block index.
        batch_size: images per forward pass.
        cache: use the on-disk cache.
        cache_root: cache folder (default ``$VITREG_CACHE`` or ``data/cache``).
        chunk_size: images per cache chunk.
        progress: progress bar.

    Returns:
        ``{"patches": (B, N, D) float16, "norms": (B, N) pre-LN norms, "pixels": (B, N, 3p^2),
        "planted": (B, N) bool}``.
    """
    layout = loaded.layout
    key = dict(**_model_key(loaded, layer),
               dataset=dataset, split="images", n=len(images), kind="patch_tokens")

    def compute(start: int, stop: int) -> dict[str, torch.Tensor]:
        got = forward_tokens(loaded, images[start:stop], layer=layer, batch_size=batch_size, with_pixels=True,
                             first_index=start, total=len(images))
        planted_ = _planted_mask(loaded, start, stop - start)
        return {"patches": layout.patches(got["tokens"]).half(), "norms": layout.patches(got["norms"]),
                "pixels": got["pixels"].half(), "planted": planted_}

    return cached_features(key, len(images), compute, chunk_size=chunk_size, root=cache_root, enabled=cache,
                           progress=progress)


def single_token_features(loaded, dataset, *, name: str, split: str, indices: torch.Tensor | None = None,
                          n_draws: int = 3, layer: str | int = "final_norm", threshold: float | None = None,
                          k_std: float = 3.0, detect_block: int | None = None, batch_size: int = 64, seed: int = 0,
                          cache: bool = True,
                          cache_root: str | None = None, chunk_size: int = 512,
                          progress: bool = True) -> dict[str, torch.Tensor]:
    """Per image: label, [CLS], registers, and ``n_draws`` random normal and outlier patch tokens.

    Paper: Table 1 / App. G Table 6 (notebook 06). Outliers: pre-LN norm at :func:`detection_block` (the
    last block; the second-to-last for DINOv2-L, [TTR]) above :func:`outlier_cut` (relative rule per chunk
    when the model has no cut-off). Longer than 60 lines because of this docstring and the one closure that
    computes a cache chunk (kept beside its key so the two cannot drift apart). Tokens are stored as
    float16; the draws are fixed by ``seed`` and the image index. Cached on disk keyed by model, weights,
    resolution, dataset, split, the subset, layer, threshold, draws and any planting.

    Args:
        loaded: the model.
        dataset: a dataset of ``(PIL image, label)`` (see :mod:`vitreg.data.datasets`).
        name: dataset name (cache key).
        split: split name (cache key).
        indices: subset of the dataset to use (default: all).
        n_draws: random tokens drawn per image and kind.
        layer: ``"final_norm"`` or a block index.
        threshold: outlier cut-off (default: the model's).
        k_std: relative rule width when there is no cut-off.
        detect_block: block of the outlier norms (default: :func:`detection_block` of the model).
        batch_size: images per forward pass.
        seed: seed of the draws.
        cache, cache_root, chunk_size, progress: see :func:`vitreg.utils.cache.cached_features`.

    Returns:
        ``labels (n,)``, ``cls (n, D)`` or absent, ``central (n, D)`` (grid-centre patch, [TTR]),
        ``reg (n, R, D)`` or absent, ``normal``/``outlier``
        ``(n, K, D)``, ``has_normal``/``has_outlier``/``n_outliers`` ``(n,)``, ``threshold (n,)``.
    """

    layout = loaded.layout
    idx = torch.arange(len(dataset)) if indices is None else torch.as_tensor(indices).long()
    cut = outlier_cut(loaded, threshold)
    block = detection_block(loaded, detect_block)
    key = dict(**_model_key(loaded, layer), seed=seed, draws="per_image", **({"detect_block": block} if block != -1 else {}),
               dataset=name, split=split, n=len(idx), subset=hash_indices(idx), n_draws=n_draws, threshold=cut,
               k_std=k_std, kind="single_tokens")

    def compute(start: int, stop: int) -> dict[str, torch.Tensor]:
        items = [dataset[int(i)] for i in idx[start:stop]]
        got = forward_tokens(loaded, [im for im, _ in items], layer=layer, batch_size=batch_size, first_index=start,
                             total=len(idx), detect_block=block)
        parts = layout.split(got["tokens"])
        norms = layout.patches(got["norms"])
        c = outlier_threshold(norms, threshold=cut, k_std=k_std)
        drawn = _draws_per_image(parts.patch, norms > c, n_draws, seed=seed, first_index=start)
        out = {"labels": torch.tensor([int(lab) for _, lab in items]), "threshold": torch.full((stop - start,), c),
               "normal": drawn["normal"].half(), "outlier": drawn["outlier"].half(),
               "has_normal": drawn["has_normal"], "has_outlier": drawn["has_outlier"],
               "n_outliers": drawn["n_outliers"]}
        h, w = layout.grid
        out["central"] = parts.patch[:, (h // 2) * w + w // 2].half()
        if parts.cls is not None:
            out["cls"] = parts.cls.half()
        if parts.reg is not None:
            out["reg"] = parts.reg.half()
        return out

    return cached_features(key, len(idx), compute, chunk_size=chunk_size, root=cache_root, enabled=cache,
                           progress=progress)



def dense_features(loaded: Any, images: Sequence[Any], *, batch_size: int = 8, progress: bool = False,
                   dtype: torch.dtype = torch.float16, keep_patch: bool = True) -> dict[str, torch.Tensor]:
    """Final-LayerNorm features of the last block: patch grid and [CLS].

    Paper: Table 2 (DINOv2's linear heads read ``x_norm_patchtokens`` and ``x_norm_clstoken``).

    Args:
        loaded: a :class:`vitreg.core.weights.LoadedModel`.
        images: PIL images (any size: resized and centre-cropped to the model's input size).
        batch_size: images per forward pass.
        progress: tqdm bar.
        dtype: storage dtype (float16 halves the cache).
        keep_patch: False drops the patch grid (image classification needs only [CLS] and the mean).

    Returns:
        ``{"patch": (B, h, w, D), "cls": (B, D), "patch_mean": (B, D)}``; ``cls`` is zeros for a model
        without a class token.
    """
    rec = extract(loaded, list(images), batch_size=batch_size, progress=progress, final_norm=True)
    parts = loaded.layout.split(rec.final_norm.float())
    patch = loaded.layout.to_grid(parts.patch)
    cls = parts.cls if parts.cls is not None else torch.zeros(patch.shape[0], patch.shape[-1])
    out = {"cls": cls.to(dtype), "patch_mean": parts.patch.mean(1).to(dtype)}
    if keep_patch:
        out["patch"] = patch.to(dtype)
    return out


def dinov2_eval_crop(image: Any, fraction: float = 224 / 256) -> Any:
    """The central square holding ``fraction`` of the shorter side (DINOv2's resize-256 / crop-224).

    Paper: Table 2 (ImageNet linear evaluation transform). ``vitreg.core.images.preprocess`` then resizes it
    to the model's input size.
    """
    w, h = image.size
    side = fraction * min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    return image.crop((round(left), round(top), round(left + side), round(top + side)))


def cached_task_features(loaded: Any, dataset: Any, indices: Sequence[int], *, dataset_name: str, split: str,
                         target: Literal["seg", "depth", "seg+depth", "label"], label_size: tuple[int, int] | None = None,
                         batch_size: int = 8, cache: bool = True, cache_root: str | os.PathLike | None = None,
                         chunk_size: int = 256, progress: bool = True, **key_extra: Any) -> dict[str, torch.Tensor]:
    """Frozen features of ``dataset[indices]`` and their targets, through the feature cache.

    Paper: Table 2 (all three probes read frozen features; extraction is the slow part).

    Args:
        loaded: the model.
        dataset: items ``(PIL image, target)``; a dict target is indexed by ``target``.
        indices: which items.
        dataset_name, split: for the cache key.
        target: ``"seg"`` / ``"depth"`` / ``"seg+depth"`` (dense targets resized like the image to
            ``label_size``; a dict target is indexed by each name) or
            ``"label"`` (an int class; only [CLS] and the mean patch are kept, after DINOv2's eval crop).
        label_size: ``(H, W)`` of the stored dense targets.
        batch_size: images per forward pass.
        cache: use the on-disk cache (``vitreg.utils.cache``); False computes in memory.
        cache_root: cache folder (default ``$VITREG_CACHE`` or ``data/cache``).
        chunk_size: images per cache chunk.
        progress: tqdm bars.
        **key_extra: anything else that changes the features or targets (subset seed, ...).

    Returns:
        ``{"cls", "patch_mean", ["patch"], "labels" | "depth"}`` tensors over the selected items.
    """
    indices = [int(i) for i in indices]
    dense = target in ("seg", "depth", "seg+depth")
    if dense and label_size is None:
        raise ValueError("dense targets need label_size=(H, W)")

    def compute(start: int, stop: int) -> dict[str, torch.Tensor]:
        items = [dataset[i] for i in indices[start:stop]]
        imgs = [im if dense else dinov2_eval_crop(im) for im, _ in items]
        pick = lambda t, name: t[name] if isinstance(t, dict) else t  # noqa: E731
        out = dense_features(loaded, imgs, batch_size=batch_size, keep_patch=dense)
        if "seg" in target:
            out["labels"] = targets_at([pick(t, "seg") for _, t in items], label_size, torch.uint8)
        if "depth" in target:
            out["depth"] = targets_at([pick(t, "depth") for _, t in items], label_size, torch.float32)
        if target == "label":
            out["labels"] = torch.tensor([int(t) for _, t in items], dtype=torch.long)
        return out

    key = feature_key(**_fields(loaded), dataset=dataset_name, split=split, layer="final_norm", target=target,
                      label_size=None if label_size is None else list(label_size), n_items=len(indices),
                      indices_hash=hash_indices(indices), **key_extra)
    return cached_features(key, len(indices), compute, chunk_size=chunk_size, root=cache_root, enabled=cache,
                           progress=progress)



def targets_at(targets: Sequence[np.ndarray], size: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """Stack dense targets resized/cropped like the images (:func:`resize_crop_target`) to ``size``."""
    return torch.stack([torch.from_numpy(np.ascontiguousarray(resize_crop_target(t, size))).to(dtype)
                        for t in targets])

