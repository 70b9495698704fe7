"""Linear probes on frozen tokens: what one token knows about its place, its pixels and its image.

Paper: Fig. 5b (F5, local information: position prediction and pixel reconstruction, normal vs
outlier patches) and Table 1 / App. G Table 6 (F6, global information: image classification from ONE
token per image). Used in notebooks 05 (local) and 06 (global).

The paper gives no probe details (data, optimiser, pixel normalisation). The choices here, recorded in
each notebook's results:

* Classifiers are multinomial logistic regression on standardised features (train mean/std), objective
  ``mean cross-entropy + l2/2 * ||W||^2`` (bias not penalised), i.e. scikit-learn's
  ``LogisticRegression(C=1/(l2 * n))``. ``l2`` is chosen on a validation split carved from the training
  set, then the probe is refitted on the whole training set. Full-batch L-BFGS by default, Adam on
  minibatches for sets that do not fit in memory (``batch_size=...``).
* Position probe: one classifier over the ``h*w`` grid cells, trained on ALL training patches (normal
  and outlier together, as they come), evaluated on the test patches split by the outlier mask.
  Distance = Euclidean distance between predicted and true cell, in grid units.
* Pixel probe: ridge regression from a token to the ``3*p*p`` pixel values of its own input patch,
  pixels in the model's input normalisation (ImageNet mean/std: what the patch embedding sees). The error
  of one patch is the L2 norm of its residual vector; a probe that predicts the mean patch scores about
  ``sqrt(3*p*p) * pixel std`` (about 24 for p = 14), which is how the paper's 18.4 vs 25.2 read.
* Single-token classification: for each image K random normal patches and K random outlier patches are
  drawn once (seeded); draw k uses token k of every image; mean +- std over the K draws (Table 6 format).
  The outlier column is measured on the images that HAVE an outlier (its ``coverage`` is reported).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vitreg.device import pick_device

#: Default grid of L2 strengths (on standardised features, mean loss), strongest first.
L2_GRID: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
#: Default ridge strengths for the pixel probe (relative to the unit-variance features).
RIDGE_GRID: tuple[float, ...] = (1e1, 1e0, 1e-1, 1e-2, 1e-3, 1e-4)


# ---------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------
def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random train/validation split of ``n`` items (deterministic for a seed).

    Args:
        n: number of items.
        val_fraction: share of items held out for validation (at least one item each side).
        seed: random seed.

    Returns:
        ``(train_idx, val_idx)`` long tensors.
    """
    if n < 2:
        raise ValueError(f"need at least 2 samples to carve a validation split, got {n}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    return perm[n_val:], perm[:n_val]


@dataclass
class Standardizer:
    """Per-feature affine normalisation fitted on training features: ``(x - mean) / scale``."""

    mean: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def fit(cls, x: torch.Tensor, enabled: bool = True) -> Standardizer:
        """Fit on ``(n, D)`` features; ``enabled=False`` gives the identity."""
        if not enabled:
            return cls(torch.zeros(x.shape[1], device=x.device), torch.ones(x.shape[1], device=x.device))
        mean = x.mean(0)
        scale = x.std(0, unbiased=False)
        scale = torch.where(scale > 1e-8 * scale.max().clamp_min(1e-30), scale, torch.ones_like(scale))
        return cls(mean, scale)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.scale.to(x.device)


@contextmanager
def _few_threads(device: torch.device, work: int) -> Iterator[None]:
    """Run small CPU problems on one thread (restored on exit).

    L-BFGS makes thousands of tiny calls; with two threads on a busy CPU their synchronisation costs
    up to 40x more than the arithmetic. ``work``: multiply-adds of one objective evaluation.
    """
    if device.type != "cpu" or work > 50_000_000:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _as_features(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.ndim != 2:
        raise ValueError(f"{name} must be (n, D) features, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN/inf values; check the feature extraction")
    return x.float()


# ---------------------------------------------------------------------------------------------------
# Logistic regression (position probe, single-token classification)
# ---------------------------------------------------------------------------------------------------
@dataclass
class LinearClassifier:
    """A fitted multinomial logistic regression.

    Attributes:
        weight: ``(D, C)`` on standardised features.
        bias: ``(C,)``.
        classes: ``(C,)`` the original label of each output.
        standardizer: the feature normalisation fitted on the training set.
        l2: the L2 strength it was fitted with.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    classes: torch.Tensor
    standardizer: Standardizer
    l2: float

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, C)`` class scores for ``(n, D)`` features."""
        x = self.standardizer(x.float().to(self.weight.device))
        return x @ self.weight + self.bias

    def predict(self, x: torch.Tensor, batch_size: int = 65536) -> torch.Tensor:
        """Predicted labels (original label values), computed in batches."""
        out = [self.logits(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
        return self.classes[torch.cat(out)].cpu()


def fit_logistic(x: torch.Tensor, y: torch.Tensor, *, l2: float, classes: torch.Tensor | None = None,
                 standardize: bool = True, max_iter: int = 200, batch_size: int | None = None,
                 epochs: int = 50, lr: float = 1e-3, device: str | torch.device = "auto", seed: int = 0,
                 init: LinearClassifier | None = None) -> LinearClassifier:
    """Fit multinomial logistic regression with an L2 penalty.

    Paper: Fig. 5b (position probe), Table 1 / Table 6 (single-token classification).
    Objective ``mean_i CE(x_i W + b, y_i) + l2/2 ||W||^2`` on standardised features: the same minimiser
    as scikit-learn's ``LogisticRegression(C=1/(l2 * n))`` on the same (standardised) features.

    Args:
        x: ``(n, D)`` training features.
        y: ``(n,)`` integer labels (any values; they are mapped to ``classes``).
        l2: L2 strength (> 0).
        classes: all label values the classifier must know (default: those in ``y``).
        standardize: normalise each feature by the training mean/std first.
        max_iter: L-BFGS iterations (full-batch mode).
        batch_size: None for full-batch L-BFGS (deterministic); an int for Adam on shuffled minibatches.
        epochs: minibatch epochs.
        lr: Adam learning rate (minibatch mode).
        device: ``"auto"`` uses a GPU when present.
        seed: seed for the minibatch order.
        init: warm start from another fitted classifier with the same classes and standardizer.

    Returns:
        the fitted :class:`LinearClassifier`.
    """
    dev = pick_device(device)
    x = _as_features(x, "x").to(dev)
    y = y.long().to(dev)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)} labels")
    if l2 <= 0:
        raise ValueError(f"l2 must be > 0, got {l2}")
    classes = torch.unique(y) if classes is None else torch.unique(classes.long().to(dev))
    target = torch.searchsorted(classes, y)
    if (target >= len(classes)).any() or (classes[target.clamp_max(len(classes) - 1)] != y).any():
        raise ValueError("y holds labels that are not in `classes`")
    std = init.standardizer if init is not None else Standardizer.fit(x, standardize)
    xs = std(x)
    d, c = xs.shape[1], len(classes)
    if init is not None and init.weight.shape == (d, c):
        w = init.weight.detach().clone().to(dev).requires_grad_(True)
        b = init.bias.detach().clone().to(dev).requires_grad_(True)
    else:
        w = torch.zeros(d, c, device=dev, requires_grad=True)
        b = torch.zeros(c, device=dev, requires_grad=True)

    def objective(xb: torch.Tensor, tb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(xb @ w + b, tb) + 0.5 * l2 * (w * w).sum()

    with _few_threads(dev, xs.shape[0] * d * c):
        _minimise(objective, xs, target, w, b, max_iter=max_iter, batch_size=batch_size, epochs=epochs, lr=lr,
                  seed=seed)
    return LinearClassifier(w.detach(), b.detach(), classes, std, float(l2))


def _minimise(objective, xs: torch.Tensor, target: torch.Tensor, w: torch.Tensor, b: torch.Tensor, *,
              max_iter: int, batch_size: int | None, epochs: int, lr: float, seed: int) -> None:
    """Full-batch L-BFGS (``batch_size=None``) or minibatch Adam with a cosine schedule, in place."""
    dev = xs.device
    if batch_size is None:
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, max_eval=int(max_iter * 1.25),
                                history_size=20, tolerance_grad=1e-6, tolerance_change=1e-10,
                                line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = objective(xs, target)
            loss.backward()
            return loss

        opt.step(closure)
    else:
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam([w, b], lr=lr)
        steps = epochs * math.ceil(len(xs) / batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
        for _ in range(epochs):
            perm = torch.randperm(len(xs), generator=gen).to(dev)
            for i in range(0, len(xs), batch_size):
                idx = perm[i:i + batch_size]
                opt.zero_grad()
                objective(xs[idx], target[idx]).backward()
                opt.step()
                sched.step()


def accuracy(clf: LinearClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in percent (NaN for an empty set)."""
    if len(x) == 0:
        return math.nan
    return float((clf.predict(x) == y.long().cpu()).float().mean() * 100)


@dataclass
class SelectedClassifier:
    """A classifier refitted on the whole training set with the L2 strength that won on validation.

    Attributes:
        classifier: the refitted classifier.
        l2: chosen strength.
        val_accuracy: validation accuracy (%) of every strength tried.
    """

    classifier: LinearClassifier
    l2: float
    val_accuracy: dict[float, float] = field(default_factory=dict)


def fit_logistic_cv(x: torch.Tensor, y: torch.Tensor, *, l2_grid: Sequence[float] = L2_GRID,
                    val_fraction: float = 0.2, seed: int = 0, **fit_kwargs) -> SelectedClassifier:
    """Choose the L2 strength on a validation split, then refit on all of ``(x, y)``.

    Paper: App. G Table 6 ("logistic regression", regularisation not given: we select it on validation).

    Args:
        x: ``(n, D)`` training features.
        y: ``(n,)`` labels.
        l2_grid: strengths to try, strongest first (each fit warm-starts from the previous one).
        val_fraction: share of the training set held out to choose ``l2``.
        seed: split seed.
        **fit_kwargs: passed to :func:`fit_logistic`.

    Returns:
        a :class:`SelectedClassifier`.
    """
    x = _as_features(x, "x")
    y = y.long()
    classes = torch.unique(y)
    scores: dict[float, float] = {}
    if len(l2_grid) == 1:
        best = float(l2_grid[0])
    else:
        tr, va = split_indices(len(x), val_fraction, seed)
        prev = None
        for l2 in l2_grid:
            prev = fit_logistic(x[tr], y[tr], l2=l2, classes=classes, init=prev, seed=seed, **fit_kwargs)
            scores[float(l2)] = accuracy(prev, x[va], y[va])
        best = max(scores, key=lambda k: (scores[k], k))  # ties: the stronger penalty
    clf = fit_logistic(x, y, l2=best, classes=classes, seed=seed, **fit_kwargs)
    return SelectedClassifier(clf, best, scores)


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


def _groups(groups: Mapping[str, torch.Tensor] | None, n: int) -> dict[str, torch.Tensor]:
    if groups is None:
        return {"all": torch.ones(n, dtype=torch.bool)}
    out = {}
    for name, mask in groups.items():
        mask = mask.reshape(-1).bool().cpu()
        if len(mask) != n:
            raise ValueError(f"group {name!r} mask has {len(mask)} entries for {n} test samples")
        out[name] = mask
    return out


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
        **fit_kwargs: passed to :func:`fit_logistic`.

    Returns:
        ``{"l2": chosen, "val_accuracy": {...}, "chance_top1": %, "groups": {name: {"top1": %,
        "avg_distance": cells, "n": count}}}``.
    """
    classes = torch.arange(grid[0] * grid[1])
    sel = fit_logistic_cv(train_x, train_pos, l2_grid=l2_grid, val_fraction=val_fraction, seed=seed,
                          **fit_kwargs)
    if len(sel.classifier.classes) != len(classes):
        sel.classifier = fit_logistic(train_x, train_pos, l2=sel.l2, classes=classes, seed=seed, **fit_kwargs)
    pred = sel.classifier.predict(_as_features(test_x, "test_x"))
    true = test_pos.long().reshape(-1).cpu()
    dist = grid_distance(pred, true, grid)
    out = {}
    for name, mask in _groups(groups, len(true)).items():
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


@dataclass
class LinearRegressor:
    """A fitted ridge regression ``y = standardize(x) @ weight + bias``."""

    weight: torch.Tensor
    bias: torch.Tensor
    standardizer: Standardizer
    ridge: float

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, P)`` predictions for ``(n, D)`` features."""
        return (self.standardizer(x.float().to(self.weight.device)) @ self.weight + self.bias).cpu()


def _ridge_solutions(x: torch.Tensor, y: torch.Tensor, ridges: Sequence[float], standardize: bool,
                     device: torch.device) -> list[LinearRegressor]:
    """Closed-form ridge fits for several strengths from one eigendecomposition (float64)."""
    with _few_threads(device, x.shape[0] * x.shape[1] * x.shape[1]):
        return _ridge_fits(x.to(device), y.float().to(device), ridges, standardize)


def _ridge_fits(x: torch.Tensor, y: torch.Tensor, ridges: Sequence[float], standardize: bool) -> list[LinearRegressor]:
    std = Standardizer.fit(x, standardize)
    xs = std(x).double()
    ym = y.mean(0)
    yc = (y - ym).double()
    xm = xs.mean(0)
    xc = xs - xm
    n = len(xc)
    evals, evecs = torch.linalg.eigh(xc.T @ xc / n)
    proj = evecs.T @ (xc.T @ yc / n)
    out = []
    for r in ridges:
        w = evecs @ (proj / (evals.clamp_min(0) + r).unsqueeze(1))
        b = ym.double() - xm @ w
        out.append(LinearRegressor(w.float(), b.float(), std, float(r)))
    return out


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
    train_x, test_x = _as_features(train_x, "train_x"), _as_features(test_x, "test_x")
    if len(train_x) != len(train_pixels) or len(test_x) != len(test_pixels):
        raise ValueError("features and pixel targets must have the same number of rows")
    val_err: dict[float, float] = {}
    if len(ridge_grid) == 1:
        best = float(ridge_grid[0])
    else:
        tr, va = split_indices(len(train_x), val_fraction, seed)
        for reg in _ridge_solutions(train_x[tr], train_pixels[tr], ridge_grid, standardize, dev):
            val_err[reg.ridge] = float(patch_errors(reg.predict(train_x[va]), train_pixels[va]).mean())
        best = min(val_err, key=lambda k: (val_err[k], -k))
    reg = _ridge_solutions(train_x, train_pixels, [best], standardize, dev)[0]
    err = patch_errors(reg.predict(test_x), test_pixels)
    base = patch_errors(train_pixels.float().mean(0, keepdim=True).expand(len(test_pixels), -1), test_pixels)
    out = {}
    for name, mask in _groups(groups, len(err)).items():
        n = int(mask.sum())
        e = float(err[mask].mean()) if n else math.nan
        b = float(base[mask].mean()) if n else math.nan
        out[name] = {"l2_error": e, "mean_baseline": b, "relative": e / b if n and b > 0 else math.nan, "n": n}
    return {"ridge": best, "val_error": val_err, "groups": out}


# ---------------------------------------------------------------------------------------------------
# F6: single-token image classification
# ---------------------------------------------------------------------------------------------------
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


def token_kinds(tokens: Mapping[str, torch.Tensor]) -> list[str]:
    """The token kinds a feature set offers: ``cls``, ``central``, ``normal``, ``outlier``, ``reg0``..``regR-1``."""
    kinds = [k for k in ("cls", "central", "normal", "outlier") if k in tokens and tokens[k] is not None]
    if tokens.get("reg") is not None:
        kinds += [f"reg{i}" for i in range(tokens["reg"].shape[1])]
    return kinds


def _kind_draws(tokens: Mapping[str, torch.Tensor], kind: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The feature matrices (one per draw) and the row mask for one token kind."""
    n = len(tokens["labels"])
    if kind in ("cls", "central"):
        return [tokens[kind]], torch.ones(n, dtype=torch.bool)
    if kind.startswith("reg"):
        return [tokens["reg"][:, int(kind[3:])]], torch.ones(n, dtype=torch.bool)
    feats = tokens[kind]
    has = tokens.get(f"has_{kind}", torch.ones(n, dtype=torch.bool))
    return [feats[:, d] for d in range(feats.shape[1])], has.bool().cpu()


def single_token_classification(train: Mapping[str, torch.Tensor], test: Mapping[str, torch.Tensor], *,
                                kinds: Iterable[str] | None = None, n_draws: int | None = None,
                                l2_grid: Sequence[float] = L2_GRID, val_fraction: float = 0.2, seed: int = 0,
                                progress: bool = False, **fit_kwargs) -> dict[str, dict]:
    """Classify images from ONE token each; mean +- std over random token draws.

    Paper: Table 1 and App. G Table 6 (DINOv2 ViT-g: e.g. Aircraft normal 17.1, outlier 79.1, [CLS] 87.3);
    App. D.2 Table 4 (one register: register 71.1 on Aircraft); [TTR] Table 1 adds the central patch.

    Args:
        train: training feature set: ``labels (n,)``, ``cls (n, D)``, ``central (n, D)`` (the patch at the
            grid centre), ``reg (n, R, D)`` or None,
            ``normal``/``outlier`` ``(n, K, D)`` with ``has_normal``/``has_outlier`` ``(n,)`` (see
            :func:`sample_tokens`).
        test: the same for the test split.
        kinds: which kinds to probe (default: all present, see :func:`token_kinds`).
        n_draws: use only the first ``n_draws`` of the K drawn tokens.
        l2_grid: L2 strengths, chosen on a validation split for every draw.
        val_fraction: validation share of the training set.
        seed: seed of the validation split.
        progress: show a tqdm bar over kinds and draws.
        **fit_kwargs: passed to :func:`fit_logistic`.

    Returns:
        ``{kind: {"mean": %, "std": %, "draws": [%...], "l2": [...], "n_train": int, "n_test": int,
        "coverage": share of test images with such a token}}``.
    """
    kinds = list(kinds) if kinds is not None else token_kinds(train)
    y_tr, y_te = train["labels"].long().cpu(), test["labels"].long().cpu()
    jobs = []
    for kind in kinds:
        draws_tr, m_tr = _kind_draws(train, kind)
        draws_te, m_te = _kind_draws(test, kind)
        n = min(len(draws_tr), len(draws_te), n_draws or 10**9)
        jobs += [(kind, d, draws_tr[d], m_tr, draws_te[d], m_te) for d in range(n)]
    if progress:
        from tqdm.auto import tqdm

        jobs = tqdm(jobs, desc="single-token probes")
    results: dict[str, dict] = {}
    for kind, d, x_tr, m_tr, x_te, m_te in jobs:
        r = results.setdefault(kind, {"draws": [], "l2": [], "n_train": int(m_tr.sum()), "n_test": int(m_te.sum()),
                                      "coverage": float(m_te.float().mean())})
        if m_tr.sum() < 2 or m_te.sum() == 0 or len(torch.unique(y_tr[m_tr])) < 2:
            r["draws"].append(math.nan)
            r["l2"].append(math.nan)
            continue
        sel = fit_logistic_cv(x_tr[m_tr], y_tr[m_tr], l2_grid=l2_grid, val_fraction=val_fraction,
                              seed=seed + d, **fit_kwargs)
        r["draws"].append(accuracy(sel.classifier, x_te[m_te], y_te[m_te]))
        r["l2"].append(sel.l2)
    for r in results.values():
        vals = torch.tensor([v for v in r["draws"] if not math.isnan(v)], dtype=torch.float64)
        r["mean"] = float(vals.mean()) if len(vals) else math.nan
        r["std"] = float(vals.std(unbiased=False)) if len(vals) > 1 else (0.0 if len(vals) else math.nan)
    return results


def format_mean_std(result: Mapping[str, float], digits: int = 1) -> str:
    """``"79.1 ± 0.4"``: the paper's Table 6 cell format (``"n/a"`` when not measured)."""
    mean, std = result.get("mean", math.nan), result.get("std", math.nan)
    if mean is None or math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


# ---------------------------------------------------------------------------------------------------
# Features for the probes: one forward pass per batch, cached on disk (vitreg.cache)
# ---------------------------------------------------------------------------------------------------
def outlier_cut(loaded, threshold: float | None = None) -> float | None:
    """The absolute outlier cut-off for ``loaded``: ``threshold`` if given, else the model's own (150 for
    DINOv2, Fig. 3), else None (the relative rule mean + 3 std, applied per extraction chunk)."""
    return threshold if threshold is not None else loaded.spec.threshold


def plant_mask(n_images: int, grid: tuple[int, int], *, fraction: float, seed: int, start: int = 0) -> torch.Tensor:
    """Planted outlier positions for images ``start .. start + n_images - 1`` (smoke runs only).

    Each image's mask depends only on ``seed`` and its own index (so chunking does not change it), and
    every image gets at least one planted token (the outlier branch of every probe runs).
    """
    from vitreg.planting import random_outlier_mask

    rows = []
    for i in range(start, start + n_images):
        row = random_outlier_mask(1, grid, fraction=fraction, seed=seed * 1_000_003 + i)[0]
        if not row.any():
            row[(seed + i * 7919) % row.numel()] = True
        rows.append(row)
    return torch.stack(rows) if rows else torch.zeros(0, grid[0] * grid[1], dtype=torch.bool)


def forward_tokens(loaded, images: Sequence, *, layer: str | int = "final_norm", batch_size: int = 8,
                   with_pixels: bool = False, planted_mask: torch.Tensor | None = None, plant_norm: float = 1000.0,
                   plant_block: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Forward ``images`` in batches; keep the probed tokens, the pre-LayerNorm norms and (optionally) pixels.

    Paper: Fig. 5b, Table 1 (probes read the model's output tokens; outliers are found on the norms of
    the last block's output BEFORE the final LayerNorm, Fig. 3).

    Args:
        loaded: a :class:`vitreg.weights.LoadedModel`.
        images: PIL images (or paths/arrays).
        layer: ``"final_norm"`` (the output features downstream tasks use) or a block index (its output,
            before the final LayerNorm).
        batch_size: images per forward pass.
        with_pixels: also return each patch's input pixels (normalised as the model sees them).
        planted_mask: ``(len(images), N)`` patches to turn into outliers (smoke runs; see
            :func:`vitreg.planting.planted`), or None.
        plant_norm, plant_block, seed: planting settings.

    Returns:
        ``{"tokens": (B, T, D), "norms": (B, T) last-block norms pre-LN, "pixels": (B, N, 3p^2)}``, on the CPU.
    """
    from vitreg.capture import capture
    from vitreg.images import preprocess
    from vitreg.planting import planted

    want = dict(norms=[-1], final_norm=layer == "final_norm", outputs=None if layer == "final_norm" else [int(layer)])
    pixels = []
    with torch.inference_mode(), planted(loaded, planted_mask, block=plant_block, norm=plant_norm, seed=seed), \
            capture(loaded.model, to="cpu", **want) as rec:
        for i in range(0, len(images), batch_size):
            x = preprocess(list(images[i:i + batch_size]), loaded)
            loaded.forward(x)
            if with_pixels:
                pixels.append(patch_pixels(x, loaded.spec.patch_size))
    tokens = rec.final_norm if layer == "final_norm" else rec.outputs[int(layer)]
    out = {"tokens": tokens, "norms": rec.norms[-1]}
    if with_pixels:
        out["pixels"] = torch.cat(pixels)
    return out


def _model_key(loaded, layer: str | int, extra: Mapping) -> dict:
    from vitreg.cache import model_fields

    return dict(**model_fields(loaded), layer=layer, **extra)


def patch_token_features(loaded, images: Sequence, *, dataset: str, layer: str | int = "final_norm",
                         batch_size: int = 8, plant_fraction: float = 0.0, plant_norm: float = 1000.0,
                         seed: int = 0, cache: bool = True, cache_root: str | None = None,
                         chunk_size: int = 64, progress: bool = True) -> dict[str, torch.Tensor]:
    """Patch tokens, their pre-LN norms and their input pixels for the local probes (notebook 05).

    Paper: Fig. 5b. Cached on disk keyed by model, weights, resolution, ``dataset`` (a name for the image
    list: include anything that identifies it), layer and the planting settings.

    Args:
        loaded: the model.
        images: PIL images.
        dataset: identifier of ``images`` for the cache key (e.g. ``"pets-test-300-seed0"``).
        layer: ``"final_norm"`` or a block index.
        batch_size: images per forward pass.
        plant_fraction: smoke runs: share of patches planted as outliers (0 = none, the real experiment).
        plant_norm: norm of the planted vector.
        seed: seed of the planting.
        cache: use the on-disk cache.
        cache_root: cache folder (default ``$VITREG_CACHE`` or ``data/cache``).
        chunk_size: images per cache chunk.
        progress: progress bar.

    Returns:
        ``{"patches": (B, N, D) float16, "norms": (B, N) pre-LN norms, "pixels": (B, N, 3p^2),
        "planted": (B, N) bool}``.
    """
    from vitreg.cache import cached_features

    layout = loaded.layout
    key = dict(**_model_key(loaded, layer, dict(plant_fraction=plant_fraction, plant_norm=plant_norm, seed=seed)),
               dataset=dataset, split="images", n=len(images), kind="patch_tokens")

    def compute(start: int, stop: int) -> dict[str, torch.Tensor]:
        mask = plant_mask(stop - start, layout.grid, fraction=plant_fraction, seed=seed, start=start) \
            if plant_fraction > 0 else None
        got = forward_tokens(loaded, images[start:stop], layer=layer, batch_size=batch_size, with_pixels=True,
                             planted_mask=mask, plant_norm=plant_norm, seed=seed)
        planted_ = mask if mask is not None else torch.zeros(stop - start, layout.num_patches, dtype=torch.bool)
        return {"patches": layout.patches(got["tokens"]).half(), "norms": layout.patches(got["norms"]),
                "pixels": got["pixels"].half(), "planted": planted_}

    return cached_features(key, len(images), compute, chunk_size=chunk_size, root=cache_root, enabled=cache,
                           progress=progress)


def single_token_features(loaded, dataset, *, name: str, split: str, indices: torch.Tensor | None = None,
                          n_draws: int = 3, layer: str | int = "final_norm", threshold: float | None = None,
                          k_std: float = 3.0, batch_size: int = 64, plant_fraction: float = 0.0,
                          plant_norm: float = 1000.0, seed: int = 0, cache: bool = True,
                          cache_root: str | None = None, chunk_size: int = 512,
                          progress: bool = True) -> dict[str, torch.Tensor]:
    """Per image: label, [CLS], registers, and ``n_draws`` random normal and outlier patch tokens.

    Paper: Table 1 / App. G Table 6 (notebook 06). Outliers: last-block norm (pre-LN) above
    :func:`outlier_cut` (relative rule per chunk when the model has no cut-off). Tokens are stored as
    float16; the draws are fixed by ``seed`` and the image index. Cached on disk keyed by model, weights,
    resolution, dataset, split, the subset, layer, threshold, draws and planting.

    Args:
        loaded: the model.
        dataset: a dataset of ``(PIL image, label)`` (see :mod:`vitreg.data`).
        name: dataset name (cache key).
        split: split name (cache key).
        indices: subset of the dataset to use (default: all).
        n_draws: random tokens drawn per image and kind.
        layer: ``"final_norm"`` or a block index.
        threshold: outlier cut-off (default: the model's).
        k_std: relative rule width when there is no cut-off.
        batch_size: images per forward pass.
        plant_fraction, plant_norm: smoke runs: planted outliers (0 = none).
        seed: seed of the draws and the planting.
        cache, cache_root, chunk_size, progress: see :func:`vitreg.cache.cached_features`.

    Returns:
        ``labels (n,)``, ``cls (n, D)`` or absent, ``central (n, D)`` (grid-centre patch, [TTR]),
        ``reg (n, R, D)`` or absent, ``normal``/``outlier``
        ``(n, K, D)``, ``has_normal``/``has_outlier``/``n_outliers`` ``(n,)``, ``threshold (n,)``.
    """
    import hashlib

    from vitreg.cache import cached_features
    from vitreg.norms import outlier_threshold

    layout = loaded.layout
    idx = torch.arange(len(dataset)) if indices is None else torch.as_tensor(indices).long()
    cut = outlier_cut(loaded, threshold)
    subset = hashlib.sha256(idx.numpy().tobytes()).hexdigest()[:16]
    key = dict(**_model_key(loaded, layer, dict(plant_fraction=plant_fraction, plant_norm=plant_norm, seed=seed)),
               dataset=name, split=split, n=len(idx), subset=subset, n_draws=n_draws, threshold=cut,
               k_std=k_std, kind="single_tokens")

    def compute(start: int, stop: int) -> dict[str, torch.Tensor]:
        items = [dataset[int(i)] for i in idx[start:stop]]
        mask = plant_mask(stop - start, layout.grid, fraction=plant_fraction, seed=seed, start=start) \
            if plant_fraction > 0 else None
        got = forward_tokens(loaded, [im for im, _ in items], layer=layer, batch_size=batch_size,
                             planted_mask=mask, plant_norm=plant_norm, seed=seed)
        parts = layout.split(got["tokens"])
        norms = layout.patches(got["norms"])
        c = outlier_threshold(norms, threshold=cut, k_std=k_std)
        drawn = sample_tokens(parts.patch, norms > c, n_draws, seed=seed * 1_000_003 + start)
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


# ---------------------------------------------------------------------------------------------------
# Notebook-level summaries
# ---------------------------------------------------------------------------------------------------
def local_information(features: Mapping[str, torch.Tensor], outlier: torch.Tensor, *, grid: tuple[int, int],
                      train_fraction: float = 0.7, max_train_tokens: int | None = None,
                      l2_grid: Sequence[float] = L2_GRID, ridge_grid: Sequence[float] = RIDGE_GRID,
                      seed: int = 0, device: str | torch.device = "auto") -> dict:
    """Both local probes on one model's patch tokens, normal vs outlier (notebook 05).

    Paper: Fig. 5b. Images (not tokens) are split into probe-training and test images, so a test patch
    never comes from a training image. Both probes train on all patches of the training images and are
    evaluated on the test patches, split by ``outlier``.

    Args:
        features: from :func:`patch_token_features` (``patches``, ``pixels``).
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
    perm = torch.randperm(b, generator=torch.Generator().manual_seed(seed))
    n_train = min(max(1, round(b * train_fraction)), b - 1)
    tr_img, te_img = perm[:n_train].sort().values, perm[n_train:].sort().values
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


def nan_to_none(obj):
    """A copy of ``obj`` with NaN/inf floats replaced by None and float dict keys turned into strings
    (results files are strict JSON)."""
    if isinstance(obj, Mapping):
        return {(repr(k) if isinstance(k, float) else k): nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return nan_to_none(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def global_information(loaded, dataset: str, *, root: str | None = None, download: bool = False,
                       max_train: int | None = None, max_test: int | None = None, n_draws: int = 3,
                       layer: str | int = "final_norm", threshold: float | None = None,
                       l2_grid: Sequence[float] = L2_GRID, val_fraction: float = 0.2, batch_size: int = 64,
                       seed: int = 0, cache: bool = True, cache_root: str | None = None, synthetic_n: int = 256,
                       plant_fraction: float = 0.0, plant_norm: float = 1000.0,
                       device: str | torch.device = "auto", progress: bool = True) -> dict:
    """Single-token classification of one dataset with one model (notebook 06).

    Paper: Table 1 / App. G Table 6. Loads the train and test splits (:mod:`vitreg.data`), keeps a
    class-balanced subset of at most ``max_train`` / ``max_test`` images, extracts (or reads from the
    cache) one token of each kind per image and runs :func:`single_token_classification`.

    Args:
        loaded: the model.
        dataset: a :data:`vitreg.data.DATASETS` name (``"synthetic"`` for smoke runs) or an ImageFolder path.
        root: datasets folder (default ``$VITREG_DATA``).
        download: allow torchvision downloads (never when offline).
        max_train, max_test: subset sizes (None: the whole split).
        n_draws: random tokens per kind and image (Table 6's mean +- std).
        layer: ``"final_norm"`` or a block index.
        threshold: outlier cut-off (default: the model's; relative rule when it has none).
        l2_grid, val_fraction: regularisation grid and validation share.
        batch_size: images per forward pass.
        seed: seed of subsets, draws, planting and validation splits.
        cache, cache_root: the feature cache.
        synthetic_n: training images of the synthetic set (its test split has half as many).
        plant_fraction, plant_norm: smoke runs: planted outliers (0 = none).
        device: device of the probes.
        progress: progress bars.

    Returns:
        ``{"dataset", "n_train", "n_test", "num_classes", "outlier_share_train", "outlier_share_test",
        "kinds": {kind: result}}``, or ``{"dataset", "skipped": reason}`` when the data is missing.
    """
    from vitreg.data import subset_indices, try_load_dataset

    extra = dict(root=root, download=download, n=synthetic_n, image_size=loaded.image_size[0], seed=seed)
    feats = {}
    for split, cap in (("train", max_train), ("test", max_test)):
        if dataset == "synthetic" and split == "test":
            extra["n"] = max(2, synthetic_n // 2)
        ds, reason = try_load_dataset(dataset, split, **extra)
        if ds is None:
            return {"dataset": dataset, "skipped": reason}
        idx = subset_indices(ds.labels, cap, seed=seed)
        feats[split] = single_token_features(
            loaded, ds, name=dataset, split=split, indices=idx, n_draws=n_draws, layer=layer, threshold=threshold,
            batch_size=batch_size, plant_fraction=plant_fraction, plant_norm=plant_norm, seed=seed, cache=cache,
            cache_root=cache_root, progress=progress)
    kinds = single_token_classification(feats["train"], feats["test"], n_draws=n_draws, l2_grid=l2_grid,
                                        val_fraction=val_fraction, seed=seed, device=device, progress=progress)
    return {
        "dataset": dataset,
        "n_train": len(feats["train"]["labels"]),
        "n_test": len(feats["test"]["labels"]),
        "num_classes": int(len(torch.unique(feats["train"]["labels"]))),
        "outlier_share_train": float(feats["train"]["has_outlier"].float().mean()),
        "outlier_share_test": float(feats["test"]["has_outlier"].float().mean()),
        "mean_outliers_per_image": float(feats["test"]["n_outliers"].float().mean()),
        "kinds": kinds,
    }
