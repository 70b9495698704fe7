"""Data-parallel feature extraction on ``torch.distributed``, launched by ``torchrun``.

Paper: Table 1 / Table 6 and Table 2 (the probes read frozen features of whole datasets; extracting them
dominates the real run, so several GPUs or nodes share it).

Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) :func:`cached_features` splits the chunks of a
feature-cache entry (:mod:`vitreg.utils.cache`) that are still missing across the ranks: rank 0 prepares the
entry and lists the missing chunks, every rank computes and writes its share (``todo[rank::world]``) into
the shared cache folder, a barrier, rank 0 writes the one manifest, a barrier, and every rank reads the
full verified entry. A rank that dies leaves its finished chunks on disk (each written atomically with its
record); a rerun computes only the missing ones. A chunk's features do not depend on which rank computed
it (same images, same batches), so they equal a single-process run's bit for bit on the same device type.

Switch: running under ``torchrun`` turns it on; ``VITREG_DISTRIBUTED=0`` turns it off (every rank then
computes everything itself, as before). Without ``WORLD_SIZE > 1`` this module changes nothing.
The ranks talk over gloo (small Python objects only: the list of missing chunks, barriers), so the same
code runs on CPU-only machines; each rank's GPU is ``cuda:$LOCAL_RANK`` after :func:`setup`.
Every rank must compute the same cache key (same weights, same settings): :func:`cached_features` checks it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch

from vitreg.utils.cache import FeatureCache, cached_features as _single_process

#: Environment switch: ``0`` keeps every rank single-process even under torchrun.
SWITCH = "VITREG_DISTRIBUTED"


def requested() -> bool:
    """True under a multi-process launcher (``WORLD_SIZE > 1``) unless ``VITREG_DISTRIBUTED=0``."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get(SWITCH, "1") != "0"


def setup() -> tuple[int, int]:
    """Join the torchrun job (gloo process group from the environment) and pin this rank's GPU.

    Idempotent; call it before loading a model so ``device="cuda"`` means ``cuda:$LOCAL_RANK``.

    Returns:
        ``(rank, world_size)``; ``(0, 1)`` when not :func:`requested`.
    """
    if not requested():
        return 0, 1
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")  # env:// (torchrun sets RANK, WORLD_SIZE, MASTER_ADDR/PORT)
    return dist.get_rank(), dist.get_world_size()


def is_main() -> bool:
    """True on rank 0 (or without torchrun): the process that prints, plots and saves results."""
    return int(os.environ.get("RANK", "0")) == 0 or not requested()


def cached_features(key: Mapping[str, Any], n_items: int, compute: Callable[[int, int], Mapping[str, torch.Tensor]],
                    *, chunk_size: int = 1024, root: str | os.PathLike | None = None, enabled: bool = True,
                    progress: bool = True) -> dict[str, torch.Tensor]:
    """:func:`vitreg.utils.cache.cached_features`, with the missing chunks split across torchrun's ranks.

    Same arguments and result as :func:`vitreg.utils.cache.cached_features` (every rank gets the full features);
    single-process unless :func:`requested`. ``enabled=False`` cannot share work (nothing is written) and
    computes everything on every rank.

    Raises:
        RuntimeError: the ranks computed different cache keys (e.g. randomly initialised weights seeded
            differently), or the entry still fails verification after recomputing.
    """
    if not requested() or not enabled:
        return _single_process(key, n_items, compute, chunk_size=chunk_size, root=root, enabled=enabled,
                               progress=progress)
    if n_items <= 0:
        raise ValueError(f"n_items must be positive, got {n_items}")
    rank, world = setup()
    entry = FeatureCache(key, root, chunk_size=chunk_size)
    _same_on_all_ranks(entry.path.name)
    got = None
    for attempt in range(4):  # fill, verify (a bad chunk found: refill), verify, ... then give up
        state: list[Any] = [None]
        if rank == 0:
            got, state[0] = _prepare(entry, n_items, last=attempt == 3)
        _broadcast(state)
        if state[0] == "done":
            break
        if state[0] == "failed":
            raise RuntimeError(f"feature cache {entry.path} still fails verification after recomputing "
                               f"(another job writing it? delete the folder and run again)")
        mine = state[0][rank::world]
        if progress and mine and rank == 0:
            from vitreg.utils.progress import progress_bar

            mine = progress_bar(mine, desc=f"features {entry.path.name} (rank 0 of {world})", unit="chunk")
        for i, start, stop in mine:
            entry.write_chunk(i, start, stop, compute)
        _barrier()
        if rank == 0:
            entry.finish(n_items)
        _barrier()
    return got if got is not None else entry.load()


def _prepare(entry: FeatureCache, n_items: int, *, last: bool) -> tuple[dict | None, Any]:
    """Rank 0: ``(features, "done")`` for a verified entry, else ``(None, chunks to compute)`` (bad files
    deleted with a warning), or ``(None, "failed")`` when this was the ``last`` attempt."""
    entry.reset_if_stale(n_items)
    if entry.is_complete():
        got, bad = entry._check(n_items)  # noqa: SLF001 - the cache's own verification, shared
        if got is not None:
            return got, "done"
        if last:
            return None, "failed"
        entry._discard(bad)  # noqa: SLF001
    return None, entry.begin(n_items)


def _broadcast(objects: list[Any]) -> None:
    import torch.distributed as dist

    dist.broadcast_object_list(objects, src=0)


def _barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def _same_on_all_ranks(name: str) -> None:
    """Refuse to go on when the ranks would write different cache entries."""
    import torch.distributed as dist

    names: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(names, name)
    if len(set(names)) != 1:
        raise RuntimeError(f"the ranks computed different feature-cache keys ({sorted(set(names))}): every rank "
                           f"must load the same weights with the same settings (seed random weights alike)")
