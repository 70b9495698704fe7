"""Token norms and high-norm ("outlier", "artifact") tokens.

Paper: Fig. 3 (bimodal norm histogram of DINOv2 ViT-g, cut-off 150, 2.37% outliers), Fig. 4a (outliers
separate around block 15 of 40), App. A Fig. 10 (outlier frequency per grid position: borders and
vertical stripes). Used in notebooks 02 (norms), 03 (emergence) and 04 (redundant patches).

Always measure norms BEFORE the final LayerNorm (``Recording.norms`` does): after it the outliers vanish
from the histogram (dinov2 issues #293 and #373).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


def token_norms(tokens: torch.Tensor) -> torch.Tensor:
    """L2 norm over channels of every token.

    Paper: Fig. 3 ("L2 norm of each patch token at the output of the model").

    Args:
        tokens: ``(..., D)`` token features, e.g. ``(B, T, D)`` block outputs.

    Returns:
        ``(...)`` float tensor of norms, e.g. ``(B, T)``.
    """
    return tokens.float().norm(dim=-1)


def outlier_threshold(norms: torch.Tensor, *, threshold: float | None = None, k_std: float = 3.0) -> float:
    """The cut-off above which a token counts as high-norm.

    Paper: Fig. 3 (150 for DINOv2). [TTR]'s relative rule for models without a published cut-off:
    ``mean + k_std * std`` of all patch norms given (pooled over images and positions).

    Args:
        norms: patch-token norms of any shape (all values are pooled).
        threshold: absolute cut-off; ``None`` uses the relative rule.
        k_std: width of the relative rule.

    Returns:
        the cut-off as a float.
    """
    if threshold is not None:
        return float(threshold)
    values = norms.float().flatten()
    if values.numel() < 2:
        raise ValueError("the relative rule needs at least 2 norms; pass an absolute threshold instead")
    return float(values.mean() + k_std * values.std())


def outlier_mask(norms: torch.Tensor, *, threshold: float | None = None, k_std: float = 3.0) -> torch.Tensor:
    """Mark high-norm ("artifact") patch tokens: ``norm > cut-off``.

    Paper: Fig. 3 (DINOv2 ViT-g: norm > 150 at the output, 2.37% of tokens).

    Args:
        norms: ``(B, N)`` L2 norms of patch tokens (no prefix tokens), measured BEFORE the final LayerNorm.
        threshold: absolute cut-off; ``None`` uses mean + k_std * std over all given tokens.
        k_std: width of the relative rule.

    Returns:
        bool mask with the shape of ``norms``.
    """
    return norms.float() > outlier_threshold(norms, threshold=threshold, k_std=k_std)


@dataclass(frozen=True)
class FractionCI:
    """A fraction of tokens with a bootstrap confidence interval over images."""

    fraction: float
    low: float
    high: float
    level: float
    n_images: int
    n_tokens: int

    def to_dict(self) -> dict:
        return {"fraction": self.fraction, "ci_low": self.low, "ci_high": self.high, "ci_level": self.level,
                "n_images": self.n_images, "n_tokens": self.n_tokens}

    def to_pct_dict(self) -> dict:
        """The fraction and its interval in percent, as results files write an outlier share."""
        return {"outlier_pct": 100 * self.fraction, "ci_low_pct": 100 * self.low, "ci_high_pct": 100 * self.high}

    def __str__(self) -> str:
        return (f"{100 * self.fraction:.2f}% [{100 * self.low:.2f}, {100 * self.high:.2f}] "
                f"({100 * self.level:.0f}% CI over {self.n_images} images)")


def outlier_fraction(mask: torch.Tensor, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> FractionCI:
    """Fraction of outlier tokens with a percentile bootstrap CI that resamples IMAGES.

    Paper: Fig. 3 caption (2.37% of ViT-g tokens). Tokens of one image are not independent, so the
    interval resamples whole images with replacement.

    Args:
        mask: ``(B, N)`` bool outlier mask, one row per image.
        n_boot: number of bootstrap resamples.
        level: coverage of the interval (0.95 for a 95% CI).
        seed: seed of the resampling.

    Returns:
        :class:`FractionCI` with the pooled fraction and the interval.
    """
    if mask.dim() != 2 or mask.shape[0] < 1:
        raise ValueError(f"mask must be (B, N) with one row per image, got shape {tuple(mask.shape)}")
    per_image = mask.float().mean(dim=1).cpu()  # equal N per image, so the pooled fraction is the mean
    frac = float(per_image.mean())
    b = per_image.shape[0]
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, b, (n_boot, b), generator=gen)
    boots = per_image[idx].mean(dim=1)
    alpha = (1 - level) / 2
    low, high = torch.quantile(boots, torch.tensor([alpha, 1 - alpha])).tolist()
    return FractionCI(frac, float(low), float(high), level, b, int(mask.numel()))


def norm_ratio(norms: torch.Tensor) -> float:
    """Max over median of the norms: ~10 for DINOv2 ViT-g before the final LayerNorm, ~1 after it.

    Paper: Fig. 3 ("about 10x the normal norm"); a threshold-free measure of the outliers.
    """
    values = norms.float().flatten()
    return float(values.max() / values.median())


def block_outlier_fractions(norm_stack: torch.Tensor, *, threshold: float | None = None,
                            k_std: float = 3.0) -> torch.Tensor:
    """Fraction of outlier patches at every block.

    Paper: Fig. 4a (outliers appear around block 15 of 40 in ViT-g).

    Args:
        norm_stack: ``(L, B, N)`` patch norms per block (``Recording.norm_stack()`` then the patch slice).
        threshold: absolute cut-off applied at every block; ``None`` uses the relative rule per block.
        k_std: width of the relative rule.

    Returns:
        ``(L,)`` float tensor of fractions.
    """
    _check_stack(norm_stack)
    return torch.stack([outlier_mask(n, threshold=threshold, k_std=k_std).float().mean() for n in norm_stack])


def block_norm_quantiles(norm_stack: torch.Tensor, qs: tuple[float, ...] = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95,
                                                                              0.99, 1.0)) -> torch.Tensor:
    """Per-block norm distribution summarised by quantiles (pooled over images and patches).

    Paper: Fig. 4a (norm distribution along depth).

    Args:
        norm_stack: ``(L, B, N)`` patch norms per block.
        qs: quantile levels in [0, 1].

    Returns:
        ``(L, len(qs))`` tensor.
    """
    _check_stack(norm_stack)
    flat = norm_stack.float().flatten(1)
    return torch.quantile(flat, torch.tensor(qs, dtype=flat.dtype, device=flat.device), dim=1).T


def emergence_block(fractions: torch.Tensor, *, min_fraction: float = 0.005, span: int = 3) -> int | None:
    """First block (0-based) from which the outlier fraction stays at or above ``min_fraction`` for
    ``span`` consecutive blocks (fewer at the end of the network).

    Paper: Fig. 4a ("around layer 15" of ViT-g's 40). ``span`` tolerates a drop at the very last blocks
    ([TTR]: the maximum norm of DINOv2-L falls at the last block's output). ``None`` when outliers never
    settle in.
    """
    above = (fractions >= min_fraction).tolist()
    for i in range(len(above)):
        if all(above[i:i + span]):
            return i
    return None


DEPTH_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


@dataclass(frozen=True)
class DepthProfile:
    """Patch norms of one model along its depth: the outlier share per block and when it settles in.

    Paper: Fig. 4a (ViT-g: high-norm tokens separate from the rest around block 15 of 40, none before).
    Built by :func:`depth_profile`; used in notebook 03.
    """

    fractions: torch.Tensor          # (L,) share of outlier patches per block
    quantiles: torch.Tensor          # (L, len(qs)) patch-norm quantiles per block
    qs: tuple[float, ...]
    threshold: float | None
    emergence: int | None            # 1-based block where outliers settle in, None when they never do

    @property
    def n_blocks(self) -> int:
        return int(self.fractions.shape[0])

    @property
    def early_outlier_pct(self) -> float:
        """Highest outlier share (%) over the first 10% of blocks (at least one block); the paper: none."""
        return 100 * float(self.fractions[: max(1, self.n_blocks // 10)].max())

    def plot_stats(self) -> dict:
        """What :func:`vitreg.present.plots.plot_block_norms` draws for this model."""
        return {"quantiles": self.quantiles, "qs": self.qs, "fractions": self.fractions,
                "threshold": self.threshold, "emergence": self.emergence}

    def to_dict(self) -> dict:
        """The profile for a results file: shares in percent, norms per block as lists."""
        return {"emergence_block": self.emergence, "n_blocks": self.n_blocks,
                "fractions_pct": (100 * self.fractions).tolist(),
                "median_norm": self.quantiles[:, self.qs.index(0.5)].tolist(),
                "max_norm": self.quantiles[:, self.qs.index(1.0)].tolist(),
                "early_outlier_pct": self.early_outlier_pct}


def depth_profile(norm_stack: torch.Tensor, *, threshold: float | None = None, k_std: float = 3.0,
                  min_fraction: float = 0.005, span: int = 3, qs: tuple[float, ...] = DEPTH_QUANTILES) -> DepthProfile:
    """Outlier share, norm quantiles and the emergence block of one model's patch norms at every block.

    Paper: Fig. 4a. Combines :func:`block_outlier_fractions`, :func:`block_norm_quantiles` and
    :func:`emergence_block` (reported 1-based, as the paper counts blocks).

    Args:
        norm_stack: ``(L, B, N)`` patch norms per block, before the final LayerNorm.
        threshold: absolute cut-off at every block; ``None`` uses the relative rule per block.
        k_std: width of the relative rule.
        min_fraction, span: the emergence rule (see :func:`emergence_block`).
        qs: quantile levels; must hold 0.5 and 1.0 (median and maximum go into the results).
    """
    if 0.5 not in qs or 1.0 not in qs:
        raise ValueError(f"qs {qs} must include 0.5 and 1.0")
    fractions = block_outlier_fractions(norm_stack, threshold=threshold, k_std=k_std)
    first = emergence_block(fractions, min_fraction=min_fraction, span=span)
    return DepthProfile(fractions, block_norm_quantiles(norm_stack, qs), tuple(qs), threshold,
                        None if first is None else first + 1)


def outlier_frequency_map(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """How often each grid position holds an outlier, over images.

    Paper: App. A, Fig. 10 (borders more often; vertical stripes in the no-register DINOv2, up to >20%).

    Args:
        mask: ``(B, N)`` bool outlier mask of patch tokens (row-major, ``N = h * w``).
        grid: ``(h, w)`` patch grid (``TokenLayout.grid``).

    Returns:
        ``(h, w)`` float tensor of frequencies in [0, 1].
    """
    h, w = grid
    if mask.dim() != 2 or mask.shape[1] != h * w:
        raise ValueError(f"mask must be (B, {h * w}) for a {h}x{w} grid, got shape {tuple(mask.shape)}")
    return mask.float().mean(dim=0).reshape(h, w)


def border_ratio(freq_map: torch.Tensor, width: int = 1) -> float:
    """Outlier frequency on the border ring over that of the interior (>1: borders favoured).

    Paper: App. A (outliers sit more often near the borders). ``nan`` if the interior has none.
    """
    h, w = freq_map.shape
    if h <= 2 * width or w <= 2 * width:
        raise ValueError(f"grid {h}x{w} too small for a border of width {width}")
    inner = torch.zeros_like(freq_map, dtype=torch.bool)
    inner[width:h - width, width:w - width] = True
    inside = float(freq_map[inner].mean())
    return float(freq_map[~inner].mean()) / inside if inside > 0 else math.nan


def stripe_index(freq_map: torch.Tensor) -> float:
    """Vertical-stripe strength: spread of the column means over spread of the row means.

    Paper: App. A, Fig. 10 (vertical stripes from non-antialiased position-embedding interpolation).
    Values well above 1 mean the frequency varies with the column more than with the row.
    ``nan`` for a constant map.
    """
    col_sd = float(freq_map.mean(dim=0).std())
    row_sd = float(freq_map.mean(dim=1).std())
    if row_sd == 0:
        return math.inf if col_sd > 0 else math.nan
    return col_sd / row_sd


def _check_stack(norm_stack: torch.Tensor) -> None:
    if norm_stack.dim() != 3:
        raise ValueError(f"expected (L, B, N) norms per block, got shape {tuple(norm_stack.shape)}; "
                         "use layout.patches on each block's (B, T) norms first")


# ---------------------------------------------------------------------------------------------------
# Scale-free high-norm measure: no absolute cut-off
# ---------------------------------------------------------------------------------------------------
#: Ashman's D above which two Gaussian components count as separated (Ashman, Bird & Zepf 1994, AJ 108:
#: D > 2 is needed for a clean separation of a two-Gaussian mixture). A single Gaussian fitted with two
#: components by EM gives overlapping components (D well under 2); DINOv2-g's 10x outliers give D > 5.
SEPARATION_MIN = 2.0
#: Smallest share of tokens the high component must hold to count as a mode (0.1%; Fig. 3: 2.37%).
MODE_SHARE_MIN = 0.001
#: Largest share: high-norm tokens are a minority (Fig. 3: 2.37%); a fit that puts most tokens in the high
#: component has split the bulk of the distribution, not found outliers.
MODE_SHARE_MAX = 0.5
#: Smallest ratio of the two components' centres (geometric means): the paper's outliers sit ~10x above the
#: normal norm (Fig. 3); 2x leaves a factor 5 of margin, and two close bumps of the bulk do not count.
MODE_GAP_MIN = 2.0


@dataclass(frozen=True)
class HighNorms:
    """Whether a model's patch norms hold a separate high-norm mode, measured without an absolute cut-off.

    Paper: Fig. 3 (the norm histogram of ViT-g is bimodal, outliers ~10x the normal norm) and Fig. 4c
    (which sizes have outliers). Built by :func:`high_norm_modes`. The fit is in log-norm, so multiplying
    every norm by a constant changes nothing: a small model with outliers at norm 60 (median 6) is found
    although the 150 cut-off of DINOv2-g/L sees none.

    Attributes:
        ratio: max over median norm.
        separation: Ashman's D of the two-component fit in log-norm, ``|mu1 - mu2| / sqrt((s1^2 + s2^2) / 2)``.
        high_share: share of tokens assigned to the high component (posterior > 0.5), in [0, 1].
        gap: ratio of the high component's centre to the low one's (in norm, not log-norm).
        cut: the smallest norm assigned to the high mode (the scale-free cut-off), None without a high mode.
        bimodal: a separate high-norm mode: ``separation > SEPARATION_MIN``, ``gap >= MODE_GAP_MIN`` and
            ``MODE_SHARE_MIN <= high_share < MODE_SHARE_MAX``.
    """

    ratio: float
    separation: float
    high_share: float
    gap: float
    cut: float | None
    bimodal: bool

    def to_dict(self) -> dict:
        """For a results file: shares in percent (``high_mode_pct`` is 0 when the norms are unimodal)."""
        return {"max_median_ratio": self.ratio, "separation": self.separation, "mode_gap": self.gap,
                "bimodal": self.bimodal, "high_mode_pct": 100 * self.high_share if self.bimodal else 0.0,
                "mode_cut": self.cut, "separation_min": SEPARATION_MIN, "mode_gap_min": MODE_GAP_MIN}


def _gmm2_log(x: np.ndarray, iters: int = 200, tol: float = 1e-8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EM for a two-component 1-D Gaussian mixture (float64, numpy: many tiny steps, no thread overhead),
    started from a 2-means split of ``x`` seeded at its extremes.

    Returns ``(weights, means, stds)``, low component first.
    """
    centres = np.array([x.min(), x.max()])
    lab = np.zeros(len(x), dtype=bool)
    for _ in range(100):   # 2-means in 1-D
        lab = np.abs(x - centres[0]) > np.abs(x - centres[1])
        new = np.array([x[~lab].mean() if (~lab).any() else centres[0], x[lab].mean() if lab.any() else centres[1]])
        if np.array_equal(new, centres):
            break
        centres = new
    floor = 1e-3 * float(x.std()) + 1e-9
    resp = np.stack([~lab, lab], axis=1).astype(np.float64)
    prev = -np.inf
    for _ in range(iters):
        w = np.maximum(resp.sum(0), 1e-12)
        mu = (resp * x[:, None]).sum(0) / w
        sd = np.maximum(np.sqrt((resp * (x[:, None] - mu) ** 2).sum(0) / w), floor)
        logp = np.log(w / len(x)) - np.log(sd) - 0.5 * ((x[:, None] - mu) / sd) ** 2
        top = logp.max(1, keepdims=True)
        total = top[:, 0] + np.log(np.exp(logp - top).sum(1))
        resp = np.exp(logp - total[:, None])
        ll = float(total.mean())
        if ll - prev < tol:
            break
        prev = ll
    order = np.argsort(mu)
    return (w / len(x))[order], mu[order], sd[order]


def high_norm_modes(norms: torch.Tensor, *, max_tokens: int = 20_000, seed: int = 0) -> HighNorms:
    """Scale-free test for a high-norm mode: max/median ratio and a two-Gaussian fit in log-norm.

    Paper: Fig. 3 (bimodal histogram), Fig. 4c (size trend: used for the S/B/L proxy where the 150 cut-off
    of ViT-g/L does not apply), §2.2 / Fig. 7 (no outliers with registers). Used in notebooks 03 and 07.
    The absolute 150 stays for DINOv2-g/L where it is published (:func:`outlier_mask`).

    Args:
        norms: patch-token norms of any shape (pooled), before the final LayerNorm.
        max_tokens: fit on a seeded random subset of at most this many norms (the ratio uses all).
        seed: seed of the subset.

    Returns:
        a :class:`HighNorms`.
    """
    values = norms.detach().float().flatten().cpu().numpy().astype(np.float64)
    if values.size < 10:
        raise ValueError(f"need at least 10 norms for a two-component fit, got {values.size}")
    ratio = float(values.max() / max(float(np.median(values)), 1e-12))
    x = np.log(np.maximum(values, 1e-12))
    if len(x) > max_tokens:
        x = x[np.random.default_rng(seed).permutation(len(x))[:max_tokens]]
    if float(x.std()) == 0.0:
        return HighNorms(ratio, 0.0, 0.0, 1.0, None, False)
    pi, mu, sd = _gmm2_log(x)
    separation = float(abs(mu[1] - mu[0]) / np.sqrt((sd[0] ** 2 + sd[1] ** 2) / 2))
    logp = np.log(pi) - np.log(sd) - 0.5 * ((x[:, None] - mu) / sd) ** 2
    high = logp[:, 1] > logp[:, 0]
    share = float(high.mean())
    gap = float(np.exp(mu[1] - mu[0]))
    bimodal = bool(separation > SEPARATION_MIN and gap >= MODE_GAP_MIN and MODE_SHARE_MIN <= share < MODE_SHARE_MAX)
    cut = float(np.exp(x[high].min())) if bimodal and high.any() else None
    return HighNorms(ratio, separation, share, gap, cut, bimodal)
