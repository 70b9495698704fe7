"""The paper's numbers a notebook is judged on, looked up by results key (never by the entries' ids)."""

from __future__ import annotations


def test_the_paper_reference_rows_are_looked_up_by_results_key():
    from vitreg.claims.paper import table3, values_under

    assert values_under("08_lost", "plain.dino") == table3()["paper: DINO ViT-S/16"]
    assert values_under("08_lost", "ttr_sweep.reg") == {"voc07": 56.2, "voc12": 60.2, "coco20k": 42.3}
    assert values_under("08_lost", "nothing.here") == {}
