"""A feature cache on disk, so that a second run of a notebook does not recompute features.

Paper: Fig. 5b and Table 1 / Table 6 (the probes of notebooks 05 and 06 run on frozen features of
whole datasets; extracting them is the slow part).

One cache entry is a folder named after its key and chunk size (readable slug + hash), holding:

* ``key.json``: the full key (model, tag, resolution, dataset, split, layer and anything else that
  changes the features: seeds, number of drawn tokens, outlier threshold, weights content hash, ...),
  the number of items and the chunk size;
* ``chunk-000000.pt`` ...: the features of items ``[i*chunk_size, (i+1)*chunk_size)``, each written
  atomically (temporary file + ``os.replace``), so an interrupted extraction resumes at the missing
  chunks; beside each, ``chunk-000000.json`` records its item range, row count and digest;
* ``done.json``: the manifest, written last: every chunk's file, rows and digest.

A digest is XXH3-128 (:func:`chunk_digest`): it detects damaged, truncated or replaced chunks at the speed of
the disk (SHA-256 made reading a cached entry cost more than recomputing patch tokens on a GPU). It is not a
defence against a crafted file: that is ``torch.load(weights_only=True)``'s job, which refuses any pickle
that is not plain tensors.

Nothing read is trusted: a load checks the manifest against the chunks on disk (their number, digests
and row counts, which must add up to the number of items). A bad chunk (damaged, truncated, replaced,
missing) is deleted and recomputed with a :class:`CacheWarning` naming the file. The chunk size is part
of the folder's hash, so two processes writing one key with different chunk sizes never mix chunks.
Temporary files left by a killed writer are removed on the next write (once they are
:data:`STALE_TMP_SECONDS` old, so a concurrent writer's file is left alone). A cache folder that cannot
be written (read-only, full) gives a warning and the features are computed in memory.

Changing any key field gives another folder (the old one is left alone; :func:`clear_cache` removes
entries). A folder whose ``key.json`` does not match its key (edited by hand, or from an older format)
is wiped and recomputed.

Location: ``$VITREG_CACHE``, else ``<repo>/data/cache`` (``~/.cache/vitreg/features`` for an installed package).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import xxhash

from vitreg.utils.io import atomic_write_bytes, atomic_write_json
from vitreg.utils.paths import cache_root

#: Bump when the stored layout changes: every old entry is then ignored.
#: 2: chunk size in the folder hash, per-chunk records and a manifest with row counts and hashes.
#: 3: chunk digests are XXH3-128 instead of SHA-256.
CACHE_VERSION = 3

#: A temporary file in an entry older than this (seconds) was left by a killed writer and is removed.
STALE_TMP_SECONDS = 600

#: errno values that mean "this cache folder cannot be written": compute in memory instead.
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class CacheWarning(UserWarning):
    """A cache entry was damaged (and is recomputed) or could not be written (computed in memory)."""


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


def model_fields(loaded: Any, context: Mapping[str, Any] | None = None) -> dict:
    """The fields of a cache key that identify a loaded model's features.

    Name, tag, resolution, where the weights came from and the SHA-256 of a weights file
    (:func:`file_sha256`), the parameter dtype (a float16 model gives other
    features than a float32 one), how the position embeddings were resized to the resolution, and for
    randomly initialised models (smoke runs) a fingerprint of the weights: every random model has the
    same source ("random init"), but not the same weights.

    Args:
        loaded: a :class:`vitreg.core.weights.LoadedModel`.
        context: the fingerprint of the experiment context the features are computed under (planted truth in
            smoke runs: :func:`vitreg.core.context.fingerprint`), or None for the clean model: planted and clean
            features never share an entry.

    Returns:
        a dict to pass to :func:`feature_key` with the dataset, split and layer.
    """
    d = loaded.describe()
    params = list(loaded.model.parameters())
    fields = dict(model=d["name"], tag=d["tag"], resolution=list(loaded.image_size), pretrained=d["pretrained"],
                  weights=d["weights_source"], timm_name=d["timm_name"], pos_embed_resize=d.get("pos_embed_resize"),
                  dtype=d["dtype"], **({"autocast": d["autocast"]} if d.get("autocast") else {}))  # bf16 on CUDA
    source = Path(d["weights_source"])
    if d["pretrained"] and source.is_file():  # a file replaced in place (even `cp -p`) must not serve stale features
        fields["weights_sha256"] = file_sha256(source)
    if context is not None:
        fields["planted"] = dict(context)
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
    """One cache entry: chunked, atomically written, verified, resumable feature tensors for a key.

    Args:
        key: mapping of everything that determines the features (see :func:`feature_key`).
        root: cache folder (default :func:`cache_root`).
        chunk_size: items per chunk file; part of the folder's hash, so another chunk size is another entry.
    """

    def __init__(self, key: Mapping[str, Any], root: str | os.PathLike | None = None, *,
                 chunk_size: int = 1024) -> None:
        if int(chunk_size) <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.key = _canonical({**dict(key), "cache_version": CACHE_VERSION})
        self.chunk_size = int(chunk_size)
        slug = "-".join(str(self.key.get(f, "")) for f in ("model", "dataset", "split") if self.key.get(f, "") != "")
        slug = re.sub(r"[^A-Za-z0-9_.]+", "_", slug)[:80] or "features"
        self.path = cache_root(root) / f"{slug}-{key_hash({'key': self.key, 'chunk_size': self.chunk_size})}"

    # --- state -------------------------------------------------------------------------------
    def chunk_path(self, index: int) -> Path:
        return self.path / f"chunk-{index:06d}.pt"

    def record_path(self, index: int) -> Path:
        """The chunk's record: item range, rows and digest, written right after the chunk."""
        return self.path / f"chunk-{index:06d}.json"

    def _stored_key(self) -> dict | None:
        """``key.json``; None when absent; ``{"unreadable": ...}`` (never a valid layout) when damaged."""
        try:
            return json.loads((self.path / "key.json").read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            return {"unreadable": str(err)}

    def _layout(self, n_items: int) -> dict:
        return {"key": self.key, "n_items": int(n_items), "chunk_size": self.chunk_size}

    def _plan(self, n_items: int) -> list[tuple[int, int, int]]:
        """``(index, start, stop)`` of every chunk."""
        cs = self.chunk_size
        return [(i, i * cs, min((i + 1) * cs, n_items)) for i in range(math.ceil(n_items / cs))]

    def is_complete(self) -> bool:
        """True when the manifest (``done.json``) was written and the key matches (not yet verified)."""
        stored = self._stored_key()
        return (self.path / "done.json").exists() and stored is not None and stored.get("key") == self.key

    def n_chunks_done(self) -> int:  # chunk files present (an interrupted extraction resumes after them)
        return len(list(self.path.glob("chunk-*.pt"))) if self.path.exists() else 0

    def clear(self) -> None:
        """Remove this entry."""
        shutil.rmtree(self.path, ignore_errors=True)

    # --- read / verify -----------------------------------------------------------------------
    def load(self) -> dict[str, torch.Tensor]:
        """All chunks concatenated along dim 0, verified against the manifest.

        Raises:
            FileNotFoundError: the entry is missing, incomplete or fails verification (the message names
                every bad file; :meth:`get_or_compute` repairs it).
        """
        stored = self._stored_key()
        if not self.is_complete() or stored is None:
            raise FileNotFoundError(f"feature cache {self.path} is missing or incomplete")
        got, bad = self._check(int(stored.get("n_items", -1)))
        if got is None:
            raise FileNotFoundError(f"feature cache {self.path} fails verification: " + _describe(bad))
        return got

    def _check(self, n_items: int) -> tuple[dict[str, torch.Tensor] | None, list[tuple[Path, str]]]:
        """Verify the manifest against the plan and every chunk against the manifest.

        Returns:
            ``(features, [])``, or ``(None, [(file, what is wrong), ...])``.
        """
        plan, done = self._plan(max(n_items, 0)), self.path / "done.json"
        try:
            manifest = json.loads(done.read_text())
            listed = [(str(r["file"]), int(r["start"]), int(r["stop"]), int(r["rows"]), str(r["digest"]))
                      for r in manifest["chunks"]]
            claimed, claimed_items = int(manifest["n_chunks"]), int(manifest["n_items"])
        except FileNotFoundError:
            return None, [(done, "is missing")]
        except (OSError, ValueError, KeyError, TypeError) as err:
            return None, [(done, f"is unreadable ({type(err).__name__}: {err})")]
        expected = [(self.chunk_path(i).name, a, b, b - a) for i, a, b in plan]
        rows = sum(r[3] for r in listed)
        if claimed != len(plan) or claimed_items != n_items or [r[:4] for r in listed] != expected:
            return None, [(done, f"lists {claimed} chunks ({len(listed)} records, {rows} rows) but {n_items} items in "
                                 f"chunks of {self.chunk_size} make {len(plan)}")]
        bad: list[tuple[Path, str]] = []
        parts: list[dict[str, torch.Tensor]] = []
        for name, _, _, n_rows, digest in listed:
            problem, part = _read_chunk(self.path / name, n_rows, digest)
            if problem is None and parts and list(part) != list(parts[0]):
                problem = f"holds tensors {sorted(part)}, the other chunks {sorted(parts[0])}"
            if problem is not None:
                bad.append((self.path / name, problem))
            else:
                parts.append(part)
        names = {r[0] for r in listed}
        bad += [(f, f"is not in the manifest ({claimed} chunks)") for f in sorted(self.path.glob("chunk-*.pt"))
                if f.name not in names]
        return (None, bad) if bad else (_concat(parts), [])

    def _discard(self, bad: list[tuple[Path, str]]) -> None:
        """Warn about each bad file and delete it (with its record) and the manifest: they are recomputed."""
        warnings.warn(f"feature cache {self.path}: " + _describe(bad) + "; deleting and recomputing",
                      CacheWarning, stacklevel=4)
        for file, _ in bad:
            for gone in (file, file.with_suffix(".json") if file.suffix == ".pt" else file):
                try:
                    gone.unlink(missing_ok=True)
                except OSError:
                    pass  # a read-only cache: _fill then falls back to memory
        try:
            (self.path / "done.json").unlink(missing_ok=True)
        except OSError:
            pass

    # --- write -------------------------------------------------------------------------------
    def _record(self, index: int, start: int, stop: int) -> dict | None:
        """The record of chunk ``index`` when it and its chunk file are there and fit the plan, else None."""
        chunk, rec_file = self.chunk_path(index), self.record_path(index)
        try:
            rec = json.loads(rec_file.read_text())
        except FileNotFoundError:
            rec = None
        except (OSError, ValueError) as err:
            rec = {"unreadable": str(err)}
        want = {"file": chunk.name, "start": start, "stop": stop, "rows": stop - start}
        if (isinstance(rec, dict) and {k: rec.get(k) for k in want} == want and isinstance(rec.get("digest"), str)
                and chunk.exists()):
            return rec
        if rec is not None:
            warnings.warn(f"feature cache: {rec_file} does not describe items [{start}, {stop}) of "
                          f"{chunk.name}; recomputing them", CacheWarning, stacklevel=5)
        chunk.unlink(missing_ok=True)
        rec_file.unlink(missing_ok=True)
        return None

    def _remove_stale_tmp(self) -> None:
        """Remove temporary files a killed writer left (older than :data:`STALE_TMP_SECONDS`)."""
        if not self.path.is_dir():
            return
        for tmp in self.path.glob(".*.tmp"):
            try:
                if time.time() - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                    tmp.unlink()
            except OSError:
                pass  # gone already (another process cleaned it) or read-only

    def begin(self, n_items: int) -> list[tuple[int, int, int]]:
        """Make the entry writable (stale temporary files gone, ``key.json``); the chunks still to compute."""
        self._remove_stale_tmp()
        atomic_write_json(self.path / "key.json", self._layout(n_items))
        return [(i, a, b) for i, a, b in self._plan(n_items) if self._record(i, a, b) is None]

    def write_chunk(self, index: int, start: int, stop: int, compute: Callable[[int, int], Mapping]) -> None:
        """Compute items ``[start, stop)`` and write them atomically as chunk ``index``, then its record."""
        torch.save(_checked(compute(start, stop), start, stop), buffer := io.BytesIO())
        atomic_write_bytes(self.chunk_path(index), data := buffer.getvalue())
        atomic_write_json(self.record_path(index), {"file": self.chunk_path(index).name, "start": start, "stop": stop,
                                                    "rows": stop - start, "digest": chunk_digest(data)})

    def finish(self, n_items: int) -> None:
        """Write the manifest from the chunk records on disk (whichever process wrote them)."""
        plan = self._plan(n_items)
        if None in (records := [self._record(i, a, b) for i, a, b in plan]):
            raise RuntimeError(f"feature cache {self.path}: a chunk is missing; the manifest is not written")
        atomic_write_json(self.path / "done.json", {"n_items": n_items, "chunk_size": self.chunk_size,
                                                    "n_chunks": len(plan), "chunks": records})

    def _fill(self, n_items: int, compute: Callable[[int, int], Mapping[str, torch.Tensor]], progress: bool) -> None:
        """Compute and write the chunks without a valid record, then the manifest."""
        todo = self.begin(n_items)
        if progress and todo:
            from vitreg.utils.progress import progress_bar

            todo = progress_bar(todo, desc=f"features {self.path.name}", unit="chunk")
        for i, start, stop in todo:
            self.write_chunk(i, start, stop, compute)
        self.finish(n_items)

    def reset_if_stale(self, n_items: int) -> None:
        """Start the entry over when its ``key.json`` is for another layout (item count, key) or damaged."""
        stored = self._stored_key()
        if stored is not None and stored != self._layout(n_items):
            if "unreadable" in stored:
                warnings.warn(f"feature cache: {self.path / 'key.json'} is unreadable ({stored['unreadable']}); "
                              f"recomputing the entry", CacheWarning, stacklevel=3)
            self.clear()

    def get_or_compute(self, n_items: int, compute: Callable[[int, int], Mapping[str, torch.Tensor]], *,
                       progress: bool = True) -> dict[str, torch.Tensor]:
        """Load the features, computing (only) the missing or bad chunks first.

        Args:
            n_items: number of items (images) in the whole extraction.
            compute: ``compute(start, stop)`` returns a dict of tensors whose first dim is ``stop - start``
                (tensors that are not per item are not allowed: store them in the key instead).
            progress: show a tqdm bar over chunks.

        Returns:
            dict name -> tensor with first dim ``n_items`` (on the CPU).
        """
        if n_items <= 0:
            raise ValueError(f"n_items must be positive, got {n_items}")
        self.reset_if_stale(n_items)  # another item count, a hand-edited or damaged key: start over
        bad: list[tuple[Path, str]] = []
        for attempt in range(3):  # fill, verify; once more for a chunk damaged before the manifest was written
            if self.is_complete():
                got, bad = self._check(n_items)
                if got is not None:
                    return got
                if attempt == 2:
                    break
                self._discard(bad)
            try:
                self._fill(n_items, compute, progress)
            except OSError as err:
                if err.errno not in _UNWRITABLE:
                    raise
                warnings.warn(f"feature cache {self.path} cannot be written ({err}): computing the features in "
                              f"memory; set $VITREG_CACHE to a writable folder to keep them", CacheWarning, stacklevel=3)
                return _compute_in_memory(n_items, compute, self.chunk_size)
        raise RuntimeError(f"feature cache {self.path} still fails verification after recomputing: {_describe(bad)} "
                           f"(another process writing it? delete the folder and run again)")


def cached_features(key: Mapping[str, Any], n_items: int, compute: Callable[[int, int], Mapping[str, torch.Tensor]],
                    *, chunk_size: int = 1024, root: str | os.PathLike | None = None, enabled: bool = True,
                    progress: bool = True) -> dict[str, torch.Tensor]:
    """Features for ``key``: from the cache when there, else computed chunk by chunk and stored.

    Args:
        key: the cache key (see :func:`feature_key`).
        n_items: number of items.
        compute: ``compute(start, stop) -> dict of tensors`` for items ``[start, stop)``.
        chunk_size: items per chunk (part of the entry: another size is another entry).
        root: cache folder (default :func:`cache_root`).
        enabled: False computes everything in memory and writes nothing.
        progress: tqdm bar.

    Returns:
        dict name -> ``(n_items, ...)`` tensors.
    """
    if not enabled:
        return _compute_in_memory(n_items, compute, chunk_size)
    return FeatureCache(key, root, chunk_size=chunk_size).get_or_compute(n_items, compute, progress=progress)


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


def _compute_in_memory(n_items: int, compute: Callable[[int, int], Mapping[str, torch.Tensor]],
                       chunk_size: int) -> dict[str, torch.Tensor]:
    """Every chunk computed and concatenated, nothing written."""
    return _concat([_checked(compute(s, min(s + chunk_size, n_items)), s, min(s + chunk_size, n_items))
                    for s in range(0, n_items, chunk_size)])


def _checked(part: Mapping[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    """``compute(start, stop)``'s tensors on the CPU, refused unless each has ``stop - start`` rows."""
    part = {k: v.detach().cpu().contiguous() for k, v in dict(part).items()}
    for name, t in part.items():
        if t.ndim == 0 or t.shape[0] != stop - start:
            raise ValueError(f"compute({start}, {stop}) returned {name!r} with shape {tuple(t.shape)}, expected "
                             f"first dim {stop - start}")
    return part


def chunk_digest(data: bytes) -> str:
    """The digest a chunk's record holds: XXH3-128 of its bytes, hex (disk speed; see the module docstring)."""
    return xxhash.xxh3_128_hexdigest(data)


def _read_chunk(file: Path, rows: int, digest: str) -> tuple[str | None, dict[str, torch.Tensor]]:
    """``(None, tensors)`` for a chunk whose bytes have ``digest`` and whose tensors have ``rows`` rows,
    else ``(what is wrong, {})``. The digest is checked before anything is unpickled."""
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        return "is missing", {}
    except OSError as err:
        return f"is unreadable ({err})", {}
    if chunk_digest(data) != digest:
        return f"does not match its digest in the manifest (damaged or replaced, {len(data)} bytes)", {}
    try:
        part = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable chunk is recomputed, whatever torch raises
        return f"is unreadable ({type(err).__name__}: {err})", {}
    if not isinstance(part, dict) or not part or not all(isinstance(t, torch.Tensor) for t in part.values()):
        return "does not hold a dict of tensors", {}
    wrong = {k: tuple(t.shape) for k, t in part.items() if t.ndim == 0 or t.shape[0] != rows}
    if wrong:
        return f"has tensors of shapes {wrong}, the manifest says {rows} rows", {}
    return None, part


def _describe(bad: list[tuple[Path, str]]) -> str:
    return "; ".join(f"{file} {why}" for file, why in bad)
