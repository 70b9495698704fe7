"""The steps and results records of experiments 05, 06 and 09, and what they share (vitreg.experiments.steps)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest
import torch
import yaml

from vitreg.experiments import downstream, global_information, local_information
from vitreg.experiments.base import record_paths
from vitreg.experiments.steps import Skipped, load, numbers
from vitreg.utils.paths import repo_root

MINE = {"05_local_information": local_information, "06_global_information": global_information,
        "09_downstream": downstream}


def _paths(obj, prefix=""):
    if not isinstance(obj, dict):
        return set()
    out = set()
    for k, v in obj.items():
        out.add(prefix + k)
        out |= _paths(v, f"{prefix}{k}.")
    return out


@dataclass(frozen=True)
class _Sub:
    a: float


@dataclass(frozen=True)
class _Rec:
    parts: dict[str, _Sub] = field(metadata={"keys": ("x", "y")})
    either: _Sub | Skipped


def test_record_paths_follow_a_keyed_dict_into_its_values():
    paths = record_paths(_Rec)
    assert {"parts.x", "parts.x.a", "parts.y.a", "either.a", "either.skipped"} <= paths
    assert "parts.a" not in paths, "a dict's key type is not a field of the record"


@pytest.mark.parametrize("name", sorted(MINE))
def test_every_paper_number_key_resolves_to_the_record(name):
    data = yaml.safe_load((repo_root() / "data" / "paper_numbers.yaml").read_text())
    keys = {n["key"] for n in data["numbers"] if n.get("notebook") == name and n.get("key")}
    for n in data["numbers"]:
        if n.get("notebook") == name and n.get("operands"):
            keys |= set(n["operands"])
    assert keys, name
    record = MINE[name].EXPERIMENT.record
    assert record is not None, f"{name} declares no results record"
    assert keys <= record_paths(record), sorted(keys - record_paths(record))


def _p05(tmp_path, **change):
    return local_information.EXPERIMENT.build({
        **local_information.PROFILES["smoke"], "pretrained": False, "device": "cpu", "image_size": 56,
        "n_images": 6, "batch_size": 6, "use_cache": True, "cache_dir": str(tmp_path), **change})


def test_load_draws_random_weights_from_the_model_name_alone(tmp_path):
    p = _p05(tmp_path)
    torch.manual_seed(3)
    first = load(p, "dinov2_s")
    after = torch.rand(3)
    torch.manual_seed(3)
    torch.rand(500)  # other random numbers drawn before the load: the same weights all the same
    again = load(p, "dinov2_s")
    other = load(p, "dinov2_s_reg")
    torch.manual_seed(3)
    assert torch.equal(torch.rand(3), after), "loading must not consume the run's random numbers"
    w = lambda m: m.model.patch_embed.proj.weight  # noqa: E731
    assert torch.equal(w(first), w(again))
    assert not torch.equal(w(first), w(other))
    assert not torch.equal(w(first), w(load(dataclasses.replace(p, seed=1), "dinov2_s")))


def test_05_record_of_planted_outliers(tmp_path):
    p = _p05(tmp_path, use_cache=False, plant_fraction=0.15, register_models=["dinov2_s", "dinov2_s_reg"])
    images = local_information.load_images(p)
    main = local_information.probe(p, load(p, p.model), images)
    registers = local_information.probe_registers(p, main, images)
    assert registers["dinov2_s"] is main, "the probed model is not measured twice"
    record = local_information.build_record(p, main, registers, images)
    saved = numbers(record, local_information.NOT_MEASURED)
    # planted truth: planted outliers are found, and they lost their patch's pixels
    assert all(ok for _, ok in local_information.planted_truth(main))
    assert saved["outlier"]["reconstruction_l2"] > saved["normal"]["reconstruction_l2"]
    assert saved["claims"]["outlier_minus_normal"]["reconstruction_l2"] == pytest.approx(
        saved["outlier"]["reconstruction_l2"] - saved["normal"]["reconstruction_l2"])
    assert saved["registers"]["reg"]["model"] == "dinov2_s_reg" and saved["registers"]["reg"]["registers"] == 4
    assert "skipped" not in saved["registers"]["reg"], "optional fields left at None are not saved"
    assert _paths(saved) <= record_paths(local_information.Record)
    checked = {key for key, _, _ in local_information.checks(saved)}
    assert "registers.no_reg.position_top1" in checked and "outlier.position_distance" in checked


def test_05_record_says_why_a_group_is_missing(tmp_path):
    p = _p05(tmp_path, use_cache=False, plant_fraction=0.0, threshold=1e9, register_models=[])
    images = local_information.load_images(p)
    main = local_information.probe(p, load(p, p.model), images)
    saved = numbers(local_information.build_record(p, main, {}, images), local_information.NOT_MEASURED)
    assert set(saved["outlier"]) == {"skipped"} and "no outlier patch tokens" in saved["outlier"]["skipped"]
    assert set(saved["claims"]["outlier_minus_normal"]["position_top1"]) == {"skipped"}
    assert saved["registers"] == {}


def test_extract_05_fills_every_models_cache_with_random_weights(tmp_path, monkeypatch):
    from vitreg.cli.prefill import extract_notebooks
    from vitreg.measure import features

    sets = ["05.use_cache=true", f"05.cache_dir={tmp_path}", "05.n_images=4", "05.image_size=56",
            "05.batch_size=4"]
    lines = extract_notebooks(["05"], "smoke", sets=sets)["05_local_information"]
    assert [line.split(":")[0] for line in lines] == ["dinov2_s", "dinov2_s_reg"], lines

    def no_forward(*args, **kwargs):
        raise AssertionError("a forward pass ran: the cache missed")

    monkeypatch.setattr(features, "forward_tokens", no_forward)
    p = _p05(tmp_path, n_images=4, batch_size=4)  # the notebook's own steps, after its probes drew numbers
    images = local_information.load_images(p)
    main = local_information.probe(p, load(p, p.model), images)
    registers = local_information.probe_registers(p, main, images)
    assert set(registers) == {"dinov2_s", "dinov2_s_reg"}
    assert registers["dinov2_s_reg"].tokens["planted"].any(), "the planted outliers are in the cached features"


def test_06_record_keeps_every_paper_dataset_and_the_register_tokens():
    from vitreg.data.datasets import PAPER_DATASETS

    p = global_information.EXPERIMENT.build({**global_information.PROFILES["smoke"], "datasets": ["synthetic", "cub"]})
    kinds = {k: {"mean": m, "std": 0.5, "n_train": 10} for k, m in
             (("normal", 30.0), ("outlier", 45.0), ("cls", 90.0), ("central", 31.0), ("reg0", 80.0), ("reg1", 70.0))}
    res = {"dataset": "synthetic", "metric": "top1", "detect_block": -1, "n_train": 10, "n_test": 5,
           "num_classes": 4, "outlier_share_train": 1.0, "outlier_share_test": 0.8, "kinds": kinds}
    table1 = {"synthetic": res, "cub": {"dataset": "cub", "skipped": "not here"}}
    ttr = {("dinov2_s_reg", "synthetic"): res}
    record = global_information.build_record(p, {}, table1, ttr)  # ttr_models: the same model twice
    saved = numbers(record, global_information.NOT_MEASURED)
    assert set(PAPER_DATASETS) < set(saved["table1"])
    row = saved["table1"]["synthetic"]
    assert row["outlier"] == 45.0 and row["central"] == 31.0 and row["registers"] == {"reg0": 80.0, "reg1": 70.0}
    assert "protocol_differs" not in row
    assert saved["table1"]["cub"] == {"skipped": "not here"}
    assert saved["claims"]["outlier_minus_normal"]["synthetic"] == 15.0
    assert saved["ttr_l"]["synthetic"]["register"] == 75.0 and "skipped" in saved["ttr_l"]["imagenet1k"]
    assert {k for k, _, _ in global_information.checks(saved)} >= {"table1.cub.normal", "table1.synthetic.cls"}


def test_09_record_keeps_the_budget_and_a_skipped_task():
    from vitreg.experiments.table2 import Table2, Table2Settings
    from vitreg.measure.downstream import budget

    p = downstream.EXPERIMENT.build({**downstream.PROFILES["smoke"], "seeds": 2})
    table2 = Table2(p.models, Table2Settings.from_params(dataclasses.asdict(p)))
    table2.budget["ade20k"] = budget("ade20k", 40)
    for role, base in (("no_reg", 40.0), ("reg", 42.0)):
        table2.record(role, [{"ade20k_miou": base + s, "ade20k_pixel_accuracy": 60.0 + s} for s in (0.0, 1.0)])
    table2.skip("imagenet", "not in `tasks`")
    table2.skip("nyud", "not in `tasks`")
    saved = numbers(downstream.build_record(p, table2, {"skipped": "synthetic = False"},
                                            {"skipped": "synthetic = False"}), downstream.NOT_MEASURED)
    assert saved["budget"]["ade20k"]["proxy"] is True and saved["budget"]["ade20k"]["n_train"] == 40
    assert saved["register_gain"]["ade20k_miou"] == pytest.approx(2.0)
    assert saved["no_reg"]["imagenet_top1"] == {"skipped": "not in `tasks`"}
    assert saved["synthetic"] == {"skipped": "synthetic = False"}
    assert _paths({k: v for k, v in saved.items() if k not in ("protocol", "datasets")}) <= record_paths(
        downstream.Record)


def test_extract_09_fills_the_cache_that_the_table2_run_then_reads(tmp_path, monkeypatch):
    from PIL import Image

    from vitreg.cli.prefill import extract_notebooks
    from vitreg.measure import features

    root = tmp_path / "imagenet1k"
    for split in ("train", "val"):
        for c in range(2):
            for i in range(3):
                path = root / split / f"n{c:08d}" / f"{split}_{c}_{i}.JPEG"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (64, 64), (200 * c, 40 * i, 90)).save(path, format="JPEG")
    change = {"use_cache": True, "cache_dir": str(tmp_path / "cache"), "tasks": ["imagenet"], "imagenet_root": str(root),
              "imagenet_image_size": 56, "seeds": 1, "imagenet_l2_grid": [0.01], "synthetic": False}
    sets = [f"09.{k}={v}".replace("'", "") for k, v in change.items()]
    lines = extract_notebooks(["09"], "smoke", sets=sets)["09_downstream"]
    assert lines == [f"{m} / imagenet: features of train 6, val 6 images" for m in ("dinov2_s", "dinov2_s_reg")], lines

    def no_forward(*args, **kwargs):
        raise AssertionError("a forward pass ran: the cache missed")

    monkeypatch.setattr(features, "dense_features", no_forward)
    p = downstream.EXPERIMENT.build({**downstream.PROFILES["smoke"], "pretrained": False, "device": "cpu", **change})
    torch.rand(100)  # the notebook's run draws other numbers first: the same random weights all the same
    table2 = downstream.start(p)
    table2.run("imagenet")
    assert all(isinstance(table2.ours[role]["imagenet_top1"], float) for role in ("no_reg", "reg"))
    assert table2.budget["imagenet"]["proxy"] is True
