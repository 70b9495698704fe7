"""What the registers do: their norms (quantised-looking), where they attend, and what they cost.

Paper: §2.2 (4 registers cost < 2% FLOPs), Fig. 7 and App. D.1 Fig. 15 (norms: the outliers leave the
patches and reappear in the registers, whose norms look quantised), Fig. 9 (registers attend to
different objects) and App. D.3 Fig. 16 (averaged over images: one register favours the borders, one
the upper part; large support like [CLS]). Used in notebook 07.

The attention maps themselves come from :mod:`vitreg.measure.attention` and the norms from
:mod:`vitreg.core.capture`; this module turns them into numbers (the figures are in :mod:`vitreg.present.plots`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from vitreg.core.tokens import TokenLayout

if TYPE_CHECKING:
    from vitreg.core.weights import LoadedModel


# --- norms ---------------------------------------------------------------------------------------
def norms_by_kind(norms: torch.Tensor, layout: TokenLayout) -> dict[str, torch.Tensor]:
    """Split ``(B, T)`` token norms into ``{"patch": (B*N,), "cls": (B,), "reg0": (B,), ...}``.

    Paper: Fig. 7 (norm distributions of patches, [CLS] and registers, side by side).
    """
    parts = layout.split(norms, dim=1)
    out = {"patch": parts.patch.reshape(-1).float()}
    if parts.cls is not None:
        out["cls"] = parts.cls.float()
    if parts.reg is not None:
        for i in range(parts.reg.shape[1]):
            out[f"reg{i}"] = parts.reg[:, i].float()
    return out


@dataclass
class Quantisation:
    """How much a set of values looks like a few discrete levels (Fig. 7: "register norms look quantised").

    1-D k-means with ``k`` levels; ``spread`` is the within-level standard deviation over the total
    one (0: exactly k values); ``reference`` is the same number for Gaussian values with the same count
    (about 0.34 for k = 4); ``score = spread / reference``: far below 1 for quantised values, about 1
    for a unimodal bell.

    Attributes:
        levels: the k level centres, sorted.
        counts: values assigned to each level.
        spread: sqrt(within-level variance / total variance).
        reference: the same for Gaussian samples of the same size.
        score: spread / reference.
    """

    levels: list[float]
    counts: list[int]
    spread: float
    reference: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"levels": self.levels, "counts": self.counts, "spread": self.spread,
                "gaussian_reference": self.reference, "score": self.score}


def kmeans_1d(values: np.ndarray, k: int, iters: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means in one dimension, started at quantiles (deterministic).

    Returns:
        (sorted centres ``(k,)``, label of each value ``(n,)``).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < k:
        raise ValueError(f"need at least k={k} values, got {x.size}")
    centres = np.quantile(x, (np.arange(k) + 0.5) / k)
    for _ in range(iters):
        labels = np.abs(x[:, None] - centres[None]).argmin(1)
        new = np.array([x[labels == j].mean() if (labels == j).any() else centres[j] for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    order = np.argsort(centres)
    remap = np.empty(k, dtype=int)
    remap[order] = np.arange(k)
    return centres[order], remap[labels]


def _spread(x: np.ndarray, k: int) -> tuple[float, np.ndarray, np.ndarray]:
    centres, labels = kmeans_1d(x, k)
    total = x.var()
    within = ((x - centres[labels]) ** 2).mean()
    return (math.sqrt(within / total) if total > 0 else 0.0), centres, labels


def quantisation(values: torch.Tensor | np.ndarray, k: int = 4, *, seed: int = 0) -> Quantisation:
    """Measure how quantised ``values`` look (Paper: Fig. 7, App. D.1 Fig. 15).

    Args:
        values: any shape; flattened (e.g. the norms of all registers over all images).
        k: number of levels (4: one per register is a natural choice).
        seed: seed of the Gaussian reference.

    Returns:
        :class:`Quantisation`.
    """
    x = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64).ravel()
    spread, centres, labels = _spread(x, k)
    ref = _spread(np.random.default_rng(seed).standard_normal(x.size), k)[0]
    return Quantisation(levels=centres.tolist(), counts=np.bincount(labels, minlength=k).tolist(),
                        spread=spread, reference=ref, score=spread / ref if ref > 0 else float("nan"))


def per_token_variation(norms: dict[str, torch.Tensor]) -> dict[str, float]:
    """Coefficient of variation (std / mean over images) of each prefix token's norm.

    A register whose norm is nearly the same on every image (small value) is one "level" of Fig. 7.
    """
    return {k: float(v.std() / v.mean().clamp_min(1e-12)) for k, v in norms.items() if k != "patch" and v.numel() > 1}


# --- where registers attend (Fig. 16) ------------------------------------------------------------
def border_mask(grid: tuple[int, int], width: int = 1) -> torch.Tensor:
    """``(h, w)`` bool: the outer ring of ``width`` patches."""
    h, w = grid
    m = torch.ones(h, w, dtype=torch.bool)
    m[width : h - width, width : w - width] = False
    return m


def top_mask(grid: tuple[int, int]) -> torch.Tensor:
    """``(h, w)`` float weights of the upper half (the middle row of an odd grid counts one half)."""
    h, w = grid
    rows = torch.zeros(h)
    rows[: h // 2] = 1.0
    if h % 2:
        rows[h // 2] = 0.5
    return rows[:, None].expand(h, w).clone()


def spatial_shares(maps: torch.Tensor, *, border_width: int = 1) -> dict[str, torch.Tensor]:
    """Share of each map's mass on the border ring and on the top half, and its effective support.

    Paper: App. D.3 Fig. 16 made numbers ("one register favours borders, one the upper part; large
    support like [CLS]"). A uniform map has ``border = border_uniform`` and ``top = 0.5``.

    Args:
        maps: ``(..., h, w)`` non-negative maps (each need not sum to 1).
        border_width: ring width in patches.

    Returns:
        dict of ``(...)`` tensors: ``border``, ``top``, ``support`` (exp(entropy) / number of patches:
        1 for a uniform map, 1/N for a single patch), and the scalar ``border_uniform``.
    """
    grid = tuple(maps.shape[-2:])
    p = maps.float().flatten(-2)
    p = p / p.sum(-1, keepdim=True).clamp_min(1e-12)
    border = border_mask(grid, border_width).flatten().to(p.device)
    top = top_mask(grid).flatten().to(p.device)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
    return {
        "border": (p * border).sum(-1),
        "top": (p * top).sum(-1),
        "support": entropy.exp() / p.shape[-1],
        "border_uniform": torch.tensor(float(border.float().mean())),
    }


def prefix_attention_summary(attn: torch.Tensor, layout: TokenLayout, *, border_width: int = 1) -> dict[str, dict]:
    """For [CLS] and each register: the mean attention map over images and its spatial shares.

    Paper: Fig. 16 (register attention averaged over many images).

    Args:
        attn: ``(B, heads, rows, T)`` from ``Recording.attn[-1]`` (``attn_rows="prefix"`` suffices).
        layout: the model's token layout.

    Returns:
        token name -> ``{"mean_map": (h, w) tensor, "border": %, "top": %, "support": %,
        "border_uniform": %}`` (shares of the mean map, in percent).
    """
    from vitreg.measure.attention import attention_maps
    from vitreg.core.tokens import prefix_names

    out: dict[str, dict] = {}
    for name in prefix_names(layout):
        mean_map = attention_maps(attn, layout, token=name).mean(0)
        s = spatial_shares(mean_map, border_width=border_width)
        out[name] = {"mean_map": mean_map, **{k: 100.0 * float(v) for k, v in s.items()}}
    return out


# --- cost ------------------------------------------------------------------------------------------
def forward_flops(loaded: "LoadedModel") -> int:
    """FLOPs of one forward pass of one image at the model's size (``torch.utils.flop_counter``).

    Paper: §2.2 (4 registers add < 2% FLOPs). Attention runs on PyTorch's math backend while counting:
    the counter does not see inside some fused kernels (the CPU flash kernel), which would drop the
    attention products, the part that grows fastest with the number of tokens.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, *loaded.image_size, device=loaded.device)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), counter:
        loaded.forward(x)
    return int(counter.get_total_flops())


def flops_overhead_pct(without: "LoadedModel", with_reg: "LoadedModel") -> float:
    """Extra FLOPs of the register model over its twin without registers, in percent."""
    if without.image_size != with_reg.image_size:
        raise ValueError("compare the two models at the same image size")
    return overhead_pct(forward_flops(without), forward_flops(with_reg))


def describe_sequence(layouts: Sequence[TokenLayout]) -> list[str]:
    """One line per layout: ``1 cls + 4 reg + 256 patches = 261 tokens`` (the slicing to get right)."""
    return [f"{lay.num_cls} cls + {lay.num_reg} reg + {lay.num_patches} patches = {lay.num_tokens} tokens"
            for lay in layouts]


# --- one model, all numbers (notebook 07) ---------------------------------------------------------
def model_summary(norms: torch.Tensor, attn: torch.Tensor, layout: TokenLayout, *, threshold: float | None,
                  levels: int = 4, border_width: int = 1, top_frac: float = 0.02) -> dict[str, Any]:
    """Numbers of notebook 07 for one model: patch outliers, prefix-token norms, quantisation, attention.

    Paper: Fig. 7 (norms), Fig. 1 bottom (artifact score of [CLS] maps), Fig. 16 (register attention).

    Args:
        norms: ``(B, T)`` norms of the last block's output, BEFORE the final LayerNorm.
        attn: ``(B, heads, rows, T)`` last-block attention (prefix rows suffice).
        layout: the model's token layout.
        threshold: outlier cut-off (150 for DINOv2); None: mean + 3 std of the patch norms.
        levels: k of :func:`quantisation`.
        border_width: ring width of :func:`spatial_shares`.
        top_frac: share of patches of the artifact score (:func:`vitreg.measure.attention.artifact_score`).

    Returns:
        a JSON-able dict (percentages 0-100); ``mean_maps`` (tensors) is popped by the caller for figures.
        ``patch_outlier_pct`` uses the absolute ``threshold`` (published for DINOv2-g/L only);
        ``high_norms`` is the scale-free measure (:func:`vitreg.measure.norms.high_norm_modes`) that any size can use,
        with ``patch_high_mode_pct`` its share of patches in a separate high-norm mode (0 when unimodal).
    """
    from vitreg.measure.attention import artifact_score, attention_maps
    from vitreg.measure.norms import high_norm_modes, outlier_mask

    kinds = norms_by_kind(norms, layout)
    patch = layout.patches(norms).float()
    mask = outlier_mask(patch, threshold=threshold)
    out: dict[str, Any] = {
        "n_images": int(norms.shape[0]),
        "tokens": describe_sequence([layout])[0],
        "threshold": threshold,
        "patch_outlier_pct": 100.0 * float(mask.float().mean()),
        "patch_norm_median": float(patch.median()),
        "patch_norm_p99": float(torch.quantile(patch.flatten(), 0.99)),
        "patch_norm_max": float(patch.max()),
        "high_norms": high_norm_modes(patch).to_dict(),
        "prefix_norm_median": {k: float(v.median()) for k, v in kinds.items() if k != "patch"},
        "prefix_norm_cv": per_token_variation(kinds),
    }
    regs = [v for k, v in kinds.items() if k.startswith("reg")]
    if regs:
        reg_all = torch.cat(regs)
        out["register_norm_quantisation"] = quantisation(reg_all, k=min(levels, reg_all.numel())).to_dict()
        out["register_above_patch_p99_pct"] = 100.0 * float((reg_all > out["patch_norm_p99"]).float().mean())
    cls_maps = attention_maps(attn, layout, token="cls")
    out["patch_high_mode_pct"] = out["high_norms"]["high_mode_pct"]
    out["cls_artifact_score"] = float(artifact_score(cls_maps, top_frac=top_frac).mean())
    summ = prefix_attention_summary(attn, layout, border_width=border_width)
    out["attention"] = {k: {m: v for m, v in s.items() if m != "mean_map"} for k, s in summ.items()}
    out["mean_maps"] = {k: s["mean_map"] for k, s in summ.items()}
    return out


# --- notebook 07: the public DINOv2 pairs, one model at a time --------------------------------------
#: Figure labels of the DINOv2 sizes.
SIZE_LABELS = {"s": "ViT-S", "b": "ViT-B", "l": "ViT-L", "g": "ViT-g"}


@dataclass(frozen=True)
class RegisterPair:
    """A DINOv2 model and its register twin, compared size by size (Paper: Fig. 7, §2.2).

    Attributes:
        size: ``s``, ``b``, ``l`` or ``g`` (the results key of the pair).
        no_reg: zoo key without registers (``dinov2_l``).
        reg: zoo key of its twin with 4 registers (``dinov2_l_reg``).
    """

    size: str
    no_reg: str
    reg: str

    @property
    def label(self) -> str:
        return SIZE_LABELS.get(self.size, self.size)


def dinov2_pairs(model_pairs: Sequence[Sequence[str]]) -> list[RegisterPair]:
    """Notebook 07's ``model_pairs``, checked against the zoo's register twins (:func:`vitreg.core.models.register_twin`).

    Paper: Fig. 7 (public DINOv2 S/B/L/g, each without and with 4 registers).

    Raises:
        ValueError: a pair that is not ``[dinov2_<size>, dinov2_<size>_reg]``.
    """
    from vitreg.core.models import get_spec, register_twin

    out = []
    for pair in model_pairs:
        plain, reg = pair
        if register_twin(plain) != reg or get_spec(plain).family != "dinov2":
            raise ValueError(f"model_pairs holds [dinov2_<size>, dinov2_<size>_reg] pairs, got {list(pair)}")
        out.append(RegisterPair(size=plain.split("_")[1], no_reg=plain, reg=reg))
    return out


@dataclass
class RegisterMeasurement:
    """Notebook 07's numbers and maps for one model.

    Paper: Fig. 7 (norms), Fig. 1 bottom ([CLS] maps), Fig. 9 (maps per image), Fig. 16 (mean maps), §2.2 (FLOPs).

    Attributes:
        key: zoo key.
        label: the model's label (weights included).
        model: ``loaded.describe()``, what the results record about the model.
        summary: :func:`model_summary` without its tensors (JSON-able).
        mean_maps: token name -> ``(h, w)`` attention map averaged over images (Fig. 16).
        kinds: :func:`norms_by_kind` of the last block's norms (Fig. 7).
        maps: token name -> ``(n_show, h, w)`` attention maps of the first images (Fig. 1, Fig. 9).
        flops: :func:`forward_flops` of one image.
    """

    key: str
    label: str
    model: dict[str, Any]
    summary: dict[str, Any]
    mean_maps: dict[str, torch.Tensor]
    kinds: dict[str, torch.Tensor]
    maps: dict[str, torch.Tensor]
    flops: int

    def __str__(self) -> str:
        s = self.summary
        return (f"{self.label:32s} {s['tokens']}: patch outliers {s['patch_outlier_pct']:.2f}% "
                f"(> {s['threshold']}), in a separate high-norm mode {s['patch_high_mode_pct']:.2f}% "
                f"(max/median {s['high_norms']['max_median_ratio']:.1f}x, separation {s['high_norms']['separation']:.1f}), "
                f"median patch norm {s['patch_norm_median']:.1f}, "
                f"prefix medians {({k: round(v, 1) for k, v in s['prefix_norm_median'].items()})}")

    def mean_map_shares(self) -> dict[str, dict[str, Any]]:
        """Token name -> ``{"mean_map": (h, w), "border", "top", "support", "border_uniform"}`` (Fig. 16)."""
        return {name: {"mean_map": self.mean_maps[name], **shares} for name, shares in self.summary["attention"].items()}

    def shares_text(self) -> dict[str, str]:
        """Fig. 16 as numbers, one short line per token."""
        return {name: f"border {s['border']:.0f}% (uniform {s['border_uniform']:.0f}%), top {s['top']:.0f}%, "
                      f"support {s['support']:.0f}%" for name, s in self.summary["attention"].items()}


def measure_model(loaded: "LoadedModel", rec: Any, *, levels: int = 4, border_width: int = 1,
                  n_show: int = 4) -> RegisterMeasurement:
    """Everything notebook 07 reads from one model's recording of the last block.

    Paper: Fig. 7, Fig. 1 bottom, Fig. 9, Fig. 16, §2.2. ``rec`` holds ``norms[-1]`` and ``attn[-1]``
    (prefix rows) of :func:`vitreg.core.extract.extract`; they are moved to the CPU with a blocking copy.
    The FLOPs are counted here, outside any planting context the recording ran under.
    """
    from vitreg.measure.attention import attention_maps

    norms, attn = rec.norms[-1].cpu(), rec.attn[-1].cpu()
    lay = loaded.layout
    summary = model_summary(norms, attn, lay, threshold=loaded.spec.threshold, levels=levels, border_width=border_width)
    mean_maps = summary.pop("mean_maps")
    maps = {name: attention_maps(attn[:n_show], lay, token=name) for name in lay.kinds()[: lay.num_prefix]}
    return RegisterMeasurement(key=loaded.spec.key, label=loaded.label, model=loaded.describe(), summary=summary,
                               mean_maps=mean_maps, kinds=norms_by_kind(norms, lay), maps=maps,
                               flops=forward_flops(loaded))


def pair_text(label: str, no_reg: dict[str, Any], reg: dict[str, Any]) -> str:
    """One line on a pair (Fig. 7): patch outliers without -> with registers, where the high norms went."""
    q = reg["register_norm_quantisation"]
    return (f"{label}: patch outliers {no_reg['patch_outlier_pct']:.2f}% -> {reg['patch_outlier_pct']:.2f}% "
            f"(scale-free high-norm mode {no_reg['patch_high_mode_pct']:.2f}% -> {reg['patch_high_mode_pct']:.2f}%) | "
            f"register norms above the patches' 99th percentile: {reg['register_above_patch_p99_pct']:.0f}% | "
            f"quantisation score {q['score']:.2f} (levels {[round(v) for v in q['levels']]}) | "
            f"per-register CV over images {({k: round(v, 2) for k, v in reg['prefix_norm_cv'].items()})}")


def overhead_pct(flops_without: float, flops_with: float) -> float:
    """Extra FLOPs in percent of ``flops_without`` (Paper: §2.2, 4 registers cost < 2%)."""
    return 100.0 * (flops_with - flops_without) / flops_without
