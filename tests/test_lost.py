"""LOST on planted feature maps (Table 3): the planted object is found, noise is not, prefix tokens are dropped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitreg.data.boxes import corloc
from vitreg.measure.lost import (Discovery, Setting, corloc_numbers, discover, lost, mask_to_box, offset_features,
                         patch_features, planted_corloc, seed_component, ttr_settings)
from vitreg.planting import planted_feature_maps
from vitreg.core.tokens import TokenLayout

from conftest import DEVICES

GRID = (12, 14)
BOXES = [[2, 3, 7, 8], [8, 0, 13, 4], [0, 6, 4, 12], [5, 4, 10, 9]]  # (x0, y0, x1, y1) in patches


def test_lost_finds_the_planted_object():
    feats = planted_feature_maps(BOXES, GRID, seed=1)
    res = lost(feats, GRID)
    assert res.boxes_patch.tolist() == BOXES
    for i, (x0, y0, x1, y1) in enumerate(BOXES):  # the seed lies on the object
        sy, sx = divmod(int(res.seed[i]), GRID[1])
        assert x0 <= sx < x1 and y0 <= sy < y1
        assert int(res.component[i].sum()) == (x1 - x0) * (y1 - y0)


def test_lost_with_cosine_similarity_and_bias_finds_the_object():
    feats = 7.0 * planted_feature_maps(BOXES, GRID, seed=2)
    for bias in (0.0, -0.2):
        res = lost(feats, GRID, normalize=True, bias=bias)
        assert res.boxes_patch.tolist() == BOXES


def test_noise_features_do_not_recover_the_planted_boxes():
    """Noise control: with no object in the features, CorLoc against the 'planted' boxes is low."""
    gen = torch.Generator().manual_seed(0)
    boxes = [BOXES[i % 4] for i in range(32)]
    feats = torch.randn(32, GRID[0] * GRID[1], 32, generator=gen)
    res = lost(feats, GRID)
    assert corloc(res.boxes, np.asarray(boxes, dtype=float)[:, None]) < 25.0
    planted = lost(planted_feature_maps(boxes, GRID, seed=3), GRID)
    assert corloc(planted.boxes, np.asarray(boxes, dtype=float)[:, None]) == 100.0


def test_batch_gives_the_same_as_one_by_one():
    feats = planted_feature_maps(BOXES, GRID, noise=0.4, seed=4)  # noisy: ties and near-ties happen
    batch = lost(feats, GRID, k_patches=30)
    for i in range(len(BOXES)):
        one = lost(feats[i : i + 1], GRID, k_patches=30)
        assert one.boxes_patch[0].tolist() == batch.boxes_patch[i].tolist()
        assert int(one.seed[0]) == int(batch.seed[i])
        assert torch.equal(one.component[0], batch.component[i])


def test_registers_are_sliced_off_and_an_outlier_there_does_not_move_the_box():
    layout = TokenLayout(num_cls=1, num_reg=4, grid=GRID)
    tokens = planted_feature_maps(BOXES, GRID, num_prefix=layout.num_prefix, seed=5)
    # a high-norm register pointing away from every patch: the seed a wrongly sliced LOST would pick
    tokens[:, 2] = -50.0 * tokens[:, layout.num_prefix:].mean(1)
    res = lost(patch_features(tokens, layout), GRID)
    assert res.boxes_patch.tolist() == BOXES
    reference = lost(planted_feature_maps(BOXES, GRID, seed=5), GRID)
    assert torch.equal(res.boxes_patch, reference.boxes_patch)
    # the classic mistake, dropping one prefix token, keeps the registers as "patches": the box moves
    wrong = lost(tokens[:, 1 : 1 + layout.num_patches], GRID)
    assert wrong.boxes_patch.tolist() != BOXES
    with pytest.raises(ValueError, match="prefix"):
        lost(tokens[:, 1:], GRID)


def test_an_artifact_patch_steals_the_seed():
    """What high-norm outliers do to LOST (why registers help): the box collapses onto the artifact."""
    artifact = [0, GRID[1] * GRID[0] - 1, 5, 150]
    res = lost(planted_feature_maps(BOXES, GRID, artifact=artifact, seed=6), GRID)
    assert res.seed.tolist() == artifact
    assert ((res.boxes_patch[:, 2:] - res.boxes_patch[:, :2]) == 1).all()


def test_flood_fill_matches_scipy_label():
    ndimage = pytest.importorskip("scipy.ndimage")
    gen = torch.Generator().manual_seed(7)
    mask = torch.rand(16, 9, 11, generator=gen) > 0.45
    seeds = torch.stack([torch.nonzero(m.flatten())[0, 0] for m in mask])
    comp = seed_component(mask, seeds)
    for i in range(16):
        labels, _ = ndimage.label(mask[i].numpy())  # default structure: 4-connectivity
        sy, sx = divmod(int(seeds[i]), 11)
        assert np.array_equal(comp[i].numpy(), labels == labels[sy, sx])


def test_mask_to_box_hand_case():
    m = torch.zeros(2, 5, 6, dtype=torch.bool)
    m[0, 1:3, 2:5] = True
    m[1, 4, 0] = True
    assert mask_to_box(m).tolist() == [[2, 1, 5, 3], [0, 4, 1, 5]]
    with pytest.raises(ValueError):
        mask_to_box(torch.zeros(1, 3, 3, dtype=torch.bool))


def test_boxes_map_to_pixels_and_clip_to_the_image():
    feats = planted_feature_maps([[2, 3, 7, 8], [8, 0, 14, 4]], GRID, seed=8)
    res = lost(feats, GRID, scale=[[16.0, 16.0], [10.0, 20.0]], image_hw=[[1000, 1000], [100, 270]])
    assert res.boxes[0].tolist() == [32.0, 48.0, 112.0, 128.0]
    assert res.boxes[1].tolist() == [160.0, 0.0, 270.0, 40.0]  # x1 = 14 * 20 = 280 clipped to 270


def test_planted_corloc_separates_clean_objects_from_artifacts():
    got = planted_corloc(n_images=16, seed=1)
    assert got["clean"] == 100.0 and got["artifact"] < 20.0


def test_discover_runs_a_model_over_a_box_dataset_and_maps_boxes_to_original_pixels():
    from vitreg.data.boxes import SyntheticBoxes
    from vitreg.core.weights import load_model

    loaded = load_model("dinov2_s_reg", pretrained=False, image_size=56)
    ds = SyntheticBoxes(n=5, image_size=(60, 90), seed=2)
    settings = [Setting("k"), Setting("k", -1, True, -0.2)]
    d = discover(loaded, ds, settings, protocol="stretched", batch_size=2, progress=False)
    assert list(d.corloc) == ["k-1:dot+0.00", "k-1:cos-0.20"] and d.names == [f"synthetic_{i:03d}" for i in range(5)]
    b = d.boxes["k-1:dot+0.00"]
    assert b.shape == (5, 4) and (b[:, 0] < b[:, 2]).all() and (b[:, 1] < b[:, 3]).all()
    assert (b >= 0).all() and (b[:, 2] <= 90).all() and (b[:, 3] <= 60).all()
    # boxes are multiples of one patch in original pixels: 90/4 wide, 60/4 high (grid 4x4 at 56 px)
    assert np.allclose(b[:, [0, 2]] / 22.5, np.round(b[:, [0, 2]] / 22.5))
    assert np.allclose(b[:, [1, 3]] / 15.0, np.round(b[:, [1, 3]] / 15.0))
    assert 0 <= d.corloc["k-1:dot+0.00"] <= 100 and d.hits["k-1:dot+0.00"].shape == (5,)
    workers = discover(loaded, ds, settings[:1], protocol="stretched", batch_size=2, num_workers=2, progress=False)
    assert np.array_equal(workers.boxes["k-1:dot+0.00"], b)  # reader processes change nothing


def test_the_padded_protocol_runs_each_size_at_its_own_grid_and_restores_the_model():
    """LOST pads each image to a multiple of the patch size at its own resolution. Two sizes in one
    dataset: 60x90 pads to 70x98 (5x7 patches), 40x40 to 42x42 (3x3): boxes are whole patches (14 px) clipped
    to each image, in the dataset's order; the model is back at its loaded size and position embeddings after."""
    from vitreg.data.boxes import SyntheticBoxes
    from vitreg.core.weights import load_model

    class TwoSizes:
        name = "two_sizes"
        sets = (SyntheticBoxes(n=3, image_size=(60, 90), seed=2), SyntheticBoxes(n=3, image_size=(40, 40), seed=3))

        def __len__(self):
            return 6

        def __getitem__(self, i):
            return self.sets[i % 2][i // 2]

        def image_hw(self, i):
            return self.sets[i % 2].image_hw(i // 2)

    loaded = load_model("dinov2_s_reg", pretrained=False)  # native size: the exact position embeddings
    pos, size = loaded.model.pos_embed.detach().clone(), loaded.image_size
    sweep = ttr_settings([0.0, -0.5], blocks=(-2, -1))
    d = discover(loaded, TwoSizes(), [Setting("k"), *sweep], batch_size=4, progress=False)
    assert d.protocol == "padded" and len(d.corloc) == 1 + 3 * 2 * 2
    b = d.boxes["k-1:dot+0.00"]
    hw = np.array([[60, 90], [40, 40]] * 3, dtype=float)
    assert (b[:, 2] <= hw[:, 1]).all() and (b[:, 3] <= hw[:, 0]).all()
    on_grid = np.where(b % 14 == 0, True, np.isin(b, [90.0, 60.0, 40.0]))  # a patch edge, or the clipped border
    assert on_grid.all()
    assert d.names == [f"synthetic_{i // 2:03d}" for i in range(6)]
    assert loaded.image_size == size and torch.equal(loaded.model.pos_embed, pos)
    best, value = d.best(sweep)
    assert best in d.corloc and value == max(d.corloc[s.name] for s in sweep)


def _patch_colour_features(x: torch.Tensor, patch: int) -> torch.Tensor:
    """A stand-in for a model: each patch's mean colour, centred over the patches (object vs background)."""
    f = torch.nn.functional.avg_pool2d(x[None], patch).flatten(2).transpose(1, 2)  # (1, N, 3)
    return f - f.mean(1, keepdim=True)


def test_padded_box_matches_the_planted_box_in_original_pixels_and_the_stretched_one_is_off():
    """a 500x375 image with a planted object on the 14 px grid. Padded (LOST's protocol): the box is
    the planted box exactly. Stretched to a 448 px square (the former protocol): patches straddle the object's
    edges and the box, mapped back, is off by up to a patch."""
    from PIL import Image

    from vitreg.data.boxes import lost_input, padded_hw, pixel_scale

    planted = [98.0, 70.0, 322.0, 252.0]
    img = np.full((375, 500, 3), (60, 110, 60), dtype=np.uint8)
    img[70:252, 98:322] = (220, 40, 200)
    image, hw = Image.fromarray(img), torch.tensor([[375.0, 500.0]], dtype=torch.float64)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    boxes = {}
    for protocol in ("padded", "stretched"):
        x = lost_input(image, protocol=protocol, patch=14, size=448, mean=mean, std=std)
        assert tuple(x.shape[-2:]) == (padded_hw((375, 500), 14) if protocol == "padded" else (448, 448))
        grid = (x.shape[1] // 14, x.shape[2] // 14)
        res = lost(_patch_colour_features(x, 14), grid,
                   scale=pixel_scale(hw, patch=14, protocol=protocol, size=448), image_hw=hw)
        boxes[protocol] = res.boxes[0].tolist()
    assert padded_hw((375, 500), 14) == (378, 504)
    assert boxes["padded"] == planted
    assert boxes["stretched"] != planted and max(abs(a - b) for a, b in zip(boxes["stretched"], planted)) > 3


def test_plain_lost_returns_the_whole_image_on_offset_features_and_only_the_sweep_finds_the_object():
    """features sharing a positive offset (as real ones do): every dot product is positive, so plain
    LOST (dot, bias 0; the official code) returns the whole image; [TTR]'s sweep (cosine, a negative bias)
    finds every object. The two protocols are separate rows; the [TTR] targets read the sweep's."""
    feats = offset_features(planted_feature_maps(BOXES, GRID, seed=11), 3.0)
    plain = lost(feats, GRID)
    assert plain.boxes_patch.tolist() == [[0, 0, GRID[1], GRID[0]]] * len(BOXES)
    biases = [round(-0.1 * i, 1) for i in range(11)]
    found = {b: lost(feats, GRID, normalize=True, bias=b).boxes_patch.tolist() == BOXES for b in biases}
    assert not found[0.0] and any(found[b] for b in biases if b < 0)
    got = planted_corloc(n_images=16, seed=2)
    assert got["offset_plain"] < 20.0 and got["offset_sweep"] == 100.0


def test_rows_of_the_two_protocols_are_separate_and_the_sweep_takes_its_best_setting():
    """the [TTR] targets (56.2 with registers) are best-of-sweep numbers; plain LOST's row must not
    be the one they are compared with. Plain k-1 30 / 35; sweep best 50 / 57 (a different setting per model)."""
    from types import SimpleNamespace

    sweep = ttr_settings([0.0, -0.5], blocks=(-1,), features=("k", "v"))
    plain = Setting("k")

    def disc(p, values):
        corloc = {plain.name: p, **{s.name: v for s, v in zip(sweep, values)}}
        return SimpleNamespace(corloc=corloc, names=["a", "b"], best=lambda ss: Discovery.best(
            SimpleNamespace(corloc=corloc), ss))

    results = {("dinov2_l", "VOC07"): disc(30.0, [10, 50, 20, 40]), ("dinov2_l_reg", "VOC07"): disc(35.0, [5, 6, 57, 7])}
    models = ["dinov2_l", "dinov2_l_reg"]
    out = corloc_numbers(results, models, ["VOC07"], plain={m: plain for m in models}, sweep=sweep, root="/data")
    assert out["plain"]["no_reg"]["voc07"] == 30.0 and out["plain"]["reg"]["voc07"] == 35.0
    assert out["ttr_sweep"]["no_reg"]["voc07"] == 50 and out["ttr_sweep"]["no_reg"]["voc07_setting"] == "k-1:cos-0.50"
    assert out["ttr_sweep"]["reg"]["voc07"] == 57 and out["ttr_sweep"]["reg"]["voc07_setting"] == "v-1:cos+0.00"
    assert out["plain"]["register_gain"]["voc07"] == 5.0 and out["ttr_sweep"]["register_gain"]["voc07"] == 7
    assert out["ttr_sweep"]["reg"]["model"] == "dinov2_l_reg"


def test_degree_leaves_the_patch_itself_out():
    """LOST zeroes A's diagonal: with a bias a weak patch can be dissimilar to itself, and must not gain a rank.

    Dot product, bias -0.5: p0 = (0.3, 0) (self 0.09 - 0.5 < 0), p1 = (2, 0), p2 = (0, 2). Correlations with the
    OTHER patches: p0 1 (p1), p1 1 (p0), p2 0, so p2 is the seed; counting the diagonal would tie p0 with p2.
    """
    feats = torch.tensor([[[0.3, 0.0], [2.0, 0.0], [0.0, 2.0]]])
    res = lost(feats, (1, 3), bias=-0.5)
    assert res.degree.tolist() == [[1, 1, 0]]
    assert int(res.seed[0]) == 2 and res.boxes_patch.tolist() == [[2, 0, 3, 1]]


def test_corloc_rows_roles_and_the_register_gain_of_the_zoos_twin_pair():
    from types import SimpleNamespace

    from vitreg.measure.lost import planted_corloc_checks, register_gain

    d = lambda c: SimpleNamespace(corloc={"k-1:dot+0.00": c}, names=["a", "b"])  # noqa: E731
    results = {("dinov2_l", "VOC07"): d(30.0), ("dinov2_l_reg", "VOC07"): d(55.0), ("dino_s16", "VOC07"): d(60.0)}
    models = ["dino_s16", "dinov2_l", "dinov2_l_reg"]
    out = corloc_numbers(results, models, ["VOC07", "VOC12"], plain={m: Setting("k") for m in models}, sweep=[],
                         root="/data")["plain"]
    assert out["no_reg"] is out["by_model"]["dinov2_l"] and out["dino"]["voc07"] == 60.0
    assert out["reg"]["voc12"] == {"skipped": "VOC12 not found under /data"} and out["reg"]["voc07_n_images"] == 2
    assert out["reg"]["coco20k"] == {"skipped": "COCO20k not in `datasets`"} and out["dino"]["features"] == "k"
    gain = register_gain(out["by_model"], models)
    assert gain["model"] == "dinov2_l_reg" and gain["voc07"] == 25.0 and gain["voc12"] == out["reg"]["voc12"]
    assert out["register_gain"] == gain
    assert "model" not in register_gain(out["by_model"], ["dinov2_l", "dino_s16"])  # no twin listed: all skipped
    ok = {"clean": 100.0, "artifact": 10.0, "offset_plain": 5.0, "offset_sweep": 100.0}
    assert all(planted_corloc_checks(ok).values())
    assert not any(planted_corloc_checks({"clean": 90.0, "artifact": 60.0, "offset_plain": 90.0,
                                          "offset_sweep": 80.0}).values())


@pytest.mark.parametrize("device", DEVICES)
def test_the_sweep_scores_every_setting_as_lost_does_one_by_one(device):
    """The batch's sweep (each bias on one similarity, every setting's component in one flood fill) gives the
    boxes of :func:`lost` run setting by setting, bit for bit, on features where the settings disagree, on the
    device the features live on."""
    from types import SimpleNamespace

    from vitreg.measure.lost import _score_batch

    layout = TokenLayout(num_cls=1, num_reg=4, grid=GRID)
    gen = torch.Generator().manual_seed(12)
    clean = offset_features(planted_feature_maps(BOXES, GRID, num_prefix=layout.num_prefix, noise=0.6, seed=12), 1.5)
    feats = {w: [(clean + 0.3 * torch.randn(clean.shape, generator=gen)).to(device) for _ in range(2)] for w in "qkv"}
    rec = SimpleNamespace(**feats)
    settings = [Setting("k"), *ttr_settings([-0.9, -0.5, -0.3, -0.1, 0.0], blocks=[-2, -1], features=["q", "k", "v"])]
    hw = torch.tensor([[170, 190], [160, 200], [180, 210], [168, 196]])
    scale = torch.tensor([[14.0, 14.0], [13.0, 14.5], [14.0, 14.0], [15.0, 14.0]], dtype=torch.float64)
    got = _score_batch(rec, layout, settings, k_patches=30, scale=scale, hw=hw)
    boxes = set()
    for s in settings:
        one = lost(patch_features(feats[s.which][s.block], layout), GRID, k_patches=30, bias=s.bias,
                   normalize=s.normalize, scale=scale, image_hw=hw).boxes
        assert got[s.name].dtype == one.dtype and torch.equal(got[s.name], one), s.name
        boxes.add(tuple(one.flatten().tolist()))
    assert len(boxes) > 3  # the settings find different boxes: the check compares more than one answer


def _same_bits(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Equal bit for bit (NaN and the sign of zero included)."""
    return x.dtype == y.dtype and x.shape == y.shape and torch.equal(x.view(torch.int32), y.view(torch.int32))


SUB = 2.0 ** -140  # a float32 subnormal
TINY = 2.0 ** -126  # the smallest normal float32


def _subnormal(x: torch.Tensor) -> torch.Tensor:
    """Where ``x`` is a nonzero float32 of magnitude below the smallest normal number."""
    return (x != 0) & (x.abs() < TINY)


def _skip_where_subnormals_are_flushed(device: str) -> None:
    """Skip a subnormal case on a device whose float32 arithmetic flushes subnormals to zero (FTZ/DAZ).

    There ``a + bias > 0`` and ``a > -bias`` may part for ``|a + bias| < 2^-126``, as
    :func:`~vitreg.measure.lost.bias_sweep_scores` says, so the sweep is exact only in the normal range (the
    ``normal`` cases cover that device). Checked here rather than assumed: an add whose exact result is
    subnormal, a comparison and a product with a subnormal operand.
    """
    x = torch.tensor([2.0 ** -125, -(2.0 ** -125 - SUB), SUB], device=device)
    if not (float(x[0] + x[1]) == SUB and bool(x[2] > 0) and float(x[2] * 1.0) == SUB):
        pytest.skip(f"{device} flushes float32 subnormals to zero: the sweep is exact there only for "
                    "|a + bias| >= 2^-126 (the normal cases)")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("subnormal", [False, True], ids=["normal", "subnormal"])
def test_the_shared_bias_pass_gives_the_seeds_and_scores_of_a_plus_bias_bit_for_bit(device, subnormal):
    """``a > -bias`` counts what ``a + bias > 0`` counts, for every float32 entry: ties, entries exactly at ``-bias``
    and one ulp either side, signed zeros, NaN and infinities, and a bias of 0, -0, -0.1 (rounded to float32 as
    torch rounds it) and NaN; the ``subnormal`` case adds subnormal entries and a subnormal bias (where the device
    keeps subnormals: see :func:`_skip_where_subnormals_are_flushed`). The ``normal`` case never meets a subnormal,
    so it holds on a device that flushes them."""
    from vitreg.measure.lost import bias_sweep_scores, seed_scores

    if subnormal:
        _skip_where_subnormals_are_flushed(device)
    gen = torch.Generator().manual_seed(3)
    a = torch.randint(-4, 5, (3, 40, 40), generator=gen).float() / 8  # multiples of 1/8: ties everywhere
    tenth = torch.tensor(0.1, dtype=torch.float32)
    sub = torch.tensor(SUB)
    special = [tenth, torch.nextafter(tenth, torch.tensor(1.0)), torch.nextafter(tenth, torch.tensor(0.0)),
               torch.tensor(0.0), torch.tensor(-0.0), torch.tensor(float("nan")), torch.tensor(float("inf")),
               torch.tensor(-float("inf")), torch.tensor(TINY)]
    biases = [0.0, -0.0, -0.1, -0.125, -0.5, 0.25, -TINY, float("nan"), -float(tenth)]
    if subnormal:
        special += [sub, -sub, 2 * sub]
        biases += [-float(sub)]
    special = torch.stack(special)
    pick = torch.randint(0, 40 * 40, (3, 300), generator=gen)
    a.view(3, -1).scatter_(1, pick, special[torch.arange(300) % len(special)].expand(3, -1))
    a = a.to(device)
    seed, m = bias_sweep_scores(a, biases, k_patches=12)
    assert seed.shape == (len(biases), 3) and m.shape == (len(biases), 3, 40)
    exact_zero = met_subnormal = 0
    for i, bias in enumerate(biases):
        shifted = a + bias
        exact_zero += int((shifted == 0).sum())
        met_subnormal += int(_subnormal(shifted).sum() + _subnormal(m[i]).sum())
        _, seed_one, _, m_one = seed_scores(shifted, k_patches=12)
        assert torch.equal(seed[i], seed_one) and _same_bits(m[i], m_one), bias
    assert exact_zero > 100  # many entries sit exactly on a cut: where > and >= would differ
    assert (met_subnormal > 0) == subnormal  # the normal case stays out of the range a flushing device changes
    assert subnormal or not _subnormal(a).any()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("subnormal", [False, True], ids=["normal", "subnormal"])
def test_the_sweep_is_exact_with_ties_and_similarities_at_the_bias(device, subnormal):
    """The batch's sweep equals :func:`lost` setting by setting, bit for bit, on features with exact dot products
    (multiples of 1/4, so many entries equal ``-bias`` and many degrees tie) and on the same features scaled down by
    a power of two, with dot and cosine settings: by 2^-3 (``normal``), or into the subnormal range (``subnormal``:
    dot products of 2^-146 and up, biases of -2^-146 and -2^-144, where the device keeps subnormals)."""
    from types import SimpleNamespace

    from vitreg.measure.lost import _score_batch, similarity

    if subnormal:
        _skip_where_subnormals_are_flushed(device)
    layout = TokenLayout(num_cls=1, num_reg=4, grid=GRID)
    clean = offset_features(planted_feature_maps(BOXES, GRID, num_prefix=layout.num_prefix, noise=0.6, seed=5), 1.5)
    coarse = (clean[..., :8] * 2).round() / 2  # entries in halves: exact products and sums
    small = coarse * 2.0 ** (-73 if subnormal else -3)
    coarse, small = coarse.to(device), small.to(device)
    feats = {"q": [small, coarse], "k": [coarse, small], "v": [coarse.flip(1), coarse]}
    rec = SimpleNamespace(**feats)
    dot = [Setting(w, b, False, bias) for w in "qkv" for b in (-2, -1) for bias in (0.0, -0.25, -0.5, -1.0, -2.0)]
    at = (-146, -144) if subnormal else (-8, -6)  # a bias of one product of `small`, and of four
    near = [Setting("q", -2, False, -(2.0 ** at[0])), Setting("k", -1, False, -(2.0 ** at[1])),
            Setting("k", -2, False, -0.0)]
    settings = [*dot, *near, *ttr_settings([-0.9, -0.5, -0.25, 0.0], blocks=[-2, -1], features=["q", "k", "v"])]
    assert len({s.name for s in settings}) == len(settings)
    hw = torch.tensor([[170, 190], [160, 200], [180, 210], [168, 196]])
    scale = torch.tensor([[14.0, 14.0], [13.0, 14.5], [14.0, 14.0], [15.0, 14.0]], dtype=torch.float64)
    got = _score_batch(rec, layout, settings, k_patches=30, scale=scale, hw=hw)
    on_cut, boxes, met_subnormal = 0, set(), 0
    for s in settings:
        f = patch_features(feats[s.which][s.block], layout)
        a = similarity(f, bias=s.bias, normalize=s.normalize)
        on_cut += int((a == 0).sum())
        met_subnormal += int(_subnormal(a).sum())
        one = lost(f, GRID, k_patches=30, bias=s.bias, normalize=s.normalize, scale=scale, image_hw=hw).boxes
        assert got[s.name].dtype == one.dtype and torch.equal(got[s.name], one), s.name
        boxes.add(tuple(one.flatten().tolist()))
    assert on_cut > 10_000 and len(boxes) > 3  # entries on the cut, and settings that disagree
    assert (met_subnormal > 0) == subnormal
