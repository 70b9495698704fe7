"""The probes prepare their features on the fit's device once (Fig. 5b, Tables 1-2; vitreg.measure.estimators)."""

from __future__ import annotations

import pytest
import torch

from vitreg.measure import downstream, estimators

from conftest import DEVICES


def _problem() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 3, (120,), generator=g)
    x = torch.randn(120, 6, generator=g) + y[:, None].float() * torch.tensor([1.0, -0.5, 0, 0, 0.3, 0])
    return x.half(), y


def test_the_cpu_results_are_those_before_the_features_moved_to_the_device():
    """Values recorded from the host-prepared code on this fixed problem (CPU path unchanged)."""
    x, y = _problem()
    sel = estimators.fit_logistic_cv(x, y, l2_grid=(1e-1, 1e-3), device="cpu", max_iter=30)
    assert sel.l2 == 0.1 and sel.val_accuracy == {0.1: 62.5, 0.001: 62.5}
    assert sel.classifier.bias.tolist() == pytest.approx([-0.19853293895721436, 0.29192233085632324,
                                                          -0.09338957816362381], abs=1e-6)
    train = {"cls": x[:80], "patch_mean": x[:80, :3] * 2, "labels": y[:80]}
    test = {"cls": x[80:], "patch_mean": x[80:, :3] * 2, "labels": y[80:]}
    r = downstream.classification_probe(train, test, l2_grid=(1e-1, 1e-3), batch_size=32, epochs=3, device="cpu")
    assert [r[v]["top1"] for v in downstream.CLASSIFICATION_VARIANTS] == [35.0, 42.5, 40.0]
    assert [r[v]["l2"] for v in downstream.CLASSIFICATION_VARIANTS] == [0.1, 0.1, 0.001]


def test_a_cv_probe_moves_its_features_to_the_fit_device_once_and_gathers_there(monkeypatch):
    """On a GPU fit_features moves x once in its dtype; every fit then gets rows already there (a spy device)."""
    moved, devices = [], []
    monkeypatch.setattr(estimators, "pick_device", lambda d: torch.device("meta") if d == "spy" else torch.device(d))
    real_to = torch.Tensor.to

    def spy_to(self, *args, **kwargs):  # record the moves to the spy device, keep the data on the CPU
        if args and args[0] == torch.device("meta"):
            moved.append(self.dtype)
            return self.clone()
        return real_to(self, *args, **kwargs)

    class Stop(Exception):
        pass

    def stub_fit(x: torch.Tensor, y: torch.Tensor, **kwargs) -> None:
        devices.append(x.dtype)
        raise Stop

    monkeypatch.setattr(torch.Tensor, "to", spy_to)
    monkeypatch.setattr(estimators, "fit_logistic", stub_fit)
    x, y = _problem()
    with pytest.raises(Stop):  # the first fit is reached; the moves before it are what is checked
        estimators.fit_logistic_cv(x, y, l2_grid=(1e-1, 1e-3), device="spy")
    assert moved == [torch.float16]  # one move of the whole matrix, in its cached dtype
    assert devices == [torch.float16]  # the fit got gathered rows of the moved matrix, not a host float32 copy


def test_the_cpu_path_converts_on_the_host_as_before():
    x, _ = _problem()
    out = estimators.fit_features(x, "x", "cpu")
    assert out.dtype == torch.float32 and out.device.type == "cpu" and torch.equal(out, x.float())
    with pytest.raises(ValueError, match="NaN"):
        estimators.fit_features(torch.tensor([[1.0, float("nan")]]), "x", "cpu")


@pytest.mark.parametrize("device", DEVICES)
def test_the_device_prepared_fit_is_the_host_prepared_one(device):
    """On CUDA: gathering, checking and casting on the device gives the fit of host-gathered float32 rows."""
    x, y = _problem()
    sel = estimators.fit_logistic_cv(x, y, l2_grid=(1e-1, 1e-3), device=device, max_iter=30)
    tr, va = estimators.split_indices(len(x), 0.2, 0)
    xf = x.float()
    prev, scores = None, {}
    for l2 in (1e-1, 1e-3):
        prev = estimators.fit_logistic(xf[tr], y[tr], l2=l2, classes=torch.unique(y), init=prev, device=device,
                                       max_iter=30)
        scores[l2] = estimators.accuracy(prev, xf[va], y[va])
    assert sel.val_accuracy == scores
    ref = estimators.fit_logistic(xf, y, l2=sel.l2, classes=torch.unique(y), device=device, max_iter=30)
    assert torch.equal(sel.classifier.weight, ref.weight) and torch.equal(sel.classifier.bias, ref.bias)
