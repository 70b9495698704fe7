"""The feature cache (vitreg.cache) returns identical features, is invalidated by any key change and
resumes an interrupted extraction. Paper: Fig. 5b, Table 1 (the probes' frozen features)."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
import torch

from vitreg import cache

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


def test_interrupted_extraction_resumes(tmp_path) -> None:
    key = cache.feature_key(**BASE)
    with pytest.raises(KeyboardInterrupt):
        cache.cached_features(key, 10, Counter(fail_at=4), chunk_size=2, root=tmp_path, progress=False)
    entry = cache.FeatureCache(key, tmp_path)
    assert entry.n_chunks_done() == 2 and not entry.is_complete()
    resumed = Counter()
    out = cache.cached_features(key, 10, resumed, chunk_size=2, root=tmp_path, progress=False)
    assert resumed.calls == [(4, 6), (6, 8), (8, 10)]  # only the missing chunks
    assert torch.equal(out["y"], torch.arange(10))
    assert torch.equal(out["x"][:, 0], torch.arange(10, dtype=torch.float))


def test_stale_entry_is_wiped(tmp_path) -> None:
    key = cache.feature_key(**BASE)
    entry = cache.FeatureCache(key, tmp_path)
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

    from vitreg import features
    from vitreg.data import SyntheticGlobalDataset
    from vitreg.weights import load_model

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


@pytest.mark.parametrize("how", ["replaced", "in_place"])
def test_a_weights_file_replaced_with_same_size_and_time_gives_another_key(tmp_path, how) -> None:
    """``cp -p other.pth weights.pth``: same size, same modification time, other weights."""
    import dataclasses

    from vitreg.weights import load_model

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
