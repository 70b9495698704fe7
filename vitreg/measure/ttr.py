"""Test-time registers: the MLP "register neurons" that write the outliers, and moving them into one extra token.

Paper: beyond the paper, [TTR] (Jiang, Dravid, Efros, Gandelsman, "Vision Transformers Don't Need *Trained*
Registers", 2025; README, References); it answers the paper's §2.2 (registers) without training. Re-implemented
from the procedure of their public code, not copied:

- :func:`neuron_scores` / :func:`find_register_neurons`: outlier tokens are the tokens whose pre-final-norm
  output norm at the detection block exceeds a fixed cut-off ([CLS] included); the score of a (block, unit) is
  the mean over images (with outliers) of the mean ``|activation|`` over that image's outlier tokens, read from
  the MLP hidden activations after the nonlinearity (the input of ``fc2``); the optional sparsity filter is
  decided per image, as in their code: in an image with outliers, a unit whose activation is < 0.5 on fewer
  than half of that image's tokens scores 0 for that image (a 0/1 factor on the image's score, which stays in
  the mean); blocks above ``highest_layer`` are dropped (-1: no filter); the top ``top_k`` are kept. No
  detection image with an outlier stops the search with :class:`NoOutliersError`, as theirs stops.
- :func:`test_time_register`: one all-zero token appended at the END of the sequence after the position
  embedding; at each selected block one value, the entry of largest magnitude over all tokens and all
  selected units (sign kept), is written into the extra token at those units, and the units are zeroed on
  the patch tokens (prefix tokens untouched). Per image, for any batch (their code handles the first image
  of a batch only); the extra token is dropped from the patch outputs through :class:`TokenLayout`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitreg.core import hooks
from vitreg.core.capture import capture, resolve_blocks
from vitreg.core.tokens import TokenLayout
from vitreg.core.weights import LoadedModel

#: [TTR]'s settings for the two models of their public code.
TTR_SETTINGS: dict[str, dict[str, Any]] = {
    "dinov2_l": {"detect_block": -2, "threshold": 150.0, "highest_layer": 17, "top_k": 50},
    "clip_b16_laion": {"detect_block": -1, "threshold": 30.0, "highest_layer": 5, "top_k": 10},
}


class NoOutliersError(ValueError):
    """No detection image has a token above the cut-off: there is nothing to rank neurons by."""


@dataclass
class NeuronScores:
    """Per-(block, unit) scores of one detection run.

    Attributes:
        scores: ``(L, H)`` mean over images (with outliers) of the mean |activation| on that image's outlier tokens.
        sparse_scores: ``(L, H)`` the same mean with each image's score multiplied by 1 where the unit is sparse
            in that image (at least half of its tokens have activation < 0.5) and by 0 where it is not ([TTR]).
        sparse: ``(L, H)`` share of the images with outliers in which the unit is sparse.
        n_images: images seen; ``n_used``: those with at least one outlier token (the others are skipped).
        outlier_tokens: outlier tokens found per image (prefix tokens included).
    """

    scores: torch.Tensor
    sparse_scores: torch.Tensor
    sparse: torch.Tensor
    n_images: int
    n_used: int
    outlier_tokens: list[int] = field(default_factory=list)


@dataclass
class RegisterNeurons:
    """A ranked list of register neurons: data, stored with what produced it.

    Attributes:
        model: zoo key (or timm name) of the model.
        neurons: ``[(block, unit), ...]`` best first (blocks as non-negative indices).
        scores: the score of each neuron, same order.
        settings: detect_block, threshold, highest_layer, top_k, sparsity, image_size.
        images: names of the detection images.
    """

    model: str
    neurons: list[tuple[int, int]]
    scores: list[float]
    settings: dict[str, Any]
    images: list[str] = field(default_factory=list)

    def by_block(self) -> dict[int, list[int]]:
        """Block -> its selected units (sorted): what :func:`test_time_register` installs."""
        out: dict[int, list[int]] = {}
        for b, u in self.neurons:
            out.setdefault(int(b), []).append(int(u))
        return {b: sorted(us) for b, us in sorted(out.items())}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the list as JSON (model, settings, detection images, neurons, scores)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> RegisterNeurons:
        """Read a list written by :meth:`save`."""
        d = json.loads(Path(path).read_text())
        return cls(model=d["model"], neurons=[(int(b), int(u)) for b, u in d["neurons"]],
                   scores=[float(s) for s in d["scores"]], settings=dict(d["settings"]), images=list(d["images"]))


def _model(m: LoadedModel | nn.Module) -> nn.Module:
    return m.model if isinstance(m, LoadedModel) else m


def neuron_scores(model: LoadedModel | nn.Module, x: torch.Tensor, *, detect_block: int, threshold: float,
                  batch_size: int = 8) -> NeuronScores:
    """Score every MLP hidden unit of every block by its activation on the outlier tokens ([TTR]).

    Runs the model without any extra token, batch by batch, recording the detection block's output norms
    and every block's MLP activations after the nonlinearity (``fc2`` input: GELU output, or the gated
    product for SwiGLU).

    Args:
        model: the ViT (a :class:`LoadedModel` or a timm module).
        x: ``(N, 3, H, W)`` preprocessed detection images.
        detect_block: block whose output norms (pre final norm) define the outliers (-2: second-to-last).
        threshold: the fixed norm cut-off (150 for DINOv2-L, 30 in [TTR]'s OpenCLIP config).
        batch_size: images per forward pass (memory: blocks x batch x tokens x hidden floats).
    """
    net = _model(model)
    param = next(net.parameters())
    depth = hooks.depth(net)
    total = filtered = sparse_count = None
    n_used, counts = 0, []
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size].to(device=param.device, dtype=param.dtype)
            with capture(net, norms=[detect_block], mlp="all") as rec:
                (model.forward if isinstance(model, LoadedModel) else net.forward_features)(xb)  # traced when loaded
            acts = torch.stack([rec.mlp[b] for b in range(depth)], dim=0)  # (L, B, T, H)
            outlier = rec.norms[detect_block] > threshold  # (B, T)
            for i in range(acts.shape[1]):
                m = outlier[i]
                counts.append(int(m.sum()))
                if not m.any():
                    continue  # images without outliers are skipped, as in [TTR]
                s = acts[:, i, m].abs().mean(dim=1).float()  # (L, H)
                sparse = ((acts[:, i] < 0.5).float().mean(dim=1) >= 0.5).float()  # (L, H): this image only
                total = s if total is None else total + s
                filtered = s * sparse if filtered is None else filtered + s * sparse
                sparse_count = sparse if sparse_count is None else sparse_count + sparse
                n_used += 1
    if total is None:
        hidden = hooks.mlp_hidden_size(net, 0)
        total = filtered = sparse_count = torch.zeros(depth, hidden)
    used = max(n_used, 1)
    return NeuronScores(scores=(total / used).cpu(), sparse_scores=(filtered / used).cpu(),
                        sparse=(sparse_count / used).cpu(), n_images=x.shape[0], n_used=n_used, outlier_tokens=counts)


def rank_neurons(scores: NeuronScores, *, highest_layer: int, top_k: int, sparsity: bool = True
                 ) -> list[tuple[int, int, float]]:
    """The top ``top_k`` ``(block, unit, score)`` among blocks <= ``highest_layer``, as [TTR]'s code ranks them.

    Args:
        scores: the detection run's scores (:func:`neuron_scores`).
        highest_layer: the last block a neuron may sit in; -1 means no filter (their convention).
        top_k: how many neurons to keep.
        sparsity: rank by the per-image sparsity-filtered scores (``sparse_scores``), else by ``scores``.

    Returns:
        ``[(block, unit, score), ...]`` best first.

    Raises:
        ValueError: ``highest_layer`` below -1 (no convention gives it a meaning).
        NoOutliersError: no detection image had an outlier token.
    """
    if highest_layer < -1:
        raise ValueError(f"highest_layer={highest_layer}: give a block index, or -1 for no filter "
                         "(other negative values have no meaning in [TTR]'s code)")
    if scores.n_used == 0:
        raise NoOutliersError(f"none of the {scores.n_images} detection images has a token above the cut-off: "
                              "no register neurons to rank; lower the threshold or use other detection images")
    s = (scores.sparse_scores if sparsity else scores.scores).clone()
    if highest_layer >= 0:
        s[highest_layer + 1:] = float("-inf")
    flat = s.flatten()
    k = min(top_k, int(torch.isfinite(flat).sum()))
    vals, idx = flat.topk(k)
    hidden = s.shape[1]
    return [(int(i) // hidden, int(i) % hidden, float(v)) for v, i in zip(vals, idx)]


def find_register_neurons(loaded: LoadedModel, x: torch.Tensor, *, detect_block: int, threshold: float,
                          highest_layer: int, top_k: int, sparsity: bool = True, batch_size: int = 8,
                          image_names: Sequence[str] = ()) -> tuple[RegisterNeurons, NeuronScores]:
    """Detect the register neurons of ``loaded`` on the images ``x`` ([TTR]'s procedure).

    Returns the ranked list (data, with the model, settings and images) and the full scores (for plots).

    Raises:
        NoOutliersError: no detection image has a token above ``threshold`` (the reason is in the message).
        ValueError: ``highest_layer`` below -1.
    """
    scores = neuron_scores(loaded, x, detect_block=detect_block, threshold=threshold, batch_size=batch_size)
    ranked = rank_neurons(scores, highest_layer=highest_layer, top_k=top_k, sparsity=sparsity)
    settings = {"detect_block": detect_block, "threshold": threshold, "highest_layer": highest_layer,
                "top_k": top_k, "sparsity": sparsity, "image_size": list(loaded.image_size),
                "n_images": scores.n_images, "n_images_with_outliers": scores.n_used}
    neurons = RegisterNeurons(model=loaded.spec.key, neurons=[(b, u) for b, u, _ in ranked],
                              scores=[s for _, _, s in ranked], settings=settings, images=list(image_names))
    return neurons, scores


def _move_hook(units: torch.Tensor, num_prefix: int, target: int | None) -> Any:
    """Writer of one block's ``mlp.hidden``: the largest-magnitude entry over tokens x units goes to the target token.

    The token ranges come from the sequence itself (prefix first, the extra token last), not from a grid
    fixed at entry: a model resized inside the context (LOST's padded protocol, one size per batch) keeps
    the extra token at the end and every patch in between.
    """
    def hook(hidden: torch.Tensor) -> torch.Tensor:
        h = hidden.clone()
        u = units.to(h.device)
        sel = h[:, :, u]  # (B, T, U)
        flat = sel.flatten(1)
        peak = flat.gather(1, flat.abs().argmax(dim=1, keepdim=True)).squeeze(1)  # (B,), sign kept
        end = h.shape[1] - (1 if target is None else 0)  # the extra token is the last one
        patch = h[:, num_prefix:end]
        patch[:, :, u] = 0.0  # patches only: [CLS] and trained registers untouched
        h[:, num_prefix:end] = patch
        row = end if target is None else num_prefix + target
        h[:, row, u] = peak[:, None].to(h.dtype)
        return h

    return hook


@contextmanager
def test_time_register(loaded: LoadedModel, neurons: RegisterNeurons | dict[int, Sequence[int]], *,
                       shift_to: int | None = None) -> Iterator[TokenLayout]:
    """Add a test-time register to ``loaded`` inside the ``with`` block ([TTR]).

    One all-zero token is appended after the position embedding (output of ``pos_drop``: it gets no
    position embedding); at each block of ``neurons`` the register neurons' activation moves into it (see
    the module docstring). ``loaded.layout`` is the layout with one EXTRA token inside the block (so every
    measurement drops it from the patches) and is restored on exit, as are all hooks.

    Args:
        loaded: the model.
        neurons: a :class:`RegisterNeurons` or ``{block: [units]}``.
        shift_to: instead of an extra token, write the value into this patch (index in the grid, row-major):
            [TTR]'s "shifted" demonstration that the neurons decide where the outliers go. No token is added.

    Yields:
        the token layout in force (with the extra token unless ``shift_to`` is given).
    """
    net = loaded.model
    by_block = neurons.by_block() if isinstance(neurons, RegisterNeurons) else {int(b): list(u) for b, u in neurons.items()}
    base = loaded.layout
    layout = base if shift_to is not None else base.with_extra(1)
    if shift_to is not None and not 0 <= shift_to < base.num_patches:
        raise ValueError(f"shift_to={shift_to} is not a patch of the {base.grid[0]}x{base.grid[1]} grid")
    with ExitStack() as stack:
        if shift_to is None:
            stack.enter_context(hooks.write(
                net, "embed", lambda out: torch.cat([out, out.new_zeros(out.shape[0], 1, out.shape[2])], dim=1)))
        for b in resolve_blocks(list(by_block), hooks.depth(net)):
            units = torch.tensor(sorted(by_block[b]), dtype=torch.long)
            stack.enter_context(hooks.write(net, f"blocks.{b}.mlp.hidden",
                                            _move_hook(units, base.num_prefix, shift_to)))
        try:
            loaded.layout = layout
            yield layout
        finally:
            loaded.layout = base


def outlier_summary(norms: torch.Tensor, layout: TokenLayout, threshold: float) -> dict[str, Any]:
    """Patch outliers and the extra token's norm from ``(B, T)`` block-output norms ([TTR] Fig. 1 as numbers)."""
    parts = layout.split(norms, dim=1)
    out = {"patch_outlier_pct": float((parts.patch > threshold).float().mean() * 100),
           "patch_max_norm": float(parts.patch.max()), "patch_median_norm": float(parts.patch.median())}
    if parts.extra is not None:
        extra, p99 = parts.extra[:, 0].float(), torch.quantile(parts.patch.float().flatten(), 0.99)
        out["extra_norm_median"] = float(extra.median())
        out["extra_above_threshold_pct"] = float((extra > threshold).float().mean() * 100)
        out["extra_above_patch_p99_pct"] = float((extra > p99).float().mean() * 100)
    return out


@dataclass
class Measurement:
    """What notebook 10 reads from one run of the last block (norms pre-LN, [CLS] attention rows).

    Attributes:
        summary: :func:`outlier_summary` plus ``cls_artifact_score`` (mean over images).
        maps: ``(n_show, h, w)`` [CLS] attention maps; ``patch_norms``: all patch norms, flat;
        extra_norms: ``(B,)`` norms of the extra token, or None without one.
    """

    summary: dict[str, Any]
    maps: torch.Tensor
    patch_norms: torch.Tensor
    extra_norms: torch.Tensor | None


def measure(layout: TokenLayout, norms: torch.Tensor, attn: torch.Tensor, *, threshold: float, n_show: int = 4,
            top_frac: float = 0.02, detect_norms: torch.Tensor | None = None) -> Measurement:
    """Patch outliers, the extra token and the [CLS] artifact score of one run ([TTR] Fig. 1; paper Fig. 1-3).

    Args:
        layout: the layout the run had (with the extra token inside :func:`test_time_register`).
        norms: ``(B, T)`` last-block output norms, pre-LN; ``attn``: ``(B, heads, rows, T)`` prefix rows.
        threshold: the outlier cut-off; ``top_frac``: share of patches of the artifact score.
        detect_norms: ``(B, T)`` output norms of the detection block ([TTR]'s -2 for DINOv2-L, where the
            outliers are found: the last block has already lost them); adds ``detect_block_outlier_pct``.

    The summary also holds ``patch_high_mode_pct``: the share of patches in a separate high-norm mode of the last
    block (:func:`vitreg.measure.norms.high_norm_modes`, scale-free; 0 when the norms are unimodal), the rule for
    models whose cut-off is a choice (OpenCLIP: 30 in [TTR]'s code, 75 in its text).
    """
    from vitreg.measure.attention import artifact_score, attention_maps
    from vitreg.measure.norms import high_norm_modes

    norms, attn = norms.float().cpu(), attn.float().cpu()
    maps = attention_maps(attn, layout, token="cls")
    summary = {**outlier_summary(norms, layout, threshold),
               "cls_artifact_score": float(artifact_score(maps, top_frac=top_frac).mean())}
    parts = layout.split(norms)
    modes = high_norm_modes(parts.patch)
    summary["patch_high_mode_pct"] = modes.high_share * 100 if modes.bimodal else 0.0
    if detect_norms is not None:
        at_detect = layout.split(detect_norms.float().cpu()).patch
        summary["detect_block_outlier_pct"] = float((at_detect > threshold).float().mean() * 100)
    return Measurement(summary=summary, maps=maps[:n_show], patch_norms=parts.patch.flatten(),
                       extra_norms=None if parts.extra is None else parts.extra[:, 0])


def selected_mask(neurons: RegisterNeurons, shape: tuple[int, int]) -> torch.Tensor:
    """``(L, H)`` True at the selected (block, unit) pairs (for the per-block figure)."""
    mask = torch.zeros(shape, dtype=torch.bool)
    for b, u in neurons.neurons:
        mask[b, u] = True
    return mask


def blocks_of(neurons: RegisterNeurons) -> dict[int, int]:
    """How many selected neurons sit in each block (where they sit, [TTR] Fig. 3)."""
    return {b: len(us) for b, us in neurons.by_block().items()}


# --- LOST with a test-time register ([TTR]'s VOC07 row, notebook 10) -------------------------------
def lost_with_ttr(loaded: LoadedModel, neurons: RegisterNeurons | dict[int, Sequence[int]], datasets: dict[str, Any],
                  settings: Sequence[Any], *, twin: LoadedModel | None = None, batch_size: int = 16,
                  num_workers: int = 0, progress: bool = True) -> dict[str, tuple[str, dict[str, Any]]]:
    """LOST on every box dataset: the model as is, with a test-time register, and its trained-register twin.

    Paper: Table 3; [TTR] (LOST on VOC07 for DINOv2-L: 32.2 without, 53.8 with a test-time register, 56.2
    with trained registers). Each run scores every setting of ``settings`` (their sweep: best of q/k/v x the
    last 4 blocks x biases) on one forward pass per image (:func:`vitreg.measure.lost.discover`, LOST's padded
    protocol); inside the test-time register the extra token is dropped from the features at every size.

    Returns:
        ``{role: (model key, {dataset name: Discovery})}`` for the roles ``no_reg``, ``test_time_register``
        and (with a twin) ``reg``.
    """
    from vitreg.measure.lost import discover

    kw = {"batch_size": batch_size, "num_workers": num_workers, "progress": progress}
    out: dict[str, tuple[str, dict[str, Any]]] = {"no_reg": (loaded.spec.key, {}),
                                                  "test_time_register": (loaded.spec.key, {})}
    if twin is not None:
        out["reg"] = (twin.spec.key, {})
    for name, ds in datasets.items():
        out["no_reg"][1][name] = discover(loaded, ds, settings, **kw)
        with test_time_register(loaded, neurons):
            out["test_time_register"][1][name] = discover(loaded, ds, settings, **kw)
        if twin is not None:
            out["reg"][1][name] = discover(twin, ds, settings, **kw)
    return out


def lost_rows(runs: dict[str, tuple[str, dict[str, Any]]], settings: Sequence[Any], names: Sequence[str], *,
              missing: Callable[[str], str]) -> dict[str, Any]:
    """Notebook 10's LOST rows: per role the best CorLoc (%) of ``settings`` per dataset, and the gain.

    Paper: [TTR] (the best setting chosen on the evaluation set, as notebook 08's ``ttr_sweep`` rows).
    ``runs``: :func:`lost_with_ttr`'s result; ``names``: the datasets asked for (lower-cased in the keys:
    ``voc07``); one not run is ``{"skipped": missing(name)}``. ``ttr_gain``: with the test-time
    register minus without, per dataset.
    """
    rows: dict[str, Any] = {}
    for role, (model, found) in runs.items():
        row: dict[str, Any] = {"model": model}
        for name in names:
            d = found.get(name)
            if d is None:
                row[name.lower()] = {"skipped": missing(name)}
                continue
            row[f"{name.lower()}_setting"], row[name.lower()] = d.best(settings)
            row[f"{name.lower()}_n_images"] = len(d.names)
        rows[role] = row
    gain: dict[str, Any] = {"model": runs["no_reg"][0]}
    for name in (n.lower() for n in names):
        a, b = rows["no_reg"][name], rows["test_time_register"][name]
        gain[name] = a if isinstance(a, dict) else b if isinstance(b, dict) else b - a
    rows["ttr_gain"] = gain
    return rows


# --- linear probes on the test-time register token ([TTR] Table 1, notebook 10) ---------------------
def ttr_token_features(loaded: LoadedModel, neurons: RegisterNeurons | dict[int, Sequence[int]], images: Sequence[Any],
                       *, batch_size: int = 8, progress: bool = True) -> dict[str, torch.Tensor]:
    """``(N, D)`` output features (after the final norm) of [CLS], the central patch and the extra token, with a
    test-time register.

    Paper: [TTR] Table 1 (single-token linear probes: [CLS], central patch, outlier, trained register; the
    test-time register token beside them). The central patch is the grid-centre patch, as notebook 06's.
    """
    from vitreg.core.stream import stream

    out: dict[str, list[torch.Tensor]] = {"cls": [], "central": [], "test_time_register": []}
    with test_time_register(loaded, neurons) as layout:
        h, w = layout.grid
        for b in stream(loaded, images, batch_size=batch_size, progress=progress, final_norm=True):
            parts = layout.split(b.rec.final_norm)  # only three tokens per image are kept (10k images fit)
            out["cls"].append(parts.cls.float())
            out["central"].append(parts.patch[:, (h // 2) * w + w // 2].float())
            out["test_time_register"].append(parts.extra[:, 0].float())
    return {k: torch.cat(v) for k, v in out.items()}


def probe_ttr_tokens(loaded: LoadedModel, neurons: RegisterNeurons | dict[int, Sequence[int]], train: Sequence[Any],
                     train_labels: torch.Tensor, test: Sequence[Any], test_labels: torch.Tensor, *,
                     batch_size: int = 8, progress: bool = True) -> dict[str, float]:
    """Top-1 (%) of a linear probe on each token of :func:`ttr_token_features`, with a test-time register.

    Paper: [TTR] Table 1 (the test-time register token holds global information like a trained register).
    One logistic regression per token kind, its L2 strength chosen on a validation split of the training set.
    """
    from vitreg.measure.estimators import fit_logistic_cv

    f_train = ttr_token_features(loaded, neurons, train, batch_size=batch_size, progress=progress)
    f_test = ttr_token_features(loaded, neurons, test, batch_size=batch_size, progress=progress)
    out = {}
    for kind, x in f_train.items():
        clf = fit_logistic_cv(x, train_labels.long()).classifier
        out[kind] = 100.0 * float((clf.predict(f_test[kind]) == test_labels.long().cpu()).float().mean())
    return out
