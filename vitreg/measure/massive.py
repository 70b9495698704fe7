"""Massive activations: a few scalar activations, huge and nearly input-independent (beyond the paper).

Paper: not in "Vision Transformers Need Registers"; Sun, Chen, Kolter, Liu, "Massive Activations in Large
Language Models" (COLM 2024), their ViT section (README, References): a handful of scalars of a block's output
exceed 100 and 1000x the median magnitude, sit on fixed feature dimensions, and on DINOv2-reg live in the
registers; fixing the register features to their mean over many images changes ImageNet accuracy by
<= 0.2 points. Used in notebook 11.

Block outputs of a whole dataset do not fit in memory (ViT-L at 518 px: 135 MB per image over 24 blocks),
so :func:`measure` reduces every batch to its top activations on the model's device before the next one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from vitreg.core import hooks
from vitreg.core.stream import stream

#: Sun et al.'s criterion: a massive activation is larger than this in magnitude ...
MASSIVE_ABS = 100.0
#: ... and at least this many times the median magnitude of the same block output.
MASSIVE_RATIO = 1000.0


def top_activations(outputs: torch.Tensor, k: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` largest |activations| of each image's block output, where they are, and the median.

    Paper: Sun et al. Fig. 1 / their ViT figure (top-3 magnitudes per layer against the median).

    Args:
        outputs: ``(B, T, D)`` one block's output (pre final LayerNorm).
        k: activations to keep per image.

    Returns:
        ``(values (B, k), tokens (B, k), channels (B, k), median (B,))``: |value|, its token index (in the
        model's token order, prefix included) and feature channel; the median |activation| of the image.
    """
    b, t, d = outputs.shape
    mag = outputs.detach().float().abs().reshape(b, t * d)
    values, flat = mag.topk(min(k, t * d), dim=1)
    return values, flat // d, flat % d, mag.median(dim=1).values


def is_massive(values: torch.Tensor, median: torch.Tensor, *, abs_min: float = MASSIVE_ABS,
               ratio: float = MASSIVE_RATIO) -> torch.Tensor:
    """Sun et al.'s criterion: ``|value| > abs_min`` and ``|value| >= ratio x median`` (same image).

    Args:
        values: ``(B, k)`` magnitudes from :func:`top_activations`.
        median: ``(B,)`` median magnitude of each image's block output.
    """
    return (values > abs_min) & (values >= ratio * median[:, None])


@dataclass
class MassiveActivations:
    """Top activations of every block over a set of images (:func:`measure`).

    Attributes:
        values, tokens, channels: ``(L, N, k)`` per block and image: |value|, token index, channel.
        median: ``(L, N)`` median |activation| of each block output.
        kinds: the kind of each token index (``"cls"``, ``"reg0"``.., ``"patch"``; the model's layout).
        high_norm: ``(L, N, k)`` whether the token carrying the activation is a high-norm token of that
            block (norm above mean + ``k_std`` std of the block's token norms over all images).
    """

    values: torch.Tensor
    tokens: torch.Tensor
    channels: torch.Tensor
    median: torch.Tensor
    kinds: list[str]
    high_norm: torch.Tensor

    def massive(self, *, abs_min: float = MASSIVE_ABS, ratio: float = MASSIVE_RATIO) -> torch.Tensor:
        """``(L, N, k)`` bool: which of the kept activations pass the criterion."""
        return torch.stack([is_massive(v, m, abs_min=abs_min, ratio=ratio) for v, m in zip(self.values, self.median)])

    def per_block(self) -> list[dict[str, float]]:
        """Per block: median over images of the top-1/2/3 magnitudes, of the median, and the ratio top-1/median."""
        med = self.values.median(dim=1).values  # (L, k)
        m = self.median.median(dim=1).values
        return [{"top1": float(med[i, 0]), "top2": float(med[i, min(1, med.shape[1] - 1)]),
                 "top3": float(med[i, min(2, med.shape[1] - 1)]), "median": float(m[i]),
                 "ratio": float(med[i, 0] / m[i].clamp_min(1e-12))} for i in range(len(m))]

    def summary(self, *, abs_min: float = MASSIVE_ABS, ratio: float = MASSIVE_RATIO, top_channels: int = 3) -> dict:
        """Numbers for the results: where the massive activations are, and on which channels.

        ``blocks_with_massive``: blocks where at least half the images have one; ``pct_on_*``: share (%) of
        all massive activations on [CLS], registers, patches, and on high-norm tokens; ``channel_share_pct``:
        share carried by the ``top_channels`` most frequent channels (fixed dimensions: near 100).
        """
        mass = self.massive(abs_min=abs_min, ratio=ratio)
        per_image = mass.any(dim=2).float().mean(dim=1)  # (L,) share of images with one
        n = int(mass.sum())
        kinds = [self.kinds[int(t)].rstrip("0123456789") for t in self.tokens[mass]]
        counts = Counter(int(c) for c in self.channels[mass])
        top = counts.most_common(top_channels)
        pct = (lambda x: 100.0 * x / n) if n else (lambda x: float("nan"))
        return {
            "n_massive": n,
            "max_abs": float(self.values[:, :, 0].max()),
            "max_ratio": float((self.values[:, :, 0] / self.median.clamp_min(1e-12)).max()),
            "blocks_with_massive": [i for i, s in enumerate(per_image.tolist()) if s >= 0.5],
            "pct_on_cls": pct(kinds.count("cls")), "pct_on_reg": pct(kinds.count("reg")),
            "pct_on_patch": pct(kinds.count("patch")),
            "pct_on_high_norm": pct(int(self.high_norm[mass].sum())),
            "channels": [c for c, _ in top],
            "channel_share_pct": pct(sum(c for _, c in top)),
        }

    def positions(self, *, abs_min: float = MASSIVE_ABS, ratio: float = MASSIVE_RATIO) -> set[tuple[int, int]]:
        """The distinct ``(token, channel)`` pairs of all massive activations (any block, any image)."""
        mass = self.massive(abs_min=abs_min, ratio=ratio)
        return {(int(t), int(c)) for t, c in zip(self.tokens[mass], self.channels[mass])}


def measure(loaded: Any, images: Sequence[Any], *, k: int = 10, batch_size: int = 8, k_std: float = 3.0,
            progress: bool = True) -> MassiveActivations:
    """Top ``k`` activations of every block's output for every image, reduced batch by batch.

    Paper: Sun et al. (ViT section): DINOv2-reg has massive activations in the registers; notebook 11.

    Args:
        loaded: a :class:`vitreg.core.weights.LoadedModel`.
        images: images as :func:`vitreg.core.stream.stream` takes them.
        k: activations kept per image and block.
        batch_size: images per forward pass.
        k_std: the high-norm rule for tokens (mean + k_std x std of the block's token norms).
        progress: progress bar and run-time estimate.
    """
    vals, toks, chans, meds, norms = [], [], [], [], []
    for batch in stream(loaded, images, batch_size=batch_size, progress=progress, outputs="all", to=None,
                        dtype=None):
        parts = [top_activations(batch.rec.outputs[b], k) for b in range(loaded.num_blocks)]
        vals.append(torch.stack([p[0] for p in parts]).cpu())
        toks.append(torch.stack([p[1] for p in parts]).cpu())
        chans.append(torch.stack([p[2] for p in parts]).cpu())
        meds.append(torch.stack([p[3] for p in parts]).cpu())
        norms.append(torch.stack([batch.rec.outputs[b].float().norm(dim=-1) for b in range(loaded.num_blocks)]).cpu())
        del batch
    tokens = torch.cat(toks, dim=1)
    norm = torch.cat(norms, dim=1)  # (L, N, T)
    cut = norm.flatten(1).mean(1) + k_std * norm.flatten(1).std(1)
    high = (norm > cut[:, None, None]).gather(2, tokens)
    return MassiveActivations(values=torch.cat(vals, dim=1), tokens=tokens, channels=torch.cat(chans, dim=1),
                              median=torch.cat(meds, dim=1), kinds=loaded.layout.kinds(), high_norm=high)


def register_means(loaded: Any, images: Sequence[Any], *, batch_size: int = 8, progress: bool = True) -> dict[int, torch.Tensor]:
    """Mean over ``images`` of the register tokens' output at every block: ``{block: (R, D)}``.

    Paper: Sun et al. (ViT section): "fix the register features to their mean over 10k images".
    """
    sl = loaded.layout.reg_slice
    if loaded.layout.num_reg == 0:
        raise ValueError(f"{loaded.spec.key} has no registers")
    sums: dict[int, torch.Tensor] = {}
    n = 0
    for batch in stream(loaded, images, batch_size=batch_size, progress=progress, outputs="all", to=None, dtype=None):
        for b in range(loaded.num_blocks):
            s = batch.rec.outputs[b][:, sl].double().sum(0)
            sums[b] = sums[b] + s if b in sums else s
        n += len(batch.x)
    return {b: (s / n).float() for b, s in sums.items()}


@contextmanager
def fixed_register_means(loaded: Any, means: Mapping[int, torch.Tensor]) -> Iterator[None]:
    """Replace the register tokens' output of every block in ``means`` by the given (mean) features.

    Paper: Sun et al. (ViT section): fixing DINOv2-reg's registers to their mean changes ImageNet top-1 by
    <= 0.2 points (S 81.9 -> 81.7, B 84.8 -> 85.0, L 86.3 -> 86.2, G 87.0 -> 87.0). Hooks are removed on exit.
    """
    sl = loaded.layout.reg_slice

    def hook_for(mean: torch.Tensor):
        def hook(out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            out[:, sl] = mean.to(out.device, out.dtype)
            return out
        return hook

    with ExitStack() as stack:
        for b, mean in means.items():
            stack.enter_context(hooks.write(loaded.model, f"blocks.{b}.out", hook_for(mean)))
        yield


def linear_accuracy_change(loaded: Any, train: Sequence[Any], train_labels: torch.Tensor, test: Sequence[Any],
                           test_labels: torch.Tensor, means: Mapping[int, torch.Tensor], *,
                           batch_size: int = 8) -> dict[str, float]:
    """Top-1 (%) of a linear probe on [CLS] (final norm), on the test set as is and with fixed registers.

    Paper: Sun et al. (ViT section; ImageNet linear accuracy, <= 0.2 points of change). The probe is
    trained once on the unmodified model's training features, as their released linear heads were.
    """
    from vitreg.measure.estimators import fit_logistic_cv
    from vitreg.measure.features import forward_tokens

    cls = loaded.layout.cls_slice
    x_train = forward_tokens(loaded, train, batch_size=batch_size)["tokens"][:, cls].flatten(1)
    clf = fit_logistic_cv(x_train, train_labels).classifier
    x_test = forward_tokens(loaded, test, batch_size=batch_size)["tokens"][:, cls].flatten(1)
    with fixed_register_means(loaded, means):
        x_fixed = forward_tokens(loaded, test, batch_size=batch_size)["tokens"][:, cls].flatten(1)
    acc = [100.0 * float((clf.predict(x) == test_labels.cpu()).float().mean()) for x in (x_test, x_fixed)]
    return {"top1": acc[0], "top1_fixed": acc[1], "change": acc[1] - acc[0]}
