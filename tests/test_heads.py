"""Dense heads (vitreg.measure.heads): depth from planted tokens, mIoU and depth metrics as DINOv2 scores them.

Paper: Table 2.
"""

from __future__ import annotations

import pytest
import torch

from vitreg import planting
from vitreg.data import dense as dense_data
from vitreg.measure import heads

from conftest import DEVICES

FAST = heads.TrainConfig(epochs=15, batch_size=8, lr=1e-2, device="cpu")


@pytest.mark.parametrize("planted", [True, False])
def test_depth_head_learns_planted_depth_not_noise(planted: bool) -> None:
    train, test = planting.planted_depth(16, 8, grid=(6, 6), upsample=4, planted=planted, seed=4)
    head = heads.train_depth_head(train["patch"], train["cls"], train["depth"], n_bins=32, cfg=FAST)
    pred = heads.predict_depth(head, test["patch"], test["cls"], tuple(test["depth"].shape[-2:]))
    rmse = heads.depth_metrics(pred, test["depth"])["rmse"]
    constant = heads.constant_depth_rmse(train["depth"], test["depth"])
    if planted:
        assert rmse < 0.5 * constant, (rmse, constant)
    else:
        assert rmse > 0.9 * constant, (rmse, constant)


def test_mean_iou_counts_over_the_dataset_and_ignores_255() -> None:
    labels = torch.tensor([[[0, 0, 1, 255]], [[1, 1, 2, 2]]], dtype=torch.uint8)
    pred = torch.tensor([[[0, 1, 1, 0]], [[1, 1, 2, 0]]], dtype=torch.uint8)
    # kept (gt, pred): (0,0) (0,1) (1,1) (1,1) (1,1) (2,2) (2,0)
    # class 0: inter 1, union 2 + 2 - 1 = 3; class 1: 3 / (4 + 3 - 3); class 2: 1 / (1 + 2 - 1)
    r = heads.mean_iou(pred, labels, 3)
    assert r["iou"] == pytest.approx([100 / 3, 75.0, 50.0], abs=1e-2)
    assert r["miou"] == pytest.approx((100 / 3 + 75 + 50) / 3, abs=1e-6)
    assert heads.mean_iou(labels, labels, 4)["iou"][3] is None  # absent class: not averaged


def test_depth_metrics_use_valid_pixels_and_the_crop() -> None:
    gt = torch.full((2, 48, 64), 3.0)
    gt[:, :4] = 0.0  # missing measurements
    pred = gt.clone()
    pred[:, :4] = 9.0  # wrong only where gt is missing: must not count
    assert heads.depth_metrics(pred, gt)["rmse"] == pytest.approx(0.0)
    pred[:, :, :2] = 5.0  # wrong in a border strip: outside the Eigen crop
    assert heads.depth_metrics(pred, gt, crop=dense_data.EIGEN_CROP)["rmse"] == pytest.approx(0.0)
    assert heads.depth_metrics(pred, gt)["rmse"] > 0.1


def test_heads_are_seeded_without_touching_the_global_rng() -> None:
    """No global state: training a head leaves the caller's random stream where it was, and a seed gives one head."""
    train, _ = planting.planted_depth(4, 1, grid=(2, 2), upsample=1, seed=0)
    cfg = heads.TrainConfig(epochs=1, batch_size=4, device="cpu", seed=3)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = heads.train_segmentation_head(train["patch"], (train["depth"] > 5).to(torch.uint8), 2, cfg=cfg)
    b = heads.train_depth_head(train["patch"], train["cls"], train["depth"], n_bins=8, cfg=cfg)
    assert torch.equal(torch.rand(3), expected)
    again = heads.train_segmentation_head(train["patch"], (train["depth"] > 5).to(torch.uint8), 2, cfg=cfg)
    assert torch.equal(again.linear.weight, a.linear.weight) and b.linear.weight.shape == (8, 64)


def _spy_on_the_heads(monkeypatch) -> list[list[torch.Tensor]]:
    """What the heads read at every training step, on the CPU: the tokens (and [CLS]) a head is called with, and
    the targets its loss compares with (segmentation labels, depth)."""
    import torch.nn.functional as F

    seen: list[list[torch.Tensor]] = []
    seg_forward, depth_forward = heads.LinearSegmentationHead.forward, heads.LinearDepthHead.forward
    cross_entropy, sig_loss = F.cross_entropy, heads.sig_loss

    def seg(self, patch, size=None):
        seen.append([patch.cpu()])
        return seg_forward(self, patch, size)

    def depth(self, patch, cls=None, size=None):
        seen.append([patch.cpu(), cls.cpu()])
        return depth_forward(self, patch, cls, size)

    def seg_loss(logits, labels, **kw):
        seen[-1].append(labels.cpu())
        return cross_entropy(logits, labels, **kw)

    def depth_loss(pred, gt, valid):
        seen[-1] += [gt.cpu(), valid.cpu()]
        return sig_loss(pred, gt, valid)

    monkeypatch.setattr(heads.LinearSegmentationHead, "forward", seg)
    monkeypatch.setattr(heads.LinearDepthHead, "forward", depth)
    monkeypatch.setattr(F, "cross_entropy", seg_loss)
    monkeypatch.setattr(heads, "sig_loss", depth_loss)
    return seen


@pytest.mark.parametrize("device", DEVICES)
def test_features_kept_on_the_device_feed_the_heads_what_the_host_feeds_them(device, monkeypatch) -> None:
    """Table 2 (the dense heads train every seed on features moved to the GPU once, :func:`heads.on_device`): the
    heads read the same tokens and targets at every step as when each batch is copied from the host, and train to
    the same weights (bit for bit on the CPU; on CUDA up to the order of the atomic adds in the bilinear upsampling's
    backward pass, which differs from run to run whatever the features' place)."""
    g = torch.Generator().manual_seed(0)
    host = {"patch": torch.randn(8, 4, 4, 16, generator=g).half(), "cls": torch.randn(8, 16, generator=g).half(),
            "labels": torch.randint(0, 5, (8, 16, 16), generator=g).to(torch.uint8),
            "depth": 10 * torch.rand(8, 16, 16, generator=g)}
    host["labels"][:, :2] = 255
    moved = heads.on_device(host, device, working=0)
    for k, t in host.items():
        assert moved[k].device.type == device and moved[k].dtype == t.dtype and torch.equal(moved[k].cpu(), t), k
        assert (moved[k] is t) == (device == "cpu"), k  # the CPU's features stay where they are
    cfg = heads.TrainConfig(epochs=2, batch_size=3, lr=1e-2, seed=1, device=device)
    seen = _spy_on_the_heads(monkeypatch)
    trained = []
    for f in (host, moved):
        start = len(seen)
        seg = heads.train_segmentation_head(f["patch"], f["labels"], 5, cfg=cfg)
        depth = heads.train_depth_head(f["patch"], f["cls"], f["depth"], n_bins=8, cfg=cfg)
        trained.append((seen[start:], [*seg.state_dict().values(), *depth.state_dict().values()]))
    (steps, weights), (steps_moved, weights_moved) = trained
    assert len(steps) == 2 * 2 * 3 and [len(s) for s in steps] == [len(s) for s in steps_moved]
    for step, step_moved in zip(steps, steps_moved):
        assert all(x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(step, step_moved))
    assert len({tuple(s[0].shape) for s in steps}) > 1  # a short last batch: the batches differ from step to step
    for w, w_moved in zip(weights, weights_moved):
        if device == "cpu":
            assert torch.equal(w, w_moved)
        else:
            torch.testing.assert_close(w, w_moved)
