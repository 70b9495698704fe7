"""Test-time registers ([TTR], notebook 10) on planted truth: random ViTs whose chosen MLP units at a chosen
block are made to write a high-norm vector on chosen patches."""

from __future__ import annotations

import pytest
import torch

from conftest import small_vit
from vitreg import planting
from vitreg.measure import ttr
from vitreg.core.capture import capture
from vitreg.core.models import get_spec
from vitreg.core.weights import LoadedModel

SIZE = 56
BLOCK, UNITS, PATCHES = 1, [3, 17, 40], [2, 9]
CUT = 150.0


def loaded_model(name: str) -> LoadedModel:
    spec = get_spec(name)
    size = SIZE if spec.patch_size == 14 else 64
    return LoadedModel(small_vit(name, depth=4, image_size=size), spec, (size, size), False, "random init")


@pytest.fixture(params=["dinov2_s", "dinov2_s_reg", "clip_b16_laion"])
def loaded(request) -> LoadedModel:
    return loaded_model(request.param)


def images(loaded: LoadedModel, n: int = 5) -> torch.Tensor:
    return torch.randn(n, 3, *loaded.image_size)


def plant(loaded: LoadedModel, **kw):
    tokens = [loaded.layout.num_prefix + p for p in PATCHES]
    return planting.planted_register_neurons(loaded.model, BLOCK, UNITS, tokens, **kw)


def norms(loaded: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode(), capture(loaded.model, norms=[-1]) as rec:
        loaded.model.forward_features(x)
    return rec.norms[-1]


def detect(loaded: LoadedModel, x: torch.Tensor, **kw) -> ttr.RegisterNeurons:
    args = {"detect_block": -1, "threshold": CUT, "highest_layer": 2, "top_k": len(UNITS), "batch_size": 2, **kw}
    return ttr.find_register_neurons(loaded, x, **args)[0]


def test_detection_returns_exactly_the_planted_neurons(loaded):
    x = images(loaded)
    with plant(loaded):
        found, scores = ttr.find_register_neurons(loaded, x, detect_block=-1, threshold=CUT, highest_layer=2,
                                                  top_k=len(UNITS), batch_size=2)
    assert set(found.neurons) == {(BLOCK, u) for u in UNITS}
    assert scores.outlier_tokens == [len(PATCHES)] * len(x)  # exactly the planted patches are outliers
    assert scores.n_used == len(x)


def test_no_outliers_no_images_used_and_highest_layer_excludes_later_blocks(loaded):
    x = images(loaded, 3)
    assert ttr.neuron_scores(loaded, x, detect_block=-1, threshold=CUT).n_used == 0  # nothing planted: all skipped
    with plant(loaded):
        found = detect(loaded, x, highest_layer=BLOCK - 1)
    assert all(b < BLOCK for b, _ in found.neurons)


def test_sparsity_filter_drops_a_unit_active_on_most_tokens():
    loaded = loaded_model("dinov2_s")
    x = images(loaded, 3)
    everywhere = list(range(loaded.layout.num_tokens))
    with plant(loaded), planting.planted_register_neurons(loaded.model, BLOCK, [50], everywhere, activation=3.0,
                                                          norm=1.0, seed=1):
        with_filter = detect(loaded, x, top_k=4, sparsity=True)
        without = detect(loaded, x, top_k=4, sparsity=False)
    assert (BLOCK, 50) in without.neurons
    assert (BLOCK, 50) not in with_filter.neurons


def test_intervention_moves_the_high_norm_into_the_extra_token(loaded):
    x = images(loaded)
    with plant(loaded):
        found = detect(loaded, x)
        before = norms(loaded, x)
        with ttr.test_time_register(loaded, found) as layout:
            after = norms(loaded, x)
            assert loaded.layout is layout and layout.num_extra == 1
    assert (loaded.layout.patches(before) > CUT).sum() == len(x) * len(PATCHES)
    parts = layout.split(after)
    assert (parts.patch < CUT).all()
    assert (parts.extra[:, 0] > CUT).all()


def test_shift_moves_the_outliers_to_the_chosen_patch():
    loaded = loaded_model("dinov2_s")
    x = images(loaded, 3)
    with plant(loaded):
        found = detect(loaded, x)
        with ttr.test_time_register(loaded, found, shift_to=5) as layout:
            after = layout.patches(norms(loaded, x))
    assert layout.num_extra == 0
    assert (after[:, 5] > CUT).all()
    assert (torch.cat([after[:, :5], after[:, 6:]], dim=1) < CUT).all()


def test_a_batch_equals_single_images(loaded):
    x = images(loaded, 4)
    with plant(loaded):
        found = detect(loaded, x)
        with torch.inference_mode(), ttr.test_time_register(loaded, found):
            batch = loaded.model.forward_features(x)
            singles = torch.cat([loaded.model.forward_features(x[i:i + 1]) for i in range(len(x))])
    assert batch.shape[1] == loaded.layout.num_tokens + 1
    torch.testing.assert_close(batch, singles, rtol=1e-4, atol=1e-4)


def test_the_model_is_untouched_after_the_context_exits(loaded):
    x = images(loaded, 2)
    with torch.inference_mode():
        ref = loaded.model.forward_features(x)
    base = loaded.layout
    with ttr.test_time_register(loaded, {BLOCK: UNITS, 2: [0]}):
        pass
    with pytest.raises(RuntimeError), ttr.test_time_register(loaded, {BLOCK: UNITS}):
        raise RuntimeError("hooks must go also on errors")
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model.forward_features(x), ref)
    assert loaded.layout is base


def test_neuron_lists_are_data(tmp_path, loaded):
    x = images(loaded, 2)
    with plant(loaded):
        found = detect(loaded, x, image_names=["a.jpg", "b.jpg"])
    back = ttr.RegisterNeurons.load(found.save(tmp_path / "neurons.json"))
    assert back == found
    assert back.model == loaded.spec.key and back.images == ["a.jpg", "b.jpg"]
    assert back.settings["threshold"] == CUT and back.settings["top_k"] == len(UNITS)
    assert back.by_block() == {BLOCK: sorted(UNITS)}


def test_the_intervention_follows_a_model_resized_inside_the_context():
    """LOST's padded protocol resizes the model per batch inside the context: the extra token stays the last
    token at every grid, so the high norm still lands there and not on a patch."""
    from vitreg.core.resize import resizable

    loaded = loaded_model("dinov2_s_reg")
    x = images(loaded, 3)
    with plant(loaded):
        found = detect(loaded, x)
        with ttr.test_time_register(loaded, found), resizable(loaded) as resize_to:
            resize_to((84, 70))  # 6x5 patches instead of 4x4
            after = norms(loaded, torch.randn(3, 3, 84, 70))
    layout = loaded.layout.__class__(1, 4, (6, 5), 1)
    parts = layout.split(after)
    assert (parts.patch < CUT).all()
    assert (parts.extra[:, 0] > CUT).all()
    assert loaded.layout.num_extra == 0 and loaded.image_size == (SIZE, SIZE)


def test_lost_runs_inside_a_test_time_register_at_every_padded_size():
    """[TTR]'s LOST row: the extra token is dropped from the features at every padded size (two sizes here),
    and the model and its layout are restored after."""
    import numpy as np

    from vitreg.measure import lost
    from vitreg.data.boxes import SyntheticBoxes

    class TwoSizes:
        name = "two_sizes"
        sets = (SyntheticBoxes(n=2, image_size=(60, 90), seed=2), SyntheticBoxes(n=2, image_size=(40, 40), seed=3))

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return self.sets[i % 2][i // 2]

        def image_hw(self, i):
            return self.sets[i % 2].image_hw(i // 2)

    loaded = loaded_model("dinov2_s_reg")
    base = loaded.layout
    sweep = lost.ttr_settings([0.0, -0.5], blocks=(-1,), features=("k",))
    with plant(loaded):
        found = detect(loaded, images(loaded, 3))
        with ttr.test_time_register(loaded, found):
            d = lost.discover(loaded, TwoSizes(), sweep, batch_size=2, progress=False)
    b = d.boxes[sweep[0].name]
    hw = np.array([[60, 90], [40, 40]] * 2, dtype=float)
    assert b.shape == (4, 4) and (b[:, 2] <= hw[:, 1]).all() and (b[:, 3] <= hw[:, 0]).all()
    assert loaded.layout is base and loaded.image_size == (SIZE, SIZE)


def test_lost_rows_take_the_best_setting_per_role_and_the_gain_and_say_why_a_dataset_is_missing():
    from vitreg.measure import lost

    sweep = lost.ttr_settings([0.0, -0.5], blocks=(-1,), features=("k",))

    def found(a: float, b: float) -> lost.Discovery:
        return lost.Discovery("VOC07", "m", sweep, {sweep[0].name: a, sweep[1].name: b}, {}, {}, ["x", "y"])

    runs = {"no_reg": ("dinov2_l", {"VOC07": found(30.0, 20.0)}),
            "test_time_register": ("dinov2_l", {"VOC07": found(40.0, 55.0)}),
            "reg": ("dinov2_l_reg", {"VOC07": found(50.0, 10.0)})}
    rows = ttr.lost_rows(runs, sweep, ["VOC07", "VOC12"], missing=lambda name: f"{name} absent")
    assert rows["no_reg"]["voc07"] == 30.0 and rows["test_time_register"]["voc07"] == 55.0
    assert rows["test_time_register"]["voc07_setting"] == sweep[1].name and rows["reg"]["model"] == "dinov2_l_reg"
    assert rows["ttr_gain"] == {"model": "dinov2_l", "voc07": 25.0, "voc12": {"skipped": "VOC12 absent"}}


def test_the_probed_register_token_is_the_extra_token_of_the_output():
    import numpy as np

    from vitreg.core.images import preprocess

    loaded = loaded_model("dinov2_s_reg")
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(3)]
    x = preprocess(pictures, loaded)
    with plant(loaded):
        found = detect(loaded, x)
        feats = ttr.ttr_token_features(loaded, found, pictures, batch_size=2, progress=False)
        with torch.inference_mode(), ttr.test_time_register(loaded, found):
            out = loaded.forward(x)
    assert set(feats) == {"cls", "central", "test_time_register"}
    torch.testing.assert_close(feats["test_time_register"], out[:, -1].float(), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(feats["cls"], out[:, 0].float(), rtol=1e-3, atol=1e-3)
    h, w = loaded.layout.grid
    torch.testing.assert_close(feats["central"], out[:, 5 + (h // 2) * w + w // 2].float(), rtol=1e-3, atol=1e-3)


def test_highest_layer_minus_one_means_no_filter_and_other_negatives_are_refused():
    loaded = loaded_model("dinov2_s")
    x = images(loaded, 3)
    with plant(loaded):
        found = detect(loaded, x, highest_layer=-1)
        assert set(found.neurons) == {(BLOCK, u) for u in UNITS}  # [TTR]'s -1: every block may hold a neuron
        with pytest.raises(ValueError, match="-1 for no filter"):
            detect(loaded, x, highest_layer=-2)


def test_no_detection_image_with_an_outlier_stops_with_a_reason():
    loaded = loaded_model("dinov2_s")
    with pytest.raises(ttr.NoOutliersError, match="none of the 3 detection images"):
        detect(loaded, images(loaded, 3))


MARK = 50.0  # a pixel value that marks an image as one with outliers


@pytest.fixture
def two_of_eight_with_outliers():
    """A dinov2_s whose first two of eight images get the planted outliers and a decoy unit active on all of
    their tokens; the six others get neither. Pooled over the eight images, the decoy is below 0.5 on 3/4 of
    the tokens (sparse); in each image that has outliers it is active everywhere (not sparse)."""
    loaded = loaded_model("dinov2_s")
    net, decoy = loaded.model, 50
    marked: list[torch.Tensor] = []
    x = images(loaded, 8)
    x[:2, 0, 0, 0] = MARK
    tokens = torch.tensor([loaded.layout.num_prefix + p for p in PATCHES])
    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(net.blocks[BLOCK].mlp.fc2.out_features, generator=gen)
    direction = 500.0 * direction / direction.norm()

    def mark(_m, args):
        marked.append(args[0][:, 0, 0, 0] == MARK)

    def fire(_m, _a, out):
        out, m = out.clone(), marked[-1]
        out[:, :, decoy] = torch.where(m[:, None], torch.tensor(3.0), torch.tensor(0.0))
        rows = out[m]
        rows[:, tokens[:, None], torch.tensor(UNITS)] = 10.0
        out[m] = rows
        return out

    def write(_m, _a, out):
        out, m = out.clone(), marked[-1]
        rows = out[m]
        rows[:, tokens] += direction
        out[m] = rows
        return out

    handles = [net.patch_embed.register_forward_pre_hook(mark), net.blocks[BLOCK].mlp.act.register_forward_hook(fire),
               net.blocks[BLOCK].register_forward_hook(write)]
    yield loaded, x, decoy
    for h in handles:
        h.remove()


def test_sparsity_is_decided_per_image_over_the_images_with_outliers(two_of_eight_with_outliers):
    loaded, x, decoy = two_of_eight_with_outliers
    with_filter, scores = ttr.find_register_neurons(loaded, x, detect_block=-1, threshold=CUT, highest_layer=2,
                                                    top_k=len(UNITS) + 1, batch_size=3)
    without = detect(loaded, x, top_k=len(UNITS) + 1, sparsity=False)
    assert scores.n_used == 2 and scores.outlier_tokens[2:] == [0] * 6
    assert (BLOCK, decoy) in without.neurons  # active on the outlier tokens, so it ranks without the filter
    assert (BLOCK, decoy) not in with_filter.neurons  # not sparse in either image that has outliers: scores 0
    assert {(BLOCK, u) for u in UNITS} <= set(with_filter.neurons)
    assert scores.sparse_scores[BLOCK, decoy] == 0.0 and scores.sparse[BLOCK, decoy] == 0.0


def test_measure_reads_outliers_at_the_detection_block_and_the_scale_free_high_mode():
    """Planted: outliers of norm 400 at the detection block only (the last block has lost them), and a separate
    high mode at the last block (10% of patches at 30x the rest) for a model whose cut-off (30) is a choice."""
    from vitreg.core.tokens import TokenLayout

    lay = TokenLayout(num_cls=1, num_reg=0, grid=(8, 8))
    g = torch.Generator().manual_seed(0)
    last = 5 + torch.rand(4, 65, generator=g)                       # unimodal, below the cut-off 30
    detect = last.clone()
    detect[:, 1:7] = 400.0                                           # 6 of 64 patches per image: 9.375%
    attn = torch.softmax(torch.randn(4, 2, 1, 65, generator=g), dim=-1)
    m = ttr.measure(lay, last, attn, threshold=150.0, detect_norms=detect)
    assert m.summary["patch_outlier_pct"] == 0.0
    assert m.summary["detect_block_outlier_pct"] == pytest.approx(600 / 64)
    assert m.summary["patch_high_mode_pct"] == 0.0                  # unimodal: no high mode
    bimodal = last.clone()
    bimodal[:, 1:8] = 150.0 + torch.rand(4, 7, generator=g)          # 7 of 64 patches 30x the rest
    m = ttr.measure(lay, bimodal, attn, threshold=30.0)
    assert m.summary["patch_high_mode_pct"] == pytest.approx(700 / 64, abs=1.0)
    assert "detect_block_outlier_pct" not in m.summary
