"""Notebook 04's steps and results record (Fig. 5a) on planted similarity maps and norms."""

from __future__ import annotations

import pytest
import torch

from vitreg.claims.paper import paper_numbers
from vitreg.experiments import redundant_patches as exp
from vitreg.experiments.base import as_numbers, record_paths

#: The keys notebook 04 has always saved (the report and the verdicts read them).
SAVED = {
    "similarity": {"model", "measured_at", "outlier_mean", "normal_mean", "outlier_median", "normal_median", "auc",
                   "n_outlier", "n_normal", "outlier_minus_normal"},
    "similarity_with_pos": {"model", "measured_at", "outlier_mean", "normal_mean", "auc"},
    "position_embedding_changes_result": None, "threshold": None, "block": None, "image_size": None, "planted": None,
}


def _planted(n_images: int = 6, grid: tuple[int, int] = (5, 5)) -> dict[str, torch.Tensor]:
    """Similarities in [0.2, 0.6] with 0.95 on the 2 outlier patches per image (norm 400 against about 10)."""
    gen = torch.Generator().manual_seed(1)
    embed = 0.2 + 0.4 * torch.rand(n_images, *grid, generator=gen)
    norms = 10 + torch.rand(n_images, grid[0] * grid[1], generator=gen)
    for b in range(n_images):
        for cell in (b % 25, (b * 7 + 3) % 25):
            embed.view(n_images, -1)[b, cell] = 0.95
            norms[b, cell] = 400.0
    return {"embed": embed, "embed_pos": embed - 0.01, "norms": norms}


def _record(sims: dict[str, torch.Tensor]) -> exp.Record:
    p = exp.EXPERIMENT.build({"plant": True})
    cut, mask = exp.outliers(sims["norms"], p)
    return exp.build_record(p, cut, exp.summaries(sims, mask))


def test_every_paper_number_of_04_resolves_to_a_record_field():
    keys = {n.key for n in paper_numbers() if n.notebook == "04_redundant_patches" and n.key}
    assert keys and keys <= record_paths(exp.EXPERIMENT.record)


def test_the_record_separates_the_planted_redundant_outliers():
    r = _record(_planted())
    s = r.similarity
    assert s.n_outlier == 12 and s.n_normal == 6 * 25 - 12
    assert s.outlier_mean == pytest.approx(0.95) and s.auc == 1.0
    assert 0.2 < s.normal_mean < 0.6 and s.outlier_minus_normal > 0.3
    assert r.similarity_with_pos.outlier_mean == pytest.approx(0.94)
    assert r.position_embedding_changes_result is False and r.threshold == 150.0
    assert all(exp.planted_truths(r).values())
    assert set(as_numbers(r)) == set(SAVED)
    for part, fields in SAVED.items():
        if fields is not None:
            assert set(as_numbers(r)[part]) == fields, part


def test_outliers_on_dissimilar_patches_are_not_a_recovered_truth():
    sims = _planted()
    sims["embed"] = 1.15 - sims["embed"]   # the outliers are now the least similar patches
    sims["embed_pos"] = sims["embed"]
    truths = exp.planted_truths(_record(sims))
    assert not truths["planted outliers are more similar to their neighbours than normal patches"]
    assert not truths["same order after the position embedding"]


def test_a_run_without_outliers_records_why_and_misses_the_planted_truth():
    sims = _planted()
    sims["norms"] = sims["norms"].clamp(max=20)
    r = _record(sims)
    assert r.similarity.n_outlier == 0
    assert r.similarity.auc == {"skipped": exp.NO_OUTLIERS} == r.similarity.outlier_minus_normal
    assert not any(exp.planted_truths(r).values())


def test_checks_are_the_four_similarity_numbers_of_the_model():
    checks = exp.checks(_record(_planted()))
    assert [k for k, _, _ in checks] == ["similarity.outlier_minus_normal", "similarity.auc",
                                         "similarity.outlier_mean", "similarity.normal_mean"]
    assert {m for _, _, m in checks} == {"dinov2_g"}
