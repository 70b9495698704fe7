"""Table 2 probes (vitreg.downstream): the heads learn a planted relation and do not learn noise.

Planted ground truth (vitreg.planting): patch tokens that carry their cell's class (a prototype) or depth (a direction),
and noise controls whose tokens come from an independent map.
"""

from __future__ import annotations

import pytest
import torch

from vitreg import downstream, heads, planting

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


def test_register_gain_is_reg_minus_no_reg_or_the_skip_reason() -> None:
    t = downstream.Table2(["dinov2_l", "dinov2_l_reg"], downstream.Table2Settings())
    t.ours["no_reg"].update(imagenet_top1=86.0, nyud_rmse=0.39)
    t.ours["reg"].update(imagenet_top1=86.5, nyud_rmse=0.38)
    t.skip("ade20k", "ADE20k not found")
    gain = t.register_gain()
    assert gain["model"] == "dinov2_l_reg" and gain["imagenet_top1"] == pytest.approx(0.5)
    assert gain["nyud_rmse"] == pytest.approx(-0.01) and gain["ade20k_miou"] == {"skipped": "ADE20k not found"}
    assert t.pair_values()["ade20k_miou"] == (None, None)
    p = downstream.Table2Settings.from_params({"nyud_image_size": [476, 630], "head_lr": 0.01}).protocol()
    assert "[476, 630] px" in p["nyud"] and "lr 0.01" in p["ade20k"]


def test_synthetic_checks_pass_a_learned_relation_and_fail_noise() -> None:
    good = {"model": "m", "seg_miou": 80.0, "seg_chance_miou": 20.0, "seg_miou_shuffled": 30.0, "depth_rmse": 0.1,
            "depth_constant_rmse": 1.0, "depth_rmse_shuffled": 0.9, "cls_top1": 90.0, "cls_chance": 25.0}
    assert all(downstream.synthetic_checks(good).values()) and len(downstream.synthetic_checks(good)) == 5
    noise = {**good, "seg_miou": 25.0, "depth_rmse": 0.95, "cls_top1": 26.0}
    assert not any(downstream.synthetic_checks(noise).values())
