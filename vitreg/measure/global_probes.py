"""F6, global information: classify an image from ONE of its tokens.

Paper: Table 1 / App. G Table 6 (single-token classification), App. D.2 Table 4 (registers), [TTR]
Table 1 (central patch). Used in notebook 06.

For each image K random normal patches and K random outlier patches are drawn once (seeded); draw k
uses token k of every image; mean +- std over the K draws (Table 6 format). The outlier column is
measured on the images that HAVE an outlier (its ``coverage`` is reported).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from vitreg.data.datasets import PAPER_DATASETS, subset_indices, try_load_dataset
from vitreg.core.device import pick_device
from vitreg.measure.estimators import L2_GRID, METRICS, fit_logistic_cv
from vitreg.measure.features import detection_block, single_token_features

#: DINOv2's logistic-regression suite (Table 1) scores these datasets by mean-per-class accuracy; the rest top-1.
MEAN_PER_CLASS = ("aircraft", "pets", "caltech101", "flowers")
#: Table 1 cells whose protocol we do not follow, and why: the report shows them as differing by protocol.
PROTOCOL_DIFFERS = {"voc": "the paper's suite scores VOC07 as multi-label with 11-point mAP; vitreg reads VOC "
                           "as single-label ImageFolder classes and reports top-1"}


def dataset_metric(dataset: str) -> str:
    """``"mean_per_class"`` for Aircraft, Pets, Caltech101, Flowers (DINOv2's suite), else ``"top1"``.

    Paper: Table 1 / App. G Table 6 (the 14 datasets of DINOv2's linear-evaluation suite).
    """
    return "mean_per_class" if dataset in MEAN_PER_CLASS else "top1"


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
                                metric: str = "top1", progress: bool = False, **fit_kwargs) -> dict[str, dict]:
    """Classify images from ONE token each; mean +- std over random token draws.

    Paper: Table 1 and App. G Table 6 (DINOv2 ViT-g: e.g. Aircraft normal 17.1, outlier 79.1, [CLS] 87.3);
    App. D.2 Table 4 (one register: register 71.1 on Aircraft); [TTR] Table 1 adds the central patch.

    Args:
        train: training feature set: ``labels (n,)``, ``cls (n, D)``, ``central (n, D)`` (the patch at the
            grid centre), ``reg (n, R, D)`` or None,
            ``normal``/``outlier`` ``(n, K, D)`` with ``has_normal``/``has_outlier`` ``(n,)`` (see
            :func:`vitreg.measure.features.sample_tokens`).
        test: the same for the test split.
        kinds: which kinds to probe (default: all present, see :func:`token_kinds`).
        n_draws: use only the first ``n_draws`` of the K drawn tokens.
        l2_grid: L2 strengths, chosen on a validation split for every draw.
        val_fraction: validation share of the training set.
        seed: seed of the validation split.
        metric: ``"top1"`` or ``"mean_per_class"`` (:data:`vitreg.measure.estimators.METRICS`; see :func:`dataset_metric`).
        progress: show a tqdm bar over kinds and draws.
        **fit_kwargs: passed to :func:`vitreg.measure.estimators.fit_logistic`.

    Returns:
        ``{kind: {"mean": %, "std": %, "draws": [%...], "l2": [...], "n_train": int, "n_test": int,
        "coverage": share of test images with such a token, "metric": str}}``; ``n_train`` counts the
        images the kind trains on (the outlier kind: only images that have an outlier).
    """
    score = METRICS[metric]
    dev = pick_device(fit_kwargs.get("device", "auto"))
    kinds = list(kinds) if kinds is not None else token_kinds(train)
    y_tr, y_te = train["labels"].long().cpu(), test["labels"].long().cpu()
    jobs = []
    for kind in kinds:
        draws_tr, m_tr = _kind_draws(train, kind)
        draws_te, m_te = _kind_draws(test, kind)
        n = min(len(draws_tr), len(draws_te), n_draws or 10**9)
        jobs += [(kind, d, draws_tr[d], m_tr, draws_te[d], m_te) for d in range(n)]
    if progress:
        from vitreg.utils.progress import progress_bar

        jobs = progress_bar(jobs, desc="single-token probes")
    results: dict[str, dict] = {}
    for kind, d, x_tr, m_tr, x_te, m_te in jobs:
        r = results.setdefault(kind, {"draws": [], "l2": [], "n_train": int(m_tr.sum()), "n_test": int(m_te.sum()),
                                      "coverage": float(m_te.float().mean()), "metric": metric})
        if m_tr.sum() < 2 or m_te.sum() == 0 or len(torch.unique(y_tr[m_tr])) < 2:
            r["draws"].append(math.nan)
            r["l2"].append(math.nan)
            continue
        x_fit = x_tr.to(dev)  # on a GPU: moved once, its rows picked there
        sel = fit_logistic_cv(x_fit[m_tr.to(dev)], y_tr[m_tr], l2_grid=l2_grid, val_fraction=val_fraction,
                              seed=seed + d, **fit_kwargs)
        r["draws"].append(score(sel.classifier, x_te.to(dev)[m_te.to(dev)], y_te[m_te]))
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



def global_information(loaded, dataset: str, *, root: str | None = None, download: bool = False,
                       max_train: int | None = None, max_test: int | None = None, n_draws: int = 3,
                       layer: str | int = "final_norm", threshold: float | None = None,
                       detect_block: int | None = None, l2_grid: Sequence[float] = L2_GRID, val_fraction: float = 0.2, batch_size: int = 64,
                       seed: int = 0, cache: bool = True, cache_root: str | None = None, synthetic_n: int = 256,
                       device: str | torch.device = "auto", progress: bool = True) -> dict:
    """Single-token classification of one dataset with one model (notebook 06).

    Longer than 60 lines: most of it is the Args list and the skip reasons, each a line of its own.

    Paper: Table 1 / App. G Table 6. Loads the train and test splits (:mod:`vitreg.data.datasets`), keeps a
    class-balanced subset of at most ``max_train`` / ``max_test`` images, extracts (or reads from the
    cache) one token of each kind per image and runs :func:`single_token_classification`.
    Smoke runs wrap the call in ``with vitreg.planting.planted_outlier_share(loaded, ...)``.

    Args:
        loaded: the model.
        dataset: a :data:`vitreg.data.datasets.DATASETS` name (``"synthetic"`` for smoke runs) or an ImageFolder path.
        root: datasets folder (default ``$VITREG_DATA``).
        download: allow torchvision downloads (never when offline).
        max_train, max_test: subset sizes (None: the whole split).
        n_draws: random tokens per kind and image (Table 6's mean +- std).
        layer: ``"final_norm"`` or a block index.
        threshold: outlier cut-off (default: the model's; relative rule when it has none).
        detect_block: block whose pre-LN norms mark outliers (default: the model's,
            :func:`vitreg.measure.features.detection_block`: -2 for DINOv2-L as [TTR], else -1).
        l2_grid, val_fraction: regularisation grid and validation share.
        batch_size: images per forward pass.
        seed: seed of subsets, draws and validation splits.
        cache, cache_root: the feature cache.
        synthetic_n: training images of the synthetic set (its test split has half as many).
        device: device of the probes.
        progress: progress bars.

    Returns:
        ``{"dataset", "n_train", "n_test", "num_classes", "outlier_share_train", "outlier_share_test",
        "metric", "detect_block", "kinds": {kind: result}}`` (plus ``"protocol_differs": why`` for the cells
        of :data:`PROTOCOL_DIFFERS`), or ``{"dataset", "skipped": reason}`` when the data is missing.
    """
    feats = dataset_tokens(loaded, dataset, root=root, download=download, max_train=max_train, max_test=max_test,
                           n_draws=n_draws, layer=layer, threshold=threshold, detect_block=detect_block,
                           batch_size=batch_size, seed=seed, cache=cache, cache_root=cache_root,
                           synthetic_n=synthetic_n, progress=progress)
    if isinstance(feats, str):
        return {"dataset": dataset, "skipped": feats}
    return classify_tokens(feats, dataset, detect_block=detection_block(loaded, detect_block), n_draws=n_draws,
                           l2_grid=l2_grid, val_fraction=val_fraction, seed=seed, device=device, progress=progress)


def dataset_tokens(loaded, dataset: str, *, root: str | None = None, download: bool = False,
                   max_train: int | None = None, max_test: int | None = None, n_draws: int = 3,
                   layer: str | int = "final_norm", threshold: float | None = None, detect_block: int | None = None,
                   batch_size: int = 64, seed: int = 0, cache: bool = True, cache_root: str | None = None,
                   synthetic_n: int = 256, progress: bool = True) -> dict[str, dict[str, torch.Tensor]] | str:
    """The single tokens of both splits of one dataset (the extraction half of :func:`global_information`).

    Paper: Table 1 / App. G Table 6. Arguments as for :func:`global_information`.

    Returns:
        ``{"train": features, "test": features}`` (:func:`vitreg.measure.features.single_token_features` of a
        class-balanced subset of each split), or why the dataset was skipped (it is not here).
    """
    block = detection_block(loaded, detect_block)
    extra = dict(root=root, download=download, n=synthetic_n, image_size=loaded.image_size[0], seed=seed)
    feats = {}
    for split, cap in (("train", max_train), ("test", max_test)):
        if dataset == "synthetic" and split == "test":
            extra["n"] = max(2, synthetic_n // 2)
        ds, reason = try_load_dataset(dataset, split, **extra)
        if ds is None:
            return str(reason)
        idx = subset_indices(ds.labels, cap, seed=seed)
        feats[split] = single_token_features(
            loaded, ds, name=dataset, split=split, indices=idx, n_draws=n_draws, layer=layer, threshold=threshold,
            detect_block=block, batch_size=batch_size, seed=seed, cache=cache,
            cache_root=cache_root, progress=progress)
    return feats


def classify_tokens(feats: Mapping[str, Mapping[str, torch.Tensor]], dataset: str, *, detect_block: int,
                    n_draws: int = 3, l2_grid: Sequence[float] = L2_GRID, val_fraction: float = 0.2, seed: int = 0,
                    device: str | torch.device = "auto", progress: bool = True) -> dict:
    """Single-token classification from :func:`dataset_tokens`'s features (the probe half of
    :func:`global_information`, whose Returns this is).

    Paper: Table 1 / App. G Table 6. ``detect_block``: the block the outliers were detected at (recorded)."""
    metric = dataset_metric(dataset)
    kinds = single_token_classification(feats["train"], feats["test"], n_draws=n_draws, l2_grid=l2_grid,
                                        val_fraction=val_fraction, seed=seed, metric=metric, device=device,
                                        progress=progress)
    extra_protocol = {"protocol_differs": PROTOCOL_DIFFERS[dataset]} if dataset in PROTOCOL_DIFFERS else {}
    return {
        "metric": metric, "detect_block": detect_block, **extra_protocol,
        "dataset": dataset,
        "n_train": len(feats["train"]["labels"]),
        "n_test": len(feats["test"]["labels"]),
        "num_classes": int(len(torch.unique(feats["train"]["labels"]))),
        "outlier_share_train": float(feats["train"]["has_outlier"].float().mean()),
        "outlier_share_test": float(feats["test"]["has_outlier"].float().mean()),
        "mean_outliers_per_image": float(feats["test"]["n_outliers"].float().mean()),
        "kinds": kinds,
    }


# ---------------------------------------------------------------------------------------------------
# Results entries (notebook 06)
# ---------------------------------------------------------------------------------------------------
def measured_or_skipped(kinds: Mapping[str, Mapping], kind: str) -> float | dict[str, str]:
    """The mean accuracy of one token kind, or ``{"skipped": why}`` when it was not measured.

    Paper: Table 1 (a cell of one dataset's row).
    """
    value = (kinds.get(kind) or {}).get("mean")
    return value if value is not None and math.isfinite(value) else {"skipped": f"no {kind} tokens in the test images"}


def register_mean(kinds: Mapping[str, Mapping]) -> float | None:
    """Mean accuracy over the register tokens (``reg0``, ``reg1``, ...), None without registers.

    Paper: App. D.2 Table 4, [TTR] Table 1 (the "register" column).
    """
    regs = [v["mean"] for k, v in kinds.items() if k.startswith("reg") and v.get("mean") is not None]
    return sum(regs) / len(regs) if regs else None


def table1_entry(result: Mapping, model: str, kinds: Sequence[str] = ("normal", "outlier", "cls")) -> dict:
    """One dataset's row of Table 1 for the results file, from :func:`global_information`'s output.

    Paper: Table 1 / App. G Table 6. Records the metric (mean-per-class on Aircraft, Pets, Caltech101,
    Flowers), the detection block, each column's training count (``n_train_by_kind``: the outlier column
    trains only on images that have an outlier) and, for VOC, why its protocol differs.
    """
    if "skipped" in result:
        return {"skipped": result["skipped"]}
    k = result["kinds"]
    out = {"model": model, **{kind: measured_or_skipped(k, kind) for kind in kinds},
           **{f"{kind}_std": k[kind]["std"] for kind in kinds if kind in k},
           "outlier_coverage": result["outlier_share_test"], "n_train": result["n_train"], "n_test": result["n_test"],
           "num_classes": result["num_classes"], "metric": result.get("metric", "top1"),
           "detect_block": result.get("detect_block", -1),
           "n_train_by_kind": {kind: k[kind]["n_train"] for kind in kinds if kind in k}}
    if "protocol_differs" in result:
        out["protocol_differs"] = result["protocol_differs"]
    out.update({kind: k[kind]["mean"] for kind in k if kind.startswith("reg") or kind == "central"})
    return out


def outlier_minus_normal(table1: Mapping[str, Mapping], model: str,
                         datasets: Iterable[str] = PAPER_DATASETS) -> dict:
    """The claim of Table 1 per dataset: outlier minus normal single-token top-1, for the results file.

    Paper: Table 1 / App. G Table 6 (outlier > normal on all 14 datasets; the biggest gaps on Aircraft, CUB,
    Cars). Every dataset of ``datasets`` and of ``table1`` gets an entry: the gap, or ``{"skipped": why}``
    when it was not run, was skipped (missing data), or its test images held no outlier token.

    Args:
        table1: :func:`global_information` outputs by dataset name.
        model: the zoo key of the probed model (recorded as ``"model"``).
        datasets: the datasets that need an entry even when not run (default: the paper's 14).
    """
    out: dict[str, Any] = {"model": model}
    for name in dict.fromkeys([*datasets, *table1]):
        res = table1.get(name)
        if res is None:
            out[name] = {"skipped": "not run: not in this run's `datasets` parameter"}
        elif "skipped" in res:
            out[name] = {"skipped": res["skipped"]}
        else:
            o, n = (measured_or_skipped(res["kinds"], kind) for kind in ("outlier", "normal"))
            out[name] = o if isinstance(o, dict) else n if isinstance(n, dict) else o - n
    return out


def ttr_entry(results: Sequence[Mapping], models: Sequence[str]) -> dict:
    """One dataset's row of the [TTR] Table 1 comparison: [CLS], central patch and outlier of the model
    without registers, and the mean register of the model with them.

    Paper: [TTR] Table 1 (public DINOv2-L pair). ``results``: :func:`global_information` outputs of
    ``models`` in order (first without, second with registers; either may be absent).
    """
    entry: dict[str, Any] = {"models": list(models)}
    if results:
        base = results[0]
        if "skipped" in base:
            return {"skipped": base["skipped"]}
        entry.update({k: measured_or_skipped(base["kinds"], k) for k in ("cls", "central", "outlier")})
    if len(results) > 1 and "skipped" not in results[1]:
        entry["register"] = register_mean(results[1]["kinds"]) or {"skipped": f"{models[1]} has no registers"}
        entry["registers_each"] = {k: v["mean"] for k, v in results[1]["kinds"].items() if k.startswith("reg")}
    return entry
