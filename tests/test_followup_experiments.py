"""Notebooks 10 and 11 as experiment steps and results records (vitreg.experiments.test_time_registers and
beyond_the_paper): the records resolve the paper's keys, and the steps plant and measure without leaving hooks.

Paper: [TTR] (register neurons, test-time registers), Sun et al. (massive activations), on planted truth.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import small_vit

from vitreg.claims.paper import paper_numbers
from vitreg.core.models import get_spec
from vitreg.core.weights import LoadedModel
from vitreg.experiments import beyond_the_paper, test_time_registers
from vitreg.experiments.base import record_paths
from vitreg.experiments.records import to_numbers

SIZE = 56


def _loaded(name: str, depth: int = 3) -> LoadedModel:
    model = small_vit(name, depth=depth, image_size=SIZE)
    return LoadedModel(model, get_spec(name), (SIZE, SIZE), False, "random init")


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(n)]


def _no_hooks_left(model: torch.nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("module", [test_time_registers, beyond_the_paper])
def test_every_paper_key_of_the_notebook_is_a_path_of_its_record(module) -> None:
    name = module.EXPERIMENT.name
    assert module.EXPERIMENT.record is not None
    paths = record_paths(module.EXPERIMENT.record)
    keys = {n.key for n in paper_numbers() if n.notebook == name and n.key}
    keys |= {k for n in paper_numbers() if n.notebook == name for k in (n.operands or ())}
    assert keys and keys <= paths, sorted(keys - paths)


def test_record_paths_follow_the_keys_of_a_plain_dict_field() -> None:
    paths = record_paths(test_time_registers.Record)
    assert "models.dinov2_l.ttr.patch_outlier_pct" in paths and "lost.ttr_gain.voc07" in paths
    assert "models.no_ttr.patch_outlier_pct" not in paths  # a dict's value type is not a field of the dict


def test_to_numbers_leaves_out_the_parts_a_run_did_not_have() -> None:
    skipped = {"skipped": "dinov2_l not in models"}
    part = test_time_registers.ModelResult(ttr={"patch_outlier_pct": skipped}, cls_artifact_drop=skipped)
    assert to_numbers(part) == {"ttr": {"patch_outlier_pct": skipped}, "cls_artifact_drop": skipped}
    full = dataclasses.replace(part, model="clip_b16_laion", trained_registers={"model": "x", "a": None})
    assert to_numbers(full)["trained_registers"] == {"model": "x", "a": None}  # None inside a value stays
    with pytest.raises(TypeError, match="results record"):
        to_numbers({"a": 1})


def _ttr_params(**kw) -> test_time_registers.Params:
    smoke = dict(test_time_registers.PROFILES["smoke"])
    settings = {"detect_block": -1, "threshold": 150.0, "highest_layer": 2, "top_k": 4}
    smoke.update(models=["dinov2_s"], detect_settings={"dinov2_s": settings}, image_size=SIZE, batch_size=2,
                 n_show=2, plant_block=1, pretrained=False, device="cpu", **kw)
    return test_time_registers.EXPERIMENT.build(smoke)


def test_ttr_steps_find_the_planted_neurons_and_leave_no_hook(tmp_path) -> None:
    p, loaded = _ttr_params(), _loaded("dinov2_s")
    plant = test_time_registers.planted_truth(p)
    images = _images(4)
    neurons, _, path = test_time_registers.detect(p, "dinov2_s", loaded, images, plant, tmp_path)
    assert set(neurons.neurons) == {(1, u) for u in plant.units["dinov2_s"]} and path.exists()
    assert _no_hooks_left(loaded.model)  # the planting lives inside the step, not across cells
    shift, norms = test_time_registers.shifted(p, "dinov2_s", loaded, neurons, images[:2], plant)
    assert shift.chosen_patch_is_max_pct == 100 and norms.shape == (2, *loaded.layout.grid)
    assert _no_hooks_left(loaded.model)
    clean, _ = test_time_registers.shifted(p, "dinov2_s", loaded, neurons, images[:2], None)
    assert clean.chosen_patch_is_max_pct < 100  # without the planted truth there is nothing to move


def test_no_planted_truth_outside_the_smoke_profile() -> None:
    assert test_time_registers.planted_truth(_ttr_params(plant=False)) is None


def test_massive_step_finds_the_planted_cells_and_leaves_no_hook() -> None:
    smoke = dict(beyond_the_paper.PROFILES["smoke"])
    smoke.update(model_pair=["dinov2_s", "dinov2_s_reg"], image_size=SIZE, batch_size=2, pretrained=False, device="cpu")
    p = beyond_the_paper.EXPERIMENT.build(smoke)
    models = {key: _loaded(key) for key in p.model_pair}
    plant = beyond_the_paper.planted_truth(p, models)
    found = beyond_the_paper.find_massive(p, models, _images(3), plant)
    for key, loaded in models.items():
        assert found[key].positions() == set(plant.cells[key])
        assert _no_hooks_left(loaded.model)
    assert beyond_the_paper.find_massive(p, models, _images(3), None)["dinov2_s"].positions() == set()


def test_without_outliers_the_ttr_steps_record_an_empty_list_and_11_says_why(tmp_path) -> None:
    """[TTR]'s search stops when no detection image has an outlier (random weights, a model without artifacts):
    notebook 10 then keeps an empty list whose register moves nothing, and 11 records the reason instead of the
    test-time register's shares; neither run stops."""
    p, loaded = _ttr_params(plant=False), _loaded("dinov2_s")
    images = _images(3)
    neurons, scores, path = test_time_registers.detect(p, "dinov2_s", loaded, images, None, tmp_path)
    assert neurons.neurons == [] and scores.n_used == 0 and path.exists()
    assert neurons.settings["n_images_with_outliers"] == 0
    smoke = dict(beyond_the_paper.PROFILES["smoke"])
    smoke.update(model_pair=["dinov2_s", "dinov2_s_reg"], image_size=SIZE, batch_size=2, pretrained=False,
                 device="cpu", plant=False, n_detect=3)
    p11 = beyond_the_paper.EXPERIMENT.build(smoke)
    found, why = beyond_the_paper.ttr_neurons(p11, loaded, images, None, tmp_path / "no_list_from_10")
    assert found is None and "no test-time register" in why and "cut-off" in why
