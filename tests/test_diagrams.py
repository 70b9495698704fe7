"""The teaching diagrams of vitreg.present.plots.diagrams draw what they say (Paper: §2.2, Fig. 3)."""

import matplotlib.pyplot as plt
import pytest

from vitreg.present.plots import diagrams


def texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [ax.get_title() for ax in fig.axes]


@pytest.mark.parametrize("n_registers", [0, 1, 4, 7])
def test_token_sequence_draws_one_box_per_register_in_and_out(n_registers):
    fig = diagrams.token_sequence(n_registers=n_registers, n_patches=256, grid=(16, 16))
    labels = texts(fig)
    regs = [t for t in labels if t.startswith("reg") and t[3:].isdigit()]
    assert len(regs) == 2 * n_registers                       # once at the input, once at the output
    assert sorted(set(regs)) == sorted(f"reg{i + 1}" for i in range(n_registers))
    assert labels.count("[CLS]") == 2
    assert "p1" in labels and "p256" in labels                # long rows are elided but keep the last patch
    assert any("discarded" in t for t in labels) == (n_registers > 0)
    assert any("schematic" in t for t in labels)
    assert any("16×16" in t for t in labels)
    plt.close(fig)


def test_token_sequence_order_is_cls_registers_patches():
    fig = diagrams.token_sequence(n_registers=2, n_patches=4)
    ax = fig.axes[0]
    boxes = {t.get_text(): t.get_position() for t in ax.texts if t.get_text() in ("[CLS]", "reg1", "reg2", "p1", "p4")}
    xs = [boxes[k][0] for k in ("[CLS]", "reg1", "reg2", "p1", "p4")]
    assert xs == sorted(xs) and len(set(xs)) == 5
    plt.close(fig)


def test_token_sequence_rejects_impossible_counts():
    with pytest.raises(ValueError):
        diagrams.token_sequence(n_registers=-1)
    with pytest.raises(ValueError):
        diagrams.token_sequence(n_patches=0)


def test_outlier_norms_draws_tall_bars_only_before_the_layernorm():
    outliers = (3, 10, 11)
    fig = diagrams.outlier_norms(n_tokens=20, outliers=outliers, normal=40.0, high=400.0)
    before, after = fig.axes
    h_before = [p.get_height() for p in before.patches]
    h_after = [p.get_height() for p in after.patches]
    assert len(h_before) == len(h_after) == 20
    tall = sorted(range(20), key=lambda i: -h_before[i])[:3]
    assert sorted(tall) == list(outliers)
    normal = [h for i, h in enumerate(h_before) if i not in outliers]
    assert min(h_before[i] for i in outliers) > 5 * max(normal)
    assert max(h_after) / min(h_after) < 1.5                  # after the LayerNorm: all alike
    assert "before" in before.get_title() and "after" in after.get_title()
    plt.close(fig)


def test_outlier_norms_rejects_indices_outside_the_row():
    with pytest.raises(ValueError):
        diagrams.outlier_norms(n_tokens=5, outliers=(7,))
