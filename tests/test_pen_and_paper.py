"""The notebooks' pen-and-paper exercises: every stated answer (bold in the `solution` cell) recomputed with the
project's own code, so an answer and the code it describes cannot drift apart."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vitreg.core.tokens import TokenLayout
from vitreg.data.boxes import box_iou, corloc
from vitreg.measure.attention import artifact_score, uniform_top_share
from vitreg.measure.massive import is_massive
from vitreg.measure.norms import emergence_block
from vitreg.utils.paths import repo_root

NOTEBOOKS = repo_root() / "notebooks"


def _answers(name: str) -> str:
    """The text of notebook ``name``'s pen-and-paper answers (the `solution` cell after the prompt cell)."""
    cells = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())["cells"]
    ids = [c.get("id") for c in cells]
    assert "pen-and-paper" in ids, f"{name}: no pen-and-paper exercises"
    answer = cells[ids.index("pen-and-paper") + 1]
    assert answer["id"] == "pen-and-paper-answers" and "solution" in answer["metadata"]["tags"]
    return "".join(answer["source"])


def _pct(x: float, digits: int = 2) -> str:
    return f"**{100 * x:.{digits}f} %**"


def _one_hot(n: int, m: float) -> torch.Tensor:
    """A 16x16-style map: mass ``m`` on patch 0, the rest spread evenly over all ``n`` patches."""
    side = int(math.isqrt(n))
    flat = torch.full((n,), (1 - m) / n)
    flat[0] += m
    return flat.reshape(side, side)


def _ln(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.layer_norm(x, x.shape[-1:])


def _neighbour_counts(h: int, w: int) -> dict[int, int]:
    counts: dict[int, int] = {}
    for i in range(h):
        for j in range(w):
            n = sum(0 <= i + di < h and 0 <= j + dj < w for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)))
            counts[n] = counts.get(n, 0) + 1
    return counts


def _expected() -> dict[str, list[str]]:
    torch.manual_seed(0)
    vit_l_reg_518 = TokenLayout(num_cls=1, num_reg=4, grid=(37, 37))
    x = torch.randn(1024) * 7 + 3
    y = torch.randn(4096)
    shares = torch.tensor([0, 0, 0, 0.002, 0.006, 0.004, 0.007, 0.008, 0.009, 0.009, 0.008, 0.003])
    a, b = torch.tensor([1.0, 0, 1]), torch.tensor([1.0, 1, 1])
    corners = _neighbour_counts(37, 37)
    l224, l224_reg = TokenLayout(1, 0, (16, 16)), TokenLayout(1, 4, (16, 16))
    l518, l518_reg = TokenLayout(1, 0, (37, 37)), TokenLayout(1, 4, (37, 37))
    lin224, lin518 = l224_reg.num_tokens / l224.num_tokens, l518_reg.num_tokens / l518.num_tokens
    gt = [np.array([[0, 0, 10, 10]])] * 10
    pred = np.array([[0, 0, 10, 10]] * 6 + [[50, 50, 60, 60]] * 4)
    massive = is_massive(torch.tensor([[120.0]]), torch.tensor([0.05])), is_massive(torch.tensor([[120.0]]), torch.tensor([0.2]))
    return {
        "00_tour": [f"**{vit_l_reg_518.num_patches}** patches", f"**{vit_l_reg_518.num_tokens}** tokens",
                    f"**{float(((x - x.mean()) / x.std(unbiased=False)).norm()):.0f}**"],
        "01_attention_artifacts": [f"**{math.ceil(0.02 * 256)}**", f"**{uniform_top_share(256):.4f}**",
                                   f"**{float(artifact_score(_one_hot(256, 1.0))):.0f}**",
                                   f"**{float(artifact_score(_one_hot(256, 0.5))):.1f}**",
                                   f"**{abs(float(artifact_score(torch.full((16, 16), 1 / 256)))):.0f}**"],
        "02_high_norm_tokens": [f"**{round(0.0237 * 37 * 37)}**",
                                f"**{float(_ln(10 * y).norm() / _ln(y).norm()):.0f}**"],
        "03_emergence": [f"Block **{emergence_block(shares) + 1}**", f"code index {emergence_block(shares)}"],
        "04_redundant_patches": [f"**{float(torch.nn.functional.cosine_similarity(a, b, dim=0)):.3f}**",
                                 f"**{corners[4]}**", f"**{corners[3]}**", f"**{corners[2]}** corners"],
        "05_local_information": [_pct(1 / 256), f"**{14 * 14 * 3}**"],
        "06_global_information": [f"**{100 / 10:.0f} %**",
                                  f"**{sum(p.numel() for p in torch.nn.Linear(1024, 10).parameters())}**"],
        "07_registers": [_pct(lin224 - 1), _pct(lin224 ** 2 - 1), _pct(lin518 - 1), _pct(lin518 ** 2 - 1),
                         f"**{l224_reg.num_tokens - 1}** tokens", f"**{l224_reg.num_patches}** are patches"],
        "08_lost": ["**1/3**" if box_iou([0, 0, 10, 10], [5, 0, 15, 10]).item() == pytest.approx(1 / 3) else "IoU?",
                    f"**{corloc(pred, gt):.0f} %**"],
        "09_downstream": [f"**{sum(p.numel() for p in torch.nn.Linear(1024, 150).parameters())}**",
                          f"**{100 * (0.6 + 0.3) / 2:.0f} %**"],
        "10_test_time_registers": [f"**{TokenLayout(1, 0, (16, 16), num_extra=1).num_tokens}**",
                                   _pct(45 / (18 * 4096), 3)],
        "11_beyond_the_paper": ["**Yes**" if massive[0].item() else "**No**",
                                "**No**" if not massive[1].item() else "**Yes**"],
    }


EXPECTED = _expected()


def test_every_notebook_has_pen_and_paper_exercises():
    assert sorted(EXPECTED) == sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_stated_answer_is_what_the_code_computes(name):
    text = _answers(name)
    missing = [a for a in EXPECTED[name] if a not in text]
    assert not missing, f"{name}: the answers do not state {missing} (the code's values)"
