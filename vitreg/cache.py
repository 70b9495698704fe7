"""A feature cache on disk, so that a second run of a notebook does not recompute features.

Paper: Fig. 5b and Table 1 / Table 6 (the probes of notebooks 05 and 06 run on frozen features of
whole datasets; extracting them is the slow part).

One cache entry is a folder named after its key (readable slug + hash of the whole key), holding:

* ``key.json``: the full key (model, tag, resolution, dataset, split, layer and anything else that
  changes the features: seeds, number of drawn tokens, outlier threshold, weights source, ...);
* ``chunk-000000.pt`` ...: the features of items ``[i*chunk_size, (i+1)*chunk_size)``, each written
  atomically (temporary file + ``os.replace``), so an interrupted extraction resumes at the first
  missing chunk;
* ``done.json``: written last, when every chunk is there.

Changing any key field gives another folder (the old one is left alone; :func:`clear_cache` removes
entries). A folder whose ``key.json`` does not match its key (edited by hand, or from an older format)
is wiped and recomputed.

Location: ``$VITREG_CACHE``, else ``<repo>/data/cache`` (``~/.cache/vitreg/features`` for an installed package).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from vitreg.io import atomic_torch_save, atomic_write_json
from vitreg.paths import cache_root

#: Bump when the stored layout changes: every old entry is then ignored.
CACHE_VERSION = 1


def _canonical(value: Any) -> Any:
    """A JSON-stable form of a key value (tuples become lists, paths strings); refuses the rest."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cache key values must be JSON-like (str, number, bool, None, list, dict); got "
                    f"{type(value).__name__}: {value!r}")


def feature_key(*, model: str, tag: str, resolution: Any, dataset: str, split: str, layer: Any,
                **extra: Any) -> dict:
    """Build a cache key with the required fields plus anything else that changes the features.

    Args:
        model: model key or timm name.
        tag: pretrained tag (``""`` for none); add ``weights=`` / ``pretrained=`` for the source.
        resolution: input size, e.g. ``[224, 224]``.
        dataset: dataset name.
        split: split name.
        layer: which features (``"final_norm"``, a block index, ...).
        **extra: every other setting that changes the stored values (n_images, seed, threshold, k ...).

    Returns:
        a canonical dict (sorted, JSON-like).
    """
    key = dict(model=model, tag=tag, resolution=resolution, dataset=dataset, split=split, layer=layer, **extra)
    return _canonical(key)


def model_fields(loaded: Any) -> dict:
    """The fields of a cache key that identify a loaded model's features.

    Name, tag, resolution, where the weights came from and the SHA-256 of a weights file
    (:func:`file_sha256`), the parameter dtype (a float16 model gives other
    features than a float32 one), how the position embeddings were resized to the resolution, and for
    randomly initialised models (smoke runs) a fingerprint of the weights: every random model has the
    same source ("random init"), but not the same weights.

    Args:
        loaded: a :class:`vitreg.weights.LoadedModel`.

    Returns:
        a dict to pass to :func:`feature_key` with the dataset, split and layer.
    """
    d = loaded.describe()
    params = list(loaded.model.parameters())
    fields = dict(model=d["name"], tag=d["tag"], resolution=list(loaded.image_size), pretrained=d["pretrained"],
                  weights=d["weights_source"], timm_name=d["timm_name"], pos_embed_resize=d.get("pos_embed_resize"),
                  dtype=d["dtype"])
    source = Path(d["weights_source"])
    if d["pretrained"] and source.is_file():  # a file replaced in place (even `cp -p`) must not serve stale features
        fields["weights_sha256"] = file_sha256(source)
    planted = getattr(loaded, "planted", None)  # vitreg.planting: planted and clean features never share an entry
    if planted is not None:
        fields["planted"] = planted.key()
    if not d["pretrained"]:
        digest = hashlib.sha256()
        for p in params:  # a few values of every tensor: cheap, and any re-initialisation changes them
            digest.update(p.detach().flatten()[:64].float().cpu().numpy().tobytes())
        fields["weights_fingerprint"] = digest.hexdigest()[:16]
    return fields


#: (path, size, mtime_ns, ctime_ns, inode) -> SHA-256 of the file's bytes, so a file is hashed once per process.
_FILE_SHA256: dict[tuple, str] = {}


def _now_ns() -> int:
    return time.time_ns()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, e.g. a weights file: part of the feature cache key.

    Paper: Table 1 / Fig. 5b (cached features must come from the weights actually loaded). Computed once
    per file and kept in memory by ``(path, size, mtime_ns, ctime_ns, inode)``; a file changed in the last
    two seconds is not memoised (its time stamps could still match a later change, "racy git"), so a
    replacement with the same size and time (``cp -p``) is always hashed again.
    """
    path = Path(path).resolve()
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if memo in _FILE_SHA256:
        return _FILE_SHA256[memo]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    if _now_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > 2_000_000_000:
        _FILE_SHA256[memo] = digest.hexdigest()
    return digest.hexdigest()


def hash_indices(indices: Any) -> str:
    """A short stable hash of a subset: indices (list or tensor) or file names (part of a cache key)."""
    if isinstance(indices, torch.Tensor):
        indices = indices.tolist()
    return hashlib.sha256(",".join(map(str, indices)).encode()).hexdigest()[:16]


def key_hash(key: Mapping[str, Any]) -> str:
    """Short stable hash of a key (16 hex digits of SHA-256 over its canonical JSON)."""
    text = json.dumps(_canonical(dict(key)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class FeatureCache:
    """One cache entry: chunked, atomically written, resumable feature tensors for a key.

    Args:
        key: mapping of everything that determines the features (see :func:`feature_key`).
        root: cache folder (default :func:`cache_root`).
    """

    def __init__(self, key: Mapping[str, Any], root: str | os.PathLike | None = None) -> None:
        self.key = _canonical({**dict(key), "cache_version": CACHE_VERSION})
        slug = "-".join(str(self.key.get(f, "")) for f in ("model", "dataset", "split") if self.key.get(f, "") != "")
        slug = re.sub(r"[^A-Za-z0-9_.]+", "_", slug)[:80] or "features"
        self.path = cache_root(root) / f"{slug}-{key_hash(self.key)}"

    # --- state -------------------------------------------------------------------------------
    def chunk_path(self, index: int) -> Path:
        return self.path / f"chunk-{index:06d}.pt"

    def _stored_key(self) -> dict | None:
        try:
            return json.loads((self.path / "key.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _layout(self, n_items: int, chunk_size: int) -> dict:
        return {"key": self.key, "n_items": int(n_items), "chunk_size": int(chunk_size)}

    def is_complete(self) -> bool:
        """True when every chunk was written (``done.json`` exists) and the key matches."""
        stored = self._stored_key()
        return (self.path / "done.json").exists() and stored is not None and stored.get("key") == self.key

    def n_chunks_done(self) -> int:
        """Number of chunk files present (an interrupted extraction resumes after them)."""
        return len(list(self.path.glob("chunk-*.pt"))) if self.path.exists() else 0

    def clear(self) -> None:
        """Remove this entry."""
        shutil.rmtree(self.path, ignore_errors=True)

    # --- read / write ------------------------------------------------------------------------
    def load(self) -> dict[str, torch.Tensor]:
        """All chunks concatenated along dim 0. Raises FileNotFoundError if incomplete."""
        if not self.is_complete():
            raise FileNotFoundError(f"feature cache {self.path} is missing or incomplete")
        n = json.loads((self.path / "done.json").read_text())["n_chunks"]
        return _concat([torch.load(self.chunk_path(i), map_location="cpu", weights_only=True) for i in range(n)])

    def get_or_compute(self, n_items: int, compute: Callable[[int, int], Mapping[str, torch.Tensor]], *,
                       chunk_size: int = 1024, progress: bool = True) -> dict[str, torch.Tensor]:
        """Load the features, computing (only) the missing chunks first.

        Args:
            n_items: number of items (images) in the whole extraction.
            compute: ``compute(start, stop)`` returns a dict of tensors whose first dim is ``stop - start``
                (tensors that are not per item are not allowed: store them in the key instead).
            chunk_size: items per chunk file (part of the entry's identity: a new size recomputes).
            progress: show a tqdm bar over chunks.

        Returns:
            dict name -> tensor with first dim ``n_items`` (on the CPU).
        """
        if n_items <= 0 or chunk_size <= 0:
            raise ValueError(f"n_items and chunk_size must be positive, got {n_items} and {chunk_size}")
        layout = self._layout(n_items, chunk_size)
        stored = self._stored_key()
        if stored is not None and stored != layout:
            self.clear()  # a stale entry (other chunking or a hand-edited key): start over
        if not self.is_complete():
            atomic_write_json(self.path / "key.json", layout)
            n_chunks = math.ceil(n_items / chunk_size)
            todo = [i for i in range(n_chunks) if not self.chunk_path(i).exists()]
            bar = None
            if progress and todo:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(todo), desc=f"features {self.path.name}", unit="chunk")
            for i in todo:
                start, stop = i * chunk_size, min((i + 1) * chunk_size, n_items)
                part = {k: v.detach().cpu().contiguous() for k, v in dict(compute(start, stop)).items()}
                for name, t in part.items():
                    if t.shape[0] != stop - start:
                        raise ValueError(f"compute({start}, {stop}) returned {name!r} with first dim "
                                         f"{t.shape[0]}, expected {stop - start}")
                atomic_torch_save(part, self.chunk_path(i))
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
            atomic_write_json(self.path / "done.json", {"n_chunks": n_chunks, "n_items": n_items})
        return self.load()


def cached_features(key: Mapping[str, Any], n_items: int, compute: Callable[[int, int], Mapping[str, torch.Tensor]],
                    *, chunk_size: int = 1024, root: str | os.PathLike | None = None, enabled: bool = True,
                    progress: bool = True) -> dict[str, torch.Tensor]:
    """Features for ``key``: from the cache when there, else computed chunk by chunk and stored.

    Args:
        key: the cache key (see :func:`feature_key`).
        n_items: number of items.
        compute: ``compute(start, stop) -> dict of tensors`` for items ``[start, stop)``.
        chunk_size: items per chunk.
        root: cache folder (default :func:`cache_root`).
        enabled: False computes everything in memory and writes nothing.
        progress: tqdm bar.

    Returns:
        dict name -> ``(n_items, ...)`` tensors.
    """
    if not enabled:
        parts = [dict(compute(s, min(s + chunk_size, n_items))) for s in range(0, n_items, chunk_size)]
        return _concat([{k: v.detach().cpu() for k, v in p.items()} for p in parts])
    return FeatureCache(key, root).get_or_compute(n_items, compute, chunk_size=chunk_size, progress=progress)


def clear_cache(root: str | os.PathLike | None = None, *, match: str = "") -> int:
    """Remove cache entries whose folder name contains ``match`` (all when empty); returns how many."""
    folder = cache_root(root)
    if not folder.exists():
        return 0
    gone = 0
    for entry in folder.iterdir():
        if entry.is_dir() and match in entry.name and (entry / "key.json").exists():
            shutil.rmtree(entry)
            gone += 1
    return gone


def _concat(parts: list[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    if not parts:
        return {}
    names = list(parts[0])
    for p in parts:
        if list(p) != names:
            raise ValueError(f"chunks disagree on their tensors: {names} vs {list(p)}")
    return {k: torch.cat([p[k] for p in parts]) for k in names}
