"""Linear probes (vitreg.probes) recover planted signals and find nothing in noise.

Paper: Fig. 5b (position and pixel probes), Table 1 / Table 6 (single-token classification).
"""

from __future__ import annotations

import math

import pytest
import torch

from vitreg import probes


def blobs(n: int, d: int, c: int, *, sep: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian class blobs: class means ``sep`` apart (planted signal), unit noise."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(c, d, generator=torch.Generator().manual_seed(1234)) * sep
    y = torch.randint(0, c, (n,), generator=gen)
    return means[y] + torch.randn(n, d, generator=gen), y


def test_logistic_recovers_separable_classes() -> None:
    x, y = blobs(600, 16, 5, sep=3.0, seed=0)
    xt, yt = blobs(400, 16, 5, sep=3.0, seed=1)
    clf = probes.fit_logistic(x, y, l2=1e-3, device="cpu")
    assert probes.accuracy(clf, xt, yt) > 98.0


def test_logistic_on_noise_is_at_chance() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(600, 16, generator=gen), torch.randint(0, 5, (600,), generator=gen)
    xt, yt = torch.randn(2000, 16, generator=gen), torch.randint(0, 5, (2000,), generator=gen)
    sel = probes.fit_logistic_cv(x, y, l2_grid=(1e-1, 1e-3), device="cpu")
    assert abs(probes.accuracy(sel.classifier, xt, yt) - 20.0) < 5.0


def test_logistic_agrees_with_sklearn() -> None:
    """Same objective as LogisticRegression(C=1/(l2 n)) on the same standardised features."""
    sk = pytest.importorskip("sklearn.linear_model")
    x, y = blobs(800, 24, 6, sep=0.5, seed=2)  # overlapping classes: accuracy well below 100
    xt, yt = blobs(2000, 24, 6, sep=0.5, seed=3)
    l2 = 1e-2
    clf = probes.fit_logistic(x, y, l2=l2, device="cpu")
    ours = probes.accuracy(clf, xt, yt)
    std = probes.Standardizer.fit(x)
    ref = sk.LogisticRegression(C=1.0 / (l2 * len(x)), max_iter=5000, tol=1e-8).fit(std(x).numpy(), y.numpy())
    theirs = float((torch.from_numpy(ref.predict(std(xt).numpy())) == yt).float().mean() * 100)
    assert 40.0 < theirs < 95.0  # the comparison is informative
    assert abs(ours - theirs) < 1.0
    agree = (clf.predict(xt) == torch.from_numpy(ref.predict(std(xt).numpy()))).float().mean()
    assert agree > 0.98


def test_minibatch_training_matches_full_batch() -> None:
    x, y = blobs(600, 16, 4, sep=1.0, seed=4)
    xt, yt = blobs(1000, 16, 4, sep=1.0, seed=5)
    full = probes.accuracy(probes.fit_logistic(x, y, l2=1e-3, device="cpu"), xt, yt)
    mini = probes.fit_logistic(x, y, l2=1e-3, batch_size=64, epochs=30, lr=1e-2, device="cpu", seed=0)
    again = probes.fit_logistic(x, y, l2=1e-3, batch_size=64, epochs=30, lr=1e-2, device="cpu", seed=0)
    assert abs(probes.accuracy(mini, xt, yt) - full) < 2.0
    assert torch.equal(mini.weight, again.weight)  # deterministic for a seed


def test_cv_picks_a_strength_and_keeps_labels() -> None:
    x, y = blobs(300, 8, 3, sep=3.0, seed=6)
    sel = probes.fit_logistic_cv(x, y + 10, l2_grid=(1.0, 1e-3), device="cpu")
    assert set(sel.val_accuracy) == {1.0, 1e-3}
    assert sel.l2 in sel.val_accuracy
    assert set(sel.classifier.predict(x).tolist()) <= {10, 11, 12}


def test_grid_distance() -> None:
    grid = (4, 5)
    pred = torch.tensor([0, 6, 19])
    true = torch.tensor([0, 0, 0])
    assert torch.allclose(probes.grid_distance(pred, true, grid), torch.tensor([0.0, math.sqrt(2), 5.0]))


def planted_position_tokens(n_images: int, grid: tuple[int, int], d: int, seed: int):
    """Tokens = a fixed vector per grid cell (planted position code) + small noise."""
    n = grid[0] * grid[1]
    code = torch.randn(n, d, generator=torch.Generator().manual_seed(99)) * 2
    gen = torch.Generator().manual_seed(seed)
    pos = probes.patch_positions(n_images, grid).reshape(-1)
    return code[pos] + 0.3 * torch.randn(len(pos), d, generator=gen), pos


def test_position_probe_recovers_positions_and_not_from_noise() -> None:
    grid, d = (4, 4), 32
    xtr, ptr = planted_position_tokens(20, grid, d, seed=0)
    xte, pte = planted_position_tokens(10, grid, d, seed=1)
    outlier = torch.zeros(len(pte), dtype=torch.bool)
    outlier[::4] = True
    xte = xte.clone()
    xte[outlier] = torch.randn(int(outlier.sum()), d, generator=torch.Generator().manual_seed(5)) * 2  # no code
    res = probes.position_probe(xtr, ptr, xte, pte, grid=grid, groups={"normal": ~outlier, "outlier": outlier},
                                l2_grid=(1e-2, 1e-4), device="cpu")
    g = res["groups"]
    assert g["normal"]["top1"] > 98.0 and g["normal"]["avg_distance"] < 0.05
    assert g["outlier"]["top1"] < 30.0 and g["outlier"]["avg_distance"] > 1.0
    assert g["normal"]["n"] + g["outlier"]["n"] == len(pte)
    assert res["chance_top1"] == pytest.approx(100 / 16)


def test_patch_pixels_follow_the_patch_embedding_order() -> None:
    p = 4
    img = torch.randn(2, 3, 8, 12)
    pix = probes.patch_pixels(img, p)
    assert pix.shape == (2, 6, 3 * p * p)
    r, c = 1, 2  # row-major: index r * w + c with w = 3
    assert torch.equal(pix[1, r * 3 + c], img[1, :, r * p:(r + 1) * p, c * p:(c + 1) * p].reshape(-1))
    conv = torch.nn.Conv2d(3, 5, p, p, bias=False)  # the patch embedding is this conv, flattened row-major
    emb = conv(img).flatten(2).transpose(1, 2)
    assert torch.allclose(emb, pix @ conv.weight.reshape(5, -1).T, atol=1e-5)
    with pytest.raises(ValueError, match="multiple"):
        probes.patch_pixels(torch.zeros(1, 3, 9, 8), 4)


def test_reconstruction_probe_recovers_a_linear_map_and_not_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    d, pdim = 24, 48
    a = torch.randn(d, pdim, generator=gen)
    x = torch.randn(1500, d, generator=gen)
    pixels = x @ a + 0.05 * torch.randn(1500, pdim, generator=gen)
    xtr, ytr, xte, yte = x[:1000], pixels[:1000], x[1000:].clone(), pixels[1000:]
    outlier = torch.zeros(500, dtype=torch.bool)
    outlier[:100] = True
    xte[outlier] = torch.randn(100, d, generator=gen)  # tokens unrelated to their pixels
    res = probes.reconstruction_probe(xtr, ytr, xte, yte, groups={"normal": ~outlier, "outlier": outlier},
                                      device="cpu")
    g = res["groups"]
    assert g["normal"]["l2_error"] == pytest.approx(0.05 * math.sqrt(pdim), rel=0.3)
    assert g["normal"]["relative"] < 0.05
    assert g["outlier"]["relative"] > 1.0  # no better than predicting the mean patch


def test_sample_tokens_draws_only_from_the_mask() -> None:
    b, n, d = 3, 10, 2
    patches = torch.arange(b * n, dtype=torch.float).reshape(b, n, 1).expand(b, n, d).clone()
    mask = torch.zeros(b, n, dtype=torch.bool)
    mask[0, [2, 7]] = True
    mask[1, 4] = True  # image 2 has no outlier
    out = probes.sample_tokens(patches, mask, 5, seed=0)
    assert out["normal"].shape == (b, 5, d) and out["outlier"].shape == (b, 5, d)
    assert set(out["outlier"][0, :, 0].tolist()) <= {2.0, 7.0}
    assert set(out["outlier"][1, :, 0].tolist()) == {14.0}
    assert out["has_outlier"].tolist() == [True, True, False]
    assert torch.all(out["outlier"][2] == 0)
    assert not ({2.0, 7.0} & set(out["normal"][0, :, 0].tolist()))
    assert out["n_outliers"].tolist() == [2, 1, 0]
    again = probes.sample_tokens(patches, mask, 5, seed=0)
    assert torch.equal(again["normal"], out["normal"])


def planted_token_set(n: int, c: int, d: int, k: int, seed: int) -> dict[str, torch.Tensor]:
    """[CLS] and outlier tokens carry the class (planted); normal tokens and register 1 are noise."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(c, d, generator=torch.Generator().manual_seed(77)) * 3
    y = torch.randint(0, c, (n,), generator=gen)
    noise = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    has_out = torch.rand(n, generator=gen) < 0.7
    outlier = (means[y].unsqueeze(1) + noise(n, k, d)) * has_out.view(-1, 1, 1)
    reg = torch.stack([means[y] + noise(n, d), noise(n, d)], 1)
    return {"labels": y, "cls": means[y] + noise(n, d), "central": noise(n, d), "reg": reg, "normal": noise(n, k, d),
            "outlier": outlier, "has_normal": torch.ones(n, dtype=torch.bool), "has_outlier": has_out}


def test_single_token_classification_finds_the_planted_tokens() -> None:
    train = planted_token_set(400, 4, 16, 3, seed=0)
    test = planted_token_set(400, 4, 16, 3, seed=1)
    res = probes.single_token_classification(train, test, l2_grid=(1e-2, 1e-4), device="cpu")
    assert set(res) == {"cls", "central", "normal", "outlier", "reg0", "reg1"}
    assert res["cls"]["mean"] > 97 and res["outlier"]["mean"] > 97 and res["reg0"]["mean"] > 97
    for noise_kind in ("normal", "central", "reg1"):
        assert abs(res[noise_kind]["mean"] - 25.0) < 10
    assert len(res["normal"]["draws"]) == 3 and res["normal"]["std"] > 0
    assert res["cls"]["std"] == 0.0 and len(res["cls"]["draws"]) == 1
    assert res["outlier"]["coverage"] == pytest.approx(float(test["has_outlier"].float().mean()))
    assert res["outlier"]["n_test"] == int(test["has_outlier"].sum())
    assert probes.format_mean_std(res["cls"]).count("±") == 1
    assert probes.format_mean_std({"mean": math.nan, "std": math.nan}) == "n/a"


def test_bad_input_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match=r"\(n, D\)"):
        probes.fit_logistic(torch.zeros(4, 2, 2), torch.zeros(4), l2=1.0, device="cpu")
    with pytest.raises(ValueError, match="NaN"):
        probes.fit_logistic(torch.full((4, 2), math.nan), torch.zeros(4), l2=1.0, device="cpu")
    with pytest.raises(ValueError, match="rows"):
        probes.fit_logistic(torch.zeros(4, 2), torch.zeros(3), l2=1.0, device="cpu")


def test_features_of_a_random_model_find_exactly_the_planted_outliers(tmp_path) -> None:
    """End to end on a random-weight DINOv2-S+reg: planted tokens are the outliers, draws come from them."""
    from vitreg.data import SyntheticGlobalDataset
    from vitreg.weights import load_model

    loaded = load_model("dinov2_s_reg", pretrained=False, image_size=56)
    ds = SyntheticGlobalDataset(n=6, image_size=56)
    kw = dict(name="synthetic", split="train", n_draws=2, plant_fraction=0.1, seed=0, batch_size=3,
              cache_root=tmp_path, chunk_size=4, progress=False)
    feats = probes.single_token_features(loaded, ds, **kw)
    mask = probes.plant_mask(6, loaded.layout.grid, fraction=0.1, seed=0)
    assert mask.any(1).all()
    assert torch.equal(feats["n_outliers"], mask.sum(1))  # the planted tokens and nothing else exceed 150
    assert feats["reg"].shape == (6, 4, 384) and feats["cls"].shape == (6, 384)
    assert feats["normal"].shape == (6, 2, 384) and feats["labels"].tolist() == ds.labels.tolist()
    local = probes.patch_token_features(loaded, [ds[i][0] for i in range(6)], dataset="syn6", plant_fraction=0.1,
                                        seed=0, batch_size=3, cache=False, progress=False)
    assert torch.equal(local["norms"] > 150, mask) and torch.equal(local["planted"], mask)
    assert local["pixels"].shape == (6, 16, 3 * 14 * 14)
    for i in range(6):
        planted_tokens = local["patches"][i, mask[i]].float()
        for k in range(2):
            dist = (planted_tokens - feats["outlier"][i, k].float()).norm(dim=1)
            assert dist.min() < 0.05 * feats["outlier"][i, k].float().norm()
    h, w = loaded.layout.grid
    assert torch.allclose(feats["central"].float(), local["patches"][:, (h // 2) * w + w // 2].float(), atol=0.05)
    again = probes.single_token_features(loaded, ds, **kw)  # from the cache
    assert all(torch.equal(again[k], feats[k]) for k in feats)
    summary = probes.local_information(local, mask, grid=loaded.layout.grid, l2_grid=(1e-2,), ridge_grid=(1.0,),
                                       device="cpu")
    assert summary["normal"]["n_test"] + summary["outlier"]["n_test"] == summary["n_test_images"] * h * w


def test_missing_dataset_is_skipped_with_its_reason_and_results_are_strict_json(tmp_path, monkeypatch) -> None:
    import json
    from types import SimpleNamespace

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = probes.global_information(SimpleNamespace(image_size=(56, 56)), "cifar10", root=tmp_path, download=True)
    assert res["dataset"] == "cifar10" and "offline" in res["skipped"]
    clean = probes.nan_to_none({"a": math.nan, 0.1: [1.0, math.inf], "t": torch.tensor([1.0, math.nan])})
    assert clean == {"a": None, "0.1": [1.0, None], "t": [1.0, None]}
    json.dumps(clean, allow_nan=False)
