"""The cost model of loading models (vitreg.experiments.costs.load_s) scales as its rule says, and the time table
charges it for every model of every notebook; nothing here is timed."""

from __future__ import annotations

import pytest

from vitreg.experiments import catalog, costs, timing


@pytest.fixture
def two_models(monkeypatch):
    """``small`` and ``twice``: the same depth, twice the parameters; ``deep``: the parameters of ``small``, twice
    the blocks."""
    monkeypatch.setattr(costs, "ARCH", {"small": (100.0, 12), "twice": (200.0, 12), "deep": (100.0, 24)})


def test_the_bytes_terms_double_with_the_checkpoint_and_the_build_does_not(two_models):
    small, twice = costs.load_parts("small"), costs.load_parts("twice")
    assert costs.checkpoint_bytes("twice") == 2 * costs.checkpoint_bytes("small") == 2 * 100e6 * 4
    for part in ("init", "read", "touch", "copy", "check"):
        assert twice[part] == pytest.approx(2 * small[part]) and small[part] > 0, part
    assert twice["build"] == small["build"]
    assert costs.load_s("twice") == pytest.approx(sum(twice.values()))


def test_the_python_build_grows_by_its_measured_cost_per_block(two_models):
    deep, small = costs.load_parts("deep"), costs.load_parts("small")
    assert deep["build"] == pytest.approx(2 * small["build"]) == pytest.approx(costs.BUILD_S_PER_BLOCK * 24)
    assert costs.BUILD_S_PER_BLOCK > 0 and deep["read"] == small["read"]


def test_the_read_is_the_checkpoint_over_the_assumed_disk_rate_and_a_slower_disk_costs_more(two_models, monkeypatch):
    assert costs.load_parts("small")["read"] == pytest.approx(400e6 / costs.DISK_BYTES_S)
    assert costs.load_parts("small")["copy"] == pytest.approx(400e6 / costs.PCIE_BYTES_S)
    assert costs.load_parts("small")["touch"] == pytest.approx(400e6 / costs.HOST_TOUCH_BYTES_S)
    before, parts = costs.load_s("small"), costs.load_parts("small")
    monkeypatch.setattr(costs, "DISK_BYTES_S", costs.DISK_BYTES_S / 2)
    assert costs.load_s("small") == pytest.approx(before + parts["read"])
    monkeypatch.setattr(costs, "PCIE_BYTES_S", costs.PCIE_BYTES_S / 4)
    assert costs.load_parts("small")["copy"] == pytest.approx(4 * parts["copy"])


def test_init_and_check_stream_through_the_assumed_gpu_memory_rate(two_models, monkeypatch):
    parts = costs.load_parts("small")
    assert parts["init"] == pytest.approx(costs.gpu_bytes_s(costs.INIT_PASSES * 400e6))
    assert parts["check"] == pytest.approx(costs.gpu_bytes_s(costs.CHECK_PASSES * 400e6))
    monkeypatch.setattr(costs, "HBM_SHARE", costs.HBM_SHARE / 2)
    assert costs.load_parts("small")["init"] == pytest.approx(2 * parts["init"])


def test_other_rates_give_the_same_parts_at_those_rates(two_models):
    rates = costs.LoadRates(init=1e9, read=2e9, touch=0.5e9, copy=4e9, check=8e9)
    parts = costs.load_parts("small", rates)
    assert parts == pytest.approx({"build": costs.build_python_s("small"), "init": 0.4, "read": 0.2, "touch": 0.8,
                                   "copy": 0.1, "check": 0.05})


def test_every_model_of_the_real_run_is_in_the_table_and_two_match_the_meta_count():
    models = {m for name in catalog.MODULES for m in (lambda e: e.models(e.build()))(catalog.experiment(name))}
    assert models <= set(costs.ARCH), sorted(models - set(costs.ARCH))
    for model in ("dinov2_s", "dino_b16"):
        assert costs.count_arch(model) == costs.ARCH[model]
    assert costs.arch("dinov2_g")[0] > 3.5 * costs.arch("dinov2_l")[0]


def test_the_time_table_charges_each_notebook_each_load_and_the_measured_kernel_start():
    assert costs.KERNEL_S > 0 and not hasattr(timing, "KERNEL_S")  # one constant, read where it is used
    table = timing.rows()
    for r in table:
        exp = catalog.experiment(r["notebook"])
        models = exp.model_loads(exp.build())
        assert r["n_models"] == len(models) > 0
        assert r["load_s"] == pytest.approx(sum(costs.load_s(m) for m in models))
    foot = timing.render()
    assert f"{sum(r['n_models'] for r in table)} model loads" in foot and costs.loading_rule() in foot


def test_a_notebook_with_a_larger_model_is_charged_the_difference(monkeypatch):
    from vitreg.experiments.base import Experiment, Work

    def planted(model: str) -> Experiment:
        return Experiment("00_tour", catalog.experiment("00_tour").params, lambda p: [model],
                          lambda p: [Work("dinov2_s", 224, 10)])

    small, large = timing.row("00_tour", planted("dinov2_s")), timing.row("00_tour", planted("dinov2_g"))
    assert large["total_s"] - small["total_s"] == pytest.approx(costs.load_s("dinov2_g") - costs.load_s("dinov2_s"))
    assert costs.load_s("dinov2_g") > costs.load_s("dinov2_l") > costs.load_s("dinov2_s")


@pytest.mark.parametrize("name, again", [
    ("02_high_norm_tokens", {"dinov2_g": 2, "dino_b16": 2}),  # Fig. 3's pair, then the zoo scan loads its own
    ("08_lost", {"dinov2_l": 2, "dinov2_l_reg": 2}),  # the figure at image_size, then LOST at native size
    ("09_downstream", {"dinov2_l": 4, "dinov2_l_reg": 4}),  # ImageNet, ADE20k crops and canvas, NYUd
    ("10_test_time_registers", {"dinov2_l": 2, "dinov2_l_reg": 2}),  # at 224 px, then LOST at native size
])
def test_a_model_loaded_again_by_a_later_step_is_charged_again(name, again):
    from collections import Counter

    exp = catalog.experiment(name)
    p = exp.build()
    loads = Counter(exp.model_loads(p))
    assert {m: loads[m] for m in again} == again and set(loads) == set(exp.models(p))
    r = timing.row(name)
    assert r["n_models"] == sum(loads.values())
    assert r["load_s"] == pytest.approx(sum(n * costs.load_s(m) for m, n in loads.items()))
    assert r["load_s"] > sum(costs.load_s(m) for m in exp.models(p))


def test_a_09_task_left_out_loads_nothing_for_it():
    exp = catalog.experiment("09_downstream")
    assert exp.model_loads(exp.build({"tasks": ["ade20k"]})) == ["dinov2_l", "dinov2_l", "dinov2_l_reg", "dinov2_l_reg"]
    assert exp.model_loads(exp.build({"tasks": [], "synthetic": True})) == ["dinov2_l", "dinov2_l_reg"]
