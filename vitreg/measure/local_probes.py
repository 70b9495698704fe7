"""F5, local information: what one patch token knows about its place and its pixels.

Paper: Fig. 5b (position prediction and pixel reconstruction, normal vs outlier patches). Used in
notebook 05.

* Position probe: one classifier over the ``h*w`` grid cells, trained on ALL training patches (normal
  and outlier together, as they come), evaluated on the test patches split by the outlier mask.
  Distance = Euclidean distance between predicted and true cell, in grid units.
* Pixel probe: ridge regression from a token to the ``3*p*p`` pixel values of its own input patch,
  pixels in the model's input normalisation (ImageNet mean/std: what the patch embedding sees). The error
  of one patch is the L2 norm of its residual vector; a probe that predicts the mean patch scores about
  ``sqrt(3*p*p) * pixel std`` (about 24 for p = 14), which is how the paper's 18.4 vs 25.2 read.

The estimators are in :mod:`vitreg.measure.estimators`, the features in :mod:`vitreg.measure.features`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from vitreg.core.device import pick_device
from vitreg.measure.estimators import (L2_GRID, RIDGE_GRID, as_features, fit_features, fit_logistic, fit_logistic_cv,
                               group_masks, ridge_solutions, split_indices)

# ---------------------------------------------------------------------------------------------------
# F5: position probe
# ---------------------------------------------------------------------------------------------------
def grid_distance(pred: torch.Tensor, true: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Euclidean distance, in grid cells, between row-major cell indices on an ``(h, w)`` grid.

    Paper: Fig. 5b ("avg. distance" of the position probe).
    """
    w = grid[1]
    dr = (pred // w - true // w).float()
    dc = (pred % w - true % w).float()
    return torch.sqrt(dr * dr + dc * dc)


def patch_positions(n_images: int, grid: tuple[int, int]) -> torch.Tensor:
    """``(n_images, h*w)`` row-major cell index of every patch token: the position probe's target."""
    n = grid[0] * grid[1]
    return torch.arange(n).repeat(n_images, 1)



def position_probe(train_x: torch.Tensor, train_pos: torch.Tensor, test_x: torch.Tensor,
                   test_pos: torch.Tensor, *, grid: tuple[int, int],
                   groups: Mapping[str, torch.Tensor] | None = None, l2_grid: Sequence[float] = L2_GRID,
                   val_fraction: float = 0.2, seed: int = 0, **fit_kwargs) -> dict:
    """Predict a patch token's grid cell with a linear classifier.

    Paper: Fig. 5b (normal 41.7% top-1 / 0.79 cells; outlier 22.8% / 5.09 cells, DINOv2 ViT-g).

    Args:
        train_x: ``(n, D)`` patch tokens of the training images.
        train_pos: ``(n,)`` their row-major cell indices (see :func:`patch_positions`).
        test_x: ``(m, D)`` patch tokens of held-out images.
        test_pos: ``(m,)`` their cells.
        grid: ``(h, w)`` patch grid.
        groups: named ``(m,)`` bool masks over the test tokens (e.g. ``normal``/``outlier``).
        l2_grid: L2 strengths to choose from on a validation split of the training tokens.
        val_fraction: validation share.
        seed: seed.
        **fit_kwargs: passed to :func:`vitreg.measure.estimators.fit_logistic`.

    Returns:
        ``{"l2": chosen, "val_accuracy": {...}, "chance_top1": %, "groups": {name: {"top1": %,
        "avg_distance": cells, "n": count}}}``.
    """
    classes = torch.arange(grid[0] * grid[1])
    train_x = train_x.to(pick_device(fit_kwargs.get("device", "auto")))  # on a GPU: moved once, for the refit too
    sel = fit_logistic_cv(train_x, train_pos, l2_grid=l2_grid, val_fraction=val_fraction, seed=seed,
                          **fit_kwargs)
    if len(sel.classifier.classes) != len(classes):
        sel.classifier = fit_logistic(train_x, train_pos, l2=sel.l2, classes=classes, seed=seed, **fit_kwargs)
    pred = sel.classifier.predict(fit_features(test_x, "test_x", fit_kwargs.get("device", "auto")))
    true = test_pos.long().reshape(-1).cpu()
    dist = grid_distance(pred, true, grid)
    out = {}
    for name, mask in group_masks(groups, len(true)).items():
        n = int(mask.sum())
        out[name] = {
            "top1": float((pred[mask] == true[mask]).float().mean() * 100) if n else math.nan,
            "avg_distance": float(dist[mask].mean()) if n else math.nan,
            "n": n,
        }
    return {"l2": sel.l2, "val_accuracy": sel.val_accuracy, "chance_top1": 100.0 / len(classes), "groups": out}


# ---------------------------------------------------------------------------------------------------
# F5: pixel reconstruction probe
# ---------------------------------------------------------------------------------------------------
def patch_errors(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(n,)`` L2 norm of each patch's residual vector (the reconstruction probe's error)."""
    return (pred.float() - target.float().to(pred.device)).norm(dim=1)


def reconstruction_probe(train_x: torch.Tensor, train_pixels: torch.Tensor, test_x: torch.Tensor,
                         test_pixels: torch.Tensor, *, groups: Mapping[str, torch.Tensor] | None = None,
                         ridge_grid: Sequence[float] = RIDGE_GRID, val_fraction: float = 0.2, seed: int = 0,
                         standardize: bool = True, device: str | torch.device = "auto") -> dict:
    """Reconstruct a patch's input pixels from its token with a linear (ridge) map.

    Paper: Fig. 5b (L2 error: normal 18.38, outlier 25.23, DINOv2 ViT-g). Pixels are in the model's
    input normalisation; see the module docstring for the error's scale.

    Args:
        train_x: ``(n, D)`` patch tokens.
        train_pixels: ``(n, P)`` their pixels (see :func:`patch_pixels`).
        test_x: ``(m, D)`` held-out tokens.
        test_pixels: ``(m, P)`` their pixels.
        groups: named ``(m,)`` bool masks over test tokens.
        ridge_grid: strengths to choose from on a validation split (mean error).
        val_fraction: validation share.
        seed: split seed.
        standardize: standardise token features first.
        device: ``"auto"`` uses a GPU when present.

    Returns:
        ``{"ridge": chosen, "val_error": {...}, "groups": {name: {"l2_error": mean residual norm,
        "mean_baseline": error of predicting the mean training patch, "relative": ratio of the two,
        "n": count}}}``.
    """
    dev = pick_device(device)
    train_x, test_x = as_features(train_x, "train_x"), as_features(test_x, "test_x")
    if len(train_x) != len(train_pixels) or len(test_x) != len(test_pixels):
        raise ValueError("features and pixel targets must have the same number of rows")
    val_err: dict[float, float] = {}
    if len(ridge_grid) == 1:
        best = float(ridge_grid[0])
    else:
        tr, va = split_indices(len(train_x), val_fraction, seed)
        for reg in ridge_solutions(train_x[tr], train_pixels[tr], ridge_grid, standardize, dev):
            val_err[reg.ridge] = float(patch_errors(reg.predict(train_x[va]), train_pixels[va]).mean())
        best = min(val_err, key=lambda k: (val_err[k], -k))
    reg = ridge_solutions(train_x, train_pixels, [best], standardize, dev)[0]
    err = patch_errors(reg.predict(test_x), test_pixels)
    base = patch_errors(train_pixels.float().mean(0, keepdim=True).expand(len(test_pixels), -1), test_pixels)
    out = {}
    for name, mask in group_masks(groups, len(err)).items():
        n = int(mask.sum())
        e = float(err[mask].mean()) if n else math.nan
        b = float(base[mask].mean()) if n else math.nan
        out[name] = {"l2_error": e, "mean_baseline": b, "relative": e / b if n and b > 0 else math.nan, "n": n}
    return {"ridge": best, "val_error": val_err, "groups": out}



def local_information(features: Mapping[str, torch.Tensor], outlier: torch.Tensor, *, grid: tuple[int, int],
                      train_fraction: float = 0.7, max_train_tokens: int | None = None,
                      l2_grid: Sequence[float] = L2_GRID, ridge_grid: Sequence[float] = RIDGE_GRID,
                      seed: int = 0, device: str | torch.device = "auto") -> dict:
    """Both local probes on one model's patch tokens, normal vs outlier (notebook 05).

    Paper: Fig. 5b. Images (not tokens) are split into probe-training and test images, so a test patch
    never comes from a training image. Both probes train on all patches of the training images and are
    evaluated on the test patches, split by ``outlier``.

    Args:
        features: from :func:`vitreg.measure.features.patch_token_features` (``patches``, ``pixels``).
        outlier: ``(B, N)`` bool outlier mask.
        grid: patch grid.
        train_fraction: share of images that train the probes.
        max_train_tokens: subsample the training patches to this many (speed), None = all.
        l2_grid, ridge_grid: regularisation grids (chosen on a validation split of training patches).
        seed: seed of the image split, the subsample and the validation split.
        device: ``"auto"`` uses a GPU when present.

    Returns:
        ``{"normal": {"position_top1", "position_distance", "reconstruction_l2", "reconstruction_relative",
        "n_test"}, "outlier": {...}, "position": <position_probe output>, "reconstruction": <...>,
        "n_train_images", "n_test_images", "n_train_tokens"}``.
    """
    patches, pixels = features["patches"], features["pixels"]
    b, n, _ = patches.shape
    if outlier.shape != (b, n):
        raise ValueError(f"outlier mask {tuple(outlier.shape)} does not match patches {tuple(patches.shape)}")
    if b < 2:
        raise ValueError("need at least 2 images: some train the probes, the others test them")
    te_img, tr_img = split_indices(b, train_fraction, seed)  # the first round(b * train_fraction) train
    tr_img, te_img = tr_img.sort().values, te_img.sort().values
    pos = patch_positions(b, grid)

    def flat(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return x[idx].reshape(len(idx) * n, *x.shape[2:])

    xtr, ptr, ytr = flat(patches, tr_img), flat(pos, tr_img), flat(pixels, tr_img)
    if max_train_tokens is not None and len(xtr) > max_train_tokens:
        keep = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(seed + 1))[:max_train_tokens]
        xtr, ptr, ytr = xtr[keep], ptr[keep], ytr[keep]
    xte, pte, yte = flat(patches, te_img), flat(pos, te_img), flat(pixels, te_img)
    out_te = outlier[te_img].reshape(-1).bool()
    groups = {"normal": ~out_te, "outlier": out_te}
    position = position_probe(xtr, ptr, xte, pte, grid=grid, groups=groups, l2_grid=l2_grid, seed=seed,
                              device=device)
    recon = reconstruction_probe(xtr, ytr, xte, yte, groups=groups, ridge_grid=ridge_grid, seed=seed,
                                 device=device)
    summary = {
        g: {"position_top1": position["groups"][g]["top1"], "position_distance": position["groups"][g]["avg_distance"],
            "reconstruction_l2": recon["groups"][g]["l2_error"],
            "reconstruction_relative": recon["groups"][g]["relative"], "n_test": position["groups"][g]["n"]}
        for g in groups
    }
    return {**summary, "position": position, "reconstruction": recon, "n_train_images": len(tr_img),
            "n_test_images": len(te_img), "n_train_tokens": len(xtr)}




def group_numbers(result: Mapping, group: str, model: str) -> dict:
    """One group's (``normal``/``outlier``) numbers of :func:`local_information` for the results file,
    or ``{"skipped": why}`` when the test images hold no such token.

    Paper: Fig. 5b (one bar group); notebook 05.
    """
    if result[group]["n_test"] == 0:
        return {"skipped": f"no {group} patch tokens among the test images of {model}"}
    return {"model": model, **{k: result[group][k] for k in
            ("position_top1", "position_distance", "reconstruction_l2", "reconstruction_relative", "n_test")}}


def outlier_minus_normal(result: Mapping, model: str) -> dict:
    """The claim of Fig. 5b as three differences, outlier minus normal test patches, for the results file.

    Paper: Fig. 5b (outliers: lower position top-1, larger position distance, larger pixel L2; the paper's
    differences are -18.9, +4.30 and +6.85). Each is ``{"skipped": why}`` when the test images hold no
    outlier (or no normal) patch token.

    Args:
        result: :func:`local_information` output.
        model: the zoo key of the probed model (recorded as ``"model"``).
    """
    out: dict = {"model": model}
    missing = [g for g in ("normal", "outlier") if result[g]["n_test"] == 0]
    for key in ("position_top1", "position_distance", "reconstruction_l2"):
        out[key] = ({"skipped": f"no {missing[0]} tokens among the test images"} if missing
                    else result["outlier"][key] - result["normal"][key])
    return out


def probe_model(loaded, images: Sequence, *, dataset: str, layer: str | int = "final_norm", batch_size: int = 8,
                cache: bool = True, cache_root: str | None = None, threshold: float | None = None,
                **probe_kwargs) -> dict:
    """Patch-token features of ``images``, their outlier mask and both local probes, for one model.

    Paper: App. D.2 Table 5 (the same probes on a model without and with registers; notebook 05 runs it on
    each of ``register_models``). Smoke runs wrap the call in
    ``with vitreg.planting.planted_outlier_share(loaded, ...)``.

    Args:
        loaded: the model.
        images: PIL images.
        dataset, layer, batch_size, cache, cache_root: as for :func:`vitreg.measure.features.patch_token_features`.
        threshold: outlier cut-off on pre-LN norms (None: the model's own, :func:`vitreg.measure.features.outlier_cut`).
        probe_kwargs: passed to :func:`local_information` (``train_fraction``, ``l2_grid``, ...).

    Returns:
        :func:`local_information`'s output with ``loaded`` and ``outlier_fraction`` (share of all patches).
    """
    from vitreg.measure.features import outlier_cut, patch_token_features
    from vitreg.measure.norms import outlier_threshold

    f = patch_token_features(loaded, images, dataset=dataset, layer=layer, batch_size=batch_size, cache=cache,
                             cache_root=cache_root)
    outlier = f["norms"] > outlier_threshold(f["norms"], threshold=outlier_cut(loaded, threshold))
    return {"loaded": loaded, "outlier_fraction": outlier.float().mean().item(),
            **local_information(f, outlier, grid=loaded.layout.grid, **probe_kwargs)}
