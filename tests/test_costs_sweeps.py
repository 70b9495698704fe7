"""Cost models of LOST's sweep (08, 10) and the bootstrap intervals (02): they scale as their rows state, follow the
notebooks' parameters, and every row of these notebooks is estimated (vitreg.experiments.costs)."""

from __future__ import annotations

import dataclasses
import math

from vitreg.experiments import catalog, costs

RUN = costs.LostRun(images=1000, batches=40, grid=(27, 36), width=1024, groups=13, settings=133)


def _real(name: str, **changes: object):
    exp = catalog.experiment(name)
    p = dataclasses.replace(exp.build(), **changes)
    return exp.costs(p)


def _seconds(rows: list[costs.Cost], starts: str) -> float:
    [row] = [c for c in rows if c.what.startswith(starts) or starts in c.what]
    assert row.seconds is not None
    return row.seconds


def test_the_similarity_and_pass_terms_are_proportional_to_images_and_quadratic_in_patches():
    double = dataclasses.replace(RUN, images=2 * RUN.images)
    assert costs.lost_flop(double) == 2 * costs.lost_flop(RUN)
    assert costs.lost_bytes(double) == 2 * costs.lost_bytes(RUN)
    wide = dataclasses.replace(RUN, grid=(54, 36))  # twice the patches: four times the entries, twice the potentials'
    assert costs.lost_flop(wide) == 4 * costs.lost_flop(RUN)
    n = 27 * 36
    potentials = costs.LOST_BYTES_PER_POTENTIAL_ENTRY * RUN.k * n * RUN.settings * RUN.images
    assert math.isclose(costs.lost_bytes(wide), 4 * (costs.lost_bytes(RUN) - potentials) + 2 * potentials)
    assert costs.lost_flop(dataclasses.replace(RUN, groups=26)) == 2 * costs.lost_flop(RUN)


def test_the_biases_of_a_group_share_one_read_and_each_setting_adds_its_own_bytes():
    n = 27 * 36
    per_setting = (costs.LOST_BYTES_PER_ENTRY * n * n + costs.LOST_BYTES_PER_POTENTIAL_ENTRY * RUN.k * n) * RUN.images
    assert costs.lost_bytes(dataclasses.replace(RUN, settings=134)) - costs.lost_bytes(RUN) == per_setting
    per_group = costs.LOST_BYTES_PER_GROUP_ENTRY * n * n * RUN.images
    assert costs.lost_bytes(dataclasses.replace(RUN, groups=14)) - costs.lost_bytes(RUN) == per_group
    assert per_group < costs.LOST_BYTES_PER_ENTRY * n * n * RUN.images * RUN.settings / RUN.groups  # shared: cheaper
    assert costs.lost_bytes(dataclasses.replace(RUN, k=50)) < costs.lost_bytes(RUN)


def test_the_ops_use_the_h_plus_w_bound_of_the_flood_fill_once_per_batch_when_stacked():
    h, w = RUN.grid
    fill = costs.LOST_OPS_PER_FILL + (h + w) * costs.LOST_OPS_PER_FILL_STEP
    scoring = RUN.groups * costs.LOST_OPS_PER_GROUP + RUN.settings * costs.LOST_OPS_PER_SETTING
    assert costs.lost_ops(RUN) == RUN.batches * (scoring + fill)
    assert costs.lost_ops(dataclasses.replace(RUN, groups=26)) - costs.lost_ops(RUN) == (
        RUN.batches * 13 * costs.LOST_OPS_PER_GROUP)
    before = costs.lost_ops(RUN, stacked=False)
    assert before - costs.lost_ops(RUN) == RUN.batches * fill * (RUN.settings - 1)
    assert costs.lost_sweep_s([RUN], stacked=False) > costs.lost_sweep_s([RUN])


def test_padded_batches_add_one_partial_batch_per_size_and_the_stretched_protocol_none():
    run = costs.lost_run("VOC07", 5011, model="dinov2_l", patch=14, batch_size=32, groups=13, settings=133)
    assert run.batches == math.ceil(5011 / 32) + costs.PADDED_SIZES["VOC07"] - 1
    assert run.grid == (27, 36) and run.width == 1024 and run.k == 100
    assert costs.lost_run("synthetic", 3, model="dinov2_s", patch=14, batch_size=8, groups=1, settings=1,
                          synthetic_hw=(112, 112), k_patches=100).k == 64  # at most the patches
    square = costs.lost_run("VOC07", 5011, model="dinov2_l", patch=14, batch_size=32, groups=13, settings=133,
                            stretched_px=448)
    assert square.batches == math.ceil(5011 / 32) and square.grid == (32, 32)
    assert costs.lost_run("synthetic", 3, model="dinov2_s", patch=14, batch_size=8, groups=1, settings=1).batches == 1


def test_the_bootstrap_scales_with_resamples_times_images():
    one, two = costs.bootstrap_s([(1000, 256, 1369)]), costs.bootstrap_s([(2000, 256, 1369)])
    assert math.isclose(two - one, costs.BOOT_S_PER_DRAW * 1000 * 256)
    assert math.isclose(costs.bootstrap_s([(1000, 256, 1369)] * 2), 2 * one)


def test_the_notebooks_rows_follow_their_parameters():
    lost = "LOST scoring"
    assert _seconds(_real("08_lost", limit=100), lost) < _seconds(_real("08_lost"), lost)
    assert _seconds(_real("08_lost", bias_sweep=[0.0, -0.5]), lost) < _seconds(_real("08_lost"), lost)
    assert _seconds(_real("08_lost", protocol="stretched", image_size=224), lost) < _seconds(_real("08_lost"), lost)
    assert _seconds(_real("08_lost", k_patches=50), lost) < _seconds(_real("08_lost"), lost)
    assert _seconds(_real("08_lost", limit=100), "CorLoc") < _seconds(_real("08_lost"), "CorLoc")
    ttr = "10_test_time_registers"
    assert _seconds(_real(ttr, lost_limit=100), lost) < _seconds(_real(ttr), lost)
    assert _seconds(_real(ttr, lost_datasets=["VOC07", "COCO20k"]), lost) > _seconds(_real(ttr), lost)
    assert not [c for c in _real(ttr, models=["clip_b16_laion"], probe_models=[]) if "LOST" in c.what]
    boot = "bootstrap intervals"
    assert _seconds(_real("02_high_norm_tokens", n_bootstrap=4000), boot) > _seconds(_real("02_high_norm_tokens"), boot)


def test_every_real_row_of_02_08_and_10_is_estimated():
    for name in ("02_high_norm_tokens", "08_lost", "10_test_time_registers"):
        rows = _real(name)
        assert rows and all(c.scaling for c in rows if c.seconds is not None), name
        assert costs.unestimated(rows) == [], name


def test_padded_forwards_count_at_each_datasets_own_size_as_the_lost_rows_do():
    from vitreg.core.models import get_spec

    assert costs.padded_px("VOC07", 14) == round((378 * 504) ** 0.5) == 436  # 375 x 500 padded to 27 x 36 patches
    assert costs.padded_px("COCO20k", 14) == round((490 * 644) ** 0.5) == 562
    for name, limit in (("08_lost", "limit"), ("10_test_time_registers", "lost_limit")):
        exp = catalog.experiment(name)
        p = exp.build()
        lost = [w for w in exp.work(p) if w.what.startswith("LOST on")]
        assert lost and all(w.px == costs.padded_px(w.needs, get_spec(w.model).patch_size) for w in lost), name
        for w in lost:  # the forward's tokens are the LOST rows' patch grid, within the patch rounding
            patch = get_spec(w.model).patch_size
            run = costs.lost_run(w.needs, 1, model=w.model, patch=patch, batch_size=1, groups=1, settings=1)
            assert abs((round(w.px / patch)) ** 2 / (run.grid[0] * run.grid[1]) - 1) < 0.03, (name, w)
    exp = catalog.experiment("08_lost")
    stretched = exp.work(exp.build({"protocol": "stretched", "image_size": 224}))
    assert {w.px for w in stretched if w.what.startswith("LOST on")} == {224}
