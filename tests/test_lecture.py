"""The lecture profile: valid for every notebook, pretrained small models with published weights, nothing
planted, and stopped up front offline when weights are missing.

Every check is first shown to catch a violation planted in a copy of the profile's parameters (so it can fail).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import timm

from vitreg.core.models import ZOO, get_spec
from vitreg.experiments.catalog import experiment
from vitreg.experiments.params import PROFILES, given_parameters, load_order, load_profile, validate
from vitreg.utils.paths import repo_root
from vitreg.cli.runner import merged_parameters, output_dir_for, planned_parameters

ROOT = repo_root()
NAMES = [e["notebook"] for e in load_order()]
#: Resolution parameters that decide the input of a model (a ViT-L is only allowed at 224 px or less).
SIZE_KEYS = ("image_size", "reference_image_size", "imagenet_image_size", "ade20k_image_size", "ade20k_eval_size",
             "nyud_image_size")
#: What "planting" means per parameter: the value that plants nothing (the notebooks' own real defaults).
NOT_PLANTED = {"plant": False, "plant_fraction": 0.0, "synthetic": False}


def _merged() -> dict[str, dict[str, Any]]:
    """Every parameter each notebook runs with under the lecture profile (defaults updated by the profile)."""
    plans = planned_parameters(NAMES, "lecture", ROOT / "build" / "lecture", ROOT)
    return merged_parameters(plans, ROOT)


def _largest(model: str) -> bool:
    """True for a ViT-L or larger (the zoo's timm names say the width)."""
    name = get_spec(model).timm_name
    return not any(w in name for w in ("small", "base"))


def _models(name: str, p: dict[str, Any]) -> list[str]:
    """The models notebook ``name`` loads with parameters ``p`` (its experiment says)."""
    exp = experiment(name)
    return exp.models(exp.build(p))


def lecture_problems(merged: dict[str, dict[str, Any]]) -> list[str]:
    """What keeps these parameters from being a lecture setting: models without published weights, random
    weights, ViT-L above 224 px (or at the images' own sizes), ViT-g, anything planted or synthetic data."""
    published = set(timm.list_pretrained())
    problems = []
    for name, p in merged.items():
        if p.get("pretrained") is not True:
            problems.append(f"{name}: pretrained={p.get('pretrained')!r}")
        for model in _models(name, p):
            spec = ZOO.get(model)
            if spec is None or spec.full_name not in published:
                problems.append(f"{name}: {model} has no published weights in timm")
                continue
            if "giant" in spec.timm_name:
                problems.append(f"{name}: {model} is a ViT-g")
        if any(_largest(m) for m in _models(name, p) if m in ZOO):
            for key in SIZE_KEYS:
                if key in p and (p[key] is None or max(p[key] if isinstance(p[key], list) else [p[key]]) > 224):
                    problems.append(f"{name}: a ViT-L at {key}={p[key]!r} (more than 224 px)")
            if p.get("protocol", "stretched") != "stretched":
                problems.append(f"{name}: protocol={p['protocol']!r} runs the ViT-L at each image's own size")
        for key, off in NOT_PLANTED.items():
            if key in p and p[key] != off:
                problems.append(f"{name}: {key}={p[key]!r} plants")
        for key in ("datasets", "ttr_datasets", "dataset", "probe_dataset"):
            if "synthetic" in (p.get(key) if isinstance(p.get(key), list) else [p.get(key)]):
                problems.append(f"{name}: {key} uses the synthetic (planted) data")
        if p.get("images", "photos") != "photos" and p.get("image_dir") is None:
            problems.append(f"{name}: images={p['images']!r} is not the bundled photos")
    return problems


def test_lecture_is_a_profile_with_its_own_output_folder():
    assert "lecture" in PROFILES
    assert output_dir_for("lecture", ROOT) == ROOT / "build" / "lecture"
    assert load_profile("lecture", "02_high_norm_tokens")["profile"] == "lecture"


def test_the_lecture_profile_covers_every_notebook_with_its_own_parameters_in_range():
    given = given_parameters("lecture", NAMES, ROOT)
    for name in NAMES:
        assert experiment(name).profiles.get("lecture"), name  # every notebook has a lecture size
        assert set(given[name]) <= set(experiment(name).defaults()), name  # every key is a parameter of it
        validate(name, given[name])  # each value of its kind


def test_the_lecture_problems_check_catches_planted_violations():
    merged = _merged()
    for name, key, value, what in [
        ("02_high_norm_tokens", "model", "dinov2_g", "ViT-g"),
        ("00_tour", "image_size", 518, "more than 224 px"),
        ("01_attention_artifacts", "image_size", None, "more than 224 px"),
        ("08_lost", "protocol", "padded", "own size"),
        ("04_redundant_patches", "plant", True, "plants"),
        ("05_local_information", "plant_fraction", 0.08, "plants"),
        ("09_downstream", "synthetic", True, "plants"),
        ("06_global_information", "datasets", ["cifar10", "synthetic"], "synthetic"),
        ("03_emergence", "pretrained", False, "pretrained=False"),
        ("07_registers", "model_pairs", [["dinov2_s", "my_private_vit"]], "no published weights"),
        ("10_test_time_registers", "images", "auto", "not the bundled photos"),
    ]:
        broken = copy.deepcopy(merged)
        broken[name][key] = value
        found = lecture_problems(broken)
        assert any(name in f and what in f for f in found), (name, key, found)


def test_the_lecture_profile_uses_published_small_weights_and_never_plants():
    assert lecture_problems(_merged()) == []


@pytest.mark.robustness("clear error")
def test_the_lecture_profile_offline_without_weights_stops_before_any_notebook(tmp_path, monkeypatch):
    """It loads pretrained weights, so the runner's weights preflight applies to it as to the real profile."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VITREG_WEIGHTS", str(tmp_path / "weights"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    from vitreg.cli.main import main

    with pytest.raises(SystemExit, match=r"(?s)Stopping before any notebook runs.*dinov2_l = .*: 00_tour"):
        main(["run", "--profile", "lecture", "--only", "00", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out" / "results").exists()  # nothing ran
    # with random weights (what the README's timing used) nothing is looked up: here the images stop it instead
    monkeypatch.setenv("VITREG_DATA", str(tmp_path / "datasets"))
    with pytest.raises(SystemExit) as stop:
        main(["run", "--profile", "lecture", "--only", "00", "--out", str(tmp_path / "out"),
              "--set", "common.pretrained=false", "--set", "00.images=imagenette"])
    assert "the images are not here" in str(stop.value) and "weights" not in str(stop.value)
