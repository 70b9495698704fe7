"""``vitreg extract NOTEBOOK``: fill a notebook's feature cache from its parameters, on every GPU of a torchrun job.

Paper: Table 1 / Table 6 (notebook 06) and Fig. 5b / Table 5 (notebook 05): the probes read frozen features of
whole datasets, and extracting them dominates the real run. A notebook runs in one Jupyter kernel, which
``torchrun`` cannot launch as ranks; so this module makes the notebook's OWN cached extraction calls (same
functions of :mod:`vitreg.measure.features`, same arguments, same cache key) from the notebook's parameters, and under
``torchrun`` :mod:`vitreg.utils.distributed` splits the missing chunks across the ranks. The notebook then finds
every chunk and only reads them.

    torchrun --standalone --nproc_per_node 8 -m vitreg extract 06     # one machine, 8 GPUs
    vitreg extract 05 --set 05.n_images=512                             # one process

Supported: the notebooks whose extraction is a cached feature extraction (:data:`PREFILL`: 05 and 06). The
others say they have nothing to pre-extract (their forwards are not cached, or, for 09, the extraction lives
inside ``vitreg.experiments.table2`` and is not wired here yet). A notebook whose ``use_cache`` is false has nothing to
fill either. Random weights (smoke runs) are seeded like the notebook (``torch.manual_seed(seed)`` before the
models load, in the notebook's order), so every rank and the notebook compute the same cache key; notebook
05's register models load after its probes have drawn random numbers, so with random weights only its main
model is pre-extracted (pretrained weights: all of them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from vitreg.experiments.params import ParameterError, load_order
from vitreg.utils.paths import repo_root


def _say(line: str) -> None:
    from vitreg.utils.distributed import is_main

    if is_main():
        print(line, flush=True)


def _load(name: str, p: dict[str, Any]) -> Any:
    from vitreg.core.weights import load_model

    return load_model(name, pretrained=p["pretrained"], image_size=p["image_size"], device=p["device"])


def prefill_05(p: dict[str, Any]) -> Iterator[str]:
    """Notebook 05: patch-token features of its images for ``model`` (and the pretrained ``register_models``).

    Mirrors the notebook's cells (images from :func:`vitreg.data.datasets.probe_images`, the image key, the planting
    context, :func:`vitreg.measure.features.patch_token_features`); ``tests/test_cli.py`` checks the notebook's call
    is then a cache hit.
    """
    import torch

    from vitreg import planting
    from vitreg.data import datasets as data
    from vitreg.measure import features

    torch.manual_seed(int(p["seed"]))
    loaded = _load(p["model"], p)
    images, source, _ = data.probe_images(p["dataset"], p["split"], p["n_images"], image_dir=p["image_dir"],
                                          root=p["data_root"], download=p["download"], image_size=p["image_size"],
                                          seed=p["seed"])
    image_key = f"{source}-{len(images)}-seed{p['seed']}"
    names = [p["model"]] + [m for m in p["register_models"] if m != p["model"] and p["pretrained"]]
    for i, name in enumerate(dict.fromkeys(names)):
        other = loaded if i == 0 else _load(name, p)
        with planting.planted_outlier_share(other, fraction=p["plant_fraction"], norm=p["plant_norm"], seed=p["seed"]):
            features.patch_token_features(other, images, dataset=image_key, layer=p["layer"],
                                          batch_size=p["batch_size"], cache=True, cache_root=p["cache_dir"])
        yield f"{name}: patch tokens of {len(images)} images ({image_key})"
    if not p["pretrained"] and any(m != p["model"] for m in p["register_models"]):
        yield "register models not pre-extracted: random weights load after the probes drew random numbers"


def prefill_06(p: dict[str, Any]) -> Iterator[str]:
    """Notebook 06: single-token features of every dataset (``datasets`` for ``model``, ``ttr_datasets`` for the
    ``ttr_models``), both splits, as :func:`vitreg.measure.global_probes.global_information` extracts them (without its
    probe fitting); a dataset that is not here is skipped, as in the notebook."""
    import torch

    from vitreg import planting
    from vitreg.data.datasets import subset_indices, try_load_dataset
    from vitreg.measure.features import detection_block, single_token_features

    torch.manual_seed(int(p["seed"]))
    models = {name: _load(name, p) for name in dict.fromkeys([p["model"], *p["ttr_models"]])}
    jobs = [(p["model"], d) for d in p["datasets"]]
    jobs += [(m, d) for m in p["ttr_models"] for d in p["ttr_datasets"] if (m, d) not in jobs]
    for mname, dataset in dict.fromkeys(jobs):
        loaded = models[mname]
        extra = dict(root=p["data_root"], download=p["download"], n=p["synthetic_n"], image_size=loaded.image_size[0],
                     seed=p["seed"])
        done = []
        for split, cap in (("train", p["max_train"]), ("test", p["max_test"])):
            if dataset == "synthetic" and split == "test":
                extra["n"] = max(2, p["synthetic_n"] // 2)
            ds, reason = try_load_dataset(dataset, split, **extra)
            if ds is None:
                yield f"{mname} / {dataset}: skipped ({reason})"
                break
            idx = subset_indices(ds.labels, cap, seed=p["seed"])
            with planting.planted_outlier_share(loaded, fraction=p["plant_fraction"], norm=p["plant_norm"],
                                                seed=p["seed"]):
                single_token_features(loaded, ds, name=dataset, split=split, indices=idx, n_draws=p["n_draws"],
                                      layer=p["layer"], threshold=p["threshold"], detect_block=detection_block(loaded),
                                      batch_size=p["batch_size"], seed=p["seed"], cache=True,
                                      cache_root=p["cache_dir"])
            done.append(f"{split} {len(idx)}")
        else:
            yield f"{mname} / {dataset}: single tokens of {', '.join(done)} images"


#: notebook -> the function that makes its cached extraction calls (yields one line per entry filled).
PREFILL: dict[str, Callable[[dict[str, Any]], Iterator[str]]] = {
    "05_local_information": prefill_05,
    "06_global_information": prefill_06,
}

#: why the others have nothing to pre-extract.
NOTHING = {"09_downstream": "its extraction lives inside vitreg.experiments.table2 and is not wired to `vitreg extract` yet; "
                            "the notebook fills its cache itself (single process)"}


def resolve(notebooks: Sequence[str], root: Path | None = None) -> list[str]:
    """Notebook names from numbers (``06``), names, or ``all`` (every notebook of :data:`PREFILL`)."""
    names = [e["notebook"] for e in load_order(root or repo_root())]
    out: list[str] = []
    for want in notebooks:
        match = [n for n in PREFILL] if want == "all" else [n for n in names if n == want or n.split("_")[0] == want.zfill(2)]
        if not match:
            raise ParameterError(f"no notebook {want!r} in notebooks/order.yaml; known: {', '.join(names)} (or 'all')")
        out += [m for m in match if m not in out]
    return out


def extract_notebooks(notebooks: Sequence[str], profile: str = "real", *, params_file: str | Path | None = None,
                      sets: Sequence[str] = (), root: Path | None = None) -> dict[str, list[str]]:
    """Fill the feature caches of ``notebooks`` from their parameters (profile, then ``params_file``, then
    ``sets``, validated as ``vitreg run`` does). Under torchrun the ranks share the work.

    Returns:
        notebook -> what was filled (or why nothing was), one line each; rank 0 also prints them.

    Raises:
        vitreg.experiments.params.ParameterError: bad parameters (before anything is loaded).
    """
    from vitreg.utils.distributed import setup
    from vitreg.cli.runner import merged_parameters, planned_parameters

    root = root or repo_root()
    names = resolve(notebooks, root)
    plans = planned_parameters(names, profile, root / "build" / "extract", root, params_file=params_file, sets=sets)
    params = merged_parameters(plans, root)
    setup()  # join the torchrun job first: device "auto"/"cuda" is then this rank's GPU
    if profile == "real" and "all" in notebooks:  # `make reproduce GPUS=N` starts here: say how long, first
        from vitreg.experiments import timing

        _say(f"expected run time on one H100-class GPU (estimate, vitreg.experiments.timing):\n{timing.render()}\n")
    done: dict[str, list[str]] = {}
    for name in names:
        p = params[name]
        if name not in PREFILL:
            done[name] = [f"nothing to pre-extract: {NOTHING.get(name, 'no cached feature extraction')}"]
        elif not p.get("use_cache", True):
            done[name] = [f"nothing to pre-extract: use_cache is false in this run (--set {name[:2]}.use_cache=true)"]
        else:
            _say(f"{name}: filling the feature cache ({p.get('cache_dir') or 'default folder'})")
            done[name] = []
            for line in PREFILL[name](p):
                done[name].append(line)
                _say(f"  {line}")
            continue
        _say(f"{name}: {done[name][0]}")
    return done
