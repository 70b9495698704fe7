"""``vitreg extract NOTEBOOK``: fill a notebook's feature cache from its parameters, on every GPU of a torchrun job.

Paper: Table 1 / Table 6 (notebook 06), Fig. 5b / Table 5 (notebook 05) and Table 2 (notebook 09): the probes
read frozen features of whole datasets, and extracting them dominates the real run. A notebook runs in one Jupyter kernel, which
``torchrun`` cannot launch as ranks; so this command calls the experiment's own extraction steps (its
``prefill``: the same loading and extraction functions the notebook calls, hence the same cache key) with the
notebook's parameters, and under ``torchrun`` :mod:`vitreg.utils.distributed` splits the missing chunks across
the ranks. The notebook then finds every chunk and only reads them.

    torchrun --standalone --nproc_per_node 8 -m vitreg extract 06     # one machine, 8 GPUs
    vitreg extract 05 --set 05.n_images=512                             # one process

Supported: the experiments whose extraction is a cached feature extraction (:data:`PREFILL`: 05, 06 and 09's
Table 2 tasks). The others say they have nothing to pre-extract. A notebook whose ``use_cache`` is false has nothing to fill either.
Random weights (smoke runs) are seeded per model (:func:`vitreg.experiments.steps.load`), so every rank and the
notebook load the same weights whatever they did before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from vitreg.experiments import downstream, global_information, local_information
from vitreg.experiments.params import ParameterError, load_order
from vitreg.experiments.steps import parameters
from vitreg.utils.paths import repo_root


def _say(line: str) -> None:
    from vitreg.utils.distributed import is_main

    if is_main():
        print(line, flush=True)


def _steps(module: Any) -> Callable[[Mapping[str, Any]], Iterator[str]]:
    """The experiment's ``prefill`` step, called with a run's parameters as a mapping."""
    return lambda p: module.prefill(parameters(module.EXPERIMENT, p))


#: notebook -> its experiment's extraction step (yields one line per entry filled).
PREFILL: dict[str, Callable[[Mapping[str, Any]], Iterator[str]]] = {
    "05_local_information": _steps(local_information),
    "06_global_information": _steps(global_information),
    "09_downstream": _steps(downstream),
}

#: why the others have nothing to pre-extract.
NOTHING: dict[str, str] = {}


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
