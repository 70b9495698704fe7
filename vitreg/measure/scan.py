"""``vitreg scan``: does MY ViT have the paper's artifacts, and where? One report card per model.

Paper: Fig. 3 (high-norm patch tokens, bimodal norms), Fig. 4a (the block where they emerge), Fig. 2
(spiky last-layer [CLS] attention), Fig. 7 / §2.2 (registers take the high norms), and the massive
activations of Sun et al. 2024 (a few scalar activations thousands of times the median).

:func:`scan` measures a loaded model over images through the public core (``stream`` + ``capture``) and
the measurement modules (:mod:`vitreg.measure.norms`, :mod:`vitreg.measure.attention`), so it works for every model the
core loads. It is an ordinary call: a test wraps it in ``with planting.planted(...)`` and the scan must
find what was planted. The card's drawing and files live in :mod:`vitreg.present.scan_render` (presentation).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vitreg.measure.attention import artifact_score, attention_maps, uniform_top_share
from vitreg.measure.norms import (DEPTH_QUANTILES, MODE_SHARE_MIN, FractionCI, HighNorms, block_norm_quantiles,
                          emergence_block, high_norm_modes, outlier_fraction, outlier_mask)
from vitreg.core.images import to_display
from vitreg.utils.results import clean_numbers
from vitreg.core.stream import stream
from vitreg.core.tokens import TokenLayout
from vitreg.core.weights import LoadedModel

#: Grid-normalised artifact score (:func:`vitreg.measure.attention.artifact_score`) above which the last block's
#: [CLS] maps count as spiky: a quarter of the map's mass on its top 2% of patches beyond a uniform map's
#: share. DINO ViT-S/16 (no artifacts, Fig. 2) stays well below; one spike holding mass m scores about m.
SPIKY_SCORE_MIN = 0.25
#: Top |activation| over median |activation| of a block's output above which it holds massive
#: activations (Sun et al. 2024 call activations "massive" at ~1000x the median; 100x leaves margin).
MASSIVE_RATIO_MIN = 100.0
#: How the outlier share is measured when the model has no published cut-off.
SCALE_FREE_RULE = ("scale-free: two-Gaussian fit in log-norm, a separate high-norm mode when Ashman's D > 2, "
                   "centres >= 2x apart and 0.1-50% of patches (vitreg.measure.norms.high_norm_modes, as in the report)")


@dataclass
class ScanReport:
    """Everything a report card shows for one model (Paper: Fig. 2, 3, 4a, 7).

    Attributes:
        model: ``LoadedModel.describe()`` (name, weights, resolution; ``pretrained`` False = random weights).
        layout: the token layout (``cls``, ``registers``, ``grid``).
        n_images, image_source: how many images, and where they came from.
        rule, threshold: how outliers are cut (published cut-off or the scale-free rule) and the cut used
            at the last block (None: no separate high-norm mode, so no outliers).
        qs, quantiles: patch-norm quantiles per block ``(L, Q)``, before the final LayerNorm.
        fractions: outlier share of patches per block ``(L,)``; ``emergence``: 1-based block where it settles.
        share: outlier share at the last block with a bootstrap CI over images; ``high_norms`` the fit there.
        attention: last block's [CLS] (or mean-pooled) artifact score against its grid's uniform baseline.
        registers: norm and attention the registers take (None without registers).
        massive: per block top |activation|, median |activation| and their ratio.
        maps, images: a few attention maps ``(k, h, w)`` and their images ``(k, H, W, 3)`` for the card.
        verdict, evidence: one line, and the numbers it rests on.
        seconds: wall time of the scan.
    """

    model: dict[str, Any]
    layout: dict[str, Any]
    n_images: int
    image_source: str
    rule: str
    threshold: float | None
    qs: tuple[float, ...]
    quantiles: torch.Tensor
    fractions: torch.Tensor
    emergence: int | None
    share: FractionCI
    high_norms: HighNorms
    attention: dict[str, Any]
    registers: dict[str, Any] | None
    massive: dict[str, Any]
    maps: torch.Tensor
    images: Any
    seconds: float
    verdict: str = ""
    evidence: list[str] = field(default_factory=list)

    @property
    def random_weights(self) -> bool:
        return not self.model.get("pretrained", True)

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON-able numbers (percentages 0-100); maps and images are left to the figure."""
        return clean_numbers({
            "verdict": self.verdict, "evidence": self.evidence, "random_weights": self.random_weights,
            "model": self.model, "tokens": self.layout, "n_images": self.n_images, "images": self.image_source,
            "outliers": {"rule": self.rule, "threshold": self.threshold, **self.share.to_pct_dict(),
                         "n_tokens": self.share.n_tokens, "emergence_block": self.emergence,
                         "n_blocks": int(self.fractions.shape[0]), **self.high_norms.to_dict()},
            "blocks": {"qs": list(self.qs), "norm_quantiles": self.quantiles.tolist(),
                       "outlier_pct": (100 * self.fractions).tolist()},
            "attention": self.attention, "registers": self.registers, "massive_activations": self.massive,
            "seconds": self.seconds,
        }, "not finite (a degenerate model or too few tokens)")


@dataclass
class _Acc:
    """What the scan keeps of each batch (the batch's full recording is dropped right away)."""

    patch_norms: list[torch.Tensor] = field(default_factory=list)   # (L, b, N) per batch
    prefix_norms: list[torch.Tensor] = field(default_factory=list)  # (b, P) last block
    attn: list[torch.Tensor] = field(default_factory=list)          # (b, heads, 1, T) query row
    top: list[torch.Tensor] = field(default_factory=list)           # (L,) max |activation| per block
    median: list[torch.Tensor] = field(default_factory=list)        # (L,) median |activation| per block
    x: list[torch.Tensor] = field(default_factory=list)


def _query_row(attn: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """``(B, heads, 1, T)``: the [CLS] row, or without a class token the mean over the patch query rows."""
    if layout.num_cls:
        return attn[:, :, :1]
    return attn[:, :, layout.patch_slice].mean(dim=2, keepdim=True)


def _collect(loaded: LoadedModel, images: Sequence[Any], *, batch_size: int, progress: bool, n_maps: int) -> _Acc:
    """Run the model once over ``images`` under one capture per batch and keep per-batch reductions."""
    layout = loaded.layout
    rows = "prefix" if layout.num_cls else "all"
    acc = _Acc()
    for batch in stream(loaded, images, batch_size=batch_size, progress=progress, desc=f"scan {loaded.spec.key}",
                        norms="all", outputs="all", attn=[-1], attn_rows=rows):
        rec = batch.rec
        stack = rec.norm_stack()                                   # (L, b, T)
        acc.patch_norms.append(stack[:, :, layout.patch_slice].clone())
        acc.prefix_norms.append(stack[-1][:, : layout.num_prefix].clone())
        acc.attn.append(_query_row(rec.attn[-1], layout).clone())
        outs = torch.stack([rec.outputs[b].abs().flatten() for b in sorted(rec.outputs)])  # (L, b*T*D)
        acc.top.append(outs.max(dim=1).values)
        acc.median.append(outs.median(dim=1).values)
        if sum(len(x) for x in acc.x) < n_maps:
            acc.x.append(batch.x[: n_maps].detach().cpu())
        del rec, outs
    if not acc.patch_norms:
        raise ValueError("no images to scan")
    return acc


def _attention(attn: torch.Tensor, layout: TokenLayout, top_frac: float) -> tuple[dict[str, Any], torch.Tensor]:
    """Artifact score of the last block's query-row maps (Fig. 2), and the maps."""
    one = TokenLayout(num_cls=1, num_reg=layout.num_reg, grid=layout.grid) if not layout.num_cls else layout
    if not layout.num_cls:  # put the pooled row where attention_maps reads [CLS]: prefix columns then patches
        pad = attn.new_zeros(*attn.shape[:3], 1)
        attn = torch.cat([pad, attn], dim=-1)
    maps = attention_maps(attn, one, token=0)
    scores = artifact_score(maps, top_frac=top_frac)
    return {"query": "[CLS]" if layout.num_cls else "mean over patch queries (no class token)",
            "block": "last", "score_mean": float(scores.mean()), "score_median": float(scores.median()),
            "uniform_top_share": uniform_top_share(layout.num_patches, top_frac), "top_frac": top_frac,
            "spiky": bool(float(scores.median()) > SPIKY_SCORE_MIN), "spiky_min": SPIKY_SCORE_MIN}, maps


def _registers(prefix: torch.Tensor, patch: torch.Tensor, attn: torch.Tensor, layout: TokenLayout,
               cut: float | None) -> dict[str, Any] | None:
    """Norm and attention the registers take at the last block (Fig. 7, App. D.3 Fig. 16)."""
    if not layout.num_reg:
        return None
    regs = prefix[:, layout.reg_slice].float()
    p99 = torch.quantile(patch.float().flatten()[: 2 ** 24], 0.99)  # quantile takes at most 2**24 values
    total = torch.cat([prefix.float(), patch.float()], dim=1).sum(dim=1)
    reg_mass = attn[:, :, 0, layout.reg_slice].float().sum(dim=-1).mean(dim=1)  # (B,) summed over registers
    return {"count": layout.num_reg,
            "norm_median": float(regs.median()), "patch_norm_median": float(patch.float().median()),
            "norm_ratio": float(regs.median() / patch.float().median().clamp_min(1e-12)),
            "norm_share_pct": 100 * float((regs.sum(dim=1) / total).mean()),
            "token_share_pct": 100 * layout.num_reg / layout.num_tokens,
            "above_cut_pct": None if cut is None else 100 * float((regs > cut).float().mean()),
            "above_patch_p99_pct": 100 * float((regs > p99).float().mean()),
            "attention_share_pct": 100 * float(reg_mass.mean()),
            "attention_uniform_pct": 100 * layout.num_reg / layout.num_tokens}


def _massive(top: torch.Tensor, median: torch.Tensor) -> dict[str, Any]:
    """Largest scalar activation per block against the median (Sun et al. 2024, massive activations)."""
    ratio = top / median.clamp_min(1e-12)
    worst = int(ratio.argmax())
    return {"top_abs": top.tolist(), "median_abs": median.tolist(), "ratio": ratio.tolist(),
            "max_ratio": float(ratio[worst]), "max_block": worst + 1, "ratio_min": MASSIVE_RATIO_MIN,
            "found": bool(float(ratio[worst]) >= MASSIVE_RATIO_MIN),
            "median_note": "median |activation| of a block: the median over batches of each batch's median"}


def _block_fractions(norm_stack: torch.Tensor, threshold: float | None, seed: int) -> torch.Tensor:
    """Outlier share per block: the published cut-off at every block, else each block's own high-norm mode."""
    if threshold is not None:
        return torch.stack([outlier_mask(n, threshold=threshold).float().mean() for n in norm_stack])
    fits = [high_norm_modes(n, seed=seed) for n in norm_stack]
    return torch.tensor([f.high_share if f.bimodal else 0.0 for f in fits])


def verdict(report: ScanReport) -> tuple[str, list[str]]:
    """The one-line verdict and the evidence beside it (Paper: Fig. 2, 3, 4a, 7)."""
    s, att, reg, mas = report.share, report.attention, report.registers, report.massive
    n_blocks = int(report.fractions.shape[0])
    evidence = [f"outlier share at the last block: {s} ({report.rule.split(':')[0]}"
                + (f", cut {report.threshold:.4g})" if report.threshold is not None else ")"),
                f"norms bimodal: {'yes' if report.high_norms.bimodal else 'no'} (Ashman's D "
                f"{report.high_norms.separation:.2f}, max/median {report.high_norms.ratio:.1f}x)",
                f"emergence block: {report.emergence if report.emergence is not None else 'none'} of {n_blocks}",
                f"{att['query']} attention artifact score {att['score_median']:.3f} (median; uniform map 0, "
                f"spiky above {SPIKY_SCORE_MIN})",
                f"massive activations: top/median {mas['max_ratio']:.0f}x at block {mas['max_block']} "
                f"({'>=' if mas['found'] else '<'} {MASSIVE_RATIO_MIN:.0f}x)"]
    if reg:
        evidence.append(f"{reg['count']} registers: median norm {reg['norm_ratio']:.1f}x the patches', "
                        f"{reg['attention_share_pct']:.1f}% of the {att['query']} attention "
                        f"(uniform {reg['attention_uniform_pct']:.1f}%)")
    outliers = s.fraction >= MODE_SHARE_MIN and s.fraction > 0
    absorb = reg is not None and reg["above_patch_p99_pct"] >= 50
    if outliers:
        where = (f" from block {report.emergence} of {n_blocks}" if report.emergence is not None
                 else f" (of {n_blocks} blocks)")
        line = f"high-norm tokens in {100 * s.fraction:.1f}% of patches{where}"
        line += "; registers absorb part of them" if absorb else (f" despite {reg['count']} registers" if reg else "")
    elif absorb:
        line = f"no high-norm patch tokens; registers absorb them (register norm {reg['norm_ratio']:.1f}x the patches')"
    elif att["spiky"] or mas["found"]:
        line = "no high-norm patch tokens"
    else:
        line = "no artifacts found"
    extras = [f"spiky {att['query']} attention (score {att['score_median']:.2f})"] if att["spiky"] else []
    if mas["found"]:
        extras.append(f"massive activations {mas['max_ratio']:.0f}x the median at block {mas['max_block']}")
    if extras:
        line += "; " + "; ".join(extras)
    if report.random_weights:
        line += " [random weights]"
    return line, evidence


def scan(loaded: LoadedModel, images: Sequence[Any], *, image_source: str = "", batch_size: int = 8,
         progress: bool = True, n_maps: int = 4, top_frac: float = 0.02, seed: int = 0) -> ScanReport:
    """Scan one model for the paper's artifacts over ``images``: one forward pass per batch.

    Paper: Fig. 3 (share, bimodality), Fig. 4a (emergence), Fig. 2 (attention score), Fig. 7 (registers).
    Hooks installed around the call (``vitreg.planting.planted``) are seen, so planted truth can be checked.

    Args:
        loaded: a model from :func:`vitreg.core.weights.load_model`.
        images: paths, PIL images or arrays.
        image_source: where the images come from (for the card).
        batch_size: images per forward pass. Each batch's block outputs are held at once (blocks x batch x
            tokens x width floats), so lower it for large models.
        progress: progress bar and the run-time estimate from the first batch (printed by the stream).
        n_maps: how many attention maps the card shows.
        top_frac: share of patches of the artifact score.
        seed: seed of the bootstrap and of the fit's token subset.
    """
    began = time.perf_counter()
    layout = loaded.layout
    acc = _collect(loaded, images, batch_size=batch_size, progress=progress, n_maps=n_maps)
    stack = torch.cat(acc.patch_norms, dim=1).float()             # (L, B, N)
    last = stack[-1]
    fit = high_norm_modes(last, seed=seed)
    threshold = loaded.spec.threshold if loaded.spec.threshold is not None else fit.cut
    rule = (f"published cut-off: {loaded.spec.threshold_note}" if loaded.spec.threshold is not None
            else SCALE_FREE_RULE)
    if loaded.spec.threshold is not None:
        mask = outlier_mask(last, threshold=threshold)
    else:  # the fit's cut is the smallest norm it put in the high mode, so that norm counts
        mask = last >= fit.cut if fit.cut is not None else torch.zeros_like(last, dtype=torch.bool)
    fractions = _block_fractions(stack, loaded.spec.threshold, seed)
    first = emergence_block(fractions, min_fraction=MODE_SHARE_MIN)
    attn = torch.cat(acc.attn)
    attention, maps = _attention(attn, layout, top_frac)
    x = torch.cat(acc.x)[:n_maps] if acc.x else torch.empty(0)
    report = ScanReport(
        model=loaded.describe(), layout={"cls": layout.num_cls, "registers": layout.num_reg, "grid": list(layout.grid)},
        n_images=int(last.shape[0]), image_source=image_source, rule=rule, threshold=threshold,
        qs=DEPTH_QUANTILES, quantiles=block_norm_quantiles(stack, DEPTH_QUANTILES), fractions=fractions,
        emergence=None if first is None else first + 1, share=outlier_fraction(mask, seed=seed), high_norms=fit,
        attention=attention, registers=_registers(torch.cat(acc.prefix_norms), last, attn, layout, threshold),
        massive=_massive(torch.stack(acc.top).max(dim=0).values, torch.stack(acc.median).median(dim=0).values),
        maps=maps[:n_maps], images=to_display(x, loaded) if len(x) else x, seconds=0.0)
    report.verdict, report.evidence = verdict(report)
    report.seconds = time.perf_counter() - began
    return report


# --- the zoo in one table (notebook 02) --------------------------------------------------------------------------
#: The columns of :func:`scan_table`, in order.
TABLE_COLUMNS = ("model", "layout", "outlier share", "emergence block", "artifact score", "verdict")


def scan_models(names: Sequence[str], images: Sequence[Any], *, pretrained: bool = True,
                image_size: int | None = None, device: str = "cpu", batch_size: int = 8, progress: bool = True,
                image_source: str = "", seed: int = 0) -> list[ScanReport]:
    """Load and :func:`scan` each model of ``names`` in turn (one model in memory at a time).

    Paper: Fig. 2-4 and 7 across families (DINO, DINOv2 +- registers, DINOv3, CLIP, SigLIP, MAE): which have
    high-norm tokens, from which block, with spiky attention. Used in notebook 02 (the zoo table).

    Args:
        names: zoo keys or timm ViT names.
        images: paths, PIL images or arrays, the same for every model.
        pretrained: False scans random weights (smoke runs; every row then says so).
        image_size: None scans each model at its native resolution; a number, each model at the multiple of
            its own patch size nearest to it (64 px: 4x4 patches of 16 px, 5x5 of 14 px).
        device, batch_size, progress, image_source, seed: as :func:`vitreg.core.weights.load_model` and :func:`scan`.
    """
    from vitreg.core.models import get_spec
    from vitreg.core.weights import load_model

    reports = []
    for name in names:
        patch = get_spec(name).patch_size
        size = None if image_size is None else max(patch, round(image_size / patch) * patch)
        loaded = load_model(name, pretrained=pretrained, image_size=size, device=device)
        reports.append(scan(loaded, images, image_source=image_source, batch_size=batch_size, progress=progress,
                            seed=seed))
        del loaded
    return reports


def scan_table(reports: Sequence[ScanReport]) -> list[dict[str, str]]:
    """One row per scanned model, the columns of :data:`TABLE_COLUMNS`, as text.

    Paper: Fig. 3 (outlier share), Fig. 4a (emergence block), Fig. 2 (artifact score); notebook 02's zoo
    table. ``layout`` is what the model itself says (``1 + 4 + 16x16``: class tokens + registers + patch grid);
    the outlier share has its bootstrap CI over images and the rule it was cut by (``published`` cut-off or
    ``scale-free``); a model on random weights says so in its name and its verdict.
    """
    rows = []
    for r in reports:
        lay = r.layout
        n_blocks = int(r.fractions.shape[0])
        rule = "published" if r.rule.startswith("published") else "scale-free"
        rows.append({
            "model": r.model.get("paper_name", r.model.get("name", "?")) + (" [random weights]" if r.random_weights
                                                                             else ""),
            "layout": f"{lay['cls']} + {lay['registers']} + {lay['grid'][0]}x{lay['grid'][1]}",
            "outlier share": f"{100 * r.share.fraction:.2f}% [{100 * r.share.low:.2f}, {100 * r.share.high:.2f}] "
                             f"({rule})",
            "emergence block": "none" if r.emergence is None else f"{r.emergence} of {n_blocks}",
            "artifact score": f"{r.attention['score_median']:.2f}" + (" (spiky)" if r.attention["spiky"] else ""),
            "verdict": r.verdict,
        })
    return rows


def table_text(rows: Sequence[dict[str, str]]) -> str:
    """``rows`` of :func:`scan_table` as a Markdown table (prints readably as plain text too)."""
    head = "| " + " | ".join(TABLE_COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"
    lines = ["| " + " | ".join(row[c].replace("|", "/") for c in TABLE_COLUMNS) + " |" for row in rows]
    return "\n".join([head, rule, *lines])
