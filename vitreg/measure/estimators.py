"""Linear estimators for the probes: logistic regression (L-BFGS or minibatch Adam) and ridge regression.

Paper: Fig. 5b (position and pixel probes), Table 1 / App. G Table 6 (single-token classification),
Table 2 (ImageNet linear classification). Used by :mod:`vitreg.measure.local_probes`, :mod:`vitreg.measure.global_probes`
and :mod:`vitreg.measure.downstream`.

The paper gives no probe details. The choices here, recorded in each notebook's results: multinomial
logistic regression on standardised features (train mean/std), objective
``mean cross-entropy + l2/2 * ||W||^2`` (bias not penalised), i.e. scikit-learn's
``LogisticRegression(C=1/(l2 * n))``; ``l2`` is chosen on a validation split carved from the training
set, then the probe is refitted on the whole training set. Full-batch L-BFGS by default, Adam on
minibatches for sets that do not fit in memory (``batch_size=...``); several probes of the same images in
minibatch mode share one run (:func:`fit_logistic_cv_joint`: each probe as if fitted alone). Ridge regression is
solved in closed form (float64) for several strengths from one eigendecomposition.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vitreg.core.device import pick_device

#: Default grid of L2 strengths (on standardised features, mean loss), strongest first.
L2_GRID: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
#: Default ridge strengths for the pixel probe (relative to the unit-variance features).
RIDGE_GRID: tuple[float, ...] = (1e1, 1e0, 1e-1, 1e-2, 1e-3, 1e-4)


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


def checked_features(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` itself, checked to be ``(n, D)`` and finite where it lies (its dtype kept)."""
    if x.ndim != 2:
        raise ValueError(f"{name} must be (n, D) features, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN/inf values; check the feature extraction")
    return x


def as_features(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` checked (:func:`checked_features`) and converted to float32."""
    return checked_features(x, name).float()


def fit_features(x: torch.Tensor, name: str, device: str | torch.device = "auto") -> torch.Tensor:
    """The features a probe gathers the rows of its fits from, checked once.

    Paper: Fig. 5b, Tables 1-2 (every logistic probe fits several times on rows of one matrix). On a GPU ``x`` is
    moved there ONCE in its own dtype (a float16 cache moves half the bytes) and checked there; each fit gathers
    its rows and converts them to float32 on the GPU. Gathers, casts and the finite check are exact, so a fit is
    the one it would be on rows prepared in host memory. On the CPU: float32 in host memory, as before.
    """
    dev = pick_device(device)
    if dev.type == "cpu":
        return as_features(x, name)
    return checked_features(x.to(dev), name)



def group_masks(groups: Mapping[str, torch.Tensor] | None, n: int) -> dict[str, torch.Tensor]:
    """Named ``(n,)`` bool masks over test samples (``{"all": ...}`` when None), checked for length."""
    if groups is None:
        return {"all": torch.ones(n, dtype=torch.bool)}
    out = {}
    for name, mask in groups.items():
        mask = mask.reshape(-1).bool().cpu()
        if len(mask) != n:
            raise ValueError(f"group {name!r} mask has {len(mask)} entries for {n} test samples")
        out[name] = mask
    return out



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
    x = as_features(x, "x").to(dev)
    classes, target = _targets(y, classes, len(x), dev)
    if l2 <= 0:
        raise ValueError(f"l2 must be > 0, got {l2}")
    std = init.standardizer if init is not None else Standardizer.fit(x, standardize)
    xs = std(x)
    d, c = xs.shape[1], len(classes)
    w, b = _start(init, d, c, dev)

    def objective(xb: torch.Tensor, tb: torch.Tensor) -> torch.Tensor:
        return _penalised_loss(xb, tb, w, b, l2)

    with _few_threads(dev, xs.shape[0] * d * c):
        _minimise(objective, xs, target, w, b, max_iter=max_iter, batch_size=batch_size, epochs=epochs, lr=lr,
                  seed=seed)
    return LinearClassifier(w.detach(), b.detach(), classes, std, float(l2))


def _penalised_loss(xb: torch.Tensor, tb: torch.Tensor, w: torch.Tensor, b: torch.Tensor, l2: float) -> torch.Tensor:
    """The objective on a batch: ``mean CE(xb W + b, tb) + l2/2 ||W||^2``."""
    return F.cross_entropy(xb @ w + b, tb) + 0.5 * l2 * (w * w).sum()


def _targets(y: torch.Tensor, classes: torch.Tensor | None, n: int,
             dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(classes, target)``: the sorted label values and each label's index among them, on ``dev``; checked."""
    y = y.long().to(dev)
    if n != len(y):
        raise ValueError(f"x has {n} rows but y has {len(y)} labels")
    classes = torch.unique(y) if classes is None else torch.unique(classes.long().to(dev))
    target = torch.searchsorted(classes, y)
    if (target >= len(classes)).any() or (classes[target.clamp_max(len(classes) - 1)] != y).any():
        raise ValueError("y holds labels that are not in `classes`")
    return classes, target


def _start(init: LinearClassifier | None, d: int, c: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Trainable ``(weight, bias)``: a copy of ``init``'s when its shape is ``(d, c)``, else zeros."""
    if init is not None and init.weight.shape == (d, c):
        return (init.weight.detach().clone().to(dev).requires_grad_(True),
                init.bias.detach().clone().to(dev).requires_grad_(True))
    return torch.zeros(d, c, device=dev, requires_grad=True), torch.zeros(c, device=dev, requires_grad=True)


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
        _adam(lambda idx: objective(xs[idx], target[idx]), [w, b], len(xs), batch_size=batch_size, epochs=epochs,
              lr=lr, seed=seed, device=dev)


def _adam(loss_of: Callable[[torch.Tensor], torch.Tensor], params: list[torch.Tensor], n: int, *, batch_size: int,
          epochs: int, lr: float, seed: int, device: torch.device) -> None:
    """Adam on shuffled minibatches of ``n`` rows with a cosine schedule, in place: ``loss_of(idx)`` is the loss of
    the rows ``idx``; the order is ``seed``'s (one permutation per epoch, drawn on the CPU)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(params, lr=lr)
    steps = epochs * math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n, batch_size):
            opt.zero_grad()
            loss_of(perm[i:i + batch_size]).backward()
            opt.step()
            sched.step()


def accuracy(clf: LinearClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in percent (NaN for an empty set)."""
    if len(x) == 0:
        return math.nan
    return float((clf.predict(x) == y.long().cpu()).float().mean() * 100)


def mean_per_class_accuracy(clf: LinearClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over the test classes of each class's top-1 accuracy, in percent (NaN for an empty set).

    Paper: Table 1 / App. G Table 6: DINOv2's logistic-regression suite scores Aircraft, Pets, Caltech101
    and Flowers this way (scikit-learn's ``balanced_accuracy_score`` times 100). Classes absent from
    ``y`` do not count.
    """
    if len(x) == 0:
        return math.nan
    y = y.long().cpu()
    hit = (clf.predict(x) == y).float()
    classes, inverse = torch.unique(y, return_inverse=True)
    per_class = torch.zeros(len(classes)).index_add_(0, inverse, hit) / torch.bincount(inverse).float()
    return float(per_class.mean() * 100)


#: Metrics a probe can be scored with (Table 1: DINOv2's suite uses both).
METRICS = {"top1": accuracy, "mean_per_class": mean_per_class_accuracy}


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
    x = fit_features(x, "x", fit_kwargs.get("device", "auto"))
    y = y.long().cpu()
    classes = torch.unique(y)
    scores: dict[float, float] = {}
    if len(l2_grid) == 1:
        best = float(l2_grid[0])
    else:
        tr, va = split_indices(len(x), val_fraction, seed)
        rows_tr, rows_va = tr.to(x.device), va.to(x.device)  # gathered where the features lie
        prev = None
        for l2 in l2_grid:
            prev = fit_logistic(x[rows_tr], y[tr], l2=l2, classes=classes, init=prev, seed=seed, **fit_kwargs)
            scores[float(l2)] = accuracy(prev, x[rows_va], y[va])
        best = max(scores, key=lambda k: (scores[k], k))  # ties: the stronger penalty
    clf = fit_logistic(x, y, l2=best, classes=classes, seed=seed, **fit_kwargs)
    return SelectedClassifier(clf, best, scores)


def fit_logistic_joint(xs: Sequence[torch.Tensor], y: torch.Tensor, *, l2s: Sequence[float], batch_size: int,
                       classes: torch.Tensor | None = None, standardize: bool = True, max_iter: int = 200,
                       epochs: int = 50, lr: float = 1e-3, device: str | torch.device = "auto", seed: int = 0,
                       inits: Sequence[LinearClassifier | None] | None = None) -> list[LinearClassifier]:
    """Fit one logistic regression per feature matrix on the same labels, all in one minibatch Adam run.

    Paper: Table 2 (the ImageNet probe on [CLS], the mean patch token and both: three heads per seed and model).
    Each head ``h`` is what :func:`fit_logistic` gives for ``(xs[h], y, l2=l2s[h], init=inits[h])`` in minibatch
    mode: the heads share the batch order (``seed``), one gather of the batch rows and one optimizer step per
    minibatch. The summed objective of independent heads gives each head exactly the gradient of its own loss, and
    Adam and the cosine schedule act per element, so each head follows the trajectory of its fit alone; only the
    host time of a step is shared. Full-batch L-BFGS is not joint (its line search would couple the heads).

    Args:
        xs: one ``(n, D_h)`` feature matrix per head (same rows, any widths).
        y: ``(n,)`` labels, shared.
        l2s: each head's L2 strength (> 0).
        batch_size: minibatch size (required).
        classes, standardize, epochs, lr, device, seed: as :func:`fit_logistic` (one value for every head).
        max_iter: unused (L-BFGS only); taken so that the keywords of :func:`fit_logistic` pass through.
        inits: each head's warm start (None entries: zeros and a new standardizer).

    Returns:
        one :class:`LinearClassifier` per head, in order.
    """
    del max_iter
    if batch_size is None:
        raise ValueError("the joint fit is minibatch Adam only: full-batch L-BFGS couples the heads in its line search")
    inits = [None] * len(xs) if inits is None else list(inits)
    if not xs or len(l2s) != len(xs) or len(inits) != len(xs):
        raise ValueError(f"need one l2 and one init per head: {len(xs)} heads, {len(l2s)} l2s, {len(inits)} inits")
    if min(l2s) <= 0:
        raise ValueError(f"every l2 must be > 0, got {list(l2s)}")
    dev = pick_device(device)
    classes, target = _targets(y, classes, len(xs[0]), dev)
    rows, stds = _joint_features(xs, inits, standardize, dev)
    c = len(classes)
    starts = [0]
    for x in xs:
        starts.append(starts[-1] + x.shape[1])
    params = [_start(init, b - a, c, dev) for init, a, b in zip(inits, starts, starts[1:])]

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        xb, tb = rows[idx], target[idx]
        return sum(_penalised_loss(xb[:, a:b], tb, w, bias, l2)
                   for (w, bias), l2, a, b in zip(params, l2s, starts, starts[1:]))

    with _few_threads(dev, len(rows) * max(b - a for a, b in zip(starts, starts[1:])) * c):
        _adam(loss_of, [t for pair in params for t in pair], len(rows), batch_size=batch_size, epochs=epochs, lr=lr,
              seed=seed, device=dev)
    return [LinearClassifier(w.detach(), bias.detach(), classes, std, float(l2))
            for (w, bias), std, l2 in zip(params, stds, l2s)]


def _joint_features(xs: Sequence[torch.Tensor], inits: Sequence[LinearClassifier | None], standardize: bool,
                    dev: torch.device) -> tuple[torch.Tensor, list[Standardizer]]:
    """The heads' standardised features side by side in one ``(n, sum D_h)`` matrix on ``dev`` (one gather per
    minibatch serves every head), and each head's standardizer (its warm start's, else fitted on its features)."""
    n = len(xs[0])
    if any(len(x) != n for x in xs):
        raise ValueError(f"every head needs the same rows, got {[len(x) for x in xs]}")
    out = torch.empty(n, sum(x.shape[1] for x in xs), device=dev)
    stds, at = [], 0
    for i, (x, init) in enumerate(zip(xs, inits)):
        x = as_features(x, f"xs[{i}]").to(dev)
        std = init.standardizer if init is not None else Standardizer.fit(x, standardize)
        block = out[:, at:at + x.shape[1]]  # std(x) written in place: the same values, no (n, D_h) temporaries
        torch.sub(x, std.mean.to(dev), out=block)
        block.div_(std.scale.to(dev))
        stds.append(std)
        at += x.shape[1]
    return out, stds


def fit_logistic_cv_joint(xs: Sequence[torch.Tensor], y: torch.Tensor, *, l2_grid: Sequence[float] = L2_GRID,
                          val_fraction: float = 0.2, seed: int = 0, **fit_kwargs) -> list[SelectedClassifier]:
    """:func:`fit_logistic_cv` for several feature matrices of the same images at once, in minibatch mode.

    Paper: Table 2 (ImageNet linear probe: [CLS], mean patch token, both). Each head gets what
    :func:`fit_logistic_cv` gives for its matrix alone (the same split, warm-started chain over ``l2_grid``, its own
    chosen strength and refit): every fit of the chain and the refit are :func:`fit_logistic_joint` runs, which share
    the batch order and the optimizer steps of the heads.

    Args:
        xs: one ``(n, D_h)`` training feature matrix per head.
        y: ``(n,)`` labels.
        l2_grid, val_fraction, seed: as :func:`fit_logistic_cv`.
        **fit_kwargs: passed to :func:`fit_logistic_joint` (``batch_size`` required).

    Returns:
        one :class:`SelectedClassifier` per head, in order.
    """
    xs = [fit_features(x, f"xs[{i}]", fit_kwargs.get("device", "auto")) for i, x in enumerate(xs)]
    y = y.long().cpu()
    classes = torch.unique(y)
    scores: list[dict[float, float]] = [{} for _ in xs]
    if len(l2_grid) == 1:
        best = [float(l2_grid[0])] * len(xs)
    else:
        tr, va = split_indices(len(y), val_fraction, seed)
        rows_tr, rows_va = tr.to(xs[0].device), va.to(xs[0].device)  # gathered where the features lie
        prev: list[LinearClassifier | None] = [None] * len(xs)
        for l2 in l2_grid:
            prev = fit_logistic_joint([x[rows_tr] for x in xs], y[tr], l2s=[l2] * len(xs), classes=classes,
                                      inits=prev, seed=seed, **fit_kwargs)
            for score, clf, x in zip(scores, prev, xs):
                score[float(l2)] = accuracy(clf, x[rows_va], y[va])
        best = [max(score, key=lambda k, s=score: (s[k], k)) for score in scores]  # ties: the stronger penalty
    clfs = fit_logistic_joint(xs, y, l2s=best, classes=classes, seed=seed, **fit_kwargs)
    return [SelectedClassifier(clf, l2, score) for clf, l2, score in zip(clfs, best, scores)]



# ---------------------------------------------------------------------------------------------------
# Ridge regression (pixel probe)
# ---------------------------------------------------------------------------------------------------
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


def ridge_solutions(x: torch.Tensor, y: torch.Tensor, ridges: Sequence[float], standardize: bool,
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


