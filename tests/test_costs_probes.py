"""The linear probes' cost models (vitreg.experiments.costs, "Linear probes"): they scale as their rows say, they
bound what the estimators really do, and every probe row of 05, 06, 10 and 11 is estimated from the run's own
parameters. Nothing here is timed."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from vitreg.experiments import catalog
from vitreg.experiments import costs as cm
from vitreg.measure.estimators import fit_logistic

#: Rates that count FLOPs only: the FLOP term of a model, in FLOPs.
FLOPS_ONLY = {"matmul_s": lambda f: f, "bytes_s": lambda b: 0.0, "host_factor": 0.0}


class CountEvaluations(TorchFunctionMode):
    """Count the objective evaluations of a fit (one ``F.cross_entropy`` each)."""

    calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.cross_entropy:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def _stiff(n: int = 64, d: int = 8, c: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlated features and labels independent of them: L-BFGS runs to its max_iter."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    return torch.randn(n, d, generator=g) @ (q * torch.logspace(0, -3, d)) @ q.T, torch.randint(0, c, (n,), generator=g)


@pytest.mark.parametrize("max_iter", [4, 40])
def test_the_lbfgs_bound_holds_for_the_estimator_and_is_reached(max_iter):
    x, y = _stiff()
    with CountEvaluations() as counter:
        fit_logistic(x, y, l2=1e-5, max_iter=max_iter, device="cpu")
    assert max_iter <= counter.calls <= cm.lbfgs_evals_bound(max_iter)


def test_the_flop_term_is_the_bound_of_evaluations_times_4ndc_and_doubles_with_n():
    one = cm.logistic_fit_s(1000, 64, 10, max_iter=200, **FLOPS_ONLY)
    assert one == cm.lbfgs_evals_bound(200) * 4 * 1000 * 64 * 10
    assert cm.logistic_fit_s(2000, 64, 10, max_iter=200, **FLOPS_ONLY) == 2 * one
    assert cm.logistic_fit_s(1000, 64, 10, max_iter=400, **FLOPS_ONLY) == pytest.approx(2 * one, rel=0.01)


def test_the_adam_variant_scales_with_epochs_and_its_steps_with_the_batch():
    flop = cm.logistic_fit_s(10_000, 64, 10, batch_size=100, epochs=10, **FLOPS_ONLY)
    assert flop == 10 * 4 * 10_000 * 64 * 10
    assert cm.logistic_fit_s(10_000, 64, 10, batch_size=100, epochs=20, **FLOPS_ONLY) == 2 * flop
    small, large = (cm.logistic_probe_s(n=10_000, d=64, c=10, batch_size=b, epochs=10) for b in (100, 1000))
    assert small > large  # ten times the steps, each with its host time


def test_a_gpu_probe_is_fits_times_one_fit_with_its_preparation():
    one = cm.logistic_probe_s(n=10_000, d=1024, c=1000)
    assert cm.logistic_probe_s(n=10_000, d=1024, c=1000, fits=7) == pytest.approx(7 * one)
    assert one > cm.logistic_fit_s(10_000, 1024, 1000)  # each fit's gather, check and cast on the GPU count
    assert one >= cm.lbfgs_evals_bound(200) * cm.gpu_matmul_s(cm.logistic_eval_flop(10_000, 1024, 1000))


def test_each_probe_copies_its_features_once_and_each_fit_prepares_its_rows_on_the_gpu():
    """Fig. 5b, Tables 1-2: fit_features moves a probe's features to the GPU once in their dtype; each fit gathers,
    checks and casts its rows there (fit_prep_bytes a value at the GPU's memory rate), nothing on the host."""
    n, d, c = 50_000, 1536, 100
    for b in (2, 4):
        per_fit = cm.logistic_probe_s(n=n, d=d, c=c, value_bytes=b) - cm.logistic_fit_s(n, d, c)
        assert per_fit == pytest.approx(cm.gpu_bytes_s(n * d * cm.fit_prep_bytes(b)))
    assert cm.fit_prep_bytes(2) == 2 * 2 + (2 + 2) + (2 + 4) and cm.fit_prep_bytes(4) == 2 * 4 + (4 + 2)  # no cast
    assert cm.feature_copy_s(n, d, 2) == pytest.approx(n * d * 2 / cm.PCIE_BYTES_S + cm.feature_check_s(n, d, 2))
    assert cm.feature_copy_s(2 * n, d, 2) == pytest.approx(2 * cm.feature_copy_s(n, d, 2))
    assert cm.feature_copy_s(n, d, 4) > cm.feature_copy_s(n, d, 2)  # float16 copies half the bytes
    args = {"d": d, "c": c, "grid": 6, "value_bytes": 2}
    n_val = cm.validation_rows(n, 0.2)
    without_copy = (cm.logistic_probe_s(n=n - n_val, fits=6, d=d, c=c, value_bytes=2) + cm.logistic_probe_s(n=n, d=d,
                    c=c, value_bytes=2) + 6 * cm.predict_s(n_val, d, c, value_bytes=2, on_gpu=True))
    assert cm.logistic_cv_probe_s(n=n, **args) - without_copy == pytest.approx(cm.feature_copy_s(n, d, 2))  # once
    dims = [1024, 1024, 2048]
    joint = cm.joint_logistic_probe_s(n=n, dims=dims, c=1000, batch_size=1024, epochs=10, value_bytes=2)
    fit = cm.joint_logistic_fit_s(n, dims, 1000, batch_size=1024, epochs=10)
    assert joint - fit == pytest.approx(cm.fit_prep_s(n, sum(dims), 2))
    assert cm.predict_s(n, d, c, on_gpu=False) > cm.predict_s(n, d, c, on_gpu=True)  # a host set is copied first


def test_the_cv_probe_is_grid_fits_on_the_training_share_and_one_refit():
    args = {"d": 768, "c": 100}
    copy = cm.feature_copy_s(5000, 768)
    assert cm.logistic_cv_probe_s(n=5000, grid=1, **args) == pytest.approx(copy + cm.logistic_probe_s(n=5000, **args))
    n_val = cm.validation_rows(5000, 0.2)
    expected = (copy + cm.logistic_probe_s(n=5000 - n_val, fits=6, **args)
                + 6 * cm.predict_s(n_val, 768, 100, on_gpu=True) + cm.logistic_probe_s(n=5000, **args))
    assert cm.logistic_cv_probe_s(n=5000, grid=6, **args) == pytest.approx(expected)
    assert cm.logistic_cv_probe_s(n=5000, grid=6, max_iter=100, **args) < cm.logistic_cv_probe_s(n=5000, grid=6, **args)


def test_the_ridge_model_counts_float64_products_and_a_d_cubed_eigendecomposition():
    products, eigh = cm.ridge_fit_flop(1000, 128, 48, 1)
    assert cm.ridge_fit_flop(1000, 256, 48, 1)[1] == 8 * eigh
    assert cm.ridge_fit_flop(2000, 128, 48, 1)[0] > products
    only = {"matmul64_s": lambda f: 0.0, "bytes_s": lambda b: 0.0}
    assert cm.ridge_fit_s(1000, 128, 48, 1, eigh_s=lambda f: f, **only) == cm.EIGH_FLOP_PER_D3 * 128 ** 3
    assert cm.gpu_matmul64_s(1e12) == pytest.approx(1e12 / (cm.FP64_FLOPS * cm.FP64_SHARE))
    assert cm.ridge_probe_s(n=50_000, d=1024, p=588, grid=4) > cm.ridge_probe_s(n=50_000, d=1024, p=588, grid=1)


def test_token_widths_read_the_architecture():
    assert cm.token_widths("dinov2_g") == (1536, 1, 0)
    assert cm.token_widths("dinov2_l_reg") == (1024, 1, 4)


def _costs(name: str, **changes) -> list[cm.Cost]:
    exp = catalog.experiment(name)
    return list(exp.costs(dataclasses.replace(exp.build(), **changes)))


def _seconds(name: str, **changes) -> float:
    return sum(c.seconds or 0.0 for c in _costs(name, **changes))


@pytest.mark.parametrize("name", ["05_local_information", "06_global_information", "11_beyond_the_paper"])
def test_every_probe_row_of_the_real_run_is_estimated(name):
    rows = _costs(name)
    assert rows and not cm.unestimated(rows) and all(c.seconds > 0 and c.scaling for c in rows)


def test_notebook_10_keeps_its_probe_row_apart_from_the_sweep_rows():
    rows = _costs("10_test_time_registers")
    assert cm.unestimated(rows) == []
    probe = [c for c in rows if c.what.startswith("imagenet1k probes")]
    assert len(probe) == 1 and probe[0].what.startswith("imagenet1k probes: 3 x 7") and probe[0].seconds > 0
    assert any(c.what.startswith("[TTR] sweep") for c in rows if c not in probe)


def test_05_counts_the_training_tokens_as_the_probes_split_them():
    from vitreg.experiments import local_information as exp
    from vitreg.measure.local_probes import local_information

    p = exp.Params(n_images=5)
    b, grid, dim = 5, (2, 2), 8
    feats = {"patches": torch.randn(b, 4, dim), "pixels": torch.randn(b, 4, 12)}
    got = local_information(feats, torch.zeros(b, 4, dtype=torch.bool), grid=grid, l2_grid=[1e-3], ridge_grid=[1.0],
                            train_fraction=p.train_fraction, device="cpu")
    assert exp._probe_tokens(p, 4) == (got["n_train_tokens"], (b - got["n_train_images"]) * 4)


@pytest.mark.parametrize("name, change", [
    ("05_local_information", {"n_images": 600}),
    ("05_local_information", {"l2_grid": [1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8]}),
    ("06_global_information", {"max_train": 100_000}),
    ("06_global_information", {"n_draws": 5}),
    ("10_test_time_registers", {"probe_n_train": 20_000}),
    ("11_beyond_the_paper", {"probe_n_train": 20_000}),
])
def test_a_larger_parameter_gives_a_larger_estimate(name, change):
    assert _seconds(name, **change) > _seconds(name)


def test_06_counts_every_token_kind_of_every_probed_pair():
    rows = _costs("06_global_information")
    # 14 datasets x ([CLS], central, 3 normal + 3 outlier draws) on ViT-g, 3 [TTR] datasets x 8 on ViT-L and
    # 3 x 12 on ViT-L +reg (4 registers): 172 probes of 6 grid fits and a refit, 28 of them on ImageNet-1k
    # (8 on ViT-g, 8 on ViT-L, 12 on ViT-L +reg), in a row of their own that needs the registration
    assert [(c.what, c.needs) for c in rows] == [("single-token probes: 144 x 7 L-BFGS fits", ""),
                                                 ("single-token probes on ImageNet-1k: 28 x 7 L-BFGS fits", "imagenet1k")]
    fewer = _seconds("06_global_information", datasets=["cifar10"], ttr_datasets=[])
    assert 0 < fewer < _seconds("06_global_information", datasets=["cifar10", "imagenet1k"], ttr_datasets=[])
