"""Notebook 08's experiment: its steps run LOST on every model and dataset and build the results record (Table 3)."""

from __future__ import annotations

import json

from vitreg.experiments import lost as experiment
from vitreg.experiments.base import as_numbers, record_paths
from vitreg.measure.lost import Discovery, Setting


def _params(**over):
    return experiment.EXPERIMENT.build({"pretrained": False, "device": "cpu", "num_workers": 0, **over})


def _discovery(key: str, dataset: str, corloc: dict[str, float]) -> Discovery:
    return Discovery(dataset=dataset, model=key, settings=[], corloc=corloc, boxes={}, hits={},
                     names=[f"img{i}" for i in range(10)])


def test_every_paper_key_of_08_is_a_path_of_its_record():
    from vitreg.claims.paper import paper_numbers

    mine = [n for n in paper_numbers() if n.notebook == "08_lost"]
    keys = {n.key for n in mine if n.key} | {k for n in mine if n.operands for k in n.operands}
    assert mine and experiment.EXPERIMENT.record is experiment.Record
    assert keys and keys <= record_paths(experiment.Record)


def test_record_holds_both_protocols_rows_from_planted_corlocs():
    """Planted CorLocs on VOC07 (plain: 20 -> 50; sweep best: 40 -> 70, at different settings) must land in
    the Table 3 rows, the gain and the winning settings; VOC12/COCO20k, never run, are skipped."""
    p = _params(models=["dinov2_s", "dinov2_s_reg", "dino_s16"], datasets=["VOC07"], bias_sweep=[-0.5, 0.0],
                sweep_blocks=[-1], sweep_features=["k"])
    plain, sweep = experiment.plain_settings(p), experiment.sweep_settings(p)
    assert [s.name for s in sweep] == ["k-1:cos-0.50", "k-1:cos+0.00"] and plain["dino_s16"] == Setting("k")
    planted = {"dinov2_s": (20.0, 40.0, 10.0), "dinov2_s_reg": (50.0, 60.0, 70.0), "dino_s16": (61.0, 5.0, 6.0)}
    results = {(k, "VOC07"): _discovery(k, "VOC07", {plain[k].name: a, sweep[0].name: b, sweep[1].name: c})
               for k, (a, b, c) in planted.items()}
    record = experiment.build_record(p, results, plain=plain, sweep=sweep, planted={"clean": 100.0})
    assert record.plain.no_reg["voc07"] == 20.0 and record.plain.reg["voc07"] == 50.0
    assert record.plain.dino["voc07"] == 61.0 and record.plain.register_gain["voc07"] == 30.0
    assert record.ttr_sweep.no_reg["voc07"] == 40.0 and record.ttr_sweep.no_reg["voc07_setting"] == "k-1:cos-0.50"
    assert record.ttr_sweep.reg["voc07_setting"] == "k-1:cos+0.00" and record.ttr_sweep.register_gain["voc07"] == 30.0
    assert record.ttr_sweep.register_gain["model"] == "dinov2_s_reg"
    assert "skipped" in record.plain.no_reg["voc12"] and record.plain.no_reg["voc07_n_images"] == 10
    assert record.bias_curves["dinov2_s_reg"]["VOC07"] == {"k-1": {"-0.50": 60.0, "+0.00": 70.0}}
    assert record.settings.sweep.n_settings == 2 and record.settings.image_size == "own, padded to the patch size"
    numbers = json.loads(json.dumps(as_numbers(record)))
    assert set(numbers) == {"settings", "plain", "ttr_sweep", "bias_curves", "planted"}
    assert numbers["plain"]["by_model"]["dino_s16"] == numbers["plain"]["dino"]
    claimed = {k: (v, m) for k, v, m in experiment.claims(record)}
    assert len(claimed) == 2 * 4 * 3 and set(claimed) <= record_paths(experiment.Record)
    assert claimed["ttr_sweep.register_gain.voc07"] == (30.0, "dinov2_s_reg")
    assert claimed["plain.dino.voc07"] == (61.0, "dino_s16")
    table = experiment.corloc_table(record)
    assert table[experiment.row_label("ttr_sweep", "dinov2_s_reg")] == {"voc07": 70.0}  # skipped datasets left out
    assert table[experiment.row_label("plain", "dino_s16")] == {"voc07": 61.0}


def test_steps_run_lost_and_the_demo_with_a_small_random_model():
    """The steps end to end on the planted synthetic boxes: one model, loaded once per step, every setting scored."""
    from vitreg.core.images import sample_photos

    p = _params(models=["dinov2_s"], datasets=["synthetic", "VOC07"], data_root="/nonexistent", limit=2,
                synthetic_image_size=56, image_size=56, bias_sweep=[0.0], sweep_blocks=[-1], sweep_features=["k"],
                batch_size=2)
    sets = experiment.open_sets(p)
    assert list(sets) == ["synthetic"]   # VOC07 is not under the root: left out, recorded as skipped
    plain, sweep = experiment.plain_settings(p), experiment.sweep_settings(p)
    results, described = experiment.discover_all(p, sets, plain, sweep)
    assert list(results) == [("dinov2_s", "synthetic")] and described[0]["lost_protocol"] == "padded"
    assert set(results[("dinov2_s", "synthetic")].corloc) == {plain["dinov2_s"].name, sweep[0].name}
    record = experiment.build_record(p, results, plain=plain, sweep=sweep, planted={})
    assert "not found under" in record.plain.by_model["dinov2_s"]["voc07"]["skipped"]
    assert isinstance(record.plain.by_model["dinov2_s"]["synthetic"], float)
    demo = experiment.demo(p, plain, sample_photos(["chelsea"])[0][1])
    d = demo["dinov2_s"]
    n = d.steps["grid"][0] * d.steps["grid"][1]
    assert d.steps["grid"] == (4, 4) and 0 <= d.steps["seed"] < n and d.patch_norms.shape == (n,)
    assert d.image.shape == (56, 56, 3) and d.setting == "k-1:dot+0.00" and d.model["pretrained"] is False


def test_planted_feature_maps_are_recovered_before_any_model():
    planted, checks = experiment.check_planted(seed=0)
    assert planted["clean"] == 100.0 and checks and all(checks.values())
