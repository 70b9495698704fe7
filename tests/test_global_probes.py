"""F6 global probes (vitreg.measure.global_probes): one token classifies the image when it carries the class.

Paper: Table 1 / Table 6.
"""

from __future__ import annotations

import math

import pytest
import torch

from vitreg.measure import features, global_probes
from vitreg.utils.results import clean_numbers




def test_sample_tokens_draws_only_from_the_mask() -> None:
    b, n, d = 3, 10, 2
    patches = torch.arange(b * n, dtype=torch.float).reshape(b, n, 1).expand(b, n, d).clone()
    mask = torch.zeros(b, n, dtype=torch.bool)
    mask[0, [2, 7]] = True
    mask[1, 4] = True  # image 2 has no outlier
    out = features.sample_tokens(patches, mask, 5, seed=0)
    assert out["normal"].shape == (b, 5, d) and out["outlier"].shape == (b, 5, d)
    assert set(out["outlier"][0, :, 0].tolist()) <= {2.0, 7.0}
    assert set(out["outlier"][1, :, 0].tolist()) == {14.0}
    assert out["has_outlier"].tolist() == [True, True, False]
    assert torch.all(out["outlier"][2] == 0)
    assert not ({2.0, 7.0} & set(out["normal"][0, :, 0].tolist()))
    assert out["n_outliers"].tolist() == [2, 1, 0]
    again = features.sample_tokens(patches, mask, 5, seed=0)
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
    res = global_probes.single_token_classification(train, test, l2_grid=(1e-2, 1e-4), device="cpu")
    assert set(res) == {"cls", "central", "normal", "outlier", "reg0", "reg1"}
    assert res["cls"]["mean"] > 97 and res["outlier"]["mean"] > 97 and res["reg0"]["mean"] > 97
    for noise_kind in ("normal", "central", "reg1"):
        assert abs(res[noise_kind]["mean"] - 25.0) < 10
    assert len(res["normal"]["draws"]) == 3 and res["normal"]["std"] > 0
    assert res["cls"]["std"] == 0.0 and len(res["cls"]["draws"]) == 1
    assert res["outlier"]["coverage"] == pytest.approx(float(test["has_outlier"].float().mean()))
    assert res["outlier"]["n_test"] == int(test["has_outlier"].sum())
    assert global_probes.format_mean_std(res["cls"]).count("±") == 1
    assert global_probes.format_mean_std({"mean": math.nan, "std": math.nan}) == "n/a"


def test_missing_dataset_is_skipped_with_its_reason_and_results_are_strict_json(tmp_path, monkeypatch) -> None:
    import json
    from types import SimpleNamespace

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = global_probes.global_information(SimpleNamespace(image_size=(56, 56)), "cifar10", root=tmp_path, download=True)
    assert res["dataset"] == "cifar10" and "offline" in res["skipped"]
    clean = clean_numbers({"a": math.nan, 0.1: [1.0, math.inf], "t": torch.tensor([1.0, math.nan])}, "why")
    gone = {"skipped": "why"}
    assert clean == {"a": gone, "0.1": [1.0, gone], "t": [1.0, gone]}
    json.dumps(clean, allow_nan=False)


def test_outlier_minus_normal_is_the_gap_or_says_why_not() -> None:
    kinds = {"normal": {"mean": 30.0, "std": 1.0}, "outlier": {"mean": 80.0, "std": 2.0}, "cls": {"mean": 90.0}}
    table1 = {"aircraft": {"dataset": "aircraft", "kinds": kinds},
              "cub": {"dataset": "cub", "skipped": "not found"},
              "cars": {"dataset": "cars", "kinds": {**kinds, "outlier": {"mean": math.nan, "std": math.nan}}},
              "synthetic": {"dataset": "synthetic", "kinds": kinds}}
    got = global_probes.outlier_minus_normal(table1, "dinov2_g", datasets=["aircraft", "cub", "cars", "dtd"])
    assert got["model"] == "dinov2_g"
    assert got["aircraft"] == pytest.approx(50.0) and got["synthetic"] == pytest.approx(50.0)
    assert got["cub"] == {"skipped": "not found"}
    assert got["cars"] == {"skipped": "no outlier tokens in the test images"}
    assert "not run" in got["dtd"]["skipped"]
    assert set(global_probes.outlier_minus_normal({}, "m")) == {"model", *global_probes.PAPER_DATASETS}


def test_table1_protocol_metric_counts_and_voc_flag(monkeypatch) -> None:
    """Aircraft/Pets/Caltech101/Flowers are scored by mean-per-class accuracy, VOC is flagged
    as differing by protocol, each column reports its own training count, the detection block is recorded."""
    assert [global_probes.dataset_metric(d) for d in ("aircraft", "pets", "caltech101", "flowers", "cifar10")] == \
        ["mean_per_class"] * 4 + ["top1"]
    train = planted_token_set(400, 4, 16, 3, seed=0)
    test = planted_token_set(400, 4, 16, 3, seed=1)
    keep = (test["labels"] == 0) | (torch.arange(400) % 8 == 0)        # imbalanced test set: class 0 dominates
    test = {k: v[keep] for k, v in test.items()}
    for split in (train, test):
        split["n_outliers"] = split["has_outlier"].long()
    zero, other = test["labels"] == 0, test["labels"] != 0
    test["has_outlier"] = torch.ones(len(test["labels"]), dtype=torch.bool)
    test["outlier"] = test["outlier"].clone()
    class0 = train["cls"][train["labels"] == 0]
    for rows in (zero, other):                                          # every test token looks like class 0
        test["outlier"][rows] = class0[torch.arange(int(rows.sum())) % len(class0)].unsqueeze(1)
    calls = {}

    def fake_features(loaded, ds, *, split, detect_block=None, **kw):
        calls[split] = detect_block
        return train if split == "train" else test

    class _Data:
        labels = torch.zeros(1)

    monkeypatch.setattr(global_probes, "try_load_dataset", lambda *a, **k: (_Data(), None))
    monkeypatch.setattr(global_probes, "subset_indices", lambda labels, cap, seed: None)
    monkeypatch.setattr(global_probes, "single_token_features", fake_features)
    monkeypatch.setattr(global_probes, "detection_block", lambda loaded, block=None: -2 if block is None else block)
    kw = dict(n_draws=1, l2_grid=(1e-2,), device="cpu", progress=False)
    from types import SimpleNamespace

    res = {d: global_probes.global_information(SimpleNamespace(image_size=(56, 56)), d, **kw) for d in ("aircraft", "cifar10", "voc")}
    assert calls == {"train": -2, "test": -2}
    assert res["aircraft"]["metric"] == "mean_per_class" and res["cifar10"]["metric"] == "top1"
    top1, balanced = res["cifar10"]["kinds"]["outlier"]["mean"], res["aircraft"]["kinds"]["outlier"]["mean"]
    assert top1 > 70 and balanced < 40                                          # the same predictions, another metric
    entry = global_probes.table1_entry(res["voc"], "dinov2_g")
    assert "multi-label" in entry["protocol_differs"] and "protocol_differs" not in global_probes.table1_entry(res["cifar10"], "m")
    assert entry["detect_block"] == -2 and entry["metric"] == "top1"
    counts = entry["n_train_by_kind"]
    assert counts["normal"] == 400 and counts["cls"] == 400 and counts["outlier"] == int(train["has_outlier"].sum()) < 400
