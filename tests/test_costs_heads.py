"""Cost models of notebook 09's dense heads and ImageNet probe (vitreg.experiments.costs, "Dense heads"), the
probe's minibatch protocol on planted data, and the speed-ups that must not change a number.

Paper: Table 2 (ADE20k and NYUd linear heads, ImageNet-1k linear probe).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vitreg.experiments import costs as c
from vitreg.experiments import downstream as experiment
from vitreg.experiments.table2 import Table2Settings
from vitreg.measure import heads
from vitreg.measure.estimators import accuracy, fit_logistic_cv

from conftest import DEVICES


def _rows(**change) -> dict[str, list[c.Cost]]:
    return experiment.task_costs(dataclasses.replace(experiment.Params(), **change))


def test_every_row_of_the_real_run_is_estimated():
    rows = experiment.costs(experiment.Params())
    assert {r.what.split(":")[0] for r in rows} >= {"ImageNet-1k linear probe", "ADE20k linear segmentation heads",
                                                     "ADE20k whole-image scoring", "NYUd linear depth heads"}
    assert c.unestimated(rows) == [] and all(r.seconds > 0 and r.scaling for r in rows)


def test_the_upsampled_logits_term_scales_with_classes_and_pixels():
    one, two = (c.seg_step_bytes(k, (64, 64), (4, 4), 8) for k in (10, 20))
    assert two - one == c.SEG_LOGIT_PASSES * 4 * 10 * 64 * 64
    tall = c.seg_step_bytes(10, (128, 64), (4, 4), 8)
    assert tall - one == (c.SEG_LOGIT_PASSES * 4 * 10 + c.SEG_LABEL_BYTES) * 64 * 64
    assert c.depth_step_bytes(256, (8, 8), (2, 4), 8) - c.depth_step_bytes(128, (8, 8), (2, 4), 8) \
        == c.DEPTH_LOGIT_PASSES * 4 * 128 * 8 * 16
    assert c.seg_step_flop(150, (2, 2), 8) == 3 * 2 * 4 * 8 * 150  # forward, weight and input gradients


def test_head_time_is_proportional_to_image_steps_and_host_feeding_adds():
    base = c.head_training_s(1000, 0, 1e9, 1e9)
    assert c.head_training_s(2000, 0, 1e9, 1e9) == pytest.approx(2 * base)
    assert c.head_training_s(1000, 10, 1e9, 1e9) == pytest.approx(base + 10 * c.HEAD_STEP_S)
    assert c.head_training_s(1000, 0, 1e9, 1e9, feed_bytes=1e6) > base


def test_a_changed_parameter_changes_the_estimate():
    ade = lambda **k: _rows(**k)["ade20k"][0].seconds  # noqa: E731
    assert ade(head_epochs=40) == pytest.approx(2 * ade(), rel=0.01)
    assert ade(seeds=6) == pytest.approx(2 * ade(), rel=0.01)
    assert ade(ade20k_n_train=2000) < ade() / 5
    assert _rows(ade20k_eval_size=448)["ade20k"][1].seconds < _rows()["ade20k"][1].seconds
    assert _rows(nyud_n_train=16000)["nyud"][0].seconds > 1.5 * _rows()["nyud"][0].seconds
    assert "nyud" not in _rows(tasks=["imagenet", "ade20k"])


def test_features_that_do_not_fit_on_the_gpu_are_fed_from_the_host_and_cost_more():
    resident = _rows()["ade20k"][0].seconds  # 20,210 crops of ViT-L fit in 80 GiB with a step's working memory
    hosted = _rows(models=["dinov2_g", "dinov2_g_reg"])["ade20k"][0].seconds  # 1536 wide: they do not
    per_image = lambda m: c.seg_step_bytes(150, (518, 518), (37, 37), c.token_widths(m)[0])  # noqa: E731
    assert hosted / resident > per_image("dinov2_g") / per_image("dinov2_l")


def test_the_lbfgs_probe_is_bounded_by_max_eval_and_the_minibatch_default_is_far_cheaper():
    lbfgs = _rows(imagenet_probe_batch_size=None)["imagenet"][0]
    assert "at most 251 objective evaluations" in lbfgs.what
    n, n_test, dims = 1_281_167, 50_000, (1024, 1024, 2048)
    b = c.CACHE_VALUE_BYTES
    expected = 3 * 2 * (sum(c.logistic_cv_probe_s(n=n, d=d, c=1000, grid=4, value_bytes=b)
                            + c.predict_s(n_test, d, 1000, value_bytes=b, on_gpu=True) for d in dims)
                        + c.variant_features_s(n + n_test, 2048)) + 2 * c.feature_copy_s(n + n_test, 2048, b)
    assert lbfgs.seconds == pytest.approx(expected)
    at = lambda it: c.logistic_probe_s(n=n, d=8, c=10, fits=1, max_iter=it)  # noqa: E731
    assert at(600) - at(400) == pytest.approx(at(400) - at(200), rel=0.01) and at(400) - at(200) > 0.4 * at(200)
    assert lbfgs.seconds > 3600  # the hour that the minibatch default avoids
    assert _rows()["imagenet"][0].seconds < lbfgs.seconds / 2.5  # the host passes over the features are shared


def test_the_minibatch_probe_counts_each_host_step_once_for_its_three_variants():
    """Table 2 (09's ImageNet probe: the variants trained together, fit_logistic_cv_joint)."""
    row = _rows()["imagenet"][0]
    n, fits, widths = 1_281_167, 1 + 0.8 * 4, (1024, 2048)
    joint = lambda **k: c.joint_logistic_probe_s(n=n, dims=[1024, 1024, 2048], c=1000, fits=fits,  # noqa: E731
                                                 **{"batch_size": 1024, "epochs": 10, **k})
    b = c.CACHE_VALUE_BYTES
    cv = c.joint_logistic_cv_probe_s(n=n, dims=[1024, 1024, 2048], c=1000, grid=4, batch_size=1024, epochs=10,
                                     value_bytes=b)
    scoring = c.variant_features_s(n + 50_000, 2048) + sum(c.predict_s(50_000, d, 1000, value_bytes=b, on_gpu=True)
                                                           for d in (1024, 1024, 2048))
    copies = 2 * c.feature_copy_s(n + 50_000, 2048, b)  # [CLS] and mean patch, once per model, not per seed
    assert row.seconds == pytest.approx(copies + 3 * (2 * cv + 2 * scoring)) and "trained together" in row.what
    assert _rows(seeds=2)["imagenet"][0].seconds == pytest.approx(copies + 2 * 2 * (cv + scoring))
    assert "JOINT_HEAD_STEP_SHARE" in row.scaling and "L-BFGS" not in row.scaling
    separate = sum(c.logistic_probe_s(n=n, d=d, c=1000, fits=fits, batch_size=1024, epochs=10)
                   for d in (1024, 1024, 2048))
    steps = 10 * -(-n // 1024)
    shared = fits * steps * c.ADAM_STEP_FIXED_S * c.GPU_LAUNCH_FACTOR * 2 * (1 - c.JOINT_HEAD_STEP_SHARE)
    prepared = fits * sum(c.fit_prep_s(n, d) for d in (1024, 1024, 2048))
    assert separate - joint() == pytest.approx(shared) and shared > 0.3 * (separate - prepared)  # of the fits proper
    one = c.joint_logistic_fit_s(n, [widths[0]], 1000, batch_size=1024, epochs=10)
    assert one == pytest.approx(c.logistic_fit_s(n, widths[0], 1000, batch_size=1024, epochs=10))
    assert c.joint_step_host_s(3) == pytest.approx(c.ADAM_STEP_FIXED_S * (1 + 2 * c.JOINT_HEAD_STEP_SHARE))
    per_10_epochs = joint(epochs=20) - joint()  # linear in the epochs, which are all but the copy and the set-up
    assert joint(epochs=30) - joint(epochs=20) == pytest.approx(per_10_epochs)
    assert per_10_epochs > 0.9 * (joint() - prepared)
    assert joint(batch_size=4096) < joint() < joint(batch_size=256)  # fewer steps, less host time
    assert _rows(imagenet_probe_epochs=20)["imagenet"][0].seconds - row.seconds > 0.9 * 3 * 2 * per_10_epochs
    copies = 2 * c.feature_copy_s(1_281_167 + 50_000, 2048, c.CACHE_VALUE_BYTES)  # once per model, not per seed
    assert _rows(seeds=1)["imagenet"][0].seconds == pytest.approx(copies + (row.seconds - copies) / 3)


def test_the_probe_uses_minibatches_only_above_the_full_batch_size():
    s = Table2Settings()
    assert s.probe_batch_size(1_281_167) == 1024 and s.probe_batch_size(100_000) is None
    assert Table2Settings(imagenet_probe_batch_size=None).probe_batch_size(1_281_167) is None
    assert "1024 for 10 epochs" in s.protocol()["imagenet"]
    small = _rows(imagenet_n_train=50_000)["imagenet"][0].what
    assert "L-BFGS" in small


def _planted(n: int, d: int, k: int, seed: int, signal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, k, generator=g)
    x = torch.randn(n, d, generator=g)
    y = (x @ w + 2.0 * torch.randn(n, k, generator=g)).argmax(1)
    return x, (y[torch.randperm(n, generator=g)] if not signal else y)


def test_the_minibatch_probe_recovers_a_planted_signal_as_lbfgs_does_and_not_one_that_is_absent():
    """Paper: Table 2 (the ImageNet probe's default on large sets: Adam on minibatches for 10 epochs)."""
    for signal in (True, False):
        x, y = _planted(3000, 24, 6, 0, signal)
        xt, yt = x[2000:], y[2000:]
        x, y = x[:2000], y[:2000]
        full = fit_logistic_cv(x, y, l2_grid=[1e-3, 1e-5], device="cpu")
        # 10 epochs of 125 steps: Adam at lr 1e-3 converges with the number of steps (the real default: 12,500)
        mini = fit_logistic_cv(x, y, l2_grid=[1e-3, 1e-5], device="cpu", batch_size=16, epochs=10)
        a_full, a_mini = accuracy(full.classifier, xt, yt), accuracy(mini.classifier, xt, yt)
        chance = float(torch.bincount(yt).max()) / len(yt) * 100
        if signal:
            assert a_full > chance + 30 and abs(a_mini - a_full) < 2.5, (a_full, a_mini)
        else:
            assert a_mini < chance + 6 and a_full < chance + 6, (a_full, a_mini, chance)


@pytest.mark.parametrize("device", DEVICES)
def test_scoring_the_seeds_in_one_pass_equals_one_pass_per_seed(device):
    """Table 2 (ADE20k mIoU of each seed's head): one pass over the images for all seeds counts what one pass per
    seed counts, on the device both score on."""
    g = torch.Generator().manual_seed(0)
    patch = torch.randn(12, 4, 4, 16, generator=g).half()
    labels = torch.randint(0, 5, (12, 28, 28), generator=g).to(torch.uint8)
    labels[:, :3] = 255
    cfg = lambda s: heads.TrainConfig(epochs=2, batch_size=4, seed=s, device="cpu")  # noqa: E731
    trained = [heads.train_segmentation_head(patch, labels, 5, cfg=cfg(s)) for s in (0, 1, 2)]
    val = torch.randn(3, 4, 4, 16, generator=g).half()
    maps = [torch.randint(0, 5, (20 + 5 * i, 30), generator=g).to(torch.uint8) for i in range(3)]
    major = heads.majority_class(labels, 5)
    assert major == int(torch.bincount(labels.reshape(-1).long(), minlength=256)[:5].argmax())
    together = heads.score_heads(trained, val, lambda i: maps[i], 28, 5, majority=major, device=device)
    one_by_one = [heads.score_whole_images(h, val, lambda i: maps[i], 28, 5, majority=major, device=device)
                  for h in trained]
    assert together == one_by_one and together[0] != together[1]


def test_features_stay_where_they_are_unless_they_fit_on_a_gpu():
    t = {"patch": torch.zeros(2, 3), "labels": torch.zeros(2, dtype=torch.uint8)}
    moved = heads.on_device(t, "cpu", working=0)
    assert all(moved[k] is t[k] for k in t)
    assert heads.fits_on_device(60e9, 10e9, 80e9) and not heads.fits_on_device(70e9, 10e9, 80e9)


def test_the_imagenet_probe_scores_the_validation_rows_of_each_l2_and_the_test_set():
    """Table 2 (fit_logistic_cv_joint scores each head on the held-out rows of each L2; classification_probe
    assembles the variants and scores the test set for every seed)."""
    row = _rows()["imagenet"][0]
    assert _rows(imagenet_n_val=10_000)["imagenet"][0].seconds < row.seconds  # the test set is scored
    n, dims = 1_281_167, [1024, 1024, 2048]
    n_val = c.validation_rows(n, 0.2)
    fit = {"dims": dims, "c": 1000, "batch_size": 1024, "epochs": 10}
    cv = c.joint_logistic_cv_probe_s(n=n, grid=4, **fit)
    check = c.feature_check_s(n, sum(dims), 4)
    assert cv == pytest.approx(check + c.joint_logistic_probe_s(n=n - n_val, fits=4, **fit)
                               + 4 * sum(c.predict_s(n_val, d, 1000, on_gpu=True) for d in dims)
                               + c.joint_logistic_probe_s(n=n, **fit))
    assert c.joint_logistic_cv_probe_s(n=n, grid=1, **fit) == pytest.approx(check + c.joint_logistic_probe_s(n=n, **fit))
    assert c.variant_features_s(2 * n, 2048) == pytest.approx(2 * c.variant_features_s(n, 2048))
    assert "4 + 1 fits" not in row.what and "5 fits" in row.what

