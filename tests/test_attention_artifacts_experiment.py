"""Notebook 01's steps and results record (Fig. 2, App. E, App. F) on planted attention spikes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vitreg.claims.paper import paper_numbers
from vitreg.core.tokens import TokenLayout
from vitreg.experiments import attention_artifacts as exp
from vitreg.experiments.base import as_numbers, record_paths
from vitreg.measure import attention
from vitreg.planting import attention_peak

GRID = (6, 6)
LAYOUT = TokenLayout(num_cls=1, num_reg=0, grid=GRID)


def _scores(name: str, family: str, spike: float, n_images: int = 4, heads: int = 3) -> exp.ModelScores:
    """A model whose [CLS] attention is uniform, with ``spike`` of it moved onto one patch per image."""
    attn = torch.full((n_images, heads, 1, 1 + 36), 1.0 / 37)
    if spike:   # on patch 0, 5, 10, ... of the images
        attn = attention_peak(attn, LAYOUT, torch.arange(n_images) * 5, mass=spike)
    art = attention.artifact_maps(attn, LAYOUT, outliers=torch.zeros(n_images, 36, dtype=torch.bool))
    loaded = SimpleNamespace(spec=SimpleNamespace(paper_name=name, family=family), layout=LAYOUT,
                             image_size=(84, 84))
    return exp.model_scores(loaded, art), art


def _record(models=("dino_s16", "dinov2_s", "mae_b16"), spikes=(0.0, 0.6, 0.0)):
    p = exp.EXPERIMENT.build({"models": list(models), "head_model": "dinov2_s", "plant": True})
    families = {"dino_s16": "dino", "dinov2_s": "dinov2", "mae_b16": "mae"}
    parts = {m: _scores(m, families[m], s) for m, s in zip(models, spikes)}
    head = parts["dinov2_s"][1].head_scores if "dinov2_s" in parts else None
    return p, exp.build_record(p, {m: part[0] for m, part in parts.items()}, head)


def test_every_paper_number_of_01_resolves_to_a_record_field():
    keys = {n.key for n in paper_numbers() if n.notebook == "01_attention_artifacts" and n.key}
    assert keys and keys <= record_paths(exp.EXPERIMENT.record)


def test_the_planted_spike_puts_the_artifact_model_above_dino_and_the_control_below():
    p, r = _record()
    assert r.claims.artifact_minus_dino["dinov2_s"] > 0.5
    assert r.claims.control_minus_artifacts["mae_b16"] < -0.5
    assert r.claims.artifact_minus_dino["dinov2_l"] == {"skipped": "dinov2_l not in models"}
    assert r.claims.control_minus_artifacts["mae_l16"] == {"skipped": "mae_l16 not in models"}
    assert r.head_model.heads_above_dino_pct == 100.0
    assert all(exp.planted_truths(r, p).values())


def test_a_spike_in_the_control_is_not_a_recovered_truth():
    p, r = _record(spikes=(0.0, 0.6, 0.9))
    truths = exp.planted_truths(r, p)
    assert not truths["the control scores below every artifact model"]
    assert truths["artifact models score above DINO"]


def test_without_dino_the_head_claim_is_skipped_with_why():
    p, r = _record(models=("dinov2_s", "mae_b16"), spikes=(0.6, 0.0))
    assert r.head_model.heads_above_dino_pct == {"skipped": "no DINO model in models"}
    assert not exp.planted_truths(r, p)["at least 75% of dinov2_s's heads score above DINO's"]


def test_the_saved_numbers_keep_the_keys_of_the_results_file():
    _, r = _record()
    numbers = as_numbers(r)
    assert set(numbers) == {"models", "top_frac", "score", "display_size", "upsample_mode", "planted", "claims",
                            "head_model"}
    assert set(numbers["models"]["dinov2_s"]) == {
        "label", "family", "grid", "image_size", "per_head_score", "artifact_score_mean", "artifact_score_median",
        "top_share_mean", "top_share_median", "top_share_uniform", "top_frac", "outlier_share_mean",
        "outlier_fraction"}
    assert set(numbers["head_model"]) == {"model", "heads_above_dino_pct", "dino_mean_head_score"}
    assert [k for k, _, _ in exp.checks(r)][-1] == "head_model.heads_above_dino_pct"


def test_check_head_model_says_what_to_do():
    with pytest.raises(ValueError, match="must be one of models"):
        exp.check_head_model(exp.EXPERIMENT.build({"models": ["dino_b16"], "head_model": "dinov2_l"}))


def test_artifacts_plants_spikes_only_in_artifact_families_of_a_smoke_run():
    torch.manual_seed(0)
    images = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(2)]
    got = {}
    for name, plant in (("dinov2_s", True), ("dinov2_s", False), ("dino_s16", True)):
        p = exp.EXPERIMENT.build({"models": [name], "head_model": name, "pretrained": False, "device": "cpu",
                                  "image_size": 56 if name == "dinov2_s" else 64, "plant": plant, "batch_size": 2})
        art = exp.artifacts(exp.load(name, p), images, p, torch.Generator().manual_seed(0))
        got[name, plant] = art.summary["artifact_score_mean"]
    assert got["dinov2_s", True] > 0.5 > got["dinov2_s", False]
    assert got["dino_s16", True] < 0.2   # DINO is the reference without artifacts: nothing planted
