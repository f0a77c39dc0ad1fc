"""The verdict on a claim over seeds (claims.py): a table of paired differences and the verdict each gets."""

from __future__ import annotations

import math

import pytest

from bnviz.explorer.claims import MIN_SEEDS, ONE_IMAGE, Verdict, paired, verdict_word

M = 0.01
CASES = [  # (differences, margin, kind, k, against, word)
    ((0.02, 0.03, 0.05), M, "holds", 3, 0, "holds on 3 of 3 seeds"),
    ((0.02, 0.03, 0.05, 0.02, 0.011), M, "holds", 5, 0, "holds on 5 of 5 seeds"),
    ((0.02, 0.03, 0.01), M, "mixed", 2, 0, "mixed: as claimed on 2 of 3 seeds, the other way on 0"),  # 0.01: not beyond
    ((0.05, -0.02, 0.04), M, "mixed", 2, 1, "mixed: as claimed on 2 of 3 seeds, the other way on 1"),
    ((0.02, -0.02, 0.0), M, "no difference", 1, 1, "no difference beyond the margin (1 of 3 seeds as claimed)"),
    ((-0.02, -0.03, -0.05), M, "reversed", 0, 3, "the other way on 3 of 3 seeds"),
    ((0.5, 0.5), M, "too few seeds", 2, 0, "2 seeds: too few for a verdict"),
    ((0.5,), M, "too few seeds", 1, 0, "1 seed: too few for a verdict"),
    ((1.0, 1.0, 0.0), 0.0, "mixed", 2, 0, "mixed: as claimed on 2 of 3 seeds, the other way on 0"),  # margin 0: ties
    ((math.nan, math.nan, math.nan), M, "no difference", 0, 0,
     "no difference beyond the margin (0 of 3 seeds as claimed)"),  # a NaN is never as claimed
]


@pytest.mark.parametrize("differences, margin, kind, k, against, word", CASES, ids=[c[2] + str(i)
                                                                                   for i, c in enumerate(CASES)])
def test_the_verdict_of_each_table_of_differences(differences, margin, kind, k, against, word):
    v = Verdict(differences, margin)
    assert (v.kind, v.k, v.against, v.n) == (kind, k, against, len(differences)), (v.kind, v.k, v.against)
    assert v.holds == (kind == "holds")
    assert verdict_word(v) == word, (verdict_word(v), word)


def test_paired_differences_are_claimed_minus_other_seed_by_seed():
    v = paired((0.9, 0.8, 0.7), (0.5, 0.85, 0.7), ONE_IMAGE)
    assert v.differences == pytest.approx((0.4, -0.05, 0.0))
    assert (v.k, v.against, v.kind) == (1, 1, "mixed"), v
    with pytest.raises(ValueError):
        paired((0.9, 0.8), (0.5,), ONE_IMAGE)


def test_a_verdict_needs_at_least_min_seeds():
    assert MIN_SEEDS == 3
    assert Verdict((1.0,) * (MIN_SEEDS - 1), 0.0).kind == "too few seeds"
    assert Verdict((1.0,) * MIN_SEEDS, 0.0).kind == "holds"
    assert Verdict((1.0,) * MIN_SEEDS, 0.0).count() == "on 3 of 3 seeds"


def test_a_difference_of_exactly_one_test_image_is_never_beyond_the_margin():
    """k/359 − (k − 1)/359 lands either side of 1/359 in floating point; the rule must not depend on which."""
    ties = tuple(k / 359 - (k - 1) / 359 for k in range(1, 359))
    assert {d > ONE_IMAGE for d in ties} == {True, False}, "float rounding really does put them on both sides"
    v = Verdict(ties, ONE_IMAGE)
    assert (v.k, v.against, v.kind) == (0, 0, "no difference"), (v.k, v.against)
    two = Verdict(tuple(k / 359 - (k - 2) / 359 for k in range(2, 359)), ONE_IMAGE)
    assert two.k == two.n, "two test images are beyond it"
