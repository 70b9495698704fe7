"""Linear estimators (vitreg.measure.estimators) recover planted signals and find nothing in noise.

Paper: Fig. 5b, Table 1 / Table 6, Table 2 (every linear probe).
"""

from __future__ import annotations

import math

import pytest
import torch

from vitreg.measure import estimators

from conftest import DEVICES


def blobs(n: int, d: int, c: int, *, sep: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian class blobs: class means ``sep`` apart (planted signal), unit noise."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(c, d, generator=torch.Generator().manual_seed(1234)) * sep
    y = torch.randint(0, c, (n,), generator=gen)
    return means[y] + torch.randn(n, d, generator=gen), y


def test_logistic_recovers_separable_classes() -> None:
    x, y = blobs(600, 16, 5, sep=3.0, seed=0)
    xt, yt = blobs(400, 16, 5, sep=3.0, seed=1)
    clf = estimators.fit_logistic(x, y, l2=1e-3, device="cpu")
    assert estimators.accuracy(clf, xt, yt) > 98.0


def test_logistic_on_noise_is_at_chance() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(600, 16, generator=gen), torch.randint(0, 5, (600,), generator=gen)
    xt, yt = torch.randn(2000, 16, generator=gen), torch.randint(0, 5, (2000,), generator=gen)
    sel = estimators.fit_logistic_cv(x, y, l2_grid=(1e-1, 1e-3), device="cpu")
    assert abs(estimators.accuracy(sel.classifier, xt, yt) - 20.0) < 5.0


def test_logistic_agrees_with_sklearn() -> None:
    """Same objective as LogisticRegression(C=1/(l2 n)) on the same standardised features."""
    sk = pytest.importorskip("sklearn.linear_model")
    x, y = blobs(800, 24, 6, sep=0.5, seed=2)  # overlapping classes: accuracy well below 100
    xt, yt = blobs(2000, 24, 6, sep=0.5, seed=3)
    l2 = 1e-2
    clf = estimators.fit_logistic(x, y, l2=l2, device="cpu")
    ours = estimators.accuracy(clf, xt, yt)
    std = estimators.Standardizer.fit(x)
    ref = sk.LogisticRegression(C=1.0 / (l2 * len(x)), max_iter=5000, tol=1e-8).fit(std(x).numpy(), y.numpy())
    theirs = float((torch.from_numpy(ref.predict(std(xt).numpy())) == yt).float().mean() * 100)
    assert 40.0 < theirs < 95.0  # the comparison is informative
    assert abs(ours - theirs) < 1.0
    agree = (clf.predict(xt) == torch.from_numpy(ref.predict(std(xt).numpy()))).float().mean()
    assert agree > 0.98


def test_minibatch_training_matches_full_batch() -> None:
    x, y = blobs(600, 16, 4, sep=1.0, seed=4)
    xt, yt = blobs(1000, 16, 4, sep=1.0, seed=5)
    full = estimators.accuracy(estimators.fit_logistic(x, y, l2=1e-3, device="cpu"), xt, yt)
    mini = estimators.fit_logistic(x, y, l2=1e-3, batch_size=64, epochs=30, lr=1e-2, device="cpu", seed=0)
    again = estimators.fit_logistic(x, y, l2=1e-3, batch_size=64, epochs=30, lr=1e-2, device="cpu", seed=0)
    assert abs(estimators.accuracy(mini, xt, yt) - full) < 2.0
    assert torch.equal(mini.weight, again.weight)  # deterministic for a seed


def test_cv_picks_a_strength_and_keeps_labels() -> None:
    x, y = blobs(300, 8, 3, sep=3.0, seed=6)
    sel = estimators.fit_logistic_cv(x, y + 10, l2_grid=(1.0, 1e-3), device="cpu")
    assert set(sel.val_accuracy) == {1.0, 1e-3}
    assert sel.l2 in sel.val_accuracy
    assert set(sel.classifier.predict(x).tolist()) <= {10, 11, 12}


def test_bad_input_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match=r"\(n, D\)"):
        estimators.fit_logistic(torch.zeros(4, 2, 2), torch.zeros(4), l2=1.0, device="cpu")
    with pytest.raises(ValueError, match="NaN"):
        estimators.fit_logistic(torch.full((4, 2), math.nan), torch.zeros(4), l2=1.0, device="cpu")
    with pytest.raises(ValueError, match="rows"):
        estimators.fit_logistic(torch.zeros(4, 2), torch.zeros(3), l2=1.0, device="cpu")


def test_mean_per_class_accuracy_matches_sklearn_balanced_accuracy() -> None:
    """Table 1 (Aircraft, Pets, Caltech101, Flowers): on imbalanced classes where the classifier gets the big
    class right and the small ones wrong, top-1 is high and mean-per-class is not; both match sklearn."""
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=gen) * 4
    y_tr = torch.tensor([0] * 60 + [1] * 60 + [2] * 60)
    x_tr = centres[y_tr] + torch.randn(180, 8, generator=gen)
    clf = estimators.fit_logistic(x_tr, y_tr, l2=1e-3)
    y_te = torch.tensor([0] * 90 + [1] * 5 + [2] * 5)
    x_te = centres[y_te] + torch.randn(100, 8, generator=gen)
    x_te[90:] = centres[0] + torch.randn(10, 8, generator=gen)          # the small classes look like class 0
    pred = clf.predict(x_te)
    got = estimators.mean_per_class_accuracy(clf, x_te, y_te)
    assert got == pytest.approx(100 * sklearn_metrics.balanced_accuracy_score(y_te.numpy(), pred.numpy()), abs=1e-4)
    assert estimators.accuracy(clf, x_te, y_te) == pytest.approx(100 * sklearn_metrics.accuracy_score(y_te.numpy(), pred.numpy()))
    assert estimators.accuracy(clf, x_te, y_te) - got > 20                # top-1 would hide the missed classes
    assert estimators.METRICS["mean_per_class"] is estimators.mean_per_class_accuracy
    assert math.isnan(estimators.mean_per_class_accuracy(clf, x_te[:0], y_te[:0]))


def _three_heads(n: int, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Planted heads of widths 12, 20 and 32 (the first two side by side, as ``cls+patch_mean``): the first carries
    the class weakly (a strong penalty wins on validation), the second strongly and on another scale."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 6, (n,), generator=gen)
    weak = torch.randn(6, 12, generator=torch.Generator().manual_seed(7))[y] * 0.3 + torch.randn(n, 12, generator=gen)
    strong = torch.randn(6, 20, generator=torch.Generator().manual_seed(8))[y] * 1.5 + 3 * torch.randn(n, 20, generator=gen) + 5
    return [weak, strong, torch.cat([weak, strong], 1)], y


@pytest.mark.parametrize("device", DEVICES)
def test_the_joint_minibatch_fit_gives_each_head_its_separate_fit(device: str) -> None:
    """Table 2 (ImageNet probe: [CLS], mean patch and both trained in one minibatch run): the same classifiers,
    chosen strengths and validation scores as one :func:`fit_logistic_cv` per head, on the device both run on."""
    xs, y = _three_heads(900, 0)
    kw = dict(l2_grid=(1e-1, 1e-2, 1e-4), batch_size=50, epochs=4, device=device, seed=3)
    joint = estimators.fit_logistic_cv_joint(xs, y, **kw)
    separate = [estimators.fit_logistic_cv(x, y, **kw) for x in xs]
    assert len({s.l2 for s in separate}) > 1  # the heads choose different strengths: the test can tell them apart
    for j, s, x in zip(joint, separate, xs):
        assert j.l2 == s.l2 and j.val_accuracy == s.val_accuracy
        torch.testing.assert_close(j.classifier.weight, s.classifier.weight, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(j.classifier.bias, s.classifier.bias, rtol=1e-5, atol=1e-6)
        assert j.classifier.weight.shape == (x.shape[1], 6)
        assert torch.equal(j.classifier.standardizer.mean, s.classifier.standardizer.mean)
        assert torch.equal(j.classifier.predict(x), s.classifier.predict(x))
    assert not torch.equal(joint[0].classifier.weight, separate[1].classifier.weight[:12])


def test_the_joint_fit_recovers_a_planted_signal_and_not_a_shuffled_one() -> None:
    xs, y = _three_heads(1500, 1)
    test_xs, test_y = _three_heads(1000, 2)
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    kw = dict(l2_grid=(1e-2, 1e-4), batch_size=32, epochs=5, device="cpu")
    real = [estimators.accuracy(s.classifier, x, test_y)
            for s, x in zip(estimators.fit_logistic_cv_joint(xs, y, **kw), test_xs)]
    noise = [estimators.accuracy(s.classifier, x, test_y)
             for s, x in zip(estimators.fit_logistic_cv_joint(xs, shuffled, **kw), test_xs)]
    chance = float(torch.bincount(test_y).max()) / len(test_y) * 100
    assert real[0] > chance + 15 and real[1] > chance + 40 and real[2] > chance + 40, (real, chance)
    assert max(noise) < chance + 6, (noise, chance)


def test_the_joint_fit_is_minibatch_only_and_checks_its_heads() -> None:
    xs, y = _three_heads(60, 0)
    with pytest.raises(ValueError, match="minibatch"):
        estimators.fit_logistic_joint(xs, y, l2s=[1e-2] * 3, batch_size=None, device="cpu")
    with pytest.raises(ValueError, match="one l2"):
        estimators.fit_logistic_joint(xs, y, l2s=[1e-2] * 2, batch_size=16, device="cpu")
    with pytest.raises(ValueError, match="same rows"):
        estimators.fit_logistic_joint([xs[0], xs[1][:50]], y, l2s=[1e-2] * 2, batch_size=16, device="cpu")
