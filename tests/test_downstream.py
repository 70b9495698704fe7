"""Table 2 probes (vitreg.measure.downstream): the heads learn a planted relation and do not learn noise.

Planted ground truth (vitreg.planting): patch tokens that carry their cell's class (a prototype) or depth (a direction),
and noise controls whose tokens come from an independent map.
"""

from __future__ import annotations

import pytest
import torch

from vitreg import planting
from vitreg.measure import downstream, estimators, heads
from vitreg.experiments import table2, timing

from conftest import DEVICES

FAST = heads.TrainConfig(epochs=15, batch_size=8, lr=1e-2, device="cpu")


@pytest.mark.parametrize("planted", [True, False])
def test_segmentation_head_learns_planted_classes_not_noise(planted: bool) -> None:
    train, test = planting.planted_segmentation(24, 12, upsample=2, n_classes=5, planted=planted, seed=3)
    r = downstream.segmentation_probe(train, test, 5, cfg=FAST)
    if planted:
        assert r["miou"] > 90.0, r["miou"]
        assert r["miou"] > 5 * r["chance_miou"]
    else:  # labels cannot be read from the tokens: no better than 1/C (uniform guessing scores 1/(2C-1))
        assert r["miou"] < 100.0 / 5, r["miou"]


def test_classification_probe_reads_the_token_that_carries_the_class() -> None:
    gen = torch.Generator().manual_seed(0)
    protos = torch.randn(4, 16, generator=gen) * 2

    def split(n: int) -> dict:
        y = torch.arange(n) % 4
        return {"labels": y, "cls": protos[y] + 0.5 * torch.randn(n, 16, generator=gen),
                "patch_mean": torch.randn(n, 16, generator=gen)}

    r = downstream.classification_probe(split(160), split(80), l2_grid=(1e-2, 1e-4))
    assert r["cls"]["top1"] > 90 and r["cls+patch_mean"]["top1"] > 80
    assert r["patch_mean"]["top1"] < 50  # noise: near the 25% chance


@pytest.mark.parametrize("device", DEVICES)
def test_the_minibatch_classification_probe_scores_each_variant_as_its_own_fit(device: str) -> None:
    """Table 2 (ImageNet probe in minibatch mode): the variants trained together score what each scores alone, on
    the device both run on."""
    gen = torch.Generator().manual_seed(1)
    protos = torch.randn(4, 16, generator=gen)

    def split(n: int) -> dict:
        y = torch.arange(n) % 4
        return {"labels": y, "cls": protos[y] + torch.randn(n, 16, generator=gen),
                "patch_mean": 0.3 * protos[y] + torch.randn(n, 16, generator=gen)}

    train, test = split(400), split(200)
    kw = dict(l2_grid=(1e-1, 1e-3), batch_size=32, epochs=3, device=device, seed=2)
    together = downstream.classification_probe(train, test, **kw)
    for v in downstream.CLASSIFICATION_VARIANTS:
        feats = torch.cat([train[k] for k in v.split("+")], 1)
        sel = estimators.fit_logistic_cv(feats, train["labels"], **kw)
        scored = estimators.accuracy(sel.classifier, torch.cat([test[k] for k in v.split("+")], 1), test["labels"])
        assert together[v] == {"top1": scored, "l2": sel.l2}, v
    assert together["cls"]["top1"] > together["patch_mean"]["top1"] > 30


def test_register_gain_is_reg_minus_no_reg_or_the_skip_reason() -> None:
    t = table2.Table2(["dinov2_l", "dinov2_l_reg"], table2.Table2Settings())
    t.ours["no_reg"].update(imagenet_top1=86.0, nyud_rmse=0.39)
    t.ours["reg"].update(imagenet_top1=86.5, nyud_rmse=0.38)
    t.skip("ade20k", "ADE20k not found")
    gain = t.register_gain()
    assert gain["model"] == "dinov2_l_reg" and gain["imagenet_top1"] == pytest.approx(0.5)
    assert gain["nyud_rmse"] == pytest.approx(-0.01) and gain["ade20k_miou"] == {"skipped": "ADE20k not found"}
    assert t.pair_values()["ade20k_miou"] == (None, None)
    p = table2.Table2Settings.from_params({"nyud_image_size": [476, 630], "head_lr": 0.01}).protocol()
    assert "[476, 630] px" in p["nyud"] and "lr 0.01" in p["ade20k"]


def test_synthetic_checks_pass_a_learned_relation_and_fail_noise() -> None:
    good = {"model": "m", "seg_miou": 80.0, "seg_chance_miou": 20.0, "seg_miou_shuffled": 30.0, "depth_rmse": 0.1,
            "depth_constant_rmse": 1.0, "depth_rmse_shuffled": 0.9, "cls_top1": 90.0, "cls_chance": 25.0}
    assert all(table2.synthetic_checks(good).values()) and len(table2.synthetic_checks(good)) == 5
    noise = {**good, "seg_miou": 25.0, "depth_rmse": 0.95, "cls_top1": 26.0}
    assert not any(table2.synthetic_checks(noise).values())


def _gain_verdicts(no_reg: dict, reg: dict) -> dict:
    """The report's verdicts (vitreg.claims.paper) on the register gain computed by downstream.register_gains."""
    from vitreg.claims import paper

    gain = {"model": "dinov2_l_reg", **downstream.register_gains(no_reg, reg)}
    values = {f"register_gain.{k}": v for k, v in gain.items()}
    return {v.id.split(".")[3]: v.status for v in paper.check_delta("09_downstream", values, model="dinov2_l_reg")
            if v.id.startswith("F8.spread.")}


def test_a_register_effect_beyond_the_seed_spread_is_a_gain_and_one_within_it_is_not() -> None:
    """Planted per-seed results: the same +0.8 mIoU / -0.006 m effect with a small or a large seed spread."""
    base = {"ade20k_miou": [48.3, 48.1, 48.5], "nyud_rmse": [0.388, 0.390, 0.386]}
    tight = {"ade20k_miou": [49.1, 48.95, 49.35], "nyud_rmse": [0.382, 0.3835, 0.3805]}  # every seed gains ~0.8
    noisy = {"ade20k_miou": [50.3, 47.1, 49.9], "nyud_rmse": [0.372, 0.394, 0.380]}    # mean gain ~0.8, spread > gain
    assert _gain_verdicts(base, tight) == {"ade20k_miou": "reproduced", "nyud_rmse": "reproduced"}
    assert _gain_verdicts(base, noisy) == {"ade20k_miou": "differs", "nyud_rmse": "differs"}
    reversed_ = {"ade20k_miou": [47.5, 47.4, 47.7], "nyud_rmse": [0.394, 0.397, 0.392]}
    assert _gain_verdicts(base, reversed_) == {"ade20k_miou": "differs", "nyud_rmse": "differs"}


def test_register_gains_pair_the_seeds_and_report_mean_and_std() -> None:
    g = downstream.register_gains({"ade20k_miou": [40.0, 42.0, 44.0]}, {"ade20k_miou": [41.0, 43.0, 45.0]})
    # the levels vary by 2 points between seeds, the paired difference not at all
    assert g["ade20k_miou"] == pytest.approx(1.0) and "agree exactly" in g["ade20k_miou_std"]["skipped"]
    assert g["ade20k_miou_per_seed"] == pytest.approx([1.0, 1.0, 1.0]) and g["ade20k_miou_n_seeds"] == 3
    one = downstream.register_gains({"nyud_rmse": [0.39]}, {"nyud_rmse": [0.38]})
    assert one["nyud_rmse"] == pytest.approx(-0.01) and "skipped" in one["nyud_rmse_std"]
    with pytest.raises(ValueError, match="seeds"):
        downstream.register_gains({"nyud_rmse": [0.39, 0.4]}, {"nyud_rmse": [0.38]})


def test_table2_records_seeds_and_marks_reduced_budgets_as_proxies() -> None:
    t = table2.Table2(["dinov2_l", "dinov2_l_reg"], table2.Table2Settings(seeds=2))
    assert t.settings.seed_list() == [0, 1]
    t.record("no_reg", [{"ade20k_miou": 48.0}, {"ade20k_miou": 48.4}])
    t.record("reg", [{"ade20k_miou": 49.0}, {"ade20k_miou": 49.2}])
    gain = t.register_gain()
    assert t.ours["no_reg"]["ade20k_miou"] == pytest.approx(48.2)
    assert gain["ade20k_miou"] == pytest.approx(0.9) and gain["ade20k_miou_std"] == pytest.approx(0.1414, abs=1e-3)
    assert "skipped" in gain["nyud_rmse"]
    assert downstream.budget("ade20k", 2000)["proxy"] and not downstream.budget("ade20k", 20210)["proxy"]
    s = table2.Table2Settings()
    assert s.imagenet_n_train is None and s.ade20k_n_train is None and s.seeds == 3  # the full protocol by default
    from vitreg.experiments import downstream as experiment
    from vitreg.experiments.costs import total_s

    p = experiment.Params()  # the recorded hours come from the run-time table's models: forwards + costs(p)
    hours = experiment.estimated_hours(p)
    assert set(hours) == {"imagenet", "ade20k", "nyud"} and all(h > 0 for h in hours.values())
    besides = {task: total_s(rows) for task, rows in experiment.task_costs(p).items()}
    assert sum(besides.values()) == pytest.approx(timing.row("09_downstream")["other_s"])
    assert hours["ade20k"] * 3600 >= besides["ade20k"]


def test_whole_images_are_scored_at_their_labels_own_resolution() -> None:
    """A head that predicts the planted class of each canvas cell scores 100% on labels of other sizes, and a
    stretched (not padded) reading of the same logits does not."""
    import torch.nn.functional as F
    from vitreg.data import dense as dense_data

    class Oracle(torch.nn.Module):  # logits = the tokens themselves (one channel per class)
        def forward(self, patch, size=None):
            x = patch.permute(0, 3, 1, 2).float()
            return F.interpolate(x, size=size, mode="nearest") if size else x

    canvas, g = 56, 8
    labels = [torch.zeros(30, 60, dtype=torch.uint8), torch.zeros(75, 25, dtype=torch.uint8)]
    labels[0][:, 30:] = 1  # left half 0, right half 1
    labels[1][40:, :] = 1  # top 0, bottom 1
    patch = torch.zeros(2, g, g, 2)
    for i, lab in enumerate(labels):
        h, w = dense_data.fit_in_canvas(tuple(lab.shape), canvas)
        big = torch.full((canvas, canvas), 0, dtype=torch.long)
        big[:h, :w] = F.interpolate(lab[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
        patch[i] = F.one_hot(big[::canvas // g, ::canvas // g], 2).float()
    r = heads.score_whole_images(Oracle(), patch, lambda i: labels[i], canvas, 2, majority=0, device="cpu")
    assert r["miou"] > 90 and r["n_images"] == 2 and r["chance_miou"] < 50
    stretched = heads.mean_iou(F.interpolate(patch[:1].permute(0, 3, 1, 2), size=(30, 60)).argmax(1),
                               labels[0][None], 2)
    assert stretched["miou"] < r["miou"] - 10
