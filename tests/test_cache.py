"""The feature cache (vitreg.utils.cache) returns identical features, is invalidated by any key change and
resumes an interrupted extraction. Paper: Fig. 5b, Table 1 (the probes' frozen features)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
import time
import warnings

import pytest
import torch

from vitreg.utils import cache

BASE = dict(model="dinov2_s", tag="lvd142m", resolution=[224, 224], dataset="cifar10", split="train",
            layer="final_norm")


class Counter:
    """A feature 'extractor' that records which items it computed; optionally fails at one chunk."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.fail_at = fail_at

    def __call__(self, start: int, stop: int) -> dict[str, torch.Tensor]:
        if self.fail_at is not None and start >= self.fail_at:
            raise KeyboardInterrupt("simulated interruption")
        self.calls.append((start, stop))
        idx = torch.arange(start, stop, dtype=torch.float)
        return {"x": idx.view(-1, 1) * torch.ones(1, 3), "y": torch.arange(start, stop)}


def test_second_call_reads_identical_features(tmp_path) -> None:
    key = cache.feature_key(**BASE)
    first = Counter()
    a = cache.cached_features(key, 10, first, chunk_size=4, root=tmp_path, progress=False)
    second = Counter()
    b = cache.cached_features(key, 10, second, chunk_size=4, root=tmp_path, progress=False)
    assert first.calls == [(0, 4), (4, 8), (8, 10)]
    assert second.calls == []
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(a["y"], torch.arange(10))
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave nothing behind


@pytest.mark.parametrize("field,value", [("model", "dinov2_s_reg"), ("tag", ""), ("resolution", [518, 518]),
                                         ("dataset", "cifar100"), ("split", "test"), ("layer", 11),
                                         ("seed", 1)])
def test_any_key_change_recomputes(tmp_path, field, value) -> None:
    cache.cached_features(cache.feature_key(**BASE, seed=0), 6, Counter(), chunk_size=4, root=tmp_path,
                          progress=False)
    changed = {**BASE, "seed": 0, field: value}
    again = Counter()
    cache.cached_features(cache.feature_key(**changed), 6, again, chunk_size=4, root=tmp_path, progress=False)
    assert again.calls == [(0, 4), (4, 6)]


def test_item_count_and_chunking_are_part_of_the_entry(tmp_path) -> None:
    key = cache.feature_key(**BASE)
    cache.cached_features(key, 6, Counter(), chunk_size=4, root=tmp_path, progress=False)
    more = Counter()
    out = cache.cached_features(key, 8, more, chunk_size=4, root=tmp_path, progress=False)
    assert more.calls == [(0, 4), (4, 8)] and len(out["y"]) == 8


@pytest.mark.robustness("nothing lost")
def test_interrupted_extraction_resumes(tmp_path) -> None:
    key = cache.feature_key(**BASE)
    with pytest.raises(KeyboardInterrupt):
        cache.cached_features(key, 10, Counter(fail_at=4), chunk_size=2, root=tmp_path, progress=False)
    entry = cache.FeatureCache(key, tmp_path, chunk_size=2)
    assert entry.n_chunks_done() == 2 and not entry.is_complete()
    resumed = Counter()
    out = cache.cached_features(key, 10, resumed, chunk_size=2, root=tmp_path, progress=False)
    assert resumed.calls == [(4, 6), (6, 8), (8, 10)]  # only the missing chunks
    assert torch.equal(out["y"], torch.arange(10))
    assert torch.equal(out["x"][:, 0], torch.arange(10, dtype=torch.float))


def test_stale_entry_is_wiped(tmp_path) -> None:
    key = cache.feature_key(**BASE)
    entry = cache.FeatureCache(key, tmp_path, chunk_size=2)
    cache.cached_features(key, 4, Counter(), chunk_size=2, root=tmp_path, progress=False)
    (entry.path / "key.json").write_text('{"key": {"model": "something else"}}')
    again = Counter()
    cache.cached_features(key, 4, again, chunk_size=2, root=tmp_path, progress=False)
    assert again.calls == [(0, 2), (2, 4)]


def test_env_var_sets_the_folder_and_disabled_cache_writes_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VITREG_CACHE", str(tmp_path / "c"))
    assert cache.cache_root() == tmp_path / "c"
    out = cache.cached_features(cache.feature_key(**BASE), 5, Counter(), chunk_size=2, enabled=False)
    assert torch.equal(out["y"], torch.arange(5))
    assert not (tmp_path / "c").exists()
    cache.cached_features(cache.feature_key(**BASE), 5, Counter(), chunk_size=2, progress=False)
    assert cache.clear_cache() == 1


@pytest.mark.robustness("clear error")
def test_bad_keys_and_chunks_are_refused(tmp_path) -> None:
    with pytest.raises(TypeError):
        cache.feature_key(model="m", tag="", resolution=224, dataset="d", split="train")  # no layer
    with pytest.raises(TypeError, match="JSON-like"):
        cache.feature_key(**BASE, weights=object())
    with pytest.raises(ValueError, match="first dim"):
        cache.cached_features(cache.feature_key(**BASE), 4, lambda s, e: {"x": torch.zeros(1)}, chunk_size=2,
                              root=tmp_path, progress=False)


def test_model_dtype_and_random_init_are_part_of_the_key(tmp_path) -> None:
    """A bfloat16 model, or another random initialisation, must not read a float32 model's cached features."""
    import copy
    import dataclasses

    from vitreg.measure import features
    from vitreg.data.datasets import SyntheticGlobalDataset
    from vitreg.core.weights import load_model

    images = [SyntheticGlobalDataset(n=2, image_size=56)[i][0] for i in range(2)]
    kw = dict(dataset="syn2", batch_size=2, cache_root=tmp_path, progress=False)
    base = load_model("dinov2_s", pretrained=False, image_size=56)
    same = dataclasses.replace(base, model=copy.deepcopy(base.model))
    other = dataclasses.replace(base, model=copy.deepcopy(base.model))
    with torch.no_grad():
        torch.nn.init.normal_(other.model.pos_embed)  # another "random init": same source, other weights
    file = dataclasses.replace(base, pretrained=True, source="weights.pth")  # as if loaded from a file
    half = dataclasses.replace(file, model=copy.deepcopy(base.model).to(torch.bfloat16))
    for reference, changed in ((base, other), (file, half)):
        first = features.patch_token_features(reference, images, **kw)["patches"]
        fresh = features.patch_token_features(changed, images, **{**kw, "cache": False})["patches"]
        got = features.patch_token_features(changed, images, **kw)["patches"]
        assert not torch.equal(fresh, first) and torch.equal(got, fresh)
    assert torch.equal(features.patch_token_features(same, images, **kw)["patches"],
                       features.patch_token_features(base, images, **kw)["patches"])  # the same weights: reused


# --- a fault corpus: the cache verifies what it reads --------------------------------------
def _entry(tmp_path, n=12, chunk_size=4):
    """A complete entry of ``n`` items (``Counter`` features) and its folder."""
    key = cache.feature_key(**BASE)
    cache.cached_features(key, n, Counter(), chunk_size=chunk_size, root=tmp_path, progress=False)
    folder = cache.FeatureCache(key, tmp_path, chunk_size=chunk_size).path
    assert (folder / "done.json").exists()
    return key, folder


def _rerun(key, tmp_path, n=12, chunk_size=4):
    again = Counter()
    out = cache.cached_features(key, n, again, chunk_size=chunk_size, root=tmp_path, progress=False)
    assert torch.equal(out["y"], torch.arange(n))
    assert torch.equal(out["x"], torch.arange(n, dtype=torch.float).view(-1, 1) * torch.ones(1, 3))
    return again.calls


def _damage(chunk, how: str) -> None:
    data = chunk.read_bytes()
    if how == "flipped_byte":  # inside the tensor data: torch.load reads it fine, the values are wrong
        flipped = bytearray(data)
        flipped[data.index(struct.pack("<f", 5.0)) + 3] ^= 0x01  # 5.0 becomes 20.0
        chunk.write_bytes(bytes(flipped))
    elif how == "truncated":
        chunk.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        chunk.write_bytes(b"this is not a chunk\n" * 10)
    elif how == "missing":
        chunk.unlink()
    elif how == "two_rows":  # a valid chunk with 2 rows where 4 belong
        torch.save({"x": torch.zeros(2, 3), "y": torch.arange(2)}, chunk)


@pytest.mark.robustness("handled")
@pytest.mark.parametrize("how", ["flipped_byte", "truncated", "garbage", "missing", "two_rows"])
def test_a_bad_chunk_is_recomputed_with_a_warning_naming_it(tmp_path, how) -> None:
    key, folder = _entry(tmp_path)
    _damage(folder / "chunk-000001.pt", how)
    with pytest.warns(cache.CacheWarning, match="chunk-000001.pt"):
        calls = _rerun(key, tmp_path)
    assert calls == [(4, 8)]  # only the bad chunk
    assert _rerun(key, tmp_path) == []  # repaired: read back without a warning


@pytest.mark.robustness("handled")
def test_rows_must_match_the_manifest_even_when_the_hash_does(tmp_path) -> None:
    """A chunk with 2 rows whose hash was also written into the manifest (a hand-made entry)."""
    key, folder = _entry(tmp_path)
    chunk = folder / "chunk-000001.pt"
    _damage(chunk, "two_rows")
    manifest = json.loads((folder / "done.json").read_text())
    manifest["chunks"][1]["digest"] = cache.chunk_digest(chunk.read_bytes())
    (folder / "done.json").write_text(json.dumps(manifest))
    with pytest.warns(cache.CacheWarning, match=r"chunk-000001.pt has tensors of shapes .* 4 rows"):
        assert _rerun(key, tmp_path) == [(4, 8)]


@pytest.mark.robustness("handled")
@pytest.mark.parametrize("claim", [2, 5])
def test_a_manifest_claiming_more_or_fewer_chunks_is_detected(tmp_path, claim) -> None:
    key, folder = _entry(tmp_path)  # 12 items in chunks of 4: 3 chunks
    manifest = json.loads((folder / "done.json").read_text())
    records = manifest.get("chunks", [])
    fake = [{**(records[-1] if records else {}), "file": f"chunk-{i:06d}.pt", "start": 4 * i, "stop": 4 * i + 4} for i in range(3, claim)]
    manifest.update(n_chunks=claim, chunks=records[:claim] + fake)
    (folder / "done.json").write_text(json.dumps(manifest))
    with pytest.warns(cache.CacheWarning, match=f"done.json lists {claim} chunks"):
        assert _rerun(key, tmp_path) == []  # the chunks themselves are fine: only the manifest is rewritten


@pytest.mark.robustness("handled")
def test_chunks_left_out_of_the_manifest_and_a_damaged_manifest_are_detected(tmp_path) -> None:
    key, folder = _entry(tmp_path)
    shutil.copy(folder / "chunk-000002.pt", folder / "chunk-000003.pt")
    with pytest.warns(cache.CacheWarning, match="chunk-000003.pt is not in the manifest"):
        assert _rerun(key, tmp_path) == []
    assert not (folder / "chunk-000003.pt").exists()
    (folder / "done.json").write_text('{"n_chunks": 3, "n_it')
    with pytest.warns(cache.CacheWarning, match="done.json is unreadable"):
        assert _rerun(key, tmp_path) == []


@pytest.mark.robustness("handled")
def test_two_writers_with_different_chunk_sizes_never_mix(tmp_path) -> None:
    """Process B (chunks of 6) runs to the end while process A (chunks of 4) is between two chunks."""
    key = cache.feature_key(**BASE)
    b_out = {}

    def writer_a(start: int, stop: int) -> dict[str, torch.Tensor]:
        if start == 4:
            b_out.update(cache.cached_features(key, 48, Counter(), chunk_size=6, root=tmp_path, progress=False))
        return Counter()(start, stop)

    a_out = cache.cached_features(key, 48, writer_a, chunk_size=4, root=tmp_path, progress=False)
    for out in (a_out, b_out):
        assert torch.equal(out["y"], torch.arange(48))
    for size in (4, 6, 5):  # every later reader, whatever its chunk size
        out = cache.cached_features(key, 48, Counter(), chunk_size=size, root=tmp_path, progress=False)
        assert torch.equal(out["y"], torch.arange(48))


@pytest.mark.robustness("handled")
def test_leftover_temporary_files_are_removed_on_the_next_write(tmp_path) -> None:
    key = cache.feature_key(**BASE)
    with pytest.raises(KeyboardInterrupt):
        cache.cached_features(key, 6, Counter(fail_at=2), chunk_size=2, root=tmp_path, progress=False)
    folder = cache.FeatureCache(key, tmp_path, chunk_size=2).path
    killed = folder / ".chunk-000001.pt.k1ll3d.tmp"  # what a killed writer leaves
    killed.write_bytes(b"half a chunk")
    old = time.time() - 2 * cache.STALE_TMP_SECONDS
    os.utime(killed, (old, old))
    busy = folder / ".chunk-000002.pt.wr1t1ng.tmp"  # another process is writing this one right now
    busy.write_bytes(b"half a chunk")
    assert _rerun(key, tmp_path, n=6, chunk_size=2) == [(2, 4), (4, 6)]
    assert not killed.exists() and busy.exists()


def _read_only(folder, monkeypatch) -> None:
    """Make ``folder`` read-only; as root chmod does not stop writes, so the cache's writers refuse too."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):

        def refuse(path, *args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system", str(path))

        for writer in ("atomic_write_json", "atomic_write_bytes", "atomic_torch_save"):
            monkeypatch.setattr(cache, writer, refuse, raising=False)


@pytest.mark.robustness("handled")
def test_a_read_only_cache_computes_in_memory_with_a_warning(tmp_path, monkeypatch) -> None:
    key = cache.feature_key(**BASE)
    ready = tmp_path / "ready"
    _entry(ready)
    _read_only(tmp_path, monkeypatch)
    _read_only(ready, monkeypatch)
    try:
        with pytest.warns(cache.CacheWarning, match="cannot be written"):
            assert _rerun(key, tmp_path / "empty") == [(0, 4), (4, 8), (8, 12)]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert _rerun(key, ready) == []  # a complete entry is read without writing anything
    finally:
        tmp_path.chmod(0o755)
        ready.chmod(0o755)


@pytest.mark.robustness("handled")
@pytest.mark.parametrize("how", ["replaced", "in_place"])
def test_a_weights_file_replaced_with_same_size_and_time_gives_another_key(tmp_path, how) -> None:
    """``cp -p other.pth weights.pth``: same size, same modification time, other weights."""
    import dataclasses

    from vitreg.core.weights import load_model

    file = tmp_path / "weights.pth"
    file.write_bytes(b"A" * 4096)
    st = file.stat()
    loaded = dataclasses.replace(load_model("dinov2_s", pretrained=False, image_size=56), pretrained=True,
                                 source=str(file))
    before = cache.model_fields(loaded)
    if how == "replaced":
        other = tmp_path / "other.pth"
        other.write_bytes(b"B" * 4096)
        os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(other, file)
    else:
        with open(file, "r+b") as f:
            f.write(b"B" * 4096)
        os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = file.stat()
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert cache.model_fields(loaded) != before
    assert cache.model_fields(loaded)["weights_sha256"] == hashlib.sha256(b"B" * 4096).hexdigest()


@pytest.mark.robustness("handled")
def test_a_weights_file_is_hashed_once(tmp_path, monkeypatch) -> None:
    file = tmp_path / "weights.pth"
    file.write_bytes(b"A" * 4096)
    opened = []
    monkeypatch.setattr(cache, "open", lambda *a, **k: opened.append(a[0]) or open(*a, **k), raising=False)
    monkeypatch.setattr(cache, "_now_ns", lambda: time.time_ns() + 10**10)  # the file is no longer fresh
    monkeypatch.setattr(cache, "_FILE_SHA256", {})
    first = cache.file_sha256(file)
    assert cache.file_sha256(file) == first and len(opened) == 1
    file.write_bytes(b"C" * 4096)
    assert cache.file_sha256(file) != first and len(opened) == 2


@pytest.mark.robustness("handled")
def test_a_chunk_damaged_before_the_manifest_and_a_damaged_key_are_recomputed(tmp_path) -> None:
    key = cache.feature_key(**BASE)
    with pytest.raises(KeyboardInterrupt):
        cache.cached_features(key, 12, Counter(fail_at=8), chunk_size=4, root=tmp_path, progress=False)
    folder = cache.FeatureCache(key, tmp_path, chunk_size=4).path
    _damage(folder / "chunk-000001.pt", "flipped_byte")  # while the extraction was interrupted
    with pytest.warns(cache.CacheWarning, match="chunk-000001.pt does not match its digest"):
        assert _rerun(key, tmp_path) == [(8, 12), (4, 8)]
    (folder / "key.json").write_bytes(b"\xff\xfe garbage")
    with pytest.warns(cache.CacheWarning, match="key.json is unreadable"):
        assert _rerun(key, tmp_path) == [(0, 4), (4, 8), (8, 12)]
