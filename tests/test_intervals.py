"""Bootstrap intervals (vitreg.measure.intervals) and the measured-value form (vitreg.claims.measured), on
planted truth: samples drawn around a known mean, and paired operands that share a per-image effect."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vitreg.claims.measured import Measured, MeasuredError, derive_measured, needed_n, parse_measured
from vitreg.measure.intervals import bootstrap_ci, seed_ci


def test_the_interval_of_a_mean_holds_the_planted_mean_at_the_normal_width() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, 900)
    m = bootstrap_ci(x, seed=1)
    assert m["n"] == 900 and m["ci"][0] < 3.0 < m["ci"][1] and m["value"] == pytest.approx(x.mean())
    assert (m["ci"][1] - m["ci"][0]) == pytest.approx(2 * 1.96 * 2.0 / 30, rel=0.15)
    assert bootstrap_ci(x, seed=1) == m  # seeded


def test_a_paired_difference_cancels_what_the_images_share() -> None:
    """Each image moves both operands by the same amount (sd 5); the planted difference is 0.3 (sd 0.1).
    Paired, the interval is about 0.3 ± 0.007 and excludes 0; taken apart, the operands' intervals hold 0."""
    rng = np.random.default_rng(0)
    shared = rng.normal(50.0, 5.0, 800)
    a, b = shared + 0.3 + rng.normal(0, 0.1, 800), shared
    paired = bootstrap_ci(a, b)
    assert paired["ci"][0] > 0.28 and paired["ci"][1] < 0.32
    apart = derive_measured("delta", parse_measured(bootstrap_ci(a)), parse_measured(bootstrap_ci(b)))
    assert apart.lo < 0 < apart.hi  # the same numbers, unpaired: no effect cannot be told from 0.3
    ratio = bootstrap_ci(a, b, op="ratio")
    assert ratio["ci"][0] < (a.mean() / b.mean()) < ratio["ci"][1] and ratio["ci"][0] > 1


def test_bad_samples_are_refused_with_what_to_do() -> None:
    with pytest.raises(ValueError, match="one value per image each"):
        bootstrap_ci([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_ci([1.0])
    with pytest.raises(ValueError, match="not finite"):
        bootstrap_ci([1.0, math.nan, 2.0])
    assert bootstrap_ci([2.0, 2.0, 2.0]) == {"value": 2.0, "ci": [2.0, 2.0], "n": 3}


def test_a_measured_value_reads_both_forms_and_refuses_a_broken_one() -> None:
    assert parse_measured(2.5) == Measured(2.5)
    m = parse_measured({"value": 2.5, "ci": [2.0, 3.0], "n": 100, "resolution": 518, "proxy": True,
                        "budget": {"n_train": 8000}})
    assert (m.lo, m.hi, m.half_width, m.n, m.proxy) == (2.0, 3.0, 0.5, 100, True)
    assert parse_measured(m.to_json()) == m
    for broken, message in [({"value": 2.5, "ci": [3.0, 4.0]}, "lo <= value <= hi"),
                            ({"value": 2.5, "ci": [1.0]}, "two finite numbers"),
                            ({"value": "2.5"}, "finite number"), ({"value": 1.0, "n": 0}, "positive integer"),
                            ({"value": 1.0, "cl": [0, 2]}, "unknown fields")]:
        with pytest.raises(MeasuredError, match=message):
            parse_measured(broken)


def test_needed_n_scales_with_the_square_of_the_width() -> None:
    m = Measured(0.1, (-0.2, 0.4), n=100)  # half-width 0.3: a distance of 0.1 needs 9x the images
    assert needed_n(m, 0.1) == 900
    assert needed_n(Measured(0.1), 0.1) is None and needed_n(m, 0.0) is None
    assert needed_n(m, 0.5) is None  # already narrower than that: more images would not decide it


def test_a_seed_interval_is_the_student_t_interval_of_the_seeds() -> None:
    """Three seeds at 1, 2, 3: mean 2, standard error 1/sqrt(3), t(0.975, 2 df) = 4.303."""
    m = seed_ci([1.0, 2.0, 3.0])
    assert m["value"] == 2.0 and m["n"] == 3
    assert m["ci"] == pytest.approx([2 - 4.3027 / math.sqrt(3), 2 + 4.3027 / math.sqrt(3)], abs=1e-3)
    assert seed_ci([0.3, 0.3, 0.3])["ci"] == [0.3, 0.3]  # identical seeds: no spread to report
    with pytest.raises(ValueError, match="at least 2"):
        seed_ci([0.3])
